"""Datastore encoding of the recipient's slots and server paths (TLV values, versioned keys)::

    asyncreceive/v1/recipient/slot/<index 05d>     one Slot
    asyncreceive/v1/recipient/servers              the servers set at runtime (setserver): their path lists
    asyncreceive/v1/recipient/server_paths         (older versions) one server's paths set at runtime

The online-fallback invoices under asyncreceive/v1/recipient/invoice/ are :mod:`..fallback.store`'s.  The
slot record (with its holders) is declared as a table (:mod:`..wire.records`); the servers record is
LDK's u16-counted list, not a TLV stream.  Decoders raise only DecodeError on a damaged record; callers
skip it with a log line.
"""

from typing import List

from ..errors import DecodeError
from ..wire.records import BYTES, TU64, U8, UTF8, Codec, Field, Table, table_codec, u16_prefixed_list
from ..wire.tlv import Reader, u16
from . import cache as c

RECIPIENT_PREFIX = ["asyncreceive", "v1", "recipient"]
SERVER_PATHS_KEY = RECIPIENT_PREFIX + ["server_paths"]
SERVERS_KEY = RECIPIENT_PREFIX + ["servers"]
#: most servers a recipient is enrolled at: each costs a request per slot, and an offer carries at most
#: cache.MAX_PATHS_PER_SERVER paths of each, 8 in all (what our server checks)
MAX_SERVERS = 4
#: slot numbers travel as u16 (offer_paths_request)
MAX_SLOT_INDEX = 0xFFFF
_STATUS = [c.EMPTY, c.REQUESTED, c.PENDING, c.READY, c.USED]


#: the servers record's path lists, each u16 length || path list (LDK's encoding)
_PATH_LISTS = u16_prefixed_list(BYTES, max_count=MAX_SERVERS)


def encode_servers(path_lists: List[bytes]) -> bytes:
    """The servers record: u16 count, then per server u16 length || its path list."""
    return u16(len(path_lists)) + _PATH_LISTS.encode(path_lists)


def decode_servers(data: bytes) -> List[bytes]:
    r = Reader(data)
    n = r.u16("servers.count")
    out = _PATH_LISTS.decode(r.rest(), "servers")
    if len(out) != n:
        raise DecodeError("servers.count", f"{n} servers, but {len(out)} path lists follow")
    return list(out)


def _decode_status(v: bytes, field: str) -> str:
    code = U8.decode(v, field)
    if code >= len(_STATUS):
        raise DecodeError(field, f"unknown status {code}")
    return _STATUS[code]


def _decode_slot_index(v: bytes, field: str) -> int:
    index = TU64.decode(v, field)
    if index > MAX_SLOT_INDEX:
        raise DecodeError(field, f"{index} is beyond any slot")
    return index


#: one server holding a slot's offer (cache.Holder); the first one's paths, reply path and mailbox are not
#: here but in the slot record's 12, 18 and 27, where older versions read them
HOLDER_RECORD = Table("holder", [
    Field(0, "server", BYTES, required=True),
    Field(2, "paths", BYTES),
    Field(4, "reply_path", BYTES),
    Field(5, "mailbox_node", BYTES),
    Field(7, "persisted_at", TU64),
    Field(9, "paths_expiry", TU64),
])

SLOT_RECORD = Table("slot_record", [
    Field(0, "status", Codec("slot_status", lambda s: U8.encode(_STATUS.index(s)), _decode_status), required=True),
    Field(1, "index", Codec("slot_index", TU64.encode, _decode_slot_index), required=True),
    Field(2, "attempts", TU64, required=True),
    Field(4, "next_request_at", TU64),
    Field(6, "last_request_at", TU64),
    # the offer, if any (8): then 10, 16, 20, 24 and the holders (35, or 12 and 18 from older versions)
    Field(8, "offer", BYTES),
    Field(10, "offer_id", BYTES),
    Field(12, "paths", BYTES),                  # the first holder's
    Field(14, "expires_at", TU64),
    Field(16, "created_at", TU64),
    Field(18, "reply_path", BYTES),             # the first holder's
    Field(20, "invoice_created_at", TU64),
    Field(22, "invoice_expires_at", TU64),
    Field(24, "key_nonce", BYTES),
    Field(26, "retired_mailbox_node", BYTES),   # the mailbox node as b9fa423 wrote it; ignored since 4480c42
    Field(27, "mailbox_node", BYTES),           # the first holder's
    Field(29, "amount_msat", TU64),             # a dedicated offer's fields, odd as well
    Field(31, "description", UTF8),
    Field(33, "issuer", UTF8),
    Field(35, "holders", u16_prefixed_list(table_codec(HOLDER_RECORD), 1, MAX_SERVERS)),
    Field(37, "invoice_floor", TU64),           # older records have none
])
#: a holder's fields that the first holder keeps in the slot record instead
_FIRST_HOLDER = ("paths", "reply_path", "mailbox_node")


def slot_key(index: int) -> List[str]:
    return RECIPIENT_PREFIX + ["slot", f"{index:05d}"]


def encode_slot(s: c.Slot) -> bytes:
    v = {"status": s.status, "index": s.index, "attempts": s.attempts, "next_request_at": s.next_request_at,
         "last_request_at": s.last_request_at, "invoice_floor": s.invoice_floor}
    o = s.offer
    if o is not None:
        # 35: the offer's holders (one per server); the first one's paths, reply path and mailbox are in 12,
        # 18 and 27, where older versions (one server) wrote them: they read this record still (and ignore 35)
        first = o.holders[0]
        v.update(offer=o.offer, offer_id=o.offer_id, expires_at=o.expires_at, created_at=o.created_at,
                 invoice_created_at=o.invoice_created_at, invoice_expires_at=o.invoice_expires_at,
                 key_nonce=o.key_nonce, amount_msat=o.amount_msat, description=o.description, issuer=o.issuer,
                 paths=first.paths, reply_path=first.reply_path, mailbox_node=first.mailbox_node or None,
                 holders=[_holder_values(h, i == 0) for i, h in enumerate(o.holders)])
    return SLOT_RECORD.encode(v)


def _holder_values(h: c.Holder, first: bool) -> dict:
    """One holder's record; the first one's paths, reply path and mailbox are the slot record's 12, 18 and 27."""
    own = dict.fromkeys(_FIRST_HOLDER) if first else {
        "paths": h.paths, "reply_path": h.reply_path, "mailbox_node": h.mailbox_node or None}
    return {"server": h.server, **own, "persisted_at": h.persisted_at, "paths_expiry": h.paths_expiry}


def _holder(h: dict, i: int, slot: dict) -> c.Holder:
    """Holder ``i`` of field 35; the first one's paths, reply path and mailbox are the slot record's, unless
    it has its own (as versions before e5a6394 wrote it)."""
    if i == 0:
        h = {**h, **{k: slot[k] for k in _FIRST_HOLDER if h[k] is None}}
    for name in ("paths", "reply_path"):
        if h[name] is None:
            raise DecodeError(f"slot_record.holders[{i}].{name}", "missing")
    return c.Holder(h["server"], h["paths"], h["reply_path"], h["mailbox_node"] or b"", h["persisted_at"],
                    h["paths_expiry"])


def decode_slot(data: bytes, legacy_server: bytes = b"") -> c.Slot:
    """A slot record.  One written by an older version (one server: fields 12, 18, 27) is held by
    ``legacy_server``, which confirmed its invoice if the slot is ready or used."""
    r = SLOT_RECORD.decode(data)
    offer = None
    if r["offer"] is not None:
        for name in ("offer_id", "created_at", "invoice_created_at", "key_nonce"):
            if r[name] is None:
                raise DecodeError(f"slot_record.{name}", "missing offer field")
        if r["holders"] is not None:
            holders = tuple(_holder(h, i, r) for i, h in enumerate(r["holders"]))
        elif r["paths"] is not None and r["reply_path"] is not None:
            acked = r["invoice_created_at"] if r["status"] in (c.READY, c.USED) else None
            holders = (c.Holder(legacy_server, r["paths"], r["reply_path"], r["mailbox_node"] or b"", acked,
                                r["expires_at"]),)
        else:
            raise DecodeError("slot_record.holders", "missing")
        offer = c.CachedOffer(r["offer"], r["offer_id"], holders, r["expires_at"], r["created_at"],
                              r["invoice_created_at"], r["invoice_expires_at"], r["key_nonce"], r["amount_msat"],
                              r["description"], r["issuer"])
    # older records have no floor: their offer's invoice time is the newest they served
    floor = r["invoice_floor"]
    if floor is None:
        floor = offer.invoice_created_at if offer is not None else 0
    return c.Slot(r["index"], r["status"], offer, r["attempts"], r["next_request_at"], r["last_request_at"], floor)
