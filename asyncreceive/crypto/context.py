"""Authenticated, stateless path contexts.

Every blinded path we hand out ends at our phantom key.  That final hop's encrypted data carries

- type 65537 (odd, ours): ``context`` bytes, a TLV stream naming what the path is for (its *kind*),
  the fields of that kind (slot, offer_id, client_id, ...) and an absolute expiry;
- type 6 ``path_id``: ``HMAC-SHA256(K_ctx, "asyncreceive/path_id/v1" || context)``, 32 bytes.

``K_ctx`` comes from lightningd's ``makesecret``: only our node can make a valid path_id, and it is the
same after a restart, so no per-path state is stored.  The hop data is already encrypted to our phantom
key, so the context is not visible to anyone else; the MAC stops a peer from replaying our encrypted
blob into another kind of path or from crafting one (they cannot encrypt to the phantom key *and* know
K_ctx).
"""

import hashlib
import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import Dict, Optional

from ..errors import DecodeError
from ..wire.records import TU64, Codec, Field, Table
from ..wire.tlv import decode_fixed

CONTEXT_TLV_TYPE = 65537
_MAC_LABEL = b"asyncreceive/path_id/v1"


class Kind(IntEnum):
    """What a path we built is for.  The number is part of the MAC'd bytes: never renumber."""

    OFFER_PATHS_REPLY = 1     # recipient: reply path of offer_paths_request (slot)
    PERSISTED_REPLY = 2       # recipient: reply path of serve_static_invoice (offer_id, invoice created_at)
    HELD_HTLC = 3             # recipient: static invoice TLV 236 paths (offer_id)
    FORWARD_INVREQ = 4        # recipient: forward_invoice_request_path (offer_id)
    CLIENT = 5                # server: paths a client uses to reach us (client_id)
    SERVE_REPLY = 6           # server: reply path of offer_paths (client_id, slot)
    OFFER = 7                 # server: offer paths handed to a client (client_id, slot)
    PAYER_REPLY = 8           # payer: reply paths of invoice_request / held_htlc_available (payment id)
    MAILBOX = 9               # recipient: delivery path for onion messages our server held for us
    PROBE = 200               # operator/dev: transport self-tests (asyncreceive-dev-* RPCs)


def _decode_kind(v: bytes, field: str) -> Kind:
    n = decode_fixed(v, 1, field)
    try:
        return Kind(n)
    except ValueError:
        raise DecodeError(field, f"unknown kind {n}")


#: the context stream: kind and expiry, then the kind's own records (types >= 4, any of them understood:
#: the MAC, not the parity, says they are ours)
PATH_CONTEXT_TABLE = Table("path_context", [
    Field(0, "kind", Codec("kind", lambda k: bytes([int(k)]), _decode_kind), required=True),
    Field(2, "expiry", TU64),
], also_known=lambda t: True)


@dataclass(frozen=True)
class PathContext:
    kind: Kind
    expiry: Optional[int] = None          # absolute unix time; None = never
    fields: Dict[int, bytes] = None       # kind-specific records, types >= 4

    def encode(self) -> bytes:
        fields = sorted((self.fields or {}).items())
        if any(t < 4 for t, _ in fields):
            raise ValueError("context field types start at 4")
        return PATH_CONTEXT_TABLE.encode({"kind": self.kind, "expiry": self.expiry}, fields)

    @staticmethod
    def decode(data: bytes) -> "PathContext":
        values = PATH_CONTEXT_TABLE.decode(data, keep_unknown=True)
        if any(t < 4 for t, _ in values["unknown"]):
            raise DecodeError("path_context", "context field types start at 4")
        return PathContext(values["kind"], values["expiry"], dict(values["unknown"]))

    def get(self, t: int) -> Optional[bytes]:
        return (self.fields or {}).get(t)


class ContextError(Exception):
    """A received path context that must not be acted on.  ``reason`` is a short counter key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ContextKey:
    """Makes and checks path_ids with a node-held 32-byte secret."""

    def __init__(self, secret: bytes):
        if len(secret) != 32:
            raise ValueError("context key must be 32 bytes")
        self._secret = secret

    def path_id(self, context_bytes: bytes) -> bytes:
        return hmac.new(self._secret, _MAC_LABEL + context_bytes, hashlib.sha256).digest()

    def compact_path_id(self, ctx: "PathContext") -> bytes:
        """A 32-byte path_id that carries the context itself, for paths that end at our real node.

        lightningd hands a plugin only the path_id of such paths (``onion_message_recv_secret``), so the
        context must fit inside it: ``len(1) || context (<= 15 bytes) || zero padding`` (16 bytes)
        followed by a 16-byte MAC over those 16 bytes.
        """
        body = ctx.encode()
        if len(body) > 15:
            raise ValueError(f"context of {len(body)} bytes does not fit a compact path_id (max 15)")
        head = (bytes([len(body)]) + body).ljust(16, b"\0")
        return head + self.path_id(head)[:16]

    def verify_compact(self, path_id: Optional[bytes], now: int,
                       expect_kind: Optional[Kind] = None) -> PathContext:
        if path_id is None or len(path_id) != 32:
            raise ContextError("no_context", "path_id is not 32 bytes")
        head, mac = path_id[:16], path_id[16:]
        if not hmac.compare_digest(self.path_id(head)[:16], mac):
            raise ContextError("bad_path_id", "compact path_id does not authenticate")
        n = head[0]
        if n > 15 or any(head[1 + n:]):
            raise ContextError("bad_context", "compact context badly framed")
        return self._check(head[1:1 + n], now, expect_kind)

    def verify(self, context_bytes: Optional[bytes], path_id: Optional[bytes], now: int,
               expect_kind: Optional[Kind] = None) -> PathContext:
        """Return the context if ``path_id`` authenticates it and it has not expired; else ContextError."""
        if context_bytes is None or path_id is None:
            raise ContextError("no_context", "path has no context or path_id")
        if not hmac.compare_digest(self.path_id(context_bytes), path_id):
            raise ContextError("bad_path_id", "path_id does not authenticate the context")
        return self._check(context_bytes, now, expect_kind)

    @staticmethod
    def _check(context_bytes: bytes, now: int, expect_kind: Optional[Kind]) -> PathContext:
        try:
            ctx = PathContext.decode(context_bytes)
        except DecodeError as e:
            raise ContextError("bad_context", str(e))
        if ctx.expiry is not None and now > ctx.expiry:
            raise ContextError("expired", f"expired at {ctx.expiry}, now {now}")
        if expect_kind is not None and ctx.kind != expect_kind:
            raise ContextError("wrong_kind", f"{ctx.kind.name} where {expect_kind.name} was expected")
        return ctx
