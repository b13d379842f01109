"""Datastore encoding of the recipient's slots and server paths (TLV values, versioned keys)::

    asyncreceive/v1/recipient/slot/<index 05d>     one Slot
    asyncreceive/v1/recipient/server_paths         the server paths set at runtime (setserver)
    asyncreceive/v1/recipient/invoice/<hash>       online-fallback invoices issued (preimage, amount)
"""

from typing import List

from ..errors import DecodeError
from ..wire.tlv import decode_fixed, decode_tlv, decode_tu, encode_tlv, tu64
from . import cache as c

PREFIX = ["asyncreceive", "v1", "recipient"]
SERVER_PATHS_KEY = PREFIX + ["server_paths"]
_STATUS = [c.EMPTY, c.REQUESTED, c.PENDING, c.READY, c.USED]


def fallback_key(payment_hash: bytes) -> List[str]:
    """An online-fallback invoice we issued: preimage, amount, offer_id, expiry (TLV)."""
    return PREFIX + ["invoice", payment_hash.hex()]


def slot_key(index: int) -> List[str]:
    return PREFIX + ["slot", f"{index:05d}"]


def encode_slot(s: c.Slot) -> bytes:
    recs = [(0, bytes([_STATUS.index(s.status)])), (1, tu64(s.index)), (2, tu64(s.attempts))]
    if s.next_request_at is not None:
        recs.append((4, tu64(s.next_request_at)))
    if s.last_request_at is not None:
        recs.append((6, tu64(s.last_request_at)))
    o = s.offer
    if o is not None:
        recs += [(8, o.offer), (10, o.offer_id), (12, o.paths), (16, tu64(o.created_at)),
                 (18, o.server_reply_path), (20, tu64(o.invoice_created_at)), (24, o.key_nonce)]
        if o.expires_at is not None:
            recs.append((14, tu64(o.expires_at)))
        if o.invoice_expires_at is not None:
            recs.append((22, tu64(o.invoice_expires_at)))
        if o.mailbox_node:
            recs.append((27, o.mailbox_node))  # odd: older versions ignore it
    return encode_tlv(sorted(recs))


def decode_slot(data: bytes) -> c.Slot:
    r = dict(decode_tlv(data, "slot_record", known=lambda t: t <= 27).records)
    for t in (0, 1, 2):
        if t not in r:
            raise DecodeError(f"slot_record[{t}]", "missing")
    code = decode_fixed(r[0], 1, "slot_record.status")
    if code >= len(_STATUS):
        raise DecodeError("slot_record.status", f"unknown status {code}")

    def tu(t, name):
        return decode_tu(r[t], 8, f"slot_record.{name}") if t in r else None

    offer = None
    if 8 in r:
        for t in (10, 12, 16, 18, 20, 24):
            if t not in r:
                raise DecodeError(f"slot_record[{t}]", "missing offer field")
        offer = c.Offer(r[8], r[10], r[12], tu(14, "expires_at"), tu(16, "created_at"), r[18],
                        tu(20, "invoice_created_at"), tu(22, "invoice_expires_at"), r[24], r.get(27, b""))
    return c.Slot(tu(1, "index"), _STATUS[code], offer, tu(2, "attempts"), tu(4, "next_request_at"),
                  tu(6, "last_request_at"))
