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
"""

import bisect
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..wire.paths import BlindedPath
from ..wire.records import BLINDED_PATH, BYTES, TU64, Field, Table, TableRecord, fixed_bytes

SERVER_PREFIX = ["asyncreceive", "v1", "server"]


def client_key(client_id: bytes) -> List[str]:
    return SERVER_PREFIX + ["clients", client_id.hex()]


def invoice_key(client_id: bytes, slot: int) -> List[str]:
    return SERVER_PREFIX + ["invoices", client_id.hex(), f"{slot:05d}"]


def invoices_prefix(client_id: Optional[bytes] = None) -> List[str]:
    return SERVER_PREFIX + ["invoices"] + ([client_id.hex()] if client_id is not None else [])


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


class Tally:
    """What the server keeps, counted in memory: records per kind, the bytes of their values, and the
    clients' and invoices' keys in order.  Pure: the server reports each record it wrote
    (``stored``, with the value's length) or deleted (``deleted``); keys outside SERVER_PREFIX's kinds are
    ignored, and one of a client or invoice that we never write (not hex, no slot number) is counted
    but left out of the pages.  Memory: one small entry per record (about 200 bytes: a key's parts are
    interned, so the 10 invoices of a client share its id, and each record's key tail is one tuple
    shared by the sizes and the order)."""

    def __init__(self) -> None:
        #: kind -> {key tail after SERVER_PREFIX and kind: value bytes}
        self._sizes: Dict[str, Dict[Tuple[str, ...], int]] = {k: {} for k in KINDS}
        self.count: Dict[str, int] = dict.fromkeys(KINDS, 0)
        self.bytes = 0
        self._order: Dict[str, List[Tuple[str, ...]]] = {k: [] for k in ORDERED}

    @staticmethod
    def _split(key: Sequence[str]) -> Tuple[Optional[str], Tuple[str, ...]]:
        """(kind, key tail after SERVER_PREFIX and kind, interned); kind None for a key outside our kinds."""
        n = len(SERVER_PREFIX)
        if len(key) <= n + 1 or list(key[:n]) != SERVER_PREFIX or key[n] not in KINDS:
            return None, ()
        return key[n], tuple(sys.intern(p) for p in key[n + 1:])

    def stored(self, key: Sequence[str], size: int) -> None:
        kind, tail = self._split(key)
        if kind is None:
            return
        sizes = self._sizes[kind]
        old = sizes.get(tail)
        if old is None:
            self.count[kind] += 1
            if _ordered(kind, tail):
                bisect.insort(self._order[kind], tail)
        self.bytes += size - (old or 0)
        sizes[tail] = size

    def deleted(self, key: Sequence[str]) -> None:
        kind, tail = self._split(key)
        if kind is None:
            return
        size = self._sizes[kind].pop(tail, None)
        if size is None:
            return
        self.count[kind] -= 1
        self.bytes -= size
        if _ordered(kind, tail):
            order = self._order[kind]
            del order[bisect.bisect_left(order, tail)]

    def page(self, kind: str, start: Tuple[str, ...] = (), limit: Optional[int] = None,
             within: Tuple[str, ...] = ()) -> Tuple[List[Tuple[str, ...]], Optional[Tuple[str, ...]]]:
        """Up to ``limit`` (all if None) keys of ``kind`` (tails after SERVER_PREFIX and kind) from ``start``
        on, in order, among those beginning with ``within``; and the key the next page starts at (None
        at the end)."""
        order = self._order[kind]
        lo = max(bisect.bisect_left(order, start), bisect.bisect_left(order, within))
        hi = bisect.bisect_left(order, within + ("\uffff",)) if within else len(order)
        end = hi if limit is None else min(hi, lo + limit)
        return order[lo:end], (order[end] if end < hi else None)

    def of_client(self, kind: str, client_hex: str) -> int:
        """How many records of an ordered ``kind`` belong to one client."""
        order = self._order[kind]
        return bisect.bisect_left(order, (client_hex, "\uffff")) - bisect.bisect_left(order, (client_hex,))


def _ordered(kind: str, tail: Tuple[str, ...]) -> bool:
    """Is ``tail`` (a key after SERVER_PREFIX and kind) a client's or an invoice's as we write them (hex client
    id; a slot number)?"""
    if kind not in ORDERED or len(tail) != ORDERED.index(kind) + 1:
        return False
    try:
        bytes.fromhex(tail[0])
    except ValueError:
        return False
    return kind == "clients" or (tail[1].isascii() and tail[1].isdigit())
