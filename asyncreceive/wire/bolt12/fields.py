"""BOLT 12 fields: the TLV type numbers, the type ranges of each message, feature bits, the value codecs,
and the field tables (``OFFER_TABLE``, ``INVOICE_REQUEST_TABLE``, ``STATIC_INVOICE_TABLE``,
``INVOICE_TABLE``: :class:`~asyncreceive.wire.records.Table` rows of type number, name, codec, required).

Also the helpers every message's decoder shares: :func:`namer` (how a decoder names a record in its errors),
:func:`check_fields` (required fields present, each readable by its codec: their values) and :class:`Value`
(a field read from a message's records through its table, parsed once: the decoder hands its values to the
message with :func:`keep_decoded`, and a record read later is parsed at its first read).  The rules on ranges and between fields stay in each message's
``decode``.
"""

from typing import Any, Dict, Iterable, List, Tuple

from ...errors import DecodeError
from ..records import (BLINDED_PATHS, BLINDED_PAYINFOS, BYTES, POINT, SHA256, SIGNATURE, TU32, TU64, UTF8, Codec, Field,
                       Table, array, fixed_bytes, nonempty)
from ..tlv import Reader

# --------------------------------------------------------------------------------------------------
# Ranges, features, value codecs
# --------------------------------------------------------------------------------------------------

def feature_bits(features: bytes) -> List[int]:
    """Set bit numbers of a big-endian feature bitmap (bit 0 = least significant bit of the last byte)."""
    out = []
    n = len(features)
    for i, byte in enumerate(features):
        for j in range(8):
            if byte >> j & 1:
                out.append((n - 1 - i) * 8 + j)
    return sorted(out)


def _features(known_even: Iterable[int] = ()) -> Codec:
    """A feature bitmap in which every even (required) bit set is one of ``known_even``."""
    known = frozenset(known_even)

    def decode(value: bytes, field: str) -> bytes:
        for bit in feature_bits(value):
            if bit % 2 == 0 and bit not in known:
                raise DecodeError(field, f"unknown required feature bit {bit}")
        return value
    return Codec("features", bytes, decode)


def _nonzero(codec: Codec, why: str) -> Codec:
    def decode(value: bytes, field: str) -> int:
        n = codec.decode(value, field)
        if n == 0:
            raise DecodeError(field, why)
        return n
    return Codec(codec.name, codec.encode, decode)


def _decode_fallbacks(value: bytes, field: str) -> List[Tuple[int, bytes]]:
    r = Reader(value)
    out = []
    while not r.at_end():
        i = len(out)
        version = r.u8(f"{field}[{i}].version")
        n = r.u16(f"{field}[{i}].len")
        out.append((version, r.read(n, f"{field}[{i}].address")))
    return out


_FALLBACKS = Codec("fallback_address[]",
                   lambda fs: b"".join(bytes([v]) + len(a).to_bytes(2, "big") + a for v, a in fs),
                   _decode_fallbacks)


def in_offer_range(t: int) -> bool:
    return 1 <= t <= 79 or 1_000_000_000 <= t <= 1_999_999_999


def in_invreq_range(t: int) -> bool:
    return 0 <= t <= 159 or 1_000_000_000 <= t <= 2_999_999_999


def in_invoice_range(t: int) -> bool:
    return 160 <= t <= 239 or 3_000_000_000 <= t <= 3_999_999_999


# --------------------------------------------------------------------------------------------------
# The field tables: every BOLT 12 type number, its name and value codec, in one place.  A message is
# kept as its exact records (TlvStream); the tables say how each known record reads, which ones are
# required, and name the fields in errors.  Which ranges a message may carry, and the rules between
# fields, are in each class's ``decode``.
# --------------------------------------------------------------------------------------------------

TLV_OFFER_CHAINS = 2
TLV_OFFER_METADATA = 4
TLV_OFFER_CURRENCY = 6
TLV_OFFER_AMOUNT = 8
TLV_OFFER_DESCRIPTION = 10
TLV_OFFER_FEATURES = 12
TLV_OFFER_ABSOLUTE_EXPIRY = 14
TLV_OFFER_PATHS = 16
TLV_OFFER_ISSUER = 18
TLV_OFFER_QUANTITY_MAX = 20
TLV_OFFER_ISSUER_ID = 22

TLV_INVREQ_METADATA = 0
TLV_INVREQ_CHAIN = 80
TLV_INVREQ_AMOUNT = 82
TLV_INVREQ_FEATURES = 84
TLV_INVREQ_QUANTITY = 86
TLV_INVREQ_PAYER_ID = 88
TLV_INVREQ_PAYER_NOTE = 89
TLV_INVREQ_PATHS = 90
TLV_INVREQ_BIP_353_NAME = 91

TLV_INVOICE_PATHS = 160
TLV_INVOICE_BLINDEDPAY = 162
TLV_INVOICE_CREATED_AT = 164
TLV_INVOICE_RELATIVE_EXPIRY = 166
TLV_INVOICE_PAYMENT_HASH = 168
TLV_INVOICE_AMOUNT = 170
TLV_INVOICE_FALLBACKS = 172
TLV_INVOICE_FEATURES = 174
TLV_INVOICE_NODE_ID = 176
TLV_INVOICE_HELD_HTLC_PATHS = 236
TLV_SIGNATURE = 240

#: invoice feature bits a reader understands as required (basic_mpp)
KNOWN_INVOICE_EVEN_FEATURES = (16,)
BASIC_MPP_OPTIONAL = bytes.fromhex("020000")  # bit 17

_PATHS_NONEMPTY = nonempty(BLINDED_PATHS, "empty list of blinded paths")
_SIGNATURE_FIELD = Field(TLV_SIGNATURE, "signature", SIGNATURE, required=True)

OFFER_TABLE = Table("offer", [
    Field(TLV_OFFER_CHAINS, "offer_chains", array(32, "must be a non-empty list of 32-byte chain hashes")),
    Field(TLV_OFFER_METADATA, "offer_metadata", BYTES),
    Field(TLV_OFFER_CURRENCY, "offer_currency", UTF8),
    Field(TLV_OFFER_AMOUNT, "offer_amount", _nonzero(TU64, "amount must not be zero")),
    Field(TLV_OFFER_DESCRIPTION, "offer_description", UTF8),
    Field(TLV_OFFER_FEATURES, "offer_features", _features()),
    Field(TLV_OFFER_ABSOLUTE_EXPIRY, "offer_absolute_expiry", TU64),
    Field(TLV_OFFER_PATHS, "offer_paths", _PATHS_NONEMPTY),
    Field(TLV_OFFER_ISSUER, "offer_issuer", UTF8),
    Field(TLV_OFFER_QUANTITY_MAX, "offer_quantity_max", TU64),
    Field(TLV_OFFER_ISSUER_ID, "offer_issuer_id", POINT),
])

#: the invoice_request's own fields (an invoice_request also carries the offer's)
INVOICE_REQUEST_TABLE = Table("invoice_request", [
    Field(TLV_INVREQ_METADATA, "invreq_metadata", BYTES, required=True),
    Field(TLV_INVREQ_CHAIN, "invreq_chain", fixed_bytes(32)),
    Field(TLV_INVREQ_AMOUNT, "invreq_amount", TU64),
    Field(TLV_INVREQ_FEATURES, "invreq_features", _features()),
    Field(TLV_INVREQ_QUANTITY, "invreq_quantity", TU64),
    Field(TLV_INVREQ_PAYER_ID, "invreq_payer_id", POINT, required=True),
    Field(TLV_INVREQ_PAYER_NOTE, "invreq_payer_note", UTF8),
    Field(TLV_INVREQ_PATHS, "invreq_paths", _PATHS_NONEMPTY),
    Field(TLV_INVREQ_BIP_353_NAME, "invreq_bip_353_name", BYTES),
    _SIGNATURE_FIELD,
])

#: the invoice-range fields an invoice and a static invoice share
_INVOICE_FIELDS = [
    Field(TLV_INVOICE_PATHS, "invoice_paths", nonempty(BLINDED_PATHS, "empty list of payment paths"), required=True),
    Field(TLV_INVOICE_BLINDEDPAY, "invoice_blindedpay", BLINDED_PAYINFOS, required=True),
    Field(TLV_INVOICE_CREATED_AT, "invoice_created_at", TU64, required=True),
    Field(TLV_INVOICE_RELATIVE_EXPIRY, "invoice_relative_expiry", TU32),
    Field(TLV_INVOICE_FALLBACKS, "invoice_fallbacks", _FALLBACKS),
    Field(TLV_INVOICE_FEATURES, "invoice_features", _features(KNOWN_INVOICE_EVEN_FEATURES)),
    Field(TLV_INVOICE_NODE_ID, "invoice_node_id", POINT, required=True),
    _SIGNATURE_FIELD,
]

#: an LDK static invoice's own fields (it also carries the offer's; no invoice_request fields)
STATIC_INVOICE_TABLE = Table("static_invoice", _INVOICE_FIELDS + [
    Field(TLV_INVOICE_HELD_HTLC_PATHS, "held_htlc_available_paths", BLINDED_PATHS, required=True),
])

#: a BOLT 12 invoice's own fields (it also carries the invoice_request's, offer's included)
INVOICE_TABLE = Table("invoice", _INVOICE_FIELDS + [
    Field(TLV_INVOICE_PAYMENT_HASH, "invoice_payment_hash", SHA256, required=True),
    Field(TLV_INVOICE_AMOUNT, "invoice_amount", TU64, required=True),
])

BITCOIN_CHAIN = bytes.fromhex("6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000")
DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY = 1_209_600  # 14 days
#: BOLT 12: invoice_relative_expiry defaults to 7200 seconds
DEFAULT_INVOICE_RELATIVE_EXPIRY = 7200


def namer(prefix: str, *tables: Table):
    """``t -> "prefix.name"`` from the first of ``tables`` (then the offer's) that has ``t``, else
    ``"prefix[t]"``: how a message's decoder names a record in its errors."""
    def name(t: int) -> str:
        for table in (*tables, OFFER_TABLE):
            f = table.by_type(t)
            if f is not None:
                return f"{prefix}.{f.name}"
        return f"{prefix}[{t}]"
    return name


def check_fields(recs: Dict[int, bytes], table: Table, name) -> Dict[int, Any]:
    """``table``'s required fields are in ``recs``, and each of its fields there reads with its codec:
    their values, by type."""
    for f in table.fields:
        if f.required and f.type not in recs:
            raise DecodeError(name(f.type), "required field missing")
    return {f.type: f.codec.decode(recs[f.type], name(f.type)) for f in table.fields if f.type in recs}


#: where a message keeps its records' parsed values (by type), beside its frozen fields
_DECODED = "_decoded"


def keep_decoded(message, values: Dict[int, Any]):
    """``message``, its accessors given the values its decoder parsed (so no record is parsed again)."""
    message.__dict__.setdefault(_DECODED, {}).update(values)
    return message


class Value:
    """A field read from ``self.stream`` with its table's codec (checked at decode time, so this does
    not raise), parsed once per message; ``default`` when the record is absent.  A list comes as a copy
    (a caller may change it)."""

    def __init__(self, table: Table, name: str, default=None):
        self.field = table.field(name)
        self.where = f"{table.name}.{name}"
        self.default = default

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        decoded = obj.__dict__.get(_DECODED)
        if decoded is None:
            decoded = obj.__dict__[_DECODED] = {}
        t = self.field.type
        if t not in decoded:
            raw = obj.stream.get(t)
            decoded[t] = None if raw is None else self.field.codec.decode(raw, self.where)
        v = decoded[t]
        if v is None:
            v = self.default
        return list(v) if isinstance(v, list) else v
