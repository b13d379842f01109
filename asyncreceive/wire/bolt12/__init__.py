"""BOLT 12 codecs, one module per message plus the shared parts (as LDK splits them):

- :mod:`.bech32`: the string form (bech32 without checksum, ``+`` continuations) and the prefixes;
- :mod:`.signature`: merkle root, tagged hash, ``sighash``, BIP-340 schnorr sign and verify;
- :mod:`.fields`: TLV type numbers, type ranges, feature bits, value codecs, the field tables
  (``OFFER_TABLE``, ``INVOICE_REQUEST_TABLE``, ``STATIC_INVOICE_TABLE``, ``INVOICE_TABLE``) and the
  field-checking helpers the decoders share;
- :mod:`.offer`: :class:`Offer` and the offer accessors every message carrying an offer shares;
- :mod:`.invoice_request`: :class:`InvoiceRequest` (parsed just enough for a static invoice server);
- :mod:`.invoice`: :class:`Invoice` and what it shares with a static invoice;
- :mod:`.static_invoice`: LDK's :class:`StaticInvoice`.

All pure: no I/O and no clock (callers pass ``now``).  Every decoder raises only
:class:`~asyncreceive.errors.DecodeError`, naming the field, e.g. ``offer.offer_paths`` or
``static_invoice[168]``.  Records are kept byte for byte (:class:`~asyncreceive.wire.tlv.TlvStream`): a
static invoice copies the offer's records exactly, unknown odd ones included, and the merkle root /
``offer_id`` is computed over those exact bytes.

New code imports from the modules (``from ..wire.bolt12.offer import Offer``).  This package re-exports,
for code written before the split, the names that were imported from ``wire.bolt12`` then (``__all__``).
"""

from .bech32 import HRP_INVOICE_REQUEST, HRP_OFFER, bech32_decode, bech32_encode
from .fields import (BASIC_MPP_OPTIONAL, BITCOIN_CHAIN, DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY, INVOICE_REQUEST_TABLE,
                     INVOICE_TABLE, TLV_INVOICE_PAYMENT_HASH, TLV_OFFER_ISSUER, TLV_SIGNATURE, feature_bits,
                     in_invreq_range)
from .invoice import Invoice
from .invoice_request import InvoiceRequest
from .offer import Offer
from .signature import is_signature_type, merkle_root, schnorr_sign, schnorr_verify, sighash, tagged_hash
from .static_invoice import StaticInvoice

__all__ = [
    "Offer", "InvoiceRequest", "Invoice", "StaticInvoice",
    "HRP_OFFER", "HRP_INVOICE_REQUEST", "bech32_encode", "bech32_decode",
    "tagged_hash", "merkle_root", "sighash", "schnorr_sign", "schnorr_verify", "is_signature_type",
    "feature_bits", "in_invreq_range", "BASIC_MPP_OPTIONAL", "BITCOIN_CHAIN", "DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY",
    "INVOICE_REQUEST_TABLE", "INVOICE_TABLE", "TLV_INVOICE_PAYMENT_HASH", "TLV_OFFER_ISSUER", "TLV_SIGNATURE",
]
