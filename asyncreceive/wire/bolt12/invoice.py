"""BOLT 12 invoices (type 66, a payee's answer to an invoice_request): :class:`Invoice`, and what it shares
with an LDK static invoice: :class:`InvoiceFields` (accessors of the invoice-range fields) and
:func:`check_invoice_records`.

Pure: no I/O and no clock.  The decoder raises only :class:`~asyncreceive.errors.DecodeError`, naming the
field, e.g. ``invoice.invoice_paths`` or ``invoice[241]``.
"""

from dataclasses import dataclass
from typing import Any, Dict

from ...errors import DecodeError
from ..records import Table
from ..tlv import TlvStream, decode_tlv
from .bech32 import HRP_INVOICE, bech32_encode
from .fields import (DEFAULT_INVOICE_RELATIVE_EXPIRY, DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY, INVOICE_REQUEST_TABLE,
                     INVOICE_TABLE, STATIC_INVOICE_TABLE, TLV_INVOICE_BLINDEDPAY, TLV_INVOICE_PATHS,
                     TLV_INVOICE_RELATIVE_EXPIRY, TLV_SIGNATURE, Value, check_fields, in_invoice_range, in_invreq_range,
                     in_offer_range, keep_decoded, namer)
from .offer import OfferFields, validate_offer_records
from .signature import is_signature_type, merkle_root, schnorr_verify, sighash


def check_invoice_records(recs: Dict[int, bytes], table: Table, field) -> Dict[int, Any]:
    """The invoice-range records of an invoice or a static invoice (``table``): required ones present,
    each readable by its codec, and one payinfo per payment path; their values, by type.  ``field(t)``
    names a record in errors."""
    values = check_fields(recs, table, field)
    paths, payinfos = values[TLV_INVOICE_PATHS], values[TLV_INVOICE_BLINDEDPAY]
    if len(payinfos) != len(paths):
        raise DecodeError(field(TLV_INVOICE_BLINDEDPAY), f"{len(payinfos)} payinfos for {len(paths)} payment paths")
    return values


class InvoiceFields(OfferFields):
    """Accessors shared by invoices and static invoices (validated at decode time: they do not raise)."""

    stream: TlvStream
    DEFAULT_RELATIVE_EXPIRY = DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY

    paths = Value(STATIC_INVOICE_TABLE, "invoice_paths")
    payinfos = Value(STATIC_INVOICE_TABLE, "invoice_blindedpay")
    created_at = Value(STATIC_INVOICE_TABLE, "invoice_created_at")
    node_id = Value(STATIC_INVOICE_TABLE, "invoice_node_id")

    @property
    def relative_expiry(self) -> int:
        v = self.stream.get(TLV_INVOICE_RELATIVE_EXPIRY)
        return self.DEFAULT_RELATIVE_EXPIRY if v is None else int.from_bytes(v, "big")

    @property
    def expires_at(self) -> int:
        return self.created_at + self.relative_expiry

    def encode(self) -> bytes:
        return self.stream.encode()

    def _verified(self, check_signature: bool, field: str):
        """Self, once its signature verifies (when asked); DecodeError naming ``field`` otherwise."""
        if check_signature and not self.verify_signature():
            raise DecodeError(field, "invalid signature")
        return self


_INV = "invoice"
_inv_field = namer(_INV, INVOICE_TABLE, INVOICE_REQUEST_TABLE)


@dataclass(frozen=True)
class Invoice(InvoiceFields):
    """A BOLT 12 invoice (onion message type 66), kept as its exact TLV records.

    ``decode`` applies the reader's rules that need nothing but the invoice (required fields, ranges,
    unknown even types and features, payinfo count, signature by ``invoice_node_id``).  Whether it
    answers *our* invoice_request, and is signed by the offer's issuer, is the payer's check
    (:func:`asyncreceive.paying.payer.check_invoice`).
    """

    stream: TlvStream
    DEFAULT_RELATIVE_EXPIRY = DEFAULT_INVOICE_RELATIVE_EXPIRY

    @staticmethod
    def decode(data: bytes, check_signature: bool = True) -> "Invoice":
        stream = decode_tlv(bytes(data), _INV, allow_unknown_even=True)
        recs = dict(stream.records)
        for t in stream.types():
            f = _inv_field(t)
            if not (in_invreq_range(t) or in_invoice_range(t) or is_signature_type(t)):
                raise DecodeError(f, "TLV type outside the invoice ranges")
            if (t % 2 == 0 and not in_offer_range(t) and INVOICE_TABLE.by_type(t) is None
                    and INVOICE_REQUEST_TABLE.by_type(t) is None):
                raise DecodeError(f, "unknown even TLV type")
        values = validate_offer_records(stream, _INV) if any(in_offer_range(t) for t in recs) else {}
        values.update(check_invoice_records(recs, INVOICE_TABLE, _inv_field))
        return keep_decoded(Invoice(stream), values)._verified(check_signature, _inv_field(TLV_SIGNATURE))

    def to_string(self) -> str:
        return bech32_encode(HRP_INVOICE, self.encode())

    def verify_signature(self) -> bool:
        return schnorr_verify(self.node_id, self.stream.get(TLV_SIGNATURE),
                              sighash("invoice", "signature", merkle_root(self.stream)))

    def invreq_records(self) -> TlvStream:
        """The invoice_request's records (offer fields included) as the invoice copied them, byte for byte."""
        return TlvStream(tuple((t, v) for t, v in self.stream.records if in_invreq_range(t)))

    payment_hash = Value(INVOICE_TABLE, "invoice_payment_hash")
    invoice_amount = Value(INVOICE_TABLE, "invoice_amount")
