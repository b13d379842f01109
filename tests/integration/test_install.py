"""Installed and started the ways CLN operators do it (issue 14, part 3).

- ``reckless install <checkout named asyncreceive>``: CLN's plugin manager finds asyncreceive.py beside
  requirements.txt, makes a venv with those packages, writes a wrapper (which runs ``python -m
  asyncreceive``, i.e. plugin.py) and starts it with ``plugin start``; the node's config then includes
  reckless's, so the plugin also comes back at the next start.  reckless ships with CLN (``make install``
  puts it next to lightningd); the test runs the one on PATH, or the one ``RECKLESS`` names, else it is
  skipped with that reason.
- ``--plugin=plugin.py`` with a ``python3`` on PATH that lacks the dependencies, as a new user tries it:
  lightningd's log and ``plugin start``'s error say which package is missing and how to install it.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pyln.client import RpcError

from asyncreceive import __version__

from .conftest import PLUGIN

ROOT = Path(PLUGIN).parent
RECKLESS = os.environ.get("RECKLESS") or shutil.which("reckless")
MISSING = "asyncreceive needs the Python package pyln-client"


def checkout_named_asyncreceive(parent: Path) -> Path:
    """reckless names a plugin after its directory: a copy of this checkout as <parent>/asyncreceive
    (without the venv, git data and caches, which a fresh clone does not have either)."""
    target = parent / "asyncreceive"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", ".pytest_cache", ".hypothesis", "corpus", "crashes", "logs"))
    return target


@pytest.mark.ci_may_skip("the prebuilt nodes CI installs have no reckless, and CI cannot download it")
@pytest.mark.skipif(RECKLESS is None, reason="reckless (CLN's tools/reckless, installed next to lightningd by "
                    "CLN's `make install`) is not on PATH and RECKLESS is not set")
def test_reckless_installs_and_starts_the_plugin(node_factory, tmp_path):
    node = node_factory.get_node()
    ldir = Path(node.daemon.lightning_dir)
    # reckless adds `include <its config>` to lightningd's network config, and asks before creating one
    (ldir / "regtest" / "config").touch()
    src = checkout_named_asyncreceive(tmp_path)
    run = subprocess.run([RECKLESS, "--regtest", "--lightning", str(ldir), "-v", "install", str(src)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")
    assert "asyncreceive enabled" in run.stdout
    entry = ldir / "reckless" / "asyncreceive" / "asyncreceive.py"   # reckless's wrapper, run in its venv
    assert str(entry) in {p["name"] for p in node.rpc.plugin("list")["plugins"] if p["active"]}
    status = node.rpc.call("asyncreceive-status")
    assert status["version"] == __version__ and status["node_id"] == node.info["id"]
    # it is in the config reckless maintains: lightningd starts it again after a restart
    assert f"plugin={entry}" in (ldir / "reckless" / "regtest-reckless.conf").read_text()
    node.restart()
    assert node.rpc.call("asyncreceive-status")["version"] == __version__


def test_python_without_dependencies_says_what_to_install(node_factory, tmp_path):
    """plugin.py runs under the first python3 on PATH (its #! line): here one made without any package."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    node = node_factory.get_node(options={"plugin": PLUGIN}, start=False)
    node.daemon.env["PATH"] = f"{bare / 'bin'}:{node.daemon.env['PATH']}"
    node.start()
    install = f"install with: {bare / 'bin' / 'python3'} -m pip install -r {ROOT / 'requirements.txt'}"
    line = node.daemon.is_in_log(r"plugin.py: Killing plugin: .*")  # before lightningd's start completed
    print(line)
    assert "disabled itself: " + MISSING in line and install in line
    with pytest.raises(RpcError) as err:
        node.rpc.plugin_start(PLUGIN)
    print(err.value.error["message"])
    assert MISSING in err.value.error["message"] and install in err.value.error["message"]
    with pytest.raises(RpcError):
        node.rpc.call("asyncreceive-status")  # lightningd runs on, without the plugin
