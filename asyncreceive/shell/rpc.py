"""lightningd's JSON-RPC over one kept connection per thread.

pyln's ``LightningRpc`` opens a new unix socket for every call; on the server's hot path (three calls
per served invoice_request) connecting and tearing down cost more plugin CPU than the calls' JSON.
lightningd answers any number of requests on one connection, in order, so each thread that calls keeps
its own connection (calls from one thread never overlap) and opens a new one only when it was closed.

Every method of ``LightningRpc`` (``listpeers``, ``call`` ...) works as before, with the same errors
(``RpcError`` with lightningd's ``error`` object).
"""

import json
import re
import socket
import threading
from typing import Dict

from pyln.client import LightningRpc, RpcError
from pyln.client.lightning import UnixSocket


#: a params name that JSON carries as it is, without escaping
_PLAIN = re.compile(r"[A-Za-z0-9_]+")


class _NotTaken(Exception):
    """The connection was reset before lightningd read our request."""


def _closed(conn: UnixSocket) -> bool:
    """Whether a kept connection, idle between requests, was closed or has bytes nobody asked for."""
    if conn.sock is None:
        return True
    try:
        conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)   # b"": closed; bytes: stale
        return True
    except BlockingIOError:
        return False           # open, nothing to read: as it should be
    except OSError:
        return True


class KeptConnectionRpc(LightningRpc):
    """``LightningRpc`` that keeps one connection per calling thread (see the module's text)."""

    def __init__(self, socket_path: str):
        super().__init__(socket_path)
        self._local = threading.local()
        self._ids = 0
        self._ids_lock = threading.Lock()

    def _next_id(self, method: str) -> str:
        with self._ids_lock:
            self._ids += 1
            return f"{self.caller_name}:{method}#{self._ids}"

    def call(self, method, payload=None, cmdprefix=None, filter=None):
        if self._notify is not None or cmdprefix is not None:   # pyln's own path for what we never use
            return super().call(method, payload, cmdprefix, filter)
        if payload is None:
            payload = {}
        if isinstance(payload, dict):
            payload = {k: v for k, v in payload.items() if v is not None}
        request = {"jsonrpc": "2.0", "method": method, "params": payload, "id": self._next_id(method)}
        if filter is not None:
            request["filter"] = filter
        return self._call(method, payload, request["id"], json.dumps(request, ensure_ascii=False).encode())

    def call_hex(self, method: str, params: Dict[str, bytes]):
        """``call(method, {name: value.hex()})``, with the request written without JSON's encoder (hex
        needs no escaping), which for a 32 kB onion costs about 5 times as much (injectonionmessage,
        twice per served invoice_request).  Names are letters, digits and ``_``."""
        if self._notify is not None or not all(_PLAIN.fullmatch(k) for k in params):
            return self.call(method, {k: v.hex() for k, v in params.items()})
        request_id = self._next_id(method)
        body = ",".join(f'"{k}":"{v.hex()}"' for k, v in params.items())
        data = (f'{{"jsonrpc":"2.0","method":{json.dumps(method)},"id":{json.dumps(request_id)},'
                f'"params":{{{body}}}}}').encode()
        shown = {k: v.hex() if len(v) <= 64 else f"<{len(v)} bytes>" for k, v in params.items()}  # for RpcError
        return self._call(method, shown, request_id, data)

    def _call(self, method: str, payload, request_id: str, data: bytes):
        resp = None
        conn = getattr(self._local, "conn", None)
        if conn is not None and _closed(conn):   # lightningd closed it (it does not while it runs)
            self._drop()
            conn = None
        if conn is not None:
            try:
                resp = self._exchange(data, request_id)
            except _NotTaken:      # closed meanwhile, our request unread: once more on a new one
                self._drop()
        if resp is None:
            self._local.conn, self._local.buf = UnixSocket(self.socket_path), b""
            try:
                resp = self._exchange(data, request_id)
            except _NotTaken as e:
                self._drop()
                raise OSError(f"lightningd closed the RPC connection: {e}")
        if not isinstance(resp, dict):
            raise TypeError(f"Malformed response, response is not a dictionary {resp}.")
        if "error" in resp:
            raise RpcError(method, payload, resp["error"])
        if "result" not in resp:
            raise ValueError('Malformed response, "result" missing.')
        return resp["result"]

    def _exchange(self, data: bytes, request_id: str):
        """Send one request on this thread's connection and read its answer.  _NotTaken if lightningd
        cannot have read the request (the connection was reset before it: on a unix socket that
        leaves our bytes unread); any other failure drops the connection and is raised (a clean end
        of stream after the request was sent may come after lightningd ran it: never sent again)."""
        conn = self._local.conn
        try:
            conn.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _NotTaken(str(e))
        except BaseException:
            self._drop()           # part of the request may be written: the connection is unusable
            raise
        try:
            return self._read_answer(conn, request_id)
        except _NotTaken:
            raise
        except BaseException:
            self._drop()           # half-read answer: the connection's state is unknown
            raise

    def _read_answer(self, conn, request_id: str):
        buf = self._local.buf
        got = False
        while True:
            end = buf.find(b"\n\n")
            if end < 0:
                try:
                    chunk = conn.recv(max(65536, len(buf)))
                except ConnectionResetError as e:
                    if not got:
                        raise _NotTaken(str(e))
                    raise
                if not chunk:
                    raise OSError("lightningd closed the RPC connection" + (" during an answer" if got else ""))
                got = True
                buf += chunk
                continue
            obj = json.loads(buf[:end])
            buf = buf[end + 2:]
            if isinstance(obj, dict) and obj.get("id") is None and obj.get("method") is not None:
                continue           # a notification (we ask for none): skip it
            self._local.buf = buf
            if isinstance(obj, dict) and obj.get("id") != request_id:
                raise ValueError(f"Malformed response, id is not {request_id}: {obj}.")
            return obj

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn, self._local.buf = None, b""
        if conn is not None:
            conn.close()
