"""Datastore encoding of the recipient's slots and server paths (TLV values, versioned keys)::

    asyncreceive/v1/recipient/slot/<index 05d>     one Slot
    asyncreceive/v1/recipient/servers              the servers set at runtime (setserver): their path lists
    asyncreceive/v1/recipient/server_paths         (older versions) one server's paths set at runtime
    asyncreceive/v1/recipient/invoice/<hash>       online-fallback invoices issued (sealed preimage, amount)

Decoders raise only DecodeError on a damaged record; callers skip it with a log line.
"""

import hashlib
from dataclasses import dataclass
from typing import List, Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import DecodeError
from ..wire.tlv import Reader, decode_fixed, decode_tlv, decode_tu, encode_tlv, tu64, u16
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


FALLBACK_PREFIX = RECIPIENT_PREFIX + ["invoice"]
NONCE_LEN = 12


def fallback_key(payment_hash: bytes) -> List[str]:
    """An online-fallback invoice we issued: sealed preimage, amount, offer_id, expiry (TLV)."""
    return FALLBACK_PREFIX + [payment_hash.hex()]


def record_key(offer_key_base: bytes) -> bytes:
    """The key that seals preimages in the datastore, derived from the makesecret-based offer key base
    under its own label (so it is never the same key as any offer's)."""
    return HKDF(hashes.SHA256(), 32, None, b"asyncreceive/v1/record-key").derive(offer_key_base)


def _aad(payment_hash: bytes) -> bytes:
    return b"asyncreceive/v1/preimage" + payment_hash  # a sealed preimage opens only under its own key


def seal_preimage(key: bytes, payment_hash: bytes, preimage: bytes, nonce: bytes) -> bytes:
    """nonce (12 bytes, random, from the caller) || ChaCha20-Poly1305(preimage)."""
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, preimage, _aad(payment_hash))


def open_preimage(key: bytes, payment_hash: bytes, sealed: bytes) -> bytes:
    try:
        pre = ChaCha20Poly1305(key).decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], _aad(payment_hash))
    except InvalidTag:
        raise DecodeError("fallback_invoice.preimage", "does not open with our key")
    if hashlib.sha256(pre).digest() != payment_hash:
        raise DecodeError("fallback_invoice.preimage", "does not hash to the payment_hash")
    return pre


@dataclass(frozen=True)
class FallbackInvoice:
    """An online-fallback invoice we issued.  ``preimage`` is sealed (``sealed``) or, in records written
    before sealing, clear."""

    payment_hash: bytes
    offer_id: bytes
    amount_msat: int
    expires_at: int
    preimage: bytes
    sealed: bool = True
    payer_note: Optional[str] = None


def encode_fallback(f: FallbackInvoice) -> bytes:
    recs = [(0 if not f.sealed else 10, f.preimage), (2, tu64(f.amount_msat)), (4, f.offer_id),
            (6, tu64(f.expires_at))]
    if f.payer_note:
        recs.append((8, f.payer_note.encode()))
    return encode_tlv(sorted(recs))


def decode_fallback(payment_hash: bytes, data: bytes) -> FallbackInvoice:
    r = dict(decode_tlv(data, "fallback_invoice", known={0, 2, 4, 6, 8, 10}).records)
    for t in (2, 4, 6):
        if t not in r:
            raise DecodeError(f"fallback_invoice[{t}]", "missing")
    if 10 in r:
        sealed, pre = True, r[10]
        if len(pre) != NONCE_LEN + 32 + 16:
            raise DecodeError("fallback_invoice.preimage", "sealed preimage of the wrong length")
    elif 0 in r:
        sealed, pre = False, r[0]
        if len(pre) != 32:
            raise DecodeError("fallback_invoice.preimage", "not 32 bytes")
    else:
        raise DecodeError("fallback_invoice.preimage", "missing")
    if len(r[4]) != 32:
        raise DecodeError("fallback_invoice.offer_id", "not 32 bytes")
    note = r[8].decode("utf-8", "replace") if 8 in r else None
    return FallbackInvoice(payment_hash, r[4], decode_tu(r[2], 8, "fallback_invoice.amount"),
                           decode_tu(r[6], 8, "fallback_invoice.expires_at"), pre, sealed, note)


def encode_servers(path_lists: List[bytes]) -> bytes:
    """The servers record: u16 count, then per server u16 length || its path list (LDK's encoding)."""
    return u16(len(path_lists)) + b"".join(u16(len(p)) + p for p in path_lists)


def decode_servers(data: bytes) -> List[bytes]:
    r = Reader(data)
    n = r.u16("servers.count")
    if n > MAX_SERVERS:
        raise DecodeError("servers.count", f"{n} servers, more than {MAX_SERVERS}")
    out = [r.read(r.u16(f"servers[{i}].len"), f"servers[{i}]") for i in range(n)]
    r.expect_end("servers")
    return out


def _encode_holder(h: c.Holder, first: bool) -> bytes:
    """One holder; the first one's paths, reply path and mailbox are the slot record's 12, 18 and 27."""
    recs = [(0, h.server)] if first else [(0, h.server), (2, h.paths), (4, h.reply_path)]
    if h.mailbox_node and not first:
        recs.append((5, h.mailbox_node))
    if h.persisted_at is not None:
        recs.append((7, tu64(h.persisted_at)))
    if h.paths_expiry is not None:
        recs.append((9, tu64(h.paths_expiry)))
    return encode_tlv(recs)


def _decode_holders(data: bytes, first: dict) -> tuple:
    """The holders in field 35; ``first``: the first one's paths (2), reply path (4) and mailbox (5), from
    the slot record's 12, 18 and 27."""
    r, out = Reader(data), []
    while not r.at_end():
        i = len(out)
        rec = dict(decode_tlv(r.read(r.u16(f"slot_record.holders[{i}].len"), "holder"), f"holders[{i}]",
                              known={0, 2, 4, 5, 7, 9}).records)
        if i == 0:
            rec = {**first, **rec}
        for t in (0, 2, 4):
            if t not in rec:
                raise DecodeError(f"slot_record.holders[{i}][{t}]", "missing")
        out.append(c.Holder(rec[0], rec[2], rec[4], rec.get(5, b""),
                            decode_tu(rec[7], 8, "holder.persisted_at") if 7 in rec else None,
                            decode_tu(rec[9], 8, "holder.paths_expiry") if 9 in rec else None))
    if not out or len(out) > MAX_SERVERS:
        raise DecodeError("slot_record.holders", f"{len(out)} holders, expected 1 to {MAX_SERVERS}")
    return tuple(out)


def slot_key(index: int) -> List[str]:
    return RECIPIENT_PREFIX + ["slot", f"{index:05d}"]


def encode_slot(s: c.Slot) -> bytes:
    recs = [(0, bytes([_STATUS.index(s.status)])), (1, tu64(s.index)), (2, tu64(s.attempts))]
    if s.next_request_at is not None:
        recs.append((4, tu64(s.next_request_at)))
    if s.last_request_at is not None:
        recs.append((6, tu64(s.last_request_at)))
    recs.append((37, tu64(s.invoice_floor)))
    o = s.offer
    if o is not None:
        # 35: the offer's holders (one per server); the first one's paths, reply path and mailbox are in 12,
        # 18 and 27, where older versions (one server) wrote them: they read this record still (and ignore 35)
        first = o.holders[0]
        holders = [_encode_holder(h, i == 0) for i, h in enumerate(o.holders)]
        recs += [(8, o.offer), (10, o.offer_id), (12, first.paths), (16, tu64(o.created_at)),
                 (18, first.reply_path), (20, tu64(o.invoice_created_at)), (24, o.key_nonce),
                 (35, b"".join(u16(len(x)) + x for x in holders))]
        if first.mailbox_node:
            recs.append((27, first.mailbox_node))
        if o.expires_at is not None:
            recs.append((14, tu64(o.expires_at)))
        if o.invoice_expires_at is not None:
            recs.append((22, tu64(o.invoice_expires_at)))
        if o.amount_msat is not None:          # a dedicated offer's fields, odd as well
            recs.append((29, tu64(o.amount_msat)))
        if o.description is not None:
            recs.append((31, o.description.encode()))
        if o.issuer is not None:
            recs.append((33, o.issuer.encode()))
    return encode_tlv(sorted(recs))


def _text(r: dict, t: int, name: str) -> Optional[str]:
    if t not in r:
        return None
    try:
        return r[t].decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"slot_record.{name}", "not UTF-8")


def decode_slot(data: bytes, legacy_server: bytes = b"") -> c.Slot:
    """A slot record.  One written by an older version (one server: fields 12, 18, 27) is held by
    ``legacy_server``, which confirmed its invoice if the slot is ready or used."""
    r = dict(decode_tlv(data, "slot_record", known=lambda t: t <= 37).records)
    for t in (0, 1, 2):
        if t not in r:
            raise DecodeError(f"slot_record[{t}]", "missing")
    code = decode_fixed(r[0], 1, "slot_record.status")
    if code >= len(_STATUS):
        raise DecodeError("slot_record.status", f"unknown status {code}")
    status = _STATUS[code]

    def tu(t, name):
        return decode_tu(r[t], 8, f"slot_record.{name}") if t in r else None

    index = tu(1, "index")
    if index > MAX_SLOT_INDEX:
        raise DecodeError("slot_record.index", f"{index} is beyond any slot")
    offer = None
    if 8 in r:
        for t in (10, 16, 20, 24):
            if t not in r:
                raise DecodeError(f"slot_record[{t}]", "missing offer field")
        if 35 in r:
            holders = _decode_holders(r[35], {t: r[u] for t, u in ((2, 12), (4, 18), (5, 27)) if u in r})
        elif 12 in r and 18 in r:
            acked = tu(20, "invoice_created_at") if status in (c.READY, c.USED) else None
            holders = (c.Holder(legacy_server, r[12], r[18], r.get(27, b""), acked, tu(14, "expires_at")),)
        else:
            raise DecodeError("slot_record.holders", "missing")
        offer = c.CachedOffer(r[8], r[10], holders, tu(14, "expires_at"), tu(16, "created_at"),
                              tu(20, "invoice_created_at"), tu(22, "invoice_expires_at"), r[24],
                              tu(29, "amount_msat"), _text(r, 31, "description"), _text(r, 33, "issuer"))
    # older records have no floor: their offer's invoice time is the newest they served
    floor = tu(37, "invoice_floor") if 37 in r else (offer.invoice_created_at if offer is not None else 0)
    return c.Slot(index, status, offer, tu(2, "attempts"), tu(4, "next_request_at"), tu(6, "last_request_at"), floor)
