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

from ..crypto.sphinx import hop_size
from ..errors import DecodeError
from ..wire.bolt12.fields import INVOICE_REQUEST_TABLE, TLV_SIGNATURE, in_invreq_range
from ..wire.bolt12.invoice import Invoice
from ..wire.bolt12.invoice_request import InvoiceRequest
from ..wire.bolt12.offer import Offer
from ..wire.bolt12.signature import merkle_root, schnorr_sign, sighash
from ..wire.bolt12.static_invoice import StaticInvoice
from ..wire.paths import BlindedPayInfo
from ..wire.tlv import TlvStream, encode_tlv
from ..wire.payment_hop import PAYMENT_HOP_TABLE


def build_invoice_request(offer: Offer, amount_msat: Optional[int], payer_key: bytes, chain: Optional[bytes] = None,
                          payer_note: Optional[str] = None, metadata: Optional[bytes] = None) -> InvoiceRequest:
    """A signed invoice_request for ``offer``: its records copied, then metadata, chain, amount (None: left
    out, as BOLT 12 allows for an offer with an amount), payer id."""
    values = {"invreq_metadata": metadata or os.urandom(16), "invreq_chain": chain, "invreq_amount": amount_msat,
              "invreq_payer_id": PrivateKey(payer_key).public_key.format(), "invreq_payer_note": payer_note}
    recs = sorted(list(offer.stream.records) + INVOICE_REQUEST_TABLE.records(values))
    sig = schnorr_sign(payer_key, sighash("invoice_request", "signature", merkle_root(TlvStream(tuple(recs)))))
    return InvoiceRequest.decode(encode_tlv(sorted(recs + [(TLV_SIGNATURE, sig)])))  # offer records 1e9+ come after 240


#: a payment onion's routing info (BOLT 4): every hop's payload, length and HMAC must fit in it
PAYMENT_ONION_SIZE = 1300


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
        values = {"encrypted_recipient_data": hop.encrypted_recipient_data}
        if i == 0:
            values["current_path_key"] = path.first_path_key
        if i == len(path.hops) - 1:
            values.update(amt_to_forward=amount_msat, outgoing_cltv_value=height,
                          total_amount_msat=total_msat or amount_msat, invoice_request=invreq.encode(),
                          sender_preimage=preimage)
        # the introduction node peels its layer with its real key (it learns the path key from TLV 12)
        hops.append((path.first_node_id if i == 0 else hop.blinded_node_id, PAYMENT_HOP_TABLE.encode(values)))
    need = sum(hop_size(payload) for _, payload in hops)
    if need > PAYMENT_ONION_SIZE:
        raise ValueError(f"the payment onion needs {need} bytes, more than {PAYMENT_ONION_SIZE}: this path has "
                         f"{len(path.hops)} blinded hops and our invoice_request is {len(invreq.encode())} bytes "
                         "(a shorter payer_note may fit)")
    return PaymentOnion(hops, path.first_node_id, amount_msat + path_fee(info, amount_msat), height + info.cltv_expiry_delta)


# ---- what a payer must check before paying (BOLT 12 "reader of an invoice"; LDK's static-invoice rules) ----

def _issuer_signed(node_id: bytes, offer: Offer) -> bool:
    """The invoice is signed by the offer's issuer: ``offer_issuer_id``, or when the offer has none, the
    final blinded node of one of its paths (the node our invoice_request went to)."""
    if offer.issuer_id is not None:
        return node_id == offer.issuer_id
    return any(node_id == p.final_blinded_node_id for p in offer.paths)


def check_invoice(raw: bytes, offer: Offer, invreq: InvoiceRequest, amount_msat: int, now: int) -> Invoice:
    """A payee's invoice (type 66) that we may pay, or DecodeError saying why not.

    ``decode`` checks the signature against the invoice's own ``invoice_node_id``; anyone who saw our
    invoice_request (e.g. the static invoice server) could make such an invoice with its own key and
    payment hash.  So, as BOLT 12 asks of a payer: the signer must be the offer's issuer, the invoice
    must copy our invoice_request's records byte for byte, and amount and expiry must be as asked.
    """
    inv = Invoice.decode(raw)
    if not _issuer_signed(inv.node_id, offer):
        raise DecodeError("invoice.invoice_node_id", "not the offer's issuer")
    ours = TlvStream(tuple((t, v) for t, v in invreq.stream.records if in_invreq_range(t)))
    if inv.invreq_records() != ours:
        raise DecodeError("invoice", "its invoice_request records are not those we sent")
    if inv.invoice_amount != amount_msat:
        raise DecodeError("invoice.invoice_amount", f"{inv.invoice_amount} msat, we asked {amount_msat}")
    if inv.expires_at <= now:
        raise DecodeError("invoice", f"expired at {inv.expires_at}")
    return inv


def check_static_invoice(raw: bytes, offer: Offer, now: int) -> StaticInvoice:
    """A static invoice we may pay: for exactly this offer (records byte for byte), unexpired, and signed
    by the offer's issuer (the decoder checks signer and signature)."""
    inv = StaticInvoice.decode(raw)
    if inv.offer_records() != offer.stream:
        raise DecodeError("static_invoice", "not for the offer we asked")
    if inv.is_expired(now):
        raise DecodeError("static_invoice", "expired")
    return inv


@dataclass(frozen=True)
class PayLimits:
    """Fee and delay caps, as lightningd's ``pay`` has them: a fee is fine up to ``exemptfee_msat`` or
    ``maxfeepercent`` of the amount; ``maxfee_msat``, when given, replaces both; the HTLC's delay (the
    blocks the path asks for) at most ``maxdelay``."""

    maxfeepercent: float = 0.5
    exemptfee_msat: int = 5000
    maxfee_msat: Optional[int] = None
    maxdelay: int = 2016

    def max_fee(self, amount_msat: int) -> int:
        if self.maxfee_msat is not None:
            return self.maxfee_msat
        return max(self.exemptfee_msat, int(amount_msat * self.maxfeepercent / 100))


def path_order(n_paths: int, attempt: int) -> List[int]:
    """The order in which try number ``attempt`` (1 for the first) sends on an offer's ``n_paths``
    paths: each try starts one path further, so that retries reach every path's server even when the
    send on one succeeds but its server never answers (the others are fallbacks for a send that fails)."""
    return [(attempt - 1 + i) % n_paths for i in range(n_paths)]


def path_fee(info: BlindedPayInfo, amount_msat: int) -> int:
    """The blinded path's fee for ``amount_msat`` (proportional part rounded up, as BOLT 4 says)."""
    return info.fee_base_msat + (amount_msat * info.fee_proportional_millionths + 999_999) // 1_000_000


def usable_paths(invoice: StaticInvoice, amount_msat: int, max_fee_msat: int, max_delay: int) -> Tuple[List[int], str]:
    """Indices of the invoice's payment paths within the caps, cheapest first, and why the others are not."""
    ok, why = [], []
    for i, info in enumerate(invoice.payinfos):
        fee = path_fee(info, amount_msat)
        if fee > max_fee_msat:
            why.append(f"path {i}: fee {fee} msat over the limit {max_fee_msat} msat")
        elif info.cltv_expiry_delta > max_delay:
            why.append(f"path {i}: delay {info.cltv_expiry_delta} blocks over the limit {max_delay}")
        elif not info.htlc_minimum_msat <= amount_msat + fee <= max(info.htlc_maximum_msat, info.htlc_minimum_msat):
            why.append(f"path {i}: amount outside its htlc range {info.htlc_minimum_msat}-{info.htlc_maximum_msat}")
        else:
            ok.append(i)
    ok.sort(key=lambda i: path_fee(invoice.payinfos[i], amount_msat))
    return ok, "; ".join(why)
