"""plugin.py started by a python3 without our dependencies answers getmanifest with the reason.

Run for real: a venv made with ``--without-pip`` has none of requirements.txt.  (lightningd's side of it,
the log line and ``plugin start``'s error, is in tests/integration/test_install.py.)
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asyncreceive.missing_deps import answer_getmanifest, is_missing_dependency, reason

ROOT = Path(__file__).resolve().parents[2]
GETMANIFEST = {"jsonrpc": "2.0", "id": "cln:getmanifest#7", "method": "getmanifest",
               "params": {"allow-deprecated-apis": False}}


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python3")


def frames(out: bytes):
    return [json.loads(f) for f in out.split(b"\n\n") if f.strip()]


def test_lightningd_gets_disable_with_the_package_and_the_install_command(bare_python):
    request = json.dumps(GETMANIFEST).encode() + b"\n\n"
    run = subprocess.run([bare_python, str(ROOT / "plugin.py")], input=request, capture_output=True, timeout=30,
                         env={**os.environ, "LIGHTNINGD_PLUGIN": "1"})
    assert run.returncode == 0, run.stderr.decode()
    [answer] = frames(run.stdout)
    assert answer["id"] == "cln:getmanifest#7"
    why = answer["result"]["disable"]
    print(why)
    assert "\n" not in why
    assert "pyln-client" in why
    assert f"install with: {bare_python} -m pip install -r {ROOT / 'requirements.txt'}" in why


def test_run_by_hand_it_prints_the_reason_and_fails(bare_python):
    run = subprocess.run([bare_python, str(ROOT / "plugin.py")], capture_output=True, timeout=30,
                         env={k: v for k, v in os.environ.items() if k != "LIGHTNINGD_PLUGIN"})
    assert run.returncode == 1
    assert b"needs the Python package pyln-client" in run.stderr


def test_requests_split_and_joined_anyhow_each_get_one_answer():
    """Two requests, the first cut in the middle, a notification between: answers in order, none for it."""
    data = (json.dumps(GETMANIFEST) + "\n\n" + json.dumps({"jsonrpc": "2.0", "method": "log", "params": {}})
            + json.dumps({"jsonrpc": "2.0", "id": 8, "method": "init", "params": {}}) + "\n\n").encode()

    class Chunks(io.RawIOBase):
        parts = [data[:30], data[30:]]

        def read(self, n=-1):
            return self.parts.pop(0) if self.parts else b""

    out = io.BytesIO()
    answer_getmanifest("why not", Chunks(), out)
    first, second = frames(out.getvalue())
    assert first["result"] == {"disable": "why not"} and first["id"] == "cln:getmanifest#7"
    assert second["id"] == 8 and second["error"]["message"] == "why not"


@pytest.mark.parametrize("module, package", [("pyln", "pyln-client"), ("pyln.client", "pyln-client"),
                                             ("pyln.proto", "pyln-proto"), ("coincurve", "pyln-proto"),
                                             ("cryptography.hazmat", "cryptography"), ("other", "other")])
def test_the_reason_names_the_package_that_brings_the_module(module, package):
    err = ModuleNotFoundError(f"No module named '{module}'", name=module)
    assert is_missing_dependency(err)
    assert f"Python package {package} (module {module} " in reason(err, "/py", "/r.txt")


def test_our_own_broken_import_is_not_taken_for_a_missing_dependency():
    assert not is_missing_dependency(ModuleNotFoundError("x", name="asyncreceive.gone"))
    assert not is_missing_dependency(ImportError("cannot import name 'X'", name="pyln.client"))
