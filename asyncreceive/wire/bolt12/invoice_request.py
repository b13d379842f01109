"""BOLT 12 invoice_requests: :class:`InvoiceRequest`, parsed just enough for a static invoice server and
kept as its exact TLV records.

Pure: no I/O.  The decoder raises only :class:`~asyncreceive.errors.DecodeError`, naming the field, e.g.
``invoice_request.invreq_payer_id``.
"""

from dataclasses import dataclass

from ...errors import DecodeError
from ..tlv import TlvStream, decode_tlv
from .bech32 import HRP_INVOICE_REQUEST, bech32_decode
from .fields import (INVOICE_REQUEST_TABLE, TLV_SIGNATURE, Value, check_fields, in_invreq_range, in_offer_range,
                     keep_decoded, namer)
from .offer import OfferFields, validate_offer_records
from .signature import is_signature_type, merkle_root, schnorr_verify, sighash

_IR = "invoice_request"
_ir_field = namer(_IR, INVOICE_REQUEST_TABLE)


@dataclass(frozen=True)
class InvoiceRequest(OfferFields):
    """A BOLT 12 invoice_request, parsed just enough for a static invoice server."""

    stream: TlvStream

    @staticmethod
    def decode(data: bytes, check_signature: bool = True) -> "InvoiceRequest":
        stream = decode_tlv(bytes(data), _IR, allow_unknown_even=True)
        recs = dict(stream.records)
        for t in stream.types():
            f = _ir_field(t)
            if not (in_invreq_range(t) or is_signature_type(t)):
                raise DecodeError(f, "TLV type outside the invoice_request ranges")
            if t % 2 == 0 and not in_offer_range(t) and INVOICE_REQUEST_TABLE.by_type(t) is None:
                raise DecodeError(f, "unknown even TLV type")
        values = validate_offer_records(stream, _IR) if any(in_offer_range(t) for t in recs) else {}
        values.update(check_fields(recs, INVOICE_REQUEST_TABLE, _ir_field))
        ir = keep_decoded(InvoiceRequest(stream), values)
        if check_signature and not ir.verify_signature():
            raise DecodeError(_ir_field(TLV_SIGNATURE), "invalid signature")
        return ir

    @staticmethod
    def from_string(s: str, check_signature: bool = True) -> "InvoiceRequest":
        _, data = bech32_decode(s, HRP_INVOICE_REQUEST, "invoice_request.string")
        return InvoiceRequest.decode(data, check_signature)

    def encode(self) -> bytes:
        return self.stream.encode()

    def signature_digest(self) -> bytes:
        return sighash("invoice_request", "signature", merkle_root(self.stream))

    def verify_signature(self) -> bool:
        return schnorr_verify(self.payer_id, self.signature, self.signature_digest())

    invreq_metadata = Value(INVOICE_REQUEST_TABLE, "invreq_metadata")
    chain = Value(INVOICE_REQUEST_TABLE, "invreq_chain")
    invreq_amount = Value(INVOICE_REQUEST_TABLE, "invreq_amount")
    quantity = Value(INVOICE_REQUEST_TABLE, "invreq_quantity")
    payer_id = invreq_payer_id = Value(INVOICE_REQUEST_TABLE, "invreq_payer_id")
    payer_note = invreq_payer_note = Value(INVOICE_REQUEST_TABLE, "invreq_payer_note")
    signature = Value(INVOICE_REQUEST_TABLE, "signature")
