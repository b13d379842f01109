"""LDK static invoices (async payments, onion message type 70): :class:`StaticInvoice`, kept as its exact
TLV records; it copies its offer's records byte for byte, unknown odd ones included.

Pure: no I/O and no clock (callers pass ``now``).  The decoder raises only
:class:`~asyncreceive.errors.DecodeError`, naming the field, e.g. ``static_invoice[168]``.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence

from ...errors import DecodeError
from ..paths import BlindedPath, BlindedPayInfo
from ..tlv import Record, TlvStream, decode_tlv, encode_tlv
from .fields import (STATIC_INVOICE_TABLE, TLV_INVOICE_AMOUNT, TLV_INVOICE_NODE_ID, TLV_INVOICE_PAYMENT_HASH,
                     TLV_OFFER_CHAINS, TLV_OFFER_ISSUER_ID, TLV_OFFER_PATHS, TLV_SIGNATURE, Value, in_invoice_range,
                     in_invreq_range, in_offer_range, keep_decoded, namer)
from .invoice import InvoiceFields, check_invoice_records
from .offer import Offer, OfferFields, validate_offer_records
from .signature import is_signature_type, merkle_root, schnorr_sign, schnorr_verify, sighash

_SI = "static_invoice"
_si_field = namer(_SI, STATIC_INVOICE_TABLE)


def _as_offer_stream(x) -> TlvStream:
    if isinstance(x, OfferFields):
        return x.offer_records()
    if isinstance(x, TlvStream):
        return TlvStream(tuple((t, v) for t, v in x.records if in_offer_range(t)))
    if isinstance(x, (bytes, bytearray)):
        s = decode_tlv(bytes(x), "offer_records", allow_unknown_even=True)
        return TlvStream(tuple((t, v) for t, v in s.records if in_offer_range(t)))
    return TlvStream(tuple((t, bytes(v)) for t, v in x if in_offer_range(t)))


@dataclass(frozen=True)
class StaticInvoice(InvoiceFields):
    """An LDK static invoice (onion message type 70), kept as its exact TLV records."""

    stream: TlvStream

    @staticmethod
    def decode(data: bytes, check_signature: bool = True) -> "StaticInvoice":
        stream = decode_tlv(bytes(data), _SI, allow_unknown_even=True)
        recs = dict(stream.records)
        for t in stream.types():
            f = _si_field(t)
            if t == TLV_INVOICE_PAYMENT_HASH:
                raise DecodeError(f"{_SI}[168]", "payment_hash not allowed in a static invoice")
            if t == TLV_INVOICE_AMOUNT:
                raise DecodeError(f"{_SI}[170]", "amount not allowed in a static invoice")
            if in_invreq_range(t) and not in_offer_range(t):
                raise DecodeError(f, "invoice_request field not allowed in a static invoice")
            if not (in_offer_range(t) or in_invoice_range(t) or is_signature_type(t)):
                raise DecodeError(f, "TLV type outside the static invoice ranges")
            if t % 2 == 0 and not in_offer_range(t) and STATIC_INVOICE_TABLE.by_type(t) is None:
                raise DecodeError(f, "unknown even TLV type")
        # offer part
        values = validate_offer_records(stream, _SI)
        if TLV_OFFER_PATHS not in recs:
            raise DecodeError(_si_field(TLV_OFFER_PATHS), "required in a static invoice")
        chains = recs.get(TLV_OFFER_CHAINS)
        if chains is not None and len(chains) > 32:
            raise DecodeError(_si_field(TLV_OFFER_CHAINS), "a static invoice allows at most one chain")
        # invoice part
        values.update(check_invoice_records(recs, STATIC_INVOICE_TABLE, _si_field))
        node_id = recs[TLV_INVOICE_NODE_ID]
        # signing key rule
        issuer_id = recs.get(TLV_OFFER_ISSUER_ID)
        if issuer_id is not None:
            if node_id != issuer_id:
                raise DecodeError(_si_field(TLV_INVOICE_NODE_ID), "does not equal offer_issuer_id")
        else:
            finals = {p.final_blinded_node_id for p in values[TLV_OFFER_PATHS]}
            if node_id not in finals:
                raise DecodeError(_si_field(TLV_INVOICE_NODE_ID),
                                  "no offer_issuer_id and not the final blinded node of any offer path")
        return keep_decoded(StaticInvoice(stream), values)._verified(check_signature, _si_field(TLV_SIGNATURE))

    @staticmethod
    def build(offer: Offer, payment_paths: Sequence[BlindedPath], payinfos: Sequence[BlindedPayInfo],
              created_at: int, relative_expiry: Optional[int], message_paths: Sequence[BlindedPath],
              features: bytes, signing_key: bytes, aux_randomness: Optional[bytes] = None) -> "StaticInvoice":
        """Build and sign a static invoice for ``offer`` (whose records are copied byte for byte).

        ``signing_key`` is the 32-byte secret whose public key is the invoice node_id (it must be the
        offer's issuer_id).  Raises ValueError (a DecodeError, for a result that would not decode).
        """
        from coincurve import PrivateKey
        if relative_expiry is not None and not 0 <= relative_expiry <= 0xFFFFFFFF:
            raise ValueError("relative_expiry must fit a u32")
        values = {"invoice_paths": list(payment_paths), "invoice_blindedpay": list(payinfos),
                  "invoice_created_at": created_at, "invoice_relative_expiry": relative_expiry,
                  "invoice_features": bytes(features) or None,
                  "invoice_node_id": PrivateKey(signing_key).public_key.format(),
                  "held_htlc_available_paths": list(message_paths)}
        recs: List[Record] = sorted(list(offer.offer_records().records) + STATIC_INVOICE_TABLE.records(values))
        digest = sighash("static_invoice", "signature", merkle_root(recs))
        recs.append((TLV_SIGNATURE, schnorr_sign(signing_key, digest, aux_randomness)))
        return StaticInvoice.decode(encode_tlv(sorted(recs)))

    # --- signature ---------------------------------------------------------------------------------
    def signature_digest(self) -> bytes:
        return sighash("static_invoice", "signature", merkle_root(self.stream))

    def verify_signature(self) -> bool:
        return schnorr_verify(self.node_id, self.signature, self.signature_digest())

    # --- fields ------------------------------------------------------------------------------------
    def is_expired(self, now: int) -> bool:
        """Expired once ``created_at + relative_expiry < now`` (LDK's rule)."""
        return self.expires_at < now

    fallbacks = Value(STATIC_INVOICE_TABLE, "invoice_fallbacks", [])
    features = Value(STATIC_INVOICE_TABLE, "invoice_features", b"")
    message_paths = Value(STATIC_INVOICE_TABLE, "held_htlc_available_paths")
    signature = Value(STATIC_INVOICE_TABLE, "signature")

    @property
    def offer(self) -> Offer:
        return Offer(self.offer_records())

    def offer_matches(self, other) -> bool:
        """True if ``other`` (an Offer, InvoiceRequest, StaticInvoice, TlvStream, TLV bytes or an iterable of
        (type, value)) carries exactly this invoice's offer records."""
        try:
            return _as_offer_stream(other) == self.offer_records()
        except DecodeError:
            return False
