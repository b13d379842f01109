"""Live interop tests against ldk-node (crates.io), driven through tests/interop/ldk.

The Rust driver is built once per session with `cargo build --release` into a target directory outside the
repository (`$ASYNCRECEIVE_LDK_TARGET`, default ~/.cache/asyncreceive/ldk-target), so later runs reuse it.
Without cargo, or if the build fails, every interop test is skipped with the reason; without lightningd or
bitcoind they are skipped like the integration tests.
"""

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import LDK_SKIP_PREFIX, skip_without_binaries

os.environ.setdefault("RUST", "0")
os.environ.setdefault("TEST_NETWORK", "regtest")

from pyln.testing.fixtures import *  # noqa: E402,F401,F403
from pyln.testing.utils import BITCOIND_CONFIG, reserve_unused_port, wait_for  # noqa: E402

from tests.integration.conftest import PLUGIN, plugin_opts  # noqa: E402,F401

LDK_DIR = Path(__file__).resolve().parent / "ldk"
TARGET_DIR = Path(os.environ.get("ASYNCRECEIVE_LDK_TARGET",
                                  Path.home() / ".cache" / "asyncreceive" / "ldk-target"))
SKIP_PREFIX = LDK_SKIP_PREFIX


def pytest_collection_modifyitems(config, items):
    skip_without_binaries(items, "tests/interop", "interop")


@pytest.fixture(scope="session")
def ldk_binary():
    """Path of the built driver; skips the test (with the reason) when it cannot be built."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip(SKIP_PREFIX + "cargo is not on PATH (needed to build ldk-node)")
    env = dict(os.environ, CARGO_TARGET_DIR=str(TARGET_DIR))
    t0 = time.time()
    try:
        r = subprocess.run([cargo, "build", "--release", "--manifest-path", str(LDK_DIR / "Cargo.toml")],
                           env=env, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        pytest.skip(SKIP_PREFIX + "cargo build timed out")
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-15:])
        pytest.skip(SKIP_PREFIX + f"cargo build failed (exit {r.returncode}):\n{tail}")
    print(f"ldk driver built in {time.time() - t0:.1f}s")
    binary = TARGET_DIR / "release" / "ldk-interop-node"
    if not binary.exists():
        pytest.skip(SKIP_PREFIX + f"cargo build succeeded but {binary} is missing")
    return binary


class LdkError(Exception):
    pass


class LdkNode:
    """One ldk-node process; `call` sends a command line and returns the parsed JSON reply's result."""

    def __init__(self, binary, directory, bitcoind, role):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.port = reserve_unused_port()
        self.stderr = open(os.path.join(directory, "driver.stderr"), "w")
        self.proc = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, bufsize=1)
        self.replies = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.call("start", role, os.path.join(directory, "data"), self.port, bitcoind.rpcport,
                  BITCOIND_CONFIG["rpcuser"], BITCOIND_CONFIG["rpcpassword"], timeout=120)
        self.id = self.call("node_id")
        self.addr = f"127.0.0.1:{self.port}"

    def _read(self):
        for line in self.proc.stdout:
            self.replies.put(line)
        self.replies.put(None)

    def call(self, cmd, *args, timeout=60):
        line = " ".join([cmd, *map(str, args)])
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        try:
            raw = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise LdkError(f"no reply to {cmd!r} within {timeout}s") from None
        if raw is None:
            raise LdkError(f"driver exited (code {self.proc.poll()}) during {cmd!r}; see {self.stderr.name}")
        reply = json.loads(raw)
        if not reply["ok"]:
            raise LdkError(f"{cmd}: {reply['error']}")
        return reply["result"]

    def try_call(self, cmd, *args, **kw):
        try:
            return self.call(cmd, *args, **kw)
        except LdkError:
            return None

    def log(self):
        try:
            with open(os.path.join(self.directory, "data", "ldk_node.log")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.call("stop", timeout=30)
            except (LdkError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


@pytest.fixture
def ldk_factory(ldk_binary, bitcoind, directory):
    """`ldk_factory(role)` starts an ldk-node (role server|client|none) on the test's bitcoind."""
    nodes = []

    def start(role):
        node = LdkNode(ldk_binary, os.path.join(directory, f"ldk-{len(nodes) + 1}"), bitcoind, role)
        nodes.append(node)
        return node

    yield start
    for n in nodes:
        n.stop()


def fund_ldk(bitcoind, ldk, btc=1):
    """Send `btc` to the LDK node's on-chain wallet and wait until it is spendable."""
    bitcoind.rpc.sendtoaddress(ldk.call("new_address"), btc)
    bitcoind.generate_block(1)

    def funded():
        ldk.try_call("sync", timeout=60)
        return ldk.call("balances")["spendable_onchain_sats"] >= btc * 10**8 * 0.9
    wait_for(funded, timeout=90)
