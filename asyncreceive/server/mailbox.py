"""The server's mailbox: onion messages held for an offline client until it comes back.

Why it exists.  A payer sends ``held_htlc_available`` over the static invoice's TLV-236 paths while
the recipient may be offline; LDK sends it once and expects the recipient's always-online peer to keep
it.  LDK's LSP re-sends the stored ``onion_message`` to the peer when it reconnects.  A plugin on a
stock lightningd cannot: no RPC sends a raw ``onion_message`` to a peer, and a held message for the
client's *node* could only be opened with the client's node key, which its plugin cannot use for
that.  So a client of ours routes those paths ``server -> client phantom`` (no hop at its node):

1. our ``offer_paths`` carry our node id (record ``OFFER_PATHS_MAILBOX_NODE``): "I hold messages";
2. the client's ``serve_static_invoice`` registers its phantom id and a *delivery path* (a blinded path
   ``client node -> client phantom``, context kind MAILBOX), signed with the phantom key for this
   server (so nobody can claim another node's id and have its messages diverted);
3. lightningd cannot forward a message to that phantom (it is nobody's peer) and emits
   ``onionmessage_forward_fail`` with the whole outgoing ``onion_message``: we store it here (only
   1300-byte onions, rate-limited per client, at most ``max_held`` per client, for ``hold_seconds``);
4. when the client is connected (now, on its ``connect``, or on a tick) each held message is sent whole
   inside a ``held_onion_message`` over the delivery path.  The client's plugin peels both layers with
   its phantom key (``Transport._on_mailbox``), so nothing here can read or alter what it relays.

Datastore (values are TLV streams)::

    asyncreceive/v1/server/mailbox/<hex client_id>                 MailboxRecord
    asyncreceive/v1/server/held/<hex client_id>/<received_at>-<id>  HeldMessage

This module is pure: records and the policy ``(held, now, limits) -> keys``.  ServerService runs it.
"""

import hashlib
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from ..errors import DecodeError
from ..wire.messages import MailboxRegistration
from ..wire.tlv import decode_tlv, decode_tu, encode_tlv, tu64
from .store import PREFIX

#: defaults of asyncserver-max-held and asyncserver-hold-seconds
MAX_HELD = 20
HOLD_SECONDS = 86400
#: a held onion_message is relayed inside another one (32768-byte onion at most): hold only the
#: standard 1300-byte ones (1403 bytes on the wire), which leave room for the wrapper
MAX_ONION_MESSAGE = 1500
#: messages held per client: a burst of 20, then one per second
HOLD_BURST = 20
HOLD_REFILL_SECONDS = 1.0


def mailbox_key(client_id: bytes) -> List[str]:
    return PREFIX + ["mailbox", client_id.hex()]


def held_prefix(client_id: bytes = None) -> List[str]:
    return PREFIX + ["held"] + ([client_id.hex()] if client_id is not None else [])


def held_key(client_id: bytes, received_at: int, onion_message: bytes) -> List[str]:
    """Keys sort by arrival; the same message held twice gets the same key (stored once)."""
    return held_prefix(client_id) + [f"{received_at:010d}-{hashlib.sha256(onion_message).hexdigest()[:16]}"]


@dataclass(frozen=True)
class MailboxRecord:
    registration: MailboxRegistration
    registered_at: int

    @property
    def client_node_id(self) -> bytes:
        return self.registration.delivery_path.first_node_id

    def encode(self) -> bytes:
        return encode_tlv([(0, self.registration.encode()), (2, tu64(self.registered_at))])

    @staticmethod
    def decode(data: bytes) -> "MailboxRecord":
        r = dict(decode_tlv(data, "mailbox_record", known={0, 2}).records)
        if 0 not in r or 2 not in r:
            raise DecodeError("mailbox_record", "missing registration or registered_at")
        return MailboxRecord(MailboxRegistration.decode(r[0], "mailbox_record.registration"),
                             decode_tu(r[2], 8, "mailbox_record.registered_at"))


@dataclass(frozen=True)
class HeldMessage:
    received_at: int
    onion_message: bytes            # the wire onion_message (type 513 and all), as lightningd gave it

    def encode(self) -> bytes:
        return encode_tlv([(0, tu64(self.received_at)), (2, self.onion_message)])

    @staticmethod
    def decode(data: bytes) -> "HeldMessage":
        r = dict(decode_tlv(data, "held_message", known={0, 2}).records)
        if 0 not in r or 2 not in r:
            raise DecodeError("held_message", "missing received_at or onion_message")
        return HeldMessage(decode_tu(r[0], 8, "held_message.received_at"), r[2])


Held = Sequence[Tuple[List[str], int]]   # (datastore key, received_at), oldest first


def expired(held: Held, now: int, max_age: int) -> List[List[str]]:
    return [k for k, at in held if now - at > max_age]


def admit(held: Held, now: int, max_held: int, max_age: int) -> List[List[str]]:
    """Keys to delete before one more message is stored: the expired ones, then the oldest until there
    is room (a flood of messages for one client only ever pushes out that client's oldest)."""
    out = expired(held, now, max_age)
    live = [k for k, at in held if k not in out]
    over = len(live) + 1 - max_held
    return out + live[:max(0, over)]


def due(held: Held, now: int, max_age: int) -> Tuple[List[List[str]], List[List[str]]]:
    """(keys to deliver, oldest first; keys to drop as too old)."""
    gone = expired(held, now, max_age)
    return [k for k, _ in held if k not in gone], gone
