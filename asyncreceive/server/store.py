"""What the static invoice server keeps: enrolled clients and one static invoice per (client, slot).

Datastore layout (values are TLV streams, so fields can be added later)::

    asyncreceive/v1/server/clients/<hex client_id>              ClientRecord
    asyncreceive/v1/server/invoices/<hex client_id>/<slot 05d>  InvoiceRecord

A client's *enrolment* id (random, made by ``addclient``) is in every path context the server issues
for it: removing a client and adding it again makes a new enrolment, and the old device's paths stop
working.  Records written before enrolments existed have none, and keep working with contexts that
have none.  Decoders raise only DecodeError on a damaged record.

``Tally`` counts what is stored under the server's prefix (clients, invoices, mailbox registrations,
held messages, and the bytes of their values) and keeps the clients and the invoices in key order,
so that the operator's RPCs show totals and pages without listing everything.

A clean shutdown leaves the tally's clients and invoices for the next start (``Tally.snapshot``), in
records that sort after all the others (on PostgreSQL lightningd's listing reads every row after its
key, so reading them reads few rows)::

    asyncreceive/v1/server/tally/<part 05d>   TallySnapshotPart (at most SNAPSHOT_PART_BYTES of data)
    asyncreceive/v1/server/tally/head         TallySnapshotHead, written last and deleted first
"""

import bisect
import hashlib
import sys
from array import array
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import DecodeError
from ..wire.paths import BlindedPath
from ..wire.records import (BLINDED_PATH, BYTES, NONEMPTY_BYTES, SHA256, TU32, TU64, Codec, Field, Table,
                            TableRecord, fixed_bytes)
from ..wire.tlv import Reader, bigsize

SERVER_PREFIX = ["asyncreceive", "v1", "server"]


def client_key(client_id: bytes) -> List[str]:
    return SERVER_PREFIX + ["clients", client_id.hex()]


def invoice_key(client_id: bytes, slot: int) -> List[str]:
    return SERVER_PREFIX + ["invoices", client_id.hex(), f"{slot:05d}"]


def invoices_prefix(client_id: Optional[bytes] = None) -> List[str]:
    return SERVER_PREFIX + ["invoices"] + ([client_id.hex()] if client_id is not None else [])


#: the tally's snapshot (see the module's text and ``Tally.snapshot``)
TALLY_PREFIX = SERVER_PREFIX + ["tally"]
TALLY_HEAD_KEY = TALLY_PREFIX + ["head"]
#: data per part record (lightningd's JSON carries it as hex); 10 000 clients x 10 invoices is about 1 MB
SNAPSHOT_PART_BYTES = 32768
#: the largest slot a key of ours names (5 digits)
MAX_SLOT = 99_999
assert array("Q").itemsize == 8


def tally_part_key(i: int) -> List[str]:
    return TALLY_PREFIX + [f"{i:05d}"]


ENROLMENT_BYTES = 8


CLIENT_RECORD = Table("client_record", [
    Field(0, "client_id", BYTES, required=True),
    Field(2, "created_at", TU64, required=True),
    Field(4, "expires_at", TU64),
    Field(5, "enrolment", fixed_bytes(ENROLMENT_BYTES)),   # odd: older versions still read the record
])


@dataclass(frozen=True)
class ClientRecord(TableRecord):
    client_id: bytes
    created_at: int
    expires_at: Optional[int] = None
    enrolment: Optional[bytes] = None   # None: enrolled by a version without enrolment ids
    TABLE = CLIENT_RECORD


INVOICE_RECORD = Table("invoice_record", [
    Field(0, "invoice", BYTES, required=True),              # the static invoice TLV stream, as served
    Field(2, "forward_path", BLINDED_PATH, required=True),  # where invoice_requests for it are forwarded
    Field(4, "stored_at", TU64, required=True),
    Field(6, "times_served", TU64, required=True),
    Field(8, "last_served_at", TU64),
])


@dataclass(frozen=True)
class InvoiceRecord(TableRecord):
    invoice: bytes
    forward_path: BlindedPath
    stored_at: int
    times_served: int = 0
    last_served_at: Optional[int] = None
    TABLE = INVOICE_RECORD


#: the kinds of record under SERVER_PREFIX (the key's next element), as Tally counts them
KINDS = ("clients", "invoices", "mailbox", "held")
#: kinds kept in key order, for pages: a client is (hex id,), an invoice (hex id, slot 05d)
ORDERED = ("clients", "invoices")
#: a client's invoice is one integer in its array: slot << SIZE_BITS | the value's size (1 TB is far
#: more than lightningd's JSON-RPC carries)
SIZE_BITS = 40
SIZE_MASK = (1 << SIZE_BITS) - 1


class Tally:
    """What the server keeps, counted in memory: records per kind, the bytes of their values, and the
    clients' and invoices' keys in order.  Pure: the server reports each record it wrote
    (``stored``, with the value's length) or deleted (``deleted``); keys outside SERVER_PREFIX's kinds are
    ignored, and one of a client or invoice that we never write (id not hex, slot not 5 digits) is
    counted but left out of the pages.

    Memory (issue 11: 10 000 clients x 10 invoices in a 60 MB plugin): 8 bytes per invoice.  A client's
    invoices are one array of integers (slot and value size packed, in slot order); the clients'
    hex ids are interned, so the clients and the invoices share them.  Pages of invoices are walked
    from the sorted list of clients that have invoices, then through each one's array (5-digit slots
    sort as their numbers do), so they come in key order, as listdatastore lists them.  Mailbox
    registrations, held messages and keys we never write are few: one dict entry each."""

    def __init__(self) -> None:
        self.count: Dict[str, int] = dict.fromkeys(KINDS, 0)
        self.bytes = 0
        #: kind -> {key tail after SERVER_PREFIX and kind: value bytes}, for the keys not paged
        self._other: Dict[str, Dict[Tuple[str, ...], int]] = {k: {} for k in KINDS}
        #: enrolled clients: hex id -> value bytes; and the hex ids in order
        self._clients: Dict[str, int] = {}
        self._client_order: List[str] = []
        #: clients with invoices: hex id -> its invoices (slot << SIZE_BITS | size, in slot order); the ids in order
        self._invoices: Dict[str, array] = {}
        self._invoice_order: List[str] = []

    @staticmethod
    def _split(key: Sequence[str]) -> Tuple[Optional[str], Tuple[str, ...]]:
        """(kind, key tail after SERVER_PREFIX and kind); kind None for a key outside our kinds."""
        n = len(SERVER_PREFIX)
        if len(key) <= n + 1 or list(key[:n]) != SERVER_PREFIX or key[n] not in KINDS:
            return None, ()
        return key[n], tuple(key[n + 1:])

    def stored(self, key: Sequence[str], size: int) -> None:
        kind, tail = self._split(key)
        if kind is None:
            return
        if _ordered(kind, tail):
            old = self._store_client(tail[0], size) if kind == "clients" else self._store_invoice(*tail, size)
        else:
            old = self._other[kind].get(tail)
            self._other[kind][tail] = size
        if old is None:
            self.count[kind] += 1
        self.bytes += size - (old or 0)

    def deleted(self, key: Sequence[str]) -> None:
        kind, tail = self._split(key)
        if kind is None:
            return
        if _ordered(kind, tail):
            size = self._delete_client(tail[0]) if kind == "clients" else self._delete_invoice(*tail)
        else:
            size = self._other[kind].pop(tail, None)
        if size is not None:
            self.count[kind] -= 1
            self.bytes -= size

    # the paged kinds: each returns the record's size before (None: there was none)
    def _store_client(self, cid: str, size: int) -> Optional[int]:
        cid = sys.intern(cid)
        old = self._clients.get(cid)
        if old is None:
            bisect.insort(self._client_order, cid)
        self._clients[cid] = size
        return old

    def _delete_client(self, cid: str) -> Optional[int]:
        old = self._clients.pop(cid, None)
        if old is not None:
            del self._client_order[bisect.bisect_left(self._client_order, cid)]
        return old

    def _store_invoice(self, cid: str, slot_text: str, size: int) -> Optional[int]:
        cid, slot = sys.intern(cid), int(slot_text)
        slots = self._invoices.get(cid)
        if slots is None:
            slots = self._invoices[cid] = array("Q")
            bisect.insort(self._invoice_order, cid)
        i = bisect.bisect_left(slots, slot << SIZE_BITS)
        if i < len(slots) and slots[i] >> SIZE_BITS == slot:
            old, slots[i] = slots[i] & SIZE_MASK, slot << SIZE_BITS | size
            return old
        slots.insert(i, slot << SIZE_BITS | size)
        return None

    def _delete_invoice(self, cid: str, slot_text: str) -> Optional[int]:
        slots, slot = self._invoices.get(cid), int(slot_text)
        i = bisect.bisect_left(slots, slot << SIZE_BITS) if slots is not None else 0
        if slots is None or i == len(slots) or slots[i] >> SIZE_BITS != slot:
            return None
        old = slots.pop(i) & SIZE_MASK
        if not slots:
            del self._invoices[cid]
            del self._invoice_order[bisect.bisect_left(self._invoice_order, cid)]
        return old

    def page(self, kind: str, start: Tuple[str, ...] = (), limit: Optional[int] = None,
             within: Tuple[str, ...] = ()) -> Tuple[List[Tuple[str, ...]], Optional[Tuple[str, ...]]]:
        """Up to ``limit`` (all if None) keys of ``kind`` (tails after SERVER_PREFIX and kind) from ``start``
        on, in order, among those beginning with ``within``; and the key the next page starts at (None
        at the end)."""
        end = within + ("\uffff",) if within else None   # the keys beginning with ``within`` are before this
        out: List[Tuple[str, ...]] = []
        for tail in self._walk(kind, max(start, within)):
            if end is not None and tail >= end:
                break
            if limit is not None and len(out) == limit:
                return out, tail
            out.append(tail)
        return out, None

    def _walk(self, kind: str, first: Tuple[str, ...]) -> Iterator[Tuple[str, ...]]:
        """The keys of an ordered ``kind`` in order, from the first one at or after ``first``."""
        if kind == "clients":
            order = self._client_order
            for cid in order[bisect.bisect_left(order, first, key=_as_key):]:
                yield (cid,)
            return
        order = self._invoice_order
        i = bisect.bisect_left(order, first[:1], key=_as_key)    # the first client with keys >= first
        for cid in order[i:]:
            slots = self._invoices[cid]
            j = bisect.bisect_left(slots, first, key=lambda p: (cid, _slot_text(p))) if i >= 0 else 0
            i = -1                                              # the clients after it: all their invoices
            for packed in slots[j:]:
                yield cid, _slot_text(packed)

    def of_client(self, kind: str, client_hex: str) -> int:
        """How many records of an ordered ``kind`` belong to one client."""
        if kind == "clients":
            return int(client_hex in self._clients)
        return len(self._invoices.get(client_hex, ()))

    # ---- the snapshot a clean shutdown leaves for the next start (pure: the service writes and reads it) --
    def snapshot(self, part_bytes: Optional[int] = None) -> Optional[List[Tuple[List[str], bytes]]]:
        """The records (key, value) that keep this tally's clients and invoices, in the order to write
        them: the parts (``part_bytes`` of data each, SNAPSHOT_PART_BYTES if None), then the head (delete
        the head first).  None if it holds a client or invoice key the server never writes
        (someone else's record under our prefix), which only a count takes as it is."""
        part_bytes = part_bytes or SNAPSHOT_PART_BYTES
        if self._other["clients"] or self._other["invoices"]:
            return None
        entries, size = [], 0
        for cid in sorted(set(self._client_order).union(self._invoice_order)):
            raw = bytes.fromhex(cid)
            if raw.hex() != cid:
                return None
            record, invoices = self._clients.get(cid), self._invoices.get(cid, array("Q"))
            entries.append((raw, record, invoices))
            size += (record or 0) + sum(p & SIZE_MASK for p in invoices)
        body = TALLY_SNAPSHOT.encode({"clients": entries})
        parts = [body[i:i + part_bytes] for i in range(0, len(body), part_bytes)]
        head = TallySnapshotHead(len(parts), len(self._clients), sum(map(len, self._invoices.values())), size,
                                 hashlib.sha256(body).digest())
        return ([(tally_part_key(i), TallySnapshotPart(p).encode()) for i, p in enumerate(parts)]
                + [(TALLY_HEAD_KEY, head.encode())])

    def restore(self, records: Sequence[Tuple[Sequence[str], bytes]]) -> None:
        """Take the clients and invoices of a snapshot (its records as listed, in any order) into this
        tally, which has none yet.  DecodeError, and the tally unchanged, if a record is damaged,
        missing or extra, or the parts do not add up to what the head says."""
        if self._clients or self._invoices or self._other["clients"] or self._other["invoices"]:
            raise ValueError("a snapshot is restored into a tally without clients or invoices")
        named: Dict[str, bytes] = {}
        for key, value in records:
            if len(key) != len(TALLY_HEAD_KEY) or list(key[:-1]) != TALLY_PREFIX:
                raise DecodeError("tally_snapshot", f"a record that is not one of its own: {'/'.join(key)}")
            named[key[-1]] = value
        if "head" not in named:
            raise DecodeError("tally_snapshot.head", "missing: its writing did not finish")
        head = TallySnapshotHead.decode(named.pop("head"))
        names = [f"{i:05d}" for i in range(head.parts)]
        if sorted(named) != names:
            raise DecodeError("tally_snapshot", f"parts {sorted(named)[:5]}..., not the {head.parts} the head names")
        body = b"".join(TallySnapshotPart.decode(named[n], f"tally_snapshot_part[{n}]").data for n in names)
        if hashlib.sha256(body).digest() != head.sha256:
            raise DecodeError("tally_snapshot", "the parts are not the ones the head names (sha256)")
        entries = TALLY_SNAPSHOT.decode(body)["clients"]
        clients = {sys.intern(cid.hex()): size for cid, size, _ in entries if size is not None}
        invoices = {sys.intern(cid.hex()): slots for cid, _, slots in entries if slots}
        count = sum(map(len, invoices.values()))
        size = sum(clients.values()) + sum(p & SIZE_MASK for slots in invoices.values() for p in slots)
        if (len(clients), count, size) != (head.clients, head.invoices, head.value_bytes):
            raise DecodeError("tally_snapshot", f"{len(clients)} clients, {count} invoices, {size} bytes: not "
                              f"the {head.clients}, {head.invoices}, {head.value_bytes} the head says")
        self._clients, self._client_order = clients, list(clients)        # entries are in id order
        self._invoices, self._invoice_order = invoices, list(invoices)
        self.count["clients"] += len(clients)
        self.count["invoices"] += count
        self.bytes += size


def _as_key(cid: str) -> Tuple[str]:
    return (cid,)


def _slot_text(packed: int) -> str:
    return f"{packed >> SIZE_BITS:05d}"


def _ordered(kind: str, tail: Tuple[str, ...]) -> bool:
    """Is ``tail`` (a key after SERVER_PREFIX and kind) a client's or an invoice's as we write them (hex client
    id; a 5-digit slot number)?"""
    if kind not in ORDERED or len(tail) != ORDERED.index(kind) + 1:
        return False
    try:
        bytes.fromhex(tail[0])
    except ValueError:
        return False
    return kind == "clients" or (len(tail[1]) == 5 and tail[1].isascii() and tail[1].isdigit())


# ---- the tally's snapshot: what a clean shutdown leaves for the next start (see the module's text) ----
def _encode_clients(entries) -> bytes:
    out = []
    for cid, record, invoices in entries:
        packed = array("Q", invoices)
        if sys.byteorder == "little":
            packed.byteswap()
        out += [bigsize(len(cid)), cid, bigsize(0 if record is None else record + 1), bigsize(len(invoices)),
                packed.tobytes()]
    return b"".join(out)


def _decode_clients(v: bytes, f: str) -> tuple:
    r, out = Reader(v), []
    while not r.at_end():
        name = f"{f}[{len(out)}]"
        cid = r.read(r.bigsize(f"{name}.client_id"), f"{name}.client_id")
        if out and cid <= out[-1][0]:
            raise DecodeError(f"{name}.client_id", "not after the one before")
        record = r.bigsize(f"{name}.record_size")
        invoices = array("Q", r.read(8 * r.bigsize(f"{name}.invoices"), f"{name}.invoices"))
        if sys.byteorder == "little":
            invoices.byteswap()
        slots = [p >> SIZE_BITS for p in invoices]
        if any(a >= b for a, b in zip(slots, slots[1:])) or (slots and slots[-1] > MAX_SLOT):
            raise DecodeError(f"{name}.invoices", f"slots not increasing, or over {MAX_SLOT}")
        if record - 1 > SIZE_MASK or (record == 0 and not invoices):
            raise DecodeError(f"{name}.record_size", "too large, or neither a record nor invoices")
        out.append((cid, record - 1 if record else None, invoices))
    return tuple(out)


#: per client, in client id order: (client id, its record's size or None, its invoices as the tally keeps
#: them: slot << SIZE_BITS | size, in slot order), each written as bigsize(id length) || id ||
#: bigsize(record size + 1, or 0) || bigsize(invoices) || one u64 per invoice
CLIENT_TALLIES = Codec("client_tally[]", _encode_clients, _decode_clients)

#: the parts' data, joined
TALLY_SNAPSHOT = Table("tally_snapshot", [
    Field(0, "clients", CLIENT_TALLIES, required=True),
])

TALLY_SNAPSHOT_HEAD = Table("tally_snapshot_head", [
    Field(0, "parts", TU32, required=True),
    Field(2, "clients", TU64, required=True),
    Field(4, "invoices", TU64, required=True),
    Field(6, "value_bytes", TU64, required=True),   # of the clients' and the invoices' records
    Field(8, "sha256", SHA256, required=True),      # of the parts' data, joined in order
])


@dataclass(frozen=True)
class TallySnapshotHead(TableRecord):
    parts: int
    clients: int
    invoices: int
    value_bytes: int
    sha256: bytes
    TABLE = TALLY_SNAPSHOT_HEAD


TALLY_SNAPSHOT_PART = Table("tally_snapshot_part", [
    Field(0, "data", NONEMPTY_BYTES, required=True),
])


@dataclass(frozen=True)
class TallySnapshotPart(TableRecord):
    data: bytes
    TABLE = TALLY_SNAPSHOT_PART
