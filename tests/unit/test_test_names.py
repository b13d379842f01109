"""Real-node test names stay short: pyln-testing names each node's PostgreSQL database
``<test name>_<node>_<8 random chars>`` and PostgreSQL cuts names at 63 bytes, so a test name that leaves
no room for ``_<node>`` gives its nodes the same database (``make test-postgres`` failed on a
70-character name). The random part may be cut: within one test the node number keeps names apart."""

import re
from pathlib import Path

#: 63 bytes, less "_<node>" for up to 99 nodes
MAX_NAME = 63 - len("_99")
ROOT = Path(__file__).resolve().parents[1]


def test_real_node_test_names_fit_a_postgresql_database_name():
    long = []
    for folder in ("integration", "interop"):
        for f in sorted((ROOT / folder).glob("test_*.py")):
            for name in re.findall(r"^def (test_\w+)\(", f.read_text(), re.M):
                if len(name) > MAX_NAME:
                    long.append(f"{f.name}::{name} ({len(name)} > {MAX_NAME})")
    assert long == []
