"""Transport self-test ("probe") messages, behind the ``asyncreceive-dev`` option.

An operator (or a test) makes a probe path on one node, sends any message type over it from another
node, and reads what arrived.  A probe path made with ``echo`` sends every message it receives back
over the message's reply path, unchanged, which tests the reply direction too.
"""

import hashlib
import time
from collections import deque
from typing import Sequence

from ..crypto.context import Kind, PathContext
from ..wire.messages import message_name
from .transport import Received, Transport

_ECHO = 4
PROBE_LIFETIME = 3600
KEEP = 200


class Probe:
    def __init__(self, transport: Transport, clock=time.time):
        self.transport = transport
        self._clock = clock
        self.received = deque(maxlen=KEEP)
        self._created = 0      # created_index of the newest entry (1 for the first)

    def received_since(self, start: int = 0, limit=None) -> list:
        """The kept entries whose created_index is ``start`` or later (oldest first), at most ``limit``:
        a poller that passes the index after the last it saw reads only what is new."""
        kept = list(self.received)     # one copy: the worker appends meanwhile
        first = kept[0]["created_index"] if kept else 0
        out = kept[max(0, start - first):]
        return out if limit is None else out[:limit]

    def context(self, echo: bool = False) -> PathContext:
        return PathContext(Kind.PROBE, int(self._clock()) + PROBE_LIFETIME, {_ECHO: b"\x01"} if echo else {})

    def make_path(self, echo: bool = False, via: Sequence[bytes] = (), compact: bool = False):
        if compact:
            return self.transport.make_compact_path(self.context(echo), via)
        return self.transport.make_path(self.context(echo), via)

    def handle(self, msg: Received) -> None:
        self._created += 1
        self.received.append({
            "created_index": self._created, "type": msg.raw_type, "name": message_name(msg.raw_type), "length": len(msg.body),
            "sha256": hashlib.sha256(msg.body).hexdigest(), "body": msg.body.hex(),
            "reply_path": msg.reply_path.encode().hex() if msg.reply_path else None,
            "echo": msg.context.get(_ECHO) == b"\x01", "received_at": int(self._clock()),
        })
        if msg.context.get(_ECHO) == b"\x01" and msg.reply_path is not None:
            self.transport.send(msg.reply_path, msg.raw_type, msg.body)
