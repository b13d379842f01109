"""Started by a python3 that lacks our dependencies: say so to lightningd instead of dying silently.

Standard library only (plugin.py imports it when importing a dependency failed).  Without it lightningd's
log says only "exited before replying to getmanifest".  With it the plugin answers ``getmanifest`` with
``disable`` and one line naming the missing package and the command that installs it; lightningd logs
"disabled itself: <that line>" and ``plugin start`` fails with it.
"""

import json
import os
import sys
from typing import BinaryIO, Optional

#: top-level module -> the package in requirements.txt that brings it
PACKAGE_OF = {"pyln": "pyln-client", "coincurve": "pyln-proto", "cryptography": "cryptography"}
PACKAGE_OF_SUBMODULE = {"pyln.proto": "pyln-proto", "pyln.client": "pyln-client"}
#: a request bigger than this is not a getmanifest we can answer: stop reading
MAX_REQUEST = 1 << 20


def is_missing_dependency(err: ImportError) -> bool:
    """A third-party module is missing (not one of ours, which would be a bug to show as is)."""
    name = getattr(err, "name", None) or ""
    return isinstance(err, ModuleNotFoundError) and name.split(".")[0] not in ("", "asyncreceive")


def reason(err: ImportError, python: str, requirements: str) -> str:
    module = err.name or "?"
    package = PACKAGE_OF_SUBMODULE.get(module) or PACKAGE_OF.get(module.split(".")[0], module.split(".")[0])
    return (f"asyncreceive needs the Python package {package} (module {module} not found by {python}); "
            f"install with: {python} -m pip install -r {requirements}")


def answer_getmanifest(why: str, stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Speak just enough of the plugin protocol: every request gets an answer; ``getmanifest`` gets
    ``{"disable": why}``, anything else an error carrying ``why``.  Returns at end of input."""
    decoder = json.JSONDecoder()
    buf = ""
    while True:
        chunk = stdin.read1(65536) if hasattr(stdin, "read1") else stdin.read(65536)
        if not chunk:
            return
        buf += chunk.decode("utf-8", "replace")
        while True:
            buf = buf.lstrip()
            try:
                request, end = decoder.raw_decode(buf)
            except ValueError:
                if len(buf) > MAX_REQUEST:
                    return
                break
            buf = buf[end:]
            response = _response(request, why)
            if response is not None:
                stdout.write(json.dumps(response).encode() + b"\n\n")
                stdout.flush()


def _response(request, why: str) -> Optional[dict]:
    if not isinstance(request, dict) or "id" not in request:
        return None  # a notification: nothing to answer
    if request.get("method") == "getmanifest":
        return {"jsonrpc": "2.0", "id": request["id"], "result": {"disable": why}}
    return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": why}}


def refuse_to_start(err: ImportError, plugin_file: str) -> None:
    """Tell lightningd (or, run by hand, the terminal) which package is missing; then exit."""
    why = reason(err, sys.executable, os.path.join(os.path.dirname(os.path.realpath(plugin_file)),
                                                   "requirements.txt"))
    if os.environ.get("LIGHTNINGD_PLUGIN") != "1":
        sys.exit(why)
    answer_getmanifest(why, sys.stdin.buffer, sys.stdout.buffer)
    sys.exit(0)
