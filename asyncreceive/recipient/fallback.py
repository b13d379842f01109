"""Online fallback: answer a forwarded invoice_request with a normal BOLT 12 invoice (pure).

When the recipient is online, the payer can get a regular invoice with a payment hash (and so proof of
payment) instead of paying the static invoice.  The invoice copies the invoice_request's records byte
for byte (offer and invreq fields), adds our blinded payment paths, the amount and payment hash, and is
signed (tag ``lightning`` ``invoice`` ``signature``) with the offer's key, whose public key is the
offer's ``offer_issuer_id`` and so the invoice's ``invoice_node_id``.

Every invoice we issue leaves a record (its preimage, sealed; amount; offer; expiry; the payer's note)
that any payer can make us write, so the records are bounded (:func:`fallbacks_to_delete`): deleted
``KEEP_AFTER_EXPIRY`` after the invoice expires, at most ``MAX_PER_OFFER`` per offer and ``MAX_TOTAL``
in all (oldest out), notes cut to ``MAX_NOTE_BYTES``; and the shell answers at most ``ANSWER_BURST``
invoice_requests per offer at once, then one per ``ANSWER_REFILL_SECONDS``.
"""

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

from coincurve import PrivateKey

from ..wire.bolt12 import (BASIC_MPP_OPTIONAL, InvoiceRequest, SIGNATURE, is_signature_type, merkle_root,
                           schnorr_sign, sighash)
from ..wire.paths import BlindedPath, BlindedPayInfo, encode_paths, encode_payinfos
from ..wire.tlv import TlvStream, encode_tlv, tu64

INVOICE_RELATIVE_EXPIRY = 7200
#: an HTLC may reach us this long after the invoice it pays expired: the payer sent it in time, and
#: each hop may take a while (a block's worth of minutes at most, in practice seconds)
HTLC_GRACE = 600
#: a record outlives its invoice by the HTLC grace plus the longest we hold an MPP part (60 s), rounded up
KEEP_AFTER_EXPIRY = HTLC_GRACE + 120
#: a phone is paid by a handful of payers at a time: 100 open invoices per offer, 1000 in all
MAX_PER_OFFER = 100
MAX_TOTAL = 1000
#: the payer's note is only shown to the operator (asyncreceive-listpayments)
MAX_NOTE_BYTES = 512
#: invoice_requests answered per offer: a burst of 10, then one every 6 s (about what one payer needs)
ANSWER_BURST = 10
ANSWER_REFILL_SECONDS = 6.0


@dataclass(frozen=True)
class Issued:
    """What the expiry and eviction policy needs to know of one issued invoice."""

    offer_id: bytes
    expires_at: int


def fallbacks_to_delete(issued: Mapping[bytes, Issued], now: int, admitting: Optional[bytes] = None,
                        per_offer: int = MAX_PER_OFFER, total: int = MAX_TOTAL,
                        keep_after: int = KEEP_AFTER_EXPIRY) -> List[bytes]:
    """Payment hashes whose records must go: every one ``keep_after`` past its invoice's expiry,
    then the oldest (earliest expiry) of an offer over ``per_offer``, then the oldest over ``total``.
    With ``admitting`` (an offer id), room is made for one more record of that offer."""
    doomed = [h for h, i in issued.items() if now > i.expires_at + keep_after]
    gone = set(doomed)
    live = sorted((i.expires_at, h, i.offer_id) for h, i in issued.items() if h not in gone)
    count: Dict[bytes, int] = {}
    for _, _, o in live:
        count[o] = count.get(o, 0) + 1
    kept = []
    for exp, h, o in live:  # oldest first: drop while the offer is over its bound
        limit = per_offer - (1 if o == admitting else 0)
        if count[o] > limit:
            count[o] -= 1
            doomed.append(h)
        else:
            kept.append(h)
    room = total - (1 if admitting is not None else 0)
    over = max(0, len(kept) - room)
    return doomed + kept[:over]


def cap_note(note: Optional[str], limit: int = MAX_NOTE_BYTES) -> Optional[str]:
    """The payer's note cut to ``limit`` UTF-8 bytes, never inside a character."""
    if note is None:
        return None
    return note.encode()[:limit].decode("utf-8", "ignore")


def build_invoice(invreq: InvoiceRequest, signing_key: bytes, payment_hash: bytes, amount_msat: int,
                  created_at: int, paths: List[BlindedPath], payinfos: List[BlindedPayInfo],
                  relative_expiry: int = INVOICE_RELATIVE_EXPIRY) -> bytes:
    recs = [(t, v) for t, v in invreq.stream.records if not is_signature_type(t)]
    recs += [(160, encode_paths(paths)), (162, encode_payinfos(payinfos)), (164, tu64(created_at)),
             (166, tu64(relative_expiry)), (168, payment_hash), (170, tu64(amount_msat)),
             (174, BASIC_MPP_OPTIONAL), (176, PrivateKey(signing_key).public_key.format())]
    recs.sort()
    sig = schnorr_sign(signing_key, sighash("invoice", "signature", merkle_root(TlvStream(tuple(recs)))))
    return encode_tlv(sorted(recs + [(SIGNATURE, sig)]))  # invreq records 1e9+ come after 240
