"""BOLT 12 offers: :class:`Offer`, kept as its exact TLV records, and what every message carrying an offer's
records shares: :class:`OfferFields` (the offer's accessors and ``offer_id``) and
:func:`validate_offer_records`.

Pure: no I/O and no clock (callers pass ``now``).  Decoders raise only
:class:`~asyncreceive.errors.DecodeError`, naming the field, e.g. ``offer.offer_paths``.
"""

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence

from ...errors import DecodeError
from ..paths import BlindedPath
from ..tlv import Record, TlvStream, decode_tlv, encode_tlv
from .bech32 import HRP_OFFER, bech32_decode, bech32_encode
from .fields import (OFFER_TABLE, TLV_OFFER_AMOUNT, TLV_OFFER_CURRENCY, TLV_OFFER_DESCRIPTION, TLV_OFFER_ISSUER_ID,
                     TLV_OFFER_PATHS, Value, in_offer_range, keep_decoded, namer)


def validate_offer_records(stream: TlvStream, prefix: str, require_id_or_paths: bool = True) -> Dict[int, Any]:
    """Check the offer-range records of ``stream`` (other records are ignored): their values, by type."""
    recs = {t: v for t, v in stream.records if in_offer_range(t)}
    name = namer(prefix)
    values = {}
    for t, v in recs.items():
        f = OFFER_TABLE.by_type(t)
        if f is not None:
            values[t] = f.codec.decode(v, name(t))
        elif t % 2 == 0:
            raise DecodeError(name(t), "unknown even offer field")
    if TLV_OFFER_AMOUNT in recs and TLV_OFFER_DESCRIPTION not in recs:
        raise DecodeError(name(TLV_OFFER_DESCRIPTION), "required when offer_amount is set")
    if TLV_OFFER_CURRENCY in recs and TLV_OFFER_AMOUNT not in recs:
        raise DecodeError(name(TLV_OFFER_AMOUNT), "required when offer_currency is set")
    if require_id_or_paths and TLV_OFFER_ISSUER_ID not in recs and TLV_OFFER_PATHS not in recs:
        raise DecodeError(name(TLV_OFFER_ISSUER_ID), "neither offer_issuer_id nor offer_paths set")
    return values


class OfferFields:
    """Accessors for the offer records of a TLV stream (shared by Offer, StaticInvoice, InvoiceRequest).

    Values are validated at decode time, so these do not raise.
    """

    stream: TlvStream

    chains = Value(OFFER_TABLE, "offer_chains", [])
    metadata = Value(OFFER_TABLE, "offer_metadata")
    currency = Value(OFFER_TABLE, "offer_currency")
    amount = Value(OFFER_TABLE, "offer_amount")
    description = Value(OFFER_TABLE, "offer_description")
    offer_features = Value(OFFER_TABLE, "offer_features", b"")
    absolute_expiry = Value(OFFER_TABLE, "offer_absolute_expiry")
    offer_paths = Value(OFFER_TABLE, "offer_paths", [])
    issuer = Value(OFFER_TABLE, "offer_issuer")
    quantity_max = Value(OFFER_TABLE, "offer_quantity_max")
    issuer_id = Value(OFFER_TABLE, "offer_issuer_id")

    def offer_records(self) -> TlvStream:
        """The offer-range records (1..79, 1e9..1999999999), byte for byte."""
        return TlvStream(tuple((t, v) for t, v in self.stream.records if in_offer_range(t)))

    @property
    def offer_id(self) -> bytes:
        """SHA256 of the offer-range records, as lightningd computes it (``decode`` shows the same id).

        The same for an offer, a static invoice made from it and an invoice_request for it.
        """
        return hashlib.sha256(self.offer_records().encode()).digest()

    def offer_is_expired(self, now: int) -> bool:
        exp = self.absolute_expiry
        return exp is not None and now > exp


@dataclass(frozen=True)
class Offer(OfferFields):
    """A BOLT 12 offer, kept as its exact TLV records."""

    stream: TlvStream

    # --- decoding / encoding ---------------------------------------------------------------------
    @staticmethod
    def decode(data: bytes, field: str = "offer") -> "Offer":
        stream = decode_tlv(bytes(data), field, allow_unknown_even=True)
        for t in stream.types():
            if not in_offer_range(t):
                raise DecodeError(f"{field}[{t}]", "TLV type outside the offer ranges")
        return keep_decoded(Offer(stream), validate_offer_records(stream, field))

    @staticmethod
    def from_string(s: str) -> "Offer":
        _, data = bech32_decode(s, HRP_OFFER, "offer.string")
        return Offer.decode(data)

    def encode(self) -> bytes:
        return self.stream.encode()

    def to_string(self, split: Optional[int] = None) -> str:
        return bech32_encode(HRP_OFFER, self.encode(), split)

    def __str__(self) -> str:
        return self.to_string()

    # --- building ----------------------------------------------------------------------------------
    @staticmethod
    def build(issuer_id: Optional[bytes], paths: Sequence[BlindedPath], absolute_expiry: Optional[int] = None,
              chains: Optional[Sequence[bytes]] = None, description: Optional[str] = None,
              amount: Optional[int] = None, extra_records: Iterable[Record] = ()) -> "Offer":
        """Build (and validate) an offer.  ``extra_records`` are added as-is (e.g. unknown odd types)."""
        values = {"offer_chains": list(chains) if chains else None, "offer_amount": amount,
                  "offer_description": description, "offer_absolute_expiry": absolute_expiry,
                  "offer_paths": list(paths) if paths else None, "offer_issuer_id": issuer_id}
        recs = dict(OFFER_TABLE.records(values))
        for t, v in extra_records:
            if t in recs:
                raise ValueError(f"duplicate record {t}")
            recs[t] = v
        return Offer.decode(encode_tlv(sorted(recs.items())))

    # --- convenience -------------------------------------------------------------------------------
    @property
    def features(self) -> bytes:
        return self.offer_features

    @property
    def paths(self) -> List[BlindedPath]:
        return self.offer_paths

    def is_expired(self, now: int) -> bool:
        return self.offer_is_expired(now)
