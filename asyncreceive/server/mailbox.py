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
   ``onionmessage_forward_fail`` with the whole outgoing ``onion_message`` and the peer it came from
   (``source``): we store it here (only 1300-byte onions, for ``hold_seconds``, within the limits below);
4. when the client is connected (now, on its ``connect``, or on a tick) each held message is sent whole
   inside a ``held_onion_message`` over the delivery path, ``DELIVER_BATCH`` in flight at a time, and
   deleted only once lightningd took it (a failed send keeps it for the next connect or tick).  The
   client's plugin peels both layers with its phantom key (``Transport._on_mailbox``), so nothing here
   can read or alter what it relays.

Who can fill a mailbox.  The ``server -> phantom`` path is in the client's static invoice, which is
public: anyone can send junk on it, and we cannot tell junk from a payer's ``held_htlc_available``.
So the limits are about *who sent it*, the incoming peer (``source``):

- admissions are rate-limited per incoming peer (over all clients) and per (client, peer), so one
  peer's flood neither blocks the others' messages for that client nor churns our datastore fast;
- a client holds at most ``max_count`` messages and ``max_bytes`` bytes;
- when a client's mailbox is full, a message never pushes out an older one from its own source (first
  come is kept), and pushes out another source's (newest) message only if that source holds more than
  the newcomer's source will (``admit``): a source holding no more than its fair share
  (``max_count`` / number of sources) is never evicted by another one's flood.

What remains: an attacker with many peers (node ids are free: onion messages need a connection, not a
channel) gets that many fair shares and buckets, so it can crowd a real payer down to one share and
make the server store ``max_count`` junk messages per client for ``hold_seconds``; messages whose
source is not known (a lightningd that does not name it) all count as one source, so for them the
policy degrades to "first come is kept, the rest refused when full".  A routing peer carrying both a
real payer's message and an attacker's shares one bucket and one share with it.

Datastore (values are TLV streams)::

    asyncreceive/v1/server/mailbox/<hex client_id>                 MailboxRecord
    asyncreceive/v1/server/held/<hex client_id>/<received_at>-<id>  HeldMessage

This module is pure: records and the policies ``(held, new, now, limits) -> (admit?, keys to delete)``
and ``(held, now, max_age) -> keys``.  ServerService runs them.
"""

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..wire.messages import MailboxRegistration
from ..wire.records import BYTES, NODE_ID_BYTES, TU64, Field, Table, TableRecord, record_codec
from .store import SERVER_PREFIX

#: defaults of asyncserver-max-held (a count) and asyncserver-hold-seconds; and of the byte budget
MAX_HELD = 64
HOLD_SECONDS = 86400
MAX_HELD_BYTES = 96_000
#: a held onion_message is relayed inside another one (32768-byte onion at most): hold only the
#: standard 1300-byte ones (1403 bytes on the wire), which leave room for the wrapper
MAX_ONION_MESSAGE = 1500
#: held messages handed to the sender for one client at a time (its queue per peer holds 64)
DELIVER_BATCH = 16
#: a held message handed to the sender that it has not reported on after this long may go again
IN_FLIGHT_SECONDS = 120
#: messages held per (client, incoming peer): a burst of 20, then one per second
HOLD_BURST = 20
HOLD_REFILL_SECONDS = 1.0
#: messages held per incoming peer, over all clients: a burst of 64, then two per second
PEER_HOLD_BURST = 64
PEER_HOLD_REFILL_SECONDS = 0.5


def mailbox_key(client_id: bytes) -> List[str]:
    return SERVER_PREFIX + ["mailbox", client_id.hex()]


def held_prefix(client_id: bytes = None) -> List[str]:
    return SERVER_PREFIX + ["held"] + ([client_id.hex()] if client_id is not None else [])


def held_key(client_id: bytes, received_at: int, onion_message: bytes) -> List[str]:
    """Keys sort by arrival; the same message held twice gets the same key (stored once)."""
    return held_prefix(client_id) + [f"{received_at:010d}-{hashlib.sha256(onion_message).hexdigest()[:16]}"]


def received_at_of(key: Sequence[str]) -> int:
    """The arrival time a held message's key starts with (0, so expired at once, if it has none)."""
    head = key[-1].split("-", 1)[0] if key else ""
    return int(head) if head.isdigit() else 0


MAILBOX_RECORD = Table("mailbox_record", [
    Field(0, "registration", record_codec(MailboxRegistration), required=True),
    Field(2, "registered_at", TU64, required=True),
])


@dataclass(frozen=True)
class MailboxRecord(TableRecord):
    registration: MailboxRegistration
    registered_at: int
    TABLE = MAILBOX_RECORD

    @property
    def client_node_id(self) -> bytes:
        return self.registration.delivery_path.first_node_id


HELD_MESSAGE_RECORD = Table("held_message", [
    Field(0, "received_at", TU64, required=True),
    Field(2, "onion_message", BYTES, required=True),  # the wire onion_message (type 513 and all), as lightningd gave it
    Field(3, "source", NODE_ID_BYTES),                # odd: older versions still read the record
])


@dataclass(frozen=True)
class HeldMessage(TableRecord):
    received_at: int
    onion_message: bytes
    source: Optional[bytes] = None  # the peer it came from (None: not known, or held by an older version)
    TABLE = HELD_MESSAGE_RECORD


@dataclass(frozen=True)
class Entry:
    """What the policy knows of a held (or arriving) message: it cannot read the message itself."""
    key: Any                        # datastore key, opaque here
    source: Optional[bytes]         # incoming peer; None (unknown) is one source of its own
    size: int                       # bytes
    received_at: int


@dataclass(frozen=True)
class Limits:
    max_count: int
    max_bytes: int
    max_age: int


def expired(held: Sequence[Entry], now: int, max_age: int) -> List[Any]:
    return [e.key for e in held if now - e.received_at > max_age]


def admit(held: Sequence[Entry], new: Entry, now: int, limits: Limits) -> Tuple[bool, List[Any]]:
    """Can ``new`` be stored, and which keys go first?  ``held`` is one client's mailbox, oldest first.

    Expired messages always go.  While the rest and ``new`` do not fit in ``limits``, the source that
    holds the most messages gives up its newest one, but only if it holds more than ``new``'s source
    will once ``new`` is in; otherwise ``new`` is refused (and nothing live is deleted).  So a source
    never evicts its own messages, and one at or under the others' holdings is never evicted.
    """
    gone = expired(held, now, limits.max_age)
    live = [e for e in held if e.key not in gone]
    if new.size > limits.max_bytes or limits.max_count < 1:
        return False, gone
    evict: List[Entry] = []
    while len(live) + 1 > limits.max_count or sum(e.size for e in live) + new.size > limits.max_bytes:
        by_source: Dict[Optional[bytes], List[Entry]] = {}
        for e in live:
            by_source.setdefault(e.source, []).append(e)
        mine = len(by_source.get(new.source, ())) + 1
        top = max(by_source.values(), key=lambda es: (len(es), sum(e.size for e in es), es[-1].received_at))
        if len(top) <= mine:
            return False, gone
        live.remove(top[-1])
        evict.append(top[-1])
    return True, gone + [e.key for e in evict]


def due(held: Sequence[Entry], now: int, max_age: int) -> Tuple[List[Any], List[Any]]:
    """(keys to deliver, oldest first; keys to drop as too old)."""
    gone = expired(held, now, max_age)
    return [e.key for e in held if e.key not in gone], gone
