"""Online fallback: answer a forwarded invoice_request with a normal BOLT 12 invoice (pure).

When the recipient is online, the payer can get a regular invoice with a payment hash (and so proof of
payment) instead of paying the static invoice.  The invoice copies the invoice_request's records byte
for byte (offer and invreq fields), adds our blinded payment paths, the amount and payment hash, and is
signed (tag ``lightning`` ``invoice`` ``signature``) with the offer's key, whose public key is the
offer's ``offer_issuer_id`` and so the invoice's ``invoice_node_id``.
"""

from typing import List

from coincurve import PrivateKey

from ..wire.bolt12 import (BASIC_MPP_OPTIONAL, InvoiceRequest, SIGNATURE, is_signature_type, merkle_root,
                           schnorr_sign, sighash)
from ..wire.paths import BlindedPath, BlindedPayInfo, encode_paths, encode_payinfos
from ..wire.tlv import TlvStream, encode_tlv, tu64

INVOICE_RELATIVE_EXPIRY = 7200


def build_invoice(invreq: InvoiceRequest, signing_key: bytes, payment_hash: bytes, amount_msat: int,
                  created_at: int, paths: List[BlindedPath], payinfos: List[BlindedPayInfo]) -> bytes:
    recs = [(t, v) for t, v in invreq.stream.records if not is_signature_type(t)]
    recs += [(160, encode_paths(paths)), (162, encode_payinfos(payinfos)), (164, tu64(created_at)),
             (166, tu64(INVOICE_RELATIVE_EXPIRY)), (168, payment_hash), (170, tu64(amount_msat)),
             (174, BASIC_MPP_OPTIONAL), (176, PrivateKey(signing_key).public_key.format())]
    recs.sort()
    sig = schnorr_sign(signing_key, sighash("invoice", "signature", merkle_root(TlvStream(tuple(recs)))))
    return encode_tlv(recs + [(SIGNATURE, sig)])
