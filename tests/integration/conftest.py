"""Integration tests: real lightningd + bitcoind on regtest through pyln-testing.

They are skipped (and the run's summary says so) when the binaries are not on PATH.
"""

import os
from pathlib import Path

import pytest

from tests.conftest import missing_binaries

# lightningd built without its Rust plugins has no cln-grpc: don't pass --grpc-port.
os.environ.setdefault("RUST", "0")
os.environ.setdefault("TEST_NETWORK", "regtest")

from pyln.testing.fixtures import *  # noqa: E402,F401,F403

PLUGIN = str(Path(__file__).resolve().parents[2] / "plugin.py")


def pytest_collection_modifyitems(config, items):
    missing = missing_binaries()
    if not missing:
        return
    mark = pytest.mark.skip(reason=f"integration test needs {', '.join(missing)} on PATH")
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(mark)


@pytest.fixture
def plugin_opts():
    return {"plugin": PLUGIN, "asyncreceive-dev": None}
