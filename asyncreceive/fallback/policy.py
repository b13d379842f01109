"""The online fallback's pure part: the invoice we answer a forwarded invoice_request with, and the bounds
on the records those invoices leave.

The invoice copies the invoice_request's records byte for byte (offer and invreq fields), adds our blinded
payment paths, the amount and payment hash, and is signed (tag ``lightning`` ``invoice`` ``signature``)
with the offer's key, whose public key is the offer's ``offer_issuer_id`` and so the invoice's
``invoice_node_id``.

Every invoice we issue leaves a record (its preimage, sealed; amount; offer; expiry; the payer's note)
that any payer can make us write, so the records are bounded (:func:`fallbacks_to_delete`): deleted
``KEEP_AFTER_EXPIRY`` after the invoice expires, at most ``MAX_PER_OFFER`` per offer and ``MAX_TOTAL``
in all (oldest out, but never one younger than ``MIN_AGE``: then the request is not answered), notes
cut to ``MAX_NOTE_BYTES``; and the shell answers at most ``ANSWER_BURST`` invoice_requests per (offer,
incoming peer) at once, then one per ``ANSWER_REFILL_SECONDS``, within a per-offer cap over all peers
(``ANSWER_OFFER_BURST``, ``ANSWER_OFFER_REFILL_SECONDS``).
"""

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

from coincurve import PrivateKey

from ..wire.bolt12.fields import BASIC_MPP_OPTIONAL, INVOICE_TABLE, TLV_SIGNATURE
from ..wire.bolt12.invoice_request import InvoiceRequest
from ..wire.bolt12.signature import is_signature_type, merkle_root, schnorr_sign, sighash
from ..wire.paths import BlindedPath, BlindedPayInfo
from ..wire.tlv import TlvStream, encode_tlv
from ..receiving.htlc import HTLC_GRACE

FALLBACK_INVOICE_LIFETIME = 7200
#: a record outlives its invoice by the HTLC grace plus the longest we hold an MPP part (60 s), rounded up
KEEP_AFTER_EXPIRY = HTLC_GRACE + 120
#: a phone is paid by a handful of payers at a time: 100 open invoices per offer, 1000 in all
MAX_PER_OFFER = 100
MAX_TOTAL = 1000
#: a record younger than this is never pushed out by newer ones (a payer pays within seconds of getting
#: its invoice): when the bounds are full of young records, a new invoice_request is not answered
MIN_AGE = 600
#: invoice_requests answered per (offer, incoming peer): a burst of 10, then one every 6 s (about what
#: one payer needs); and per offer over all peers: a burst of 60, then one a second
ANSWER_BURST = 10
ANSWER_REFILL_SECONDS = 6.0
ANSWER_OFFER_BURST = 60
ANSWER_OFFER_REFILL_SECONDS = 1.0


@dataclass(frozen=True)
class Issued:
    """What the expiry and eviction policy needs to know of one issued invoice."""

    offer_id: bytes
    expires_at: int
    issued_at: int = 0


def fallbacks_to_delete(issued: Mapping[bytes, Issued], now: int, admitting: Optional[bytes] = None,
                        per_offer: int = MAX_PER_OFFER, total: int = MAX_TOTAL, keep_after: int = KEEP_AFTER_EXPIRY,
                        min_age: int = MIN_AGE) -> Tuple[bool, List[bytes]]:
    """(may a new record of offer ``admitting`` be written, payment hashes whose records must go).

    Every record ``keep_after`` past its invoice's expiry goes.  Then, oldest first, records of an offer
    over ``per_offer`` and records over ``total`` go, counting the new one with ``admitting`` -- but only
    records at least ``min_age`` old: a payer pays within seconds of getting its invoice, so a young
    record is never pushed out by newer requests.  If the bounds cannot be met that way the new record is
    refused, and only what must go without it is returned.  Without ``admitting`` the answer is True."""
    doomed = [h for h, i in issued.items() if now > i.expires_at + keep_after]
    gone = set(doomed)
    live = sorted((i.issued_at, i.expires_at, h, i.offer_id) for h, i in issued.items() if h not in gone)
    if admitting is not None:
        evict = _over_bounds(live, now, admitting, per_offer, total, min_age)
        if evict is not None:
            return True, doomed + evict
    return admitting is None, doomed + (_over_bounds(live, now, None, per_offer, total, min_age) or [])


def _over_bounds(live, now: int, admitting: Optional[bytes], per_offer: int, total: int,
                 min_age: int) -> Optional[List[bytes]]:
    """Old-enough records (``live``: oldest first) to delete so that the bounds hold with one more of
    ``admitting``; None if they cannot with ``admitting`` (without, what can go goes)."""
    count: Dict[bytes, int] = {}
    for *_, o in live:
        count[o] = count.get(o, 0) + 1
    out, kept = [], []
    for at, _, h, o in live:
        old = now - at >= min_age
        if old and count[o] > per_offer - (o == admitting):
            count[o] -= 1
            out.append(h)
        else:
            kept.append((old, h))
    over = len(kept) - (total - (admitting is not None))
    evictable = [h for old, h in kept if old][:max(0, over)]
    if admitting is not None and (count.get(admitting, 0) >= per_offer or len(evictable) < over):
        return None
    return out + evictable


def build_invoice(invreq: InvoiceRequest, signing_key: bytes, payment_hash: bytes, amount_msat: int,
                  created_at: int, paths: List[BlindedPath], payinfos: List[BlindedPayInfo],
                  relative_expiry: int = FALLBACK_INVOICE_LIFETIME) -> bytes:
    recs = [(t, v) for t, v in invreq.stream.records if not is_signature_type(t)]
    values = {"invoice_paths": paths, "invoice_blindedpay": payinfos, "invoice_created_at": created_at,
              "invoice_relative_expiry": relative_expiry, "invoice_payment_hash": payment_hash,
              "invoice_amount": amount_msat, "invoice_features": BASIC_MPP_OPTIONAL,
              "invoice_node_id": PrivateKey(signing_key).public_key.format()}
    recs = sorted(recs + INVOICE_TABLE.records(values))
    sig = schnorr_sign(signing_key, sighash("invoice", "signature", merkle_root(TlvStream(tuple(recs)))))
    return encode_tlv(sorted(recs + [(TLV_SIGNATURE, sig)]))  # invreq records 1e9+ come after 240
