"""Integration tests: real lightningd + bitcoind on regtest through pyln-testing.

They are skipped (and the run's summary says so) when the binaries are not on PATH.
"""

import os
from pathlib import Path

import pytest

from tests.ast_threads import serialize_werkzeug_rule_compile
from tests.conftest import skip_without_binaries

# lightningd built without its Rust plugins has no cln-grpc: don't pass --grpc-port.
os.environ.setdefault("RUST", "0")
os.environ.setdefault("TEST_NETWORK", "regtest")

from pyln.testing.fixtures import *  # noqa: E402,F401,F403

serialize_werkzeug_rule_compile()

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin.py")


def pytest_collection_modifyitems(config, items):
    skip_without_binaries(items, "tests/integration", "integration")


@pytest.fixture
def plugin_opts():
    return {"plugin": PLUGIN, "asyncreceive-dev": None}
