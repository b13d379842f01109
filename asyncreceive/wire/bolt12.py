"""BOLT 12 codecs: the bech32 string form, the merkle tree and signatures, offers, LDK static invoices,
and a minimal ``invoice_request`` parser.

Pure: no I/O and no clock (callers pass ``now``).  Every decoder raises only
:class:`~asyncreceive.errors.DecodeError`, naming the field, e.g. ``offer.offer_paths`` or
``static_invoice[168]``.

Records are kept byte for byte (:class:`~asyncreceive.wire.tlv.TlvStream`): a static invoice copies the
offer's records exactly, unknown odd ones included, and the merkle root / ``offer_id`` is computed over
those exact bytes.

Each message's fields are declared once, as :class:`~asyncreceive.wire.records.Table` rows (type number,
name, value codec, required): ``OFFER_TABLE``, ``INVOICE_REQUEST_TABLE``, ``STATIC_INVOICE_TABLE`` and
``INVOICE_TABLE``.  The decoders check each known record with its codec, name fields from the tables and
read values through them; the rules on ranges and between fields stay in each class's ``decode``.
"""

import hashlib
import string
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from pyln.proto.bech32 import CHARSET, convertbits

from ..errors import DecodeError
from .paths import BlindedPath, BlindedPayInfo, decode_paths, decode_payinfos
from .records import (BLINDED_PATHS, BLINDED_PAYINFOS, BYTES, POINT, SHA256, SIGNATURE, TU32, TU64, UTF8, Codec, Field,
                      Table, array, fixed_bytes, nonempty)
from .tlv import Reader, Record, TlvStream, bigsize, decode_tlv, encode_record, encode_tlv

# --------------------------------------------------------------------------------------------------
# bech32 without checksum, with '+' continuations
# --------------------------------------------------------------------------------------------------

HRP_OFFER = "lno"
HRP_INVOICE_REQUEST = "lnr"
HRP_INVOICE = "lni"

_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_WHITESPACE = frozenset(string.whitespace)


def bech32_encode(hrp: str, data: bytes, split: Optional[int] = None) -> str:
    """BOLT 12 string form: ``hrp || '1' || bech32(data)``, no checksum, lower case.

    With ``split``, a ``+`` followed by a newline is inserted every ``split`` data characters (readers
    must accept that form).
    """
    if not hrp or any(c not in string.ascii_lowercase + string.digits for c in hrp) or "1" in hrp:
        raise ValueError(f"bad hrp {hrp!r}")
    five = convertbits(data, 8, 5, True)
    body = "".join(CHARSET[d] for d in five)
    if split:
        if split < 1:
            raise ValueError("split must be positive")
        body = "+\n".join(body[i:i + split] for i in range(0, len(body), split))
    return hrp + "1" + body


def _join_continuations(s: str, field: str) -> str:
    """Remove ``+`` continuations: every ``+`` must sit between two bech32 characters, optionally with
    whitespace after it."""
    parts = s.split("+")
    out = []
    for i, part in enumerate(parts):
        if i > 0:
            part = part.lstrip(string.whitespace)
        if not part:
            raise DecodeError(field, "'+' must be surrounded by bech32 characters")
        if i < len(parts) - 1 and part[-1] in _WHITESPACE:
            raise DecodeError(field, "'+' must be surrounded by bech32 characters")
        out.append(part)
    return "".join(out)


def bech32_decode(s: str, expected_hrp: Optional[str] = None, field: str = "bolt12") -> Tuple[str, bytes]:
    """Decode a BOLT 12 string to ``(hrp, bytes)``.

    Accepts ``+`` joins (optionally followed by whitespace) and all-upper or all-lower case; rejects
    mixed case, characters outside the bech32 set, and padding of 5+ bits or with non-zero bits.
    """
    if not isinstance(s, str):
        raise DecodeError(field, "not a string")
    if not s.isascii():  # before any case handling: e.g. U+212A KELVIN SIGN lower-cases to 'k'
        raise DecodeError(field, "non-ASCII character")
    joined = _join_continuations(s, field)
    if joined != joined.lower() and joined != joined.upper():
        raise DecodeError(field, "mixed case")
    joined = joined.lower()
    pos = joined.rfind("1")
    if pos < 1:
        raise DecodeError(field, "missing hrp or '1' separator")
    hrp, body = joined[:pos], joined[pos + 1:]
    if any(not (33 <= ord(c) <= 126) for c in hrp):
        raise DecodeError(field, "invalid character in hrp")
    if expected_hrp is not None and hrp != expected_hrp:
        raise DecodeError(field, f"expected prefix {expected_hrp!r}, got {hrp!r}")
    try:
        five = [_CHARSET_INDEX[c] for c in body]
    except KeyError as e:
        raise DecodeError(field, f"invalid bech32 character {e.args[0]!r}")
    eight = convertbits(five, 5, 8, False)
    if eight is None:
        raise DecodeError(field, "invalid bech32 padding")
    return hrp, bytes(eight)


# --------------------------------------------------------------------------------------------------
# Merkle tree and signatures
# --------------------------------------------------------------------------------------------------

SIGNATURE_TYPES = range(240, 1001)


def _sha256(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def tagged_hash(tag: bytes, msg: bytes) -> bytes:
    """``H(tag, msg) = SHA256(SHA256(tag) || SHA256(tag) || msg)``."""
    if isinstance(tag, str):
        tag = tag.encode()
    t = _sha256(tag)
    return _sha256(t + t + msg)


def _branch(a: bytes, b: bytes) -> bytes:
    lo, hi = (a, b) if a < b else (b, a)
    return tagged_hash(b"LnBranch", lo + hi)


def is_signature_type(t: int) -> bool:
    return 240 <= t <= 1000


def merkle_root(records: Union[TlvStream, Iterable[Record]]) -> bytes:
    """BOLT 12 merkle root over the records of a TLV stream, signature types (240..1000) excluded.

    The nonce tag uses the numerically first record of the stream.  Raises ValueError if no record is
    left to hash.
    """
    recs = list(records.records if isinstance(records, TlvStream) else records)
    if not recs:
        raise ValueError("merkle root of an empty TLV stream")
    nonce_tag = b"LnNonce" + encode_record(*recs[0])
    level = []
    for t, v in recs:
        if is_signature_type(t):
            continue
        leaf = tagged_hash(b"LnLeaf", encode_record(t, v))
        nonce = tagged_hash(nonce_tag, bigsize(t))
        level.append(_branch(leaf, nonce))
    if not level:
        raise ValueError("merkle root of a TLV stream with only signature records")
    while len(level) > 1:
        nxt = [_branch(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def sighash(messagename: str, fieldname: str, merkle: bytes) -> bytes:
    """``H("lightning" || messagename || fieldname, merkle_root)``, the 32 bytes a BIP-340 key signs."""
    return tagged_hash(("lightning" + messagename + fieldname).encode(), merkle)


def schnorr_sign(privkey: bytes, msg32: bytes, aux_randomness: Optional[bytes] = None) -> bytes:
    """BIP-340 signature.  ``aux_randomness=None`` signs without aux randomness (deterministic, as LDK)."""
    from coincurve import PrivateKey
    return PrivateKey(privkey).sign_schnorr(msg32, aux_randomness)


def schnorr_verify(pubkey: bytes, sig: bytes, msg32: bytes) -> bool:
    """Verify a BIP-340 signature; ``pubkey`` is a 33-byte point (its x coordinate is used) or 32-byte
    x-only key.  Never raises on bad input: returns False."""
    from coincurve import PublicKeyXOnly
    if len(pubkey) == 33:
        pubkey = pubkey[1:]
    if len(pubkey) != 32 or len(sig) != 64 or len(msg32) != 32:
        return False
    try:
        return bool(PublicKeyXOnly(pubkey).verify(sig, msg32))
    except Exception:
        return False


# --------------------------------------------------------------------------------------------------
# Ranges, features
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


def _namer(prefix: str, *tables: Table):
    """``t -> "prefix.name"`` from the first of ``tables`` (then the offer's) that has ``t``, else
    ``"prefix[t]"``: how a message's decoder names a record in its errors."""
    def name(t: int) -> str:
        for table in (*tables, OFFER_TABLE):
            f = table.by_type(t)
            if f is not None:
                return f"{prefix}.{f.name}"
        return f"{prefix}[{t}]"
    return name


def _check_fields(recs: Dict[int, bytes], table: Table, name) -> None:
    """``table``'s required fields are in ``recs``, and each of its fields there reads with its codec."""
    for f in table.fields:
        if f.required and f.type not in recs:
            raise DecodeError(name(f.type), "required field missing")
    for f in table.fields:
        if f.type in recs:
            f.codec.decode(recs[f.type], name(f.type))


class _Value:
    """A field read from ``self.stream`` with its table's codec (checked at decode time, so this does
    not raise); ``default`` when the record is absent."""

    def __init__(self, table: Table, name: str, default=None):
        self.field = table.field(name)
        self.where = f"{table.name}.{name}"
        self.default = default

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        v = obj.stream.get(self.field.type)
        if v is None:
            return list(self.default) if isinstance(self.default, list) else self.default
        return self.field.codec.decode(v, self.where)


# --------------------------------------------------------------------------------------------------
# Offers
# --------------------------------------------------------------------------------------------------

def _validate_offer_records(stream: TlvStream, prefix: str, require_id_or_paths: bool = True) -> None:
    """Check the offer-range records of ``stream`` (other records are ignored)."""
    recs = {t: v for t, v in stream.records if in_offer_range(t)}
    name = _namer(prefix)
    for t, v in recs.items():
        f = OFFER_TABLE.by_type(t)
        if f is not None:
            f.codec.decode(v, name(t))
        elif t % 2 == 0:
            raise DecodeError(name(t), "unknown even offer field")
    if TLV_OFFER_AMOUNT in recs and TLV_OFFER_DESCRIPTION not in recs:
        raise DecodeError(name(TLV_OFFER_DESCRIPTION), "required when offer_amount is set")
    if TLV_OFFER_CURRENCY in recs and TLV_OFFER_AMOUNT not in recs:
        raise DecodeError(name(TLV_OFFER_AMOUNT), "required when offer_currency is set")
    if require_id_or_paths and TLV_OFFER_ISSUER_ID not in recs and TLV_OFFER_PATHS not in recs:
        raise DecodeError(name(TLV_OFFER_ISSUER_ID), "neither offer_issuer_id nor offer_paths set")


class _OfferFields:
    """Accessors for the offer records of a TLV stream (shared by Offer, StaticInvoice, InvoiceRequest).

    Values are validated at decode time, so these do not raise.
    """

    stream: TlvStream

    chains = _Value(OFFER_TABLE, "offer_chains", [])
    metadata = _Value(OFFER_TABLE, "offer_metadata")
    currency = _Value(OFFER_TABLE, "offer_currency")
    amount = _Value(OFFER_TABLE, "offer_amount")
    description = _Value(OFFER_TABLE, "offer_description")
    offer_features = _Value(OFFER_TABLE, "offer_features", b"")
    absolute_expiry = _Value(OFFER_TABLE, "offer_absolute_expiry")
    offer_paths = _Value(OFFER_TABLE, "offer_paths", [])
    issuer = _Value(OFFER_TABLE, "offer_issuer")
    quantity_max = _Value(OFFER_TABLE, "offer_quantity_max")
    issuer_id = _Value(OFFER_TABLE, "offer_issuer_id")

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
class Offer(_OfferFields):
    """A BOLT 12 offer, kept as its exact TLV records."""

    stream: TlvStream

    # --- decoding / encoding ---------------------------------------------------------------------
    @staticmethod
    def decode(data: bytes, field: str = "offer") -> "Offer":
        stream = decode_tlv(bytes(data), field, allow_unknown_even=True)
        for t in stream.types():
            if not in_offer_range(t):
                raise DecodeError(f"{field}[{t}]", "TLV type outside the offer ranges")
        _validate_offer_records(stream, field)
        return Offer(stream)

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




# --------------------------------------------------------------------------------------------------
# Static invoices (LDK async payments)
# --------------------------------------------------------------------------------------------------

_SI = "static_invoice"
_si_field = _namer(_SI, STATIC_INVOICE_TABLE)


def _as_offer_stream(x) -> TlvStream:
    if isinstance(x, _OfferFields):
        return x.offer_records()
    if isinstance(x, TlvStream):
        return TlvStream(tuple((t, v) for t, v in x.records if in_offer_range(t)))
    if isinstance(x, (bytes, bytearray)):
        s = decode_tlv(bytes(x), "offer_records", allow_unknown_even=True)
        return TlvStream(tuple((t, v) for t, v in s.records if in_offer_range(t)))
    return TlvStream(tuple((t, bytes(v)) for t, v in x if in_offer_range(t)))


def _check_invoice_records(recs: Dict[int, bytes], table: Table, field) -> None:
    """The invoice-range records of an invoice or a static invoice (``table``): required ones present,
    each readable by its codec, and one payinfo per payment path.  ``field(t)`` names a record in errors."""
    _check_fields(recs, table, field)
    paths = decode_paths(recs[TLV_INVOICE_PATHS], field(TLV_INVOICE_PATHS))
    payinfos = decode_payinfos(recs[TLV_INVOICE_BLINDEDPAY], field(TLV_INVOICE_BLINDEDPAY))
    if len(payinfos) != len(paths):
        raise DecodeError(field(TLV_INVOICE_BLINDEDPAY), f"{len(payinfos)} payinfos for {len(paths)} payment paths")


class _InvoiceFields(_OfferFields):
    """Accessors shared by invoices and static invoices (validated at decode time: they do not raise)."""

    stream: TlvStream
    DEFAULT_RELATIVE_EXPIRY = DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY

    paths = _Value(STATIC_INVOICE_TABLE, "invoice_paths")
    payinfos = _Value(STATIC_INVOICE_TABLE, "invoice_blindedpay")
    created_at = _Value(STATIC_INVOICE_TABLE, "invoice_created_at")
    node_id = _Value(STATIC_INVOICE_TABLE, "invoice_node_id")

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


@dataclass(frozen=True)
class StaticInvoice(_InvoiceFields):
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
        _validate_offer_records(stream, _SI)
        if TLV_OFFER_PATHS not in recs:
            raise DecodeError(_si_field(TLV_OFFER_PATHS), "required in a static invoice")
        chains = recs.get(TLV_OFFER_CHAINS)
        if chains is not None and len(chains) > 32:
            raise DecodeError(_si_field(TLV_OFFER_CHAINS), "a static invoice allows at most one chain")
        # invoice part
        _check_invoice_records(recs, STATIC_INVOICE_TABLE, _si_field)
        node_id = recs[TLV_INVOICE_NODE_ID]
        # signing key rule
        issuer_id = recs.get(TLV_OFFER_ISSUER_ID)
        if issuer_id is not None:
            if node_id != issuer_id:
                raise DecodeError(_si_field(TLV_INVOICE_NODE_ID), "does not equal offer_issuer_id")
        else:
            finals = {p.final_blinded_node_id for p in decode_paths(recs[TLV_OFFER_PATHS], _si_field(TLV_OFFER_PATHS))}
            if node_id not in finals:
                raise DecodeError(_si_field(TLV_INVOICE_NODE_ID),
                                  "no offer_issuer_id and not the final blinded node of any offer path")
        return StaticInvoice(stream)._verified(check_signature, _si_field(TLV_SIGNATURE))

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

    fallbacks = _Value(STATIC_INVOICE_TABLE, "invoice_fallbacks", [])
    features = _Value(STATIC_INVOICE_TABLE, "invoice_features", b"")
    message_paths = _Value(STATIC_INVOICE_TABLE, "held_htlc_available_paths")
    signature = _Value(STATIC_INVOICE_TABLE, "signature")

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


# --------------------------------------------------------------------------------------------------
# invoice_request (minimal)
# --------------------------------------------------------------------------------------------------

_IR = "invoice_request"
_ir_field = _namer(_IR, INVOICE_REQUEST_TABLE)


@dataclass(frozen=True)
class InvoiceRequest(_OfferFields):
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
        if any(in_offer_range(t) for t in recs):
            _validate_offer_records(stream, _IR)
        _check_fields(recs, INVOICE_REQUEST_TABLE, _ir_field)
        ir = InvoiceRequest(stream)
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

    invreq_metadata = _Value(INVOICE_REQUEST_TABLE, "invreq_metadata")
    chain = _Value(INVOICE_REQUEST_TABLE, "invreq_chain")
    invreq_amount = _Value(INVOICE_REQUEST_TABLE, "invreq_amount")
    quantity = _Value(INVOICE_REQUEST_TABLE, "invreq_quantity")
    payer_id = invreq_payer_id = _Value(INVOICE_REQUEST_TABLE, "invreq_payer_id")
    payer_note = invreq_payer_note = _Value(INVOICE_REQUEST_TABLE, "invreq_payer_note")
    signature = _Value(INVOICE_REQUEST_TABLE, "signature")


# --------------------------------------------------------------------------------------------------
# invoice (BOLT 12 type 66, a payee's answer to an invoice_request)
# --------------------------------------------------------------------------------------------------

_INV = "invoice"
_inv_field = _namer(_INV, INVOICE_TABLE, INVOICE_REQUEST_TABLE)


@dataclass(frozen=True)
class Invoice(_InvoiceFields):
    """A BOLT 12 invoice (onion message type 66), kept as its exact TLV records.

    ``decode`` applies the reader's rules that need nothing but the invoice (required fields, ranges,
    unknown even types and features, payinfo count, signature by ``invoice_node_id``).  Whether it
    answers *our* invoice_request, and is signed by the offer's issuer, is the payer's check
    (:func:`asyncreceive.payments.payer.check_invoice`).
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
        if any(in_offer_range(t) for t in recs):
            _validate_offer_records(stream, _INV)
        _check_invoice_records(recs, INVOICE_TABLE, _inv_field)
        return Invoice(stream)._verified(check_signature, _inv_field(TLV_SIGNATURE))

    def to_string(self) -> str:
        return bech32_encode(HRP_INVOICE, self.encode())

    def verify_signature(self) -> bool:
        return schnorr_verify(self.node_id, self.stream.get(TLV_SIGNATURE),
                              sighash("invoice", "signature", merkle_root(self.stream)))

    def invreq_records(self) -> TlvStream:
        """The invoice_request's records (offer fields included) as the invoice copied them, byte for byte."""
        return TlvStream(tuple((t, v) for t, v in self.stream.records if in_invreq_range(t)))

    payment_hash = _Value(INVOICE_TABLE, "invoice_payment_hash")
    invoice_amount = _Value(INVOICE_TABLE, "invoice_amount")


__all__ = [
    "Invoice", "bech32_encode", "bech32_decode", "tagged_hash", "merkle_root", "sighash", "schnorr_sign", "schnorr_verify",
    "feature_bits", "Offer", "StaticInvoice", "InvoiceRequest", "HRP_OFFER", "HRP_INVOICE_REQUEST",
    "DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY", "BASIC_MPP_OPTIONAL", "BITCOIN_CHAIN",
]
