"""Deciding on an async (keysend-style) HTLC that reached us over a static invoice's payment path.

Pure: the shell decrypts the final hop's ``encrypted_recipient_data`` (lightningd's
``decryptencrypteddata``) and passes everything in.  An HTLC is *ours* when that data's ``path_id`` is
one we put in a static invoice; only then do we decide, and we claim only after every check passed:

- the sender's preimage (TLV 5482373484) hashes to the HTLC's payment_hash;
- an invoice_request (TLV 77777 as LDK sends it, or 1 as in the draft) that parses, is signed by its
  payer, and is for *this* offer (offer records equal byte for byte);
- the amount reaches the invoice_request's amount, or the offer's when it has none, and the invoice_request
  asks no less than the offer's amount (MPP: the parts' sum reaches the total);
- the offer has not expired, nor the static invoice (``HTLC_GRACE`` allowed);
- the HTLC's cltv is at least ``height + final_cltv`` and what the onion asked for, and within the
  path's ``max_cltv_expiry``.

Anything else fails with ``invalid_onion_blinding`` (we are inside a blinded path, BOLT 4), with an
all-zero onion hash as LDK does.
"""

import hashlib
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Tuple

from ..crypto.blinding import EncryptedData
from ..errors import DecodeError
from ..wire.bolt12.invoice_request import InvoiceRequest
from ..wire.bolt12.offer import Offer
from ..wire.payment_hop import INVREQ_DRAFT, INVREQ_LDK, KEYSEND_PREIMAGE, PAYMENT_HOP_TABLE

#: an HTLC may reach us this long after the invoice it pays expired: the payer sent it in time, and
#: each hop may take a while (a block's worth of minutes at most, in practice seconds)
HTLC_GRACE = 600
#: the payer's note is only shown to the operator (asyncreceive-listpayments)
MAX_NOTE_BYTES = 512

#: BOLT 4 invalid_onion_blinding (BADONION | PERM | 24) with a zero sha256_of_onion
INVALID_ONION_BLINDING = bytes.fromhex("c018") + bytes(32)


def cap_note(note: Optional[str], limit: int = MAX_NOTE_BYTES) -> Optional[str]:
    """The payer's note cut to ``limit`` UTF-8 bytes, never inside a character."""
    if note is None:
        return None
    return note.encode()[:limit].decode("utf-8", "ignore")


@dataclass
class Part:
    htlc_id: Hashable               # (short_channel_id, htlc id): unique per incoming HTLC
    amount_msat: int
    cltv_expiry: int


@dataclass
class Verdict:
    """``claim`` with the preimage, ``fail`` with a reason (logged, never told to the payer), or
    ``hold`` (an MPP part waiting for the rest)."""

    action: str
    reason: str = ""
    preimage: Optional[bytes] = None
    total_msat: int = 0
    invreq: Optional[InvoiceRequest] = None


def _read(records: Dict[int, bytes], name: str, default):
    """A payload record read with its codec (DecodeError naming it), or ``default`` when absent."""
    f = PAYMENT_HOP_TABLE.field(name)
    return f.codec.decode(records[f.type], name) if f.type in records else default


def onion_amounts(records: Dict[int, bytes], amount_msat: int) -> Tuple[int, int, int]:
    """(total_amount_msat, amt_to_forward, outgoing_cltv_value) of the final hop, each defaulting as
    BOLT 4 says when absent.  Raises DecodeError on a malformed one."""
    total = _read(records, "total_amount_msat", amount_msat)
    fwd = _read(records, "amt_to_forward", amount_msat)
    cltv = _read(records, "outgoing_cltv_value", 0)
    return total, fwd, cltv


def check_terms(records: Dict[int, bytes], path_data: Optional[EncryptedData], want_msat: int,
                invoice_expires_at: Optional[int], amount_msat: int, cltv_expiry: int, height: int,
                final_cltv: int, now: int, asked_by: str = "invoice") -> Verdict:
    """The checks every HTLC paying one of our invoices passes, static or online-fallback: the invoice
    has not expired (``HTLC_GRACE`` allowed), the onion's total reaches the invoice's amount and the HTLC
    carries what the onion asked, and its cltv_expiry is at least ``height + final_cltv`` and what the
    onion asked, and within the path's ``max_cltv_expiry``.  ``claim`` (with ``total_msat``) or ``fail``."""
    if invoice_expires_at is not None and now > invoice_expires_at + HTLC_GRACE:
        return Verdict("fail", f"the invoice expired at {invoice_expires_at}")
    try:
        total, fwd, asked_cltv = onion_amounts(records, amount_msat)
    except DecodeError as e:
        return Verdict("fail", str(e))
    if total < want_msat:
        return Verdict("fail", f"total {total} msat below the {asked_by} amount {want_msat}")
    if amount_msat < fwd:
        return Verdict("fail", f"htlc carries {amount_msat} msat, onion asked for {fwd}")
    if cltv_expiry < height + final_cltv or cltv_expiry < asked_cltv:
        return Verdict("fail", f"cltv_expiry {cltv_expiry} too soon (height {height} + {final_cltv})")
    pc = path_data.payment_constraints if path_data is not None else None
    if pc is not None and cltv_expiry > pc.max_cltv_expiry:
        return Verdict("fail", f"cltv_expiry {cltv_expiry} past the path's max {pc.max_cltv_expiry}")
    return Verdict("claim", total_msat=total)


def check_htlc(records: Dict[int, bytes], path_data: EncryptedData, offer: Offer, payment_hash: bytes,
               amount_msat: int, cltv_expiry: int, height: int, final_cltv: int, now: int,
               invoice_expires_at: Optional[int] = None) -> Verdict:
    """Check one HTLC part against our offer and its static invoice (the MPP total is checked by
    :class:`PartSet`)."""
    if offer.is_expired(now):
        return Verdict("fail", "the offer has expired")
    pre = records.get(KEYSEND_PREIMAGE)
    if pre is None or len(pre) != 32:
        return Verdict("fail", "no 32-byte sender preimage (TLV 5482373484)")
    if hashlib.sha256(pre).digest() != payment_hash:
        return Verdict("fail", "sha256(preimage) != payment_hash")
    raw_invreq = records.get(INVREQ_LDK, records.get(INVREQ_DRAFT))
    if raw_invreq is None:
        return Verdict("fail", "no invoice_request in the onion (TLV 77777 or 1)")
    try:
        invreq = InvoiceRequest.decode(raw_invreq)
    except DecodeError as e:
        return Verdict("fail", f"bad invoice_request: {e}")
    if invreq.offer_records().encode() != offer.stream.encode():
        return Verdict("fail", "invoice_request is for another offer")
    want = invreq.invreq_amount if invreq.invreq_amount is not None else offer.amount
    if want is None:
        return Verdict("fail", "invoice_request has no amount")
    if offer.amount is not None and want < offer.amount:  # BOLT 12: a payer may pay more, never less
        return Verdict("fail", f"invoice_request amount {want} msat below the offer's amount {offer.amount}")
    v = check_terms(records, path_data, want, invoice_expires_at, amount_msat, cltv_expiry, height, final_cltv, now,
                    "invoice_request")
    if v.action != "claim":
        return v
    return Verdict("claim", preimage=pre, total_msat=v.total_msat, invreq=invreq)


@dataclass
class PartSet:
    """The parts of one multi-part payment (same payment_hash), until their sum reaches the total."""

    total_msat: int
    first_seen: float
    parts: List[Part] = field(default_factory=list)

    def add(self, part: Part) -> bool:
        """Add a part; True once the parts together pay the total."""
        if all(p.htlc_id != part.htlc_id for p in self.parts):
            self.parts.append(part)
        return sum(p.amount_msat for p in self.parts) >= self.total_msat
