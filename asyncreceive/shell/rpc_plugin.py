"""pyln-client's Plugin, with JSON-RPC errors an operator can read.

pyln-client answers every failed command with the Python traceback in the reply, and logs it at info:
``lightning-cli asyncreceive-getoffer`` then prints thirty lines for "no async offer is ready yet". Here a
command's error is one line:

- ``RpcException`` (our own refusal: a bad argument, a state the operator must change) and bad
  parameters (missing, unknown, wrong count) are the operator's business: the reply carries the message
  alone, and the log says it once at debug;
- ``RpcError`` (lightningd refused a call we made for the command): the reply says so in one line, the
  log says it at unusual, the traceback goes to debug;
- anything else is a bug of ours: the reply says "internal error", the log says it at broken and the
  traceback goes to debug.

Hooks and notifications keep pyln-client's own handling. A background command's errors raised before it
returns (bad parameters, a refusal) are answered the same way; what it answers later is its own.
"""

import inspect
import json
import traceback

from pyln.client import Plugin, RpcError, RpcException
from pyln.client.plugin import MethodType, RequestState

#: the handshake calls, which keep pyln-client's handling
PYLN_OWN = ("getmanifest", "init")
#: JSON-RPC "Invalid Request", the code pyln-client uses for a plugin command's failure
FAILED = -32600
#: JSON-RPC "Invalid params"
INVALID_PARAMS = -32602


def _bad_params(e: TypeError) -> bool:
    """The TypeError came from binding the request's parameters to the command, not from inside it."""
    frames = traceback.extract_tb(e.__traceback__)
    return bool(frames) and frames[-1].filename == inspect.__file__


def rpc_error_line(e: RpcError) -> str:
    err = e.error if isinstance(e.error, dict) else {}
    return f"lightningd refused {e.method}: {err.get('message', e.error)}"


class OperatorPlugin(Plugin):
    def _bind_kwargs(self, func, params, request):
        """pyln-client's binding, with each handler's signature worked out once (``inspect`` reads a
        function's ``__signature__`` as it is): pyln works it out again for every hook, notification
        and command, a tenth of the main thread's time for the server's onion messages."""
        if getattr(func, "__signature__", None) is None and inspect.isfunction(func):
            func.__signature__ = inspect.signature(func)
        return super()._bind_kwargs(func, params, request)

    def _dispatch_request(self, request) -> None:
        method = self.methods.get(request.method)
        if method is None or method.mtype != MethodType.RPCMETHOD or request.method in PYLN_OWN:
            return super()._dispatch_request(request)
        request.background = method.background   # a background command answers later, on its own
        try:
            result = self._exec_func(method.func, request)
            if not method.background:
                json.dumps(result)   # a result JSON cannot carry is our bug: answer it as one (never crash)
        except RpcException as e:
            return self._fail(request, e.code, e.message, "debug")
        except TypeError as e:
            if _bad_params(e):
                return self._fail(request, INVALID_PARAMS, f"bad parameters: {e}", "debug")
            return self._bug(request, e)
        except RpcError as e:
            return self._fail(request, FAILED, rpc_error_line(e), "unusual", traceback.format_exc())
        except Exception as e:
            return self._bug(request, e)
        if not method.background:
            request.set_result(result)

    def answer(self, request, work) -> None:
        """Answer a background command's ``request`` with what ``work()`` returns, its errors answered
        as a command's are (for a thread that runs the command's work)."""
        try:
            result = work()
            json.dumps(result, ensure_ascii=False).encode()   # as pyln writes it: what fails is our bug
        except RpcException as e:
            return self._fail(request, e.code, e.message, "debug")
        except RpcError as e:
            return self._fail(request, FAILED, rpc_error_line(e), "unusual", traceback.format_exc())
        except OSError as e:      # lightningd's socket gone, or a write after the shutdown began
            return self._fail(request, FAILED, f"not done: lightningd is stopping ({e})", "debug")
        except Exception as e:
            return self._bug(request, e)
        request.set_result(result)

    def _bug(self, request, e: Exception) -> None:
        self._fail(request, FAILED, f"internal error: {type(e).__name__}: {e}", "broken", traceback.format_exc())

    def _fail(self, request, code: int, message: str, level: str, tb: str = None) -> None:
        self.log(f"{request.method}: {message}", level=level)
        if tb:
            self.log(tb, level="debug")
        request._write_result({"jsonrpc": "2.0", "id": request.id, "error": {"code": code, "message": message}})
        request.state = RequestState.FAILED
        request.termination_tb = message
