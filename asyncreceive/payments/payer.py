"""Payer side, pure parts: the invoice_request and the payment onion for a static invoice.

The onion goes over one of the invoice's blinded payment paths (the introduction node's layer is
encrypted to its real node id, the others to their blinded ids, as BOLT 4 route blinding says).  Its final hop carries, besides the
usual amount/cltv/encrypted data, the invoice_request (TLV 77777, as LDK) and a fresh sender preimage
(TLV 5482373484); the payment_hash is SHA256(preimage).  The blinded payinfo gives the fees and the
cltv delta of the whole path (the recipient's final delta included), so the final hop asks for
``outgoing_cltv_value = height`` and the HTLC entering the path carries ``height + payinfo.cltv``.
"""

import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

from coincurve import PrivateKey

from ..wire.bolt12 import InvoiceRequest, Offer, StaticInvoice, merkle_root, schnorr_sign, sighash
from ..wire.tlv import TlvStream, encode_tlv, tu64
from .receive import (AMT_TO_FORWARD, CURRENT_PATH_KEY, ENCRYPTED_RECIPIENT_DATA, INVREQ_LDK, KEYSEND_PREIMAGE,
                      OUTGOING_CLTV, TOTAL_AMOUNT)


def build_invoice_request(offer: Offer, amount_msat: int, payer_key: bytes, chain: Optional[bytes] = None,
                          payer_note: Optional[str] = None, metadata: Optional[bytes] = None) -> InvoiceRequest:
    """A signed invoice_request for ``offer``: its records copied, then metadata, chain, amount, payer id."""
    recs = [(0, metadata or os.urandom(16))] + list(offer.stream.records)
    if chain is not None:
        recs.append((80, chain))
    recs.append((82, tu64(amount_msat)))
    recs.append((88, PrivateKey(payer_key).public_key.format()))
    if payer_note is not None:
        recs.append((89, payer_note.encode()))
    recs.sort()
    sig = schnorr_sign(payer_key, sighash("invoice_request", "signature", merkle_root(TlvStream(tuple(recs)))))
    return InvoiceRequest.decode(encode_tlv(recs + [(240, sig)]))


@dataclass(frozen=True)
class PaymentOnion:
    hops: List[Tuple[bytes, bytes]]   # (sphinx pubkey, payload without length prefix), for createonion
    first_node_id: bytes              # the path's introduction node: our HTLC goes to it
    first_amount_msat: int
    first_cltv: int                   # absolute cltv_expiry of the HTLC we send to first_node_id


def build_payment_onion(invoice: StaticInvoice, invreq: InvoiceRequest, preimage: bytes, amount_msat: int,
                        height: int, path_index: int = 0, total_msat: Optional[int] = None) -> PaymentOnion:
    """The onion for one part of ``amount_msat`` (of ``total_msat``, for multi-part payments)."""
    path = invoice.paths[path_index]
    info = invoice.payinfos[path_index]
    if path.first_node_id is None:
        raise ValueError("payment path starts at a short_channel_id: resolve it first")
    hops = []
    for i, hop in enumerate(path.hops):
        recs = [(ENCRYPTED_RECIPIENT_DATA, hop.encrypted_recipient_data)]
        if i == 0:
            recs.append((CURRENT_PATH_KEY, path.first_path_key))
        if i == len(path.hops) - 1:
            recs += [(AMT_TO_FORWARD, tu64(amount_msat)), (OUTGOING_CLTV, tu64(height)),
                     (TOTAL_AMOUNT, tu64(total_msat or amount_msat)), (INVREQ_LDK, invreq.encode()),
                     (KEYSEND_PREIMAGE, preimage)]
        # the introduction node peels its layer with its real key (it learns the path key from TLV 12)
        hops.append((path.first_node_id if i == 0 else hop.blinded_node_id, encode_tlv(sorted(recs))))
    fee = info.fee_base_msat + (amount_msat * info.fee_proportional_millionths + 999_999) // 1_000_000
    return PaymentOnion(hops, path.first_node_id, amount_msat + fee, height + info.cltv_expiry_delta)
