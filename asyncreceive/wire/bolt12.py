"""BOLT 12 codecs: the bech32 string form, the merkle tree and signatures, offers, LDK static invoices,
and a minimal ``invoice_request`` parser.

Pure: no I/O and no clock (callers pass ``now``).  Every decoder raises only
:class:`~asyncreceive.errors.DecodeError`, naming the field, e.g. ``offer.offer_paths`` or
``static_invoice[168]``.

Records are kept byte for byte (:class:`~asyncreceive.wire.tlv.TlvStream`): a static invoice copies the
offer's records exactly, unknown odd ones included, and the merkle root / ``offer_id`` is computed over
those exact bytes.
"""

import hashlib
import string
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from pyln.proto.bech32 import CHARSET, convertbits

from ..errors import DecodeError
from .paths import BlindedPath, BlindedPayInfo, decode_paths, decode_payinfos, encode_paths, encode_payinfos
from .tlv import (Reader, Record, TlvStream, bigsize, decode_point, decode_tlv, decode_tu, encode_record,
                  encode_tlv, tu64)

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
# helpers
# --------------------------------------------------------------------------------------------------

def _utf8(value: bytes, field: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DecodeError(field, f"invalid UTF-8 ({e.reason})")


def feature_bits(features: bytes) -> List[int]:
    """Set bit numbers of a big-endian feature bitmap (bit 0 = least significant bit of the last byte)."""
    out = []
    n = len(features)
    for i, byte in enumerate(features):
        for j in range(8):
            if byte >> j & 1:
                out.append((n - 1 - i) * 8 + j)
    return sorted(out)


def _check_features(value: bytes, known_even: Iterable[int], field: str) -> None:
    known = set(known_even)
    for bit in feature_bits(value):
        if bit % 2 == 0 and bit not in known:
            raise DecodeError(field, f"unknown required feature bit {bit}")


def in_offer_range(t: int) -> bool:
    return 1 <= t <= 79 or 1_000_000_000 <= t <= 1_999_999_999


def in_invreq_range(t: int) -> bool:
    return 0 <= t <= 159 or 1_000_000_000 <= t <= 2_999_999_999


def in_invoice_range(t: int) -> bool:
    return 160 <= t <= 239 or 3_000_000_000 <= t <= 3_999_999_999


# --------------------------------------------------------------------------------------------------
# Offers
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

OFFER_FIELD_NAMES: Dict[int, str] = {
    TLV_OFFER_CHAINS: "offer_chains", TLV_OFFER_METADATA: "offer_metadata", TLV_OFFER_CURRENCY: "offer_currency",
    TLV_OFFER_AMOUNT: "offer_amount", TLV_OFFER_DESCRIPTION: "offer_description", TLV_OFFER_FEATURES: "offer_features",
    TLV_OFFER_ABSOLUTE_EXPIRY: "offer_absolute_expiry", TLV_OFFER_PATHS: "offer_paths",
    TLV_OFFER_ISSUER: "offer_issuer", TLV_OFFER_QUANTITY_MAX: "offer_quantity_max", TLV_OFFER_ISSUER_ID: "offer_issuer_id",
}

BITCOIN_CHAIN = bytes.fromhex("6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000")


def _offer_field(prefix: str, t: int) -> str:
    name = OFFER_FIELD_NAMES.get(t)
    return f"{prefix}.{name}" if name else f"{prefix}[{t}]"


def _validate_offer_records(stream: TlvStream, prefix: str, require_id_or_paths: bool = True) -> None:
    """Check the offer-range records of ``stream`` (other records are ignored)."""
    recs = {t: v for t, v in stream.records if in_offer_range(t)}
    for t, v in recs.items():
        f = _offer_field(prefix, t)
        if t % 2 == 0 and t not in OFFER_FIELD_NAMES:
            raise DecodeError(f, "unknown even offer field")
        if t == TLV_OFFER_CHAINS:
            if not v or len(v) % 32:
                raise DecodeError(f, "must be a non-empty list of 32-byte chain hashes")
        elif t == TLV_OFFER_CURRENCY:
            _utf8(v, f)
        elif t == TLV_OFFER_AMOUNT:
            if decode_tu(v, 8, f) == 0:
                raise DecodeError(f, "amount must not be zero")
        elif t in (TLV_OFFER_DESCRIPTION, TLV_OFFER_ISSUER):
            _utf8(v, f)
        elif t == TLV_OFFER_FEATURES:
            _check_features(v, (), f)
        elif t in (TLV_OFFER_ABSOLUTE_EXPIRY, TLV_OFFER_QUANTITY_MAX):
            decode_tu(v, 8, f)
        elif t == TLV_OFFER_PATHS:
            if not decode_paths(v, f):
                raise DecodeError(f, "empty list of blinded paths")
        elif t == TLV_OFFER_ISSUER_ID:
            decode_point(v, f)
    if TLV_OFFER_AMOUNT in recs and TLV_OFFER_DESCRIPTION not in recs:
        raise DecodeError(_offer_field(prefix, TLV_OFFER_DESCRIPTION), "required when offer_amount is set")
    if TLV_OFFER_CURRENCY in recs and TLV_OFFER_AMOUNT not in recs:
        raise DecodeError(_offer_field(prefix, TLV_OFFER_AMOUNT), "required when offer_currency is set")
    if require_id_or_paths and TLV_OFFER_ISSUER_ID not in recs and TLV_OFFER_PATHS not in recs:
        raise DecodeError(_offer_field(prefix, TLV_OFFER_ISSUER_ID), "neither offer_issuer_id nor offer_paths set")


class _OfferFields:
    """Accessors for the offer records of a TLV stream (shared by Offer, StaticInvoice, InvoiceRequest).

    Values are validated at decode time, so these do not raise.
    """

    stream: TlvStream

    @property
    def chains(self) -> List[bytes]:
        v = self.stream.get(TLV_OFFER_CHAINS)
        return [v[i:i + 32] for i in range(0, len(v), 32)] if v is not None else []

    @property
    def metadata(self) -> Optional[bytes]:
        return self.stream.get(TLV_OFFER_METADATA)

    @property
    def currency(self) -> Optional[str]:
        v = self.stream.get(TLV_OFFER_CURRENCY)
        return v.decode() if v is not None else None

    @property
    def amount(self) -> Optional[int]:
        v = self.stream.get(TLV_OFFER_AMOUNT)
        return int.from_bytes(v, "big") if v is not None else None

    @property
    def description(self) -> Optional[str]:
        v = self.stream.get(TLV_OFFER_DESCRIPTION)
        return v.decode() if v is not None else None

    @property
    def offer_features(self) -> bytes:
        return self.stream.get(TLV_OFFER_FEATURES) or b""

    @property
    def absolute_expiry(self) -> Optional[int]:
        v = self.stream.get(TLV_OFFER_ABSOLUTE_EXPIRY)
        return int.from_bytes(v, "big") if v is not None else None

    @property
    def offer_paths(self) -> List[BlindedPath]:
        v = self.stream.get(TLV_OFFER_PATHS)
        return decode_paths(v, "offer_paths") if v is not None else []

    @property
    def issuer(self) -> Optional[str]:
        v = self.stream.get(TLV_OFFER_ISSUER)
        return v.decode() if v is not None else None

    @property
    def quantity_max(self) -> Optional[int]:
        v = self.stream.get(TLV_OFFER_QUANTITY_MAX)
        return int.from_bytes(v, "big") if v is not None else None

    @property
    def issuer_id(self) -> Optional[bytes]:
        return self.stream.get(TLV_OFFER_ISSUER_ID)

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
        recs: Dict[int, bytes] = {}
        if chains:
            recs[TLV_OFFER_CHAINS] = b"".join(chains)
        if amount is not None:
            recs[TLV_OFFER_AMOUNT] = tu64(amount)
        if description is not None:
            recs[TLV_OFFER_DESCRIPTION] = description.encode("utf-8")
        if absolute_expiry is not None:
            recs[TLV_OFFER_ABSOLUTE_EXPIRY] = tu64(absolute_expiry)
        if paths:
            recs[TLV_OFFER_PATHS] = encode_paths(list(paths))
        if issuer_id is not None:
            recs[TLV_OFFER_ISSUER_ID] = issuer_id
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

STATIC_INVOICE_FIELD_NAMES: Dict[int, str] = {
    TLV_INVOICE_PATHS: "invoice_paths", TLV_INVOICE_BLINDEDPAY: "invoice_blindedpay",
    TLV_INVOICE_CREATED_AT: "invoice_created_at", TLV_INVOICE_RELATIVE_EXPIRY: "invoice_relative_expiry",
    TLV_INVOICE_FALLBACKS: "invoice_fallbacks", TLV_INVOICE_FEATURES: "invoice_features",
    TLV_INVOICE_NODE_ID: "invoice_node_id", TLV_INVOICE_HELD_HTLC_PATHS: "held_htlc_available_paths",
    TLV_SIGNATURE: "signature",
}

DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY = 1_209_600  # 14 days
#: invoice feature bits a reader understands as required (basic_mpp)
KNOWN_INVOICE_EVEN_FEATURES = (16,)
BASIC_MPP_OPTIONAL = bytes.fromhex("020000")  # bit 17

_SI = "static_invoice"


def _si_field(t: int) -> str:
    if t in STATIC_INVOICE_FIELD_NAMES:
        return f"{_SI}.{STATIC_INVOICE_FIELD_NAMES[t]}"
    return _offer_field(_SI, t) if in_offer_range(t) else f"{_SI}[{t}]"


def _decode_fallbacks(value: bytes, field: str) -> List[Tuple[int, bytes]]:
    r = Reader(value)
    out = []
    while not r.at_end():
        i = len(out)
        version = r.u8(f"{field}[{i}].version")
        n = r.u16(f"{field}[{i}].len")
        out.append((version, r.read(n, f"{field}[{i}].address")))
    return out


def _as_offer_stream(x) -> TlvStream:
    if isinstance(x, _OfferFields):
        return x.offer_records()
    if isinstance(x, TlvStream):
        return TlvStream(tuple((t, v) for t, v in x.records if in_offer_range(t)))
    if isinstance(x, (bytes, bytearray)):
        s = decode_tlv(bytes(x), "offer_records", allow_unknown_even=True)
        return TlvStream(tuple((t, v) for t, v in s.records if in_offer_range(t)))
    return TlvStream(tuple((t, bytes(v)) for t, v in x if in_offer_range(t)))


def _check_invoice_records(recs: Dict[int, bytes], field, required: Sequence[int] = ()) -> None:
    """The invoice-range records an invoice and a static invoice share: required ones present (and
    ``required`` too), non-empty payment paths with one payinfo each, created_at, relative expiry,
    fallbacks, features, node id, a 64-byte signature.  ``field(t)`` names a record in errors."""
    for t in (TLV_INVOICE_PATHS, TLV_INVOICE_BLINDEDPAY, TLV_INVOICE_CREATED_AT, *required, TLV_INVOICE_NODE_ID,
              TLV_SIGNATURE):
        if t not in recs:
            raise DecodeError(field(t), "required field missing")
    paths = decode_paths(recs[TLV_INVOICE_PATHS], field(TLV_INVOICE_PATHS))
    if not paths:
        raise DecodeError(field(TLV_INVOICE_PATHS), "empty list of payment paths")
    payinfos = decode_payinfos(recs[TLV_INVOICE_BLINDEDPAY], field(TLV_INVOICE_BLINDEDPAY))
    if len(payinfos) != len(paths):
        raise DecodeError(field(TLV_INVOICE_BLINDEDPAY), f"{len(payinfos)} payinfos for {len(paths)} payment paths")
    decode_tu(recs[TLV_INVOICE_CREATED_AT], 8, field(TLV_INVOICE_CREATED_AT))
    if TLV_INVOICE_RELATIVE_EXPIRY in recs:
        decode_tu(recs[TLV_INVOICE_RELATIVE_EXPIRY], 4, field(TLV_INVOICE_RELATIVE_EXPIRY))
    if TLV_INVOICE_FALLBACKS in recs:
        _decode_fallbacks(recs[TLV_INVOICE_FALLBACKS], field(TLV_INVOICE_FALLBACKS))
    if TLV_INVOICE_FEATURES in recs:
        _check_features(recs[TLV_INVOICE_FEATURES], KNOWN_INVOICE_EVEN_FEATURES, field(TLV_INVOICE_FEATURES))
    decode_point(recs[TLV_INVOICE_NODE_ID], field(TLV_INVOICE_NODE_ID))
    if len(recs[TLV_SIGNATURE]) != 64:
        raise DecodeError(field(TLV_SIGNATURE), f"expected 64 bytes, got {len(recs[TLV_SIGNATURE])}")


class _InvoiceFields(_OfferFields):
    """Accessors shared by invoices and static invoices (validated at decode time: they do not raise)."""

    stream: TlvStream
    DEFAULT_RELATIVE_EXPIRY = DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY

    @property
    def paths(self) -> List[BlindedPath]:
        return decode_paths(self.stream.get(TLV_INVOICE_PATHS), "invoice_paths")

    @property
    def payinfos(self) -> List[BlindedPayInfo]:
        return decode_payinfos(self.stream.get(TLV_INVOICE_BLINDEDPAY), "invoice_blindedpay")

    @property
    def created_at(self) -> int:
        return int.from_bytes(self.stream.get(TLV_INVOICE_CREATED_AT), "big")

    @property
    def relative_expiry(self) -> int:
        v = self.stream.get(TLV_INVOICE_RELATIVE_EXPIRY)
        return self.DEFAULT_RELATIVE_EXPIRY if v is None else int.from_bytes(v, "big")

    @property
    def expires_at(self) -> int:
        return self.created_at + self.relative_expiry

    @property
    def node_id(self) -> bytes:
        return self.stream.get(TLV_INVOICE_NODE_ID)

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
            if t % 2 == 0 and not in_offer_range(t) and t not in STATIC_INVOICE_FIELD_NAMES:
                raise DecodeError(f, "unknown even TLV type")
        # offer part
        _validate_offer_records(stream, _SI)
        if TLV_OFFER_PATHS not in recs:
            raise DecodeError(_si_field(TLV_OFFER_PATHS), "required in a static invoice")
        chains = recs.get(TLV_OFFER_CHAINS)
        if chains is not None and len(chains) > 32:
            raise DecodeError(_si_field(TLV_OFFER_CHAINS), "a static invoice allows at most one chain")
        # invoice part
        _check_invoice_records(recs, _si_field, (TLV_INVOICE_HELD_HTLC_PATHS,))
        node_id = recs[TLV_INVOICE_NODE_ID]
        decode_paths(recs[TLV_INVOICE_HELD_HTLC_PATHS], _si_field(TLV_INVOICE_HELD_HTLC_PATHS))
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
        node_id = PrivateKey(signing_key).public_key.format()
        recs: List[Record] = list(offer.offer_records().records)
        recs.append((TLV_INVOICE_PATHS, encode_paths(list(payment_paths))))
        recs.append((TLV_INVOICE_BLINDEDPAY, encode_payinfos(list(payinfos))))
        recs.append((TLV_INVOICE_CREATED_AT, tu64(created_at)))
        if relative_expiry is not None:
            if not 0 <= relative_expiry <= 0xFFFFFFFF:
                raise ValueError("relative_expiry must fit a u32")
            recs.append((TLV_INVOICE_RELATIVE_EXPIRY, tu64(relative_expiry)))
        if features:
            recs.append((TLV_INVOICE_FEATURES, bytes(features)))
        recs.append((TLV_INVOICE_NODE_ID, node_id))
        recs.append((TLV_INVOICE_HELD_HTLC_PATHS, encode_paths(list(message_paths))))
        recs.sort(key=lambda r: r[0])
        digest = sighash("static_invoice", "signature", merkle_root(recs))
        sig = schnorr_sign(signing_key, digest, aux_randomness)
        recs.append((TLV_SIGNATURE, sig))
        recs.sort(key=lambda r: r[0])
        return StaticInvoice.decode(encode_tlv(recs))

    # --- signature ---------------------------------------------------------------------------------
    def signature_digest(self) -> bytes:
        return sighash("static_invoice", "signature", merkle_root(self.stream))

    def verify_signature(self) -> bool:
        return schnorr_verify(self.node_id, self.signature, self.signature_digest())

    # --- fields ------------------------------------------------------------------------------------
    def is_expired(self, now: int) -> bool:
        """Expired once ``created_at + relative_expiry < now`` (LDK's rule)."""
        return self.expires_at < now

    @property
    def fallbacks(self) -> List[Tuple[int, bytes]]:
        v = self.stream.get(TLV_INVOICE_FALLBACKS)
        return _decode_fallbacks(v, _si_field(TLV_INVOICE_FALLBACKS)) if v is not None else []

    @property
    def features(self) -> bytes:
        return self.stream.get(TLV_INVOICE_FEATURES) or b""

    @property
    def message_paths(self) -> List[BlindedPath]:
        return decode_paths(self.stream.get(TLV_INVOICE_HELD_HTLC_PATHS), _si_field(TLV_INVOICE_HELD_HTLC_PATHS))

    @property
    def signature(self) -> bytes:
        return self.stream.get(TLV_SIGNATURE)

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

TLV_INVREQ_METADATA = 0
TLV_INVREQ_CHAIN = 80
TLV_INVREQ_AMOUNT = 82
TLV_INVREQ_FEATURES = 84
TLV_INVREQ_QUANTITY = 86
TLV_INVREQ_PAYER_ID = 88
TLV_INVREQ_PAYER_NOTE = 89
TLV_INVREQ_PATHS = 90
TLV_INVREQ_BIP_353_NAME = 91

INVREQ_FIELD_NAMES: Dict[int, str] = {
    TLV_INVREQ_METADATA: "invreq_metadata", TLV_INVREQ_CHAIN: "invreq_chain", TLV_INVREQ_AMOUNT: "invreq_amount",
    TLV_INVREQ_FEATURES: "invreq_features", TLV_INVREQ_QUANTITY: "invreq_quantity",
    TLV_INVREQ_PAYER_ID: "invreq_payer_id", TLV_INVREQ_PAYER_NOTE: "invreq_payer_note", TLV_INVREQ_PATHS: "invreq_paths",
    TLV_INVREQ_BIP_353_NAME: "invreq_bip_353_name", TLV_SIGNATURE: "signature",
}

_IR = "invoice_request"


def _ir_field(t: int) -> str:
    if t in INVREQ_FIELD_NAMES:
        return f"{_IR}.{INVREQ_FIELD_NAMES[t]}"
    return _offer_field(_IR, t) if in_offer_range(t) else f"{_IR}[{t}]"


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
            if t % 2 == 0 and not in_offer_range(t) and t not in INVREQ_FIELD_NAMES:
                raise DecodeError(f, "unknown even TLV type")
        if any(in_offer_range(t) for t in recs):
            _validate_offer_records(stream, _IR)
        for t in (TLV_INVREQ_METADATA, TLV_INVREQ_PAYER_ID, TLV_SIGNATURE):
            if t not in recs:
                raise DecodeError(_ir_field(t), "required field missing")
        decode_point(recs[TLV_INVREQ_PAYER_ID], _ir_field(TLV_INVREQ_PAYER_ID))
        if TLV_INVREQ_CHAIN in recs and len(recs[TLV_INVREQ_CHAIN]) != 32:
            raise DecodeError(_ir_field(TLV_INVREQ_CHAIN), "expected a 32-byte chain hash")
        for t in (TLV_INVREQ_AMOUNT, TLV_INVREQ_QUANTITY):
            if t in recs:
                decode_tu(recs[t], 8, _ir_field(t))
        if TLV_INVREQ_FEATURES in recs:
            _check_features(recs[TLV_INVREQ_FEATURES], (), _ir_field(TLV_INVREQ_FEATURES))
        if TLV_INVREQ_PAYER_NOTE in recs:
            _utf8(recs[TLV_INVREQ_PAYER_NOTE], _ir_field(TLV_INVREQ_PAYER_NOTE))
        if TLV_INVREQ_PATHS in recs:
            if not decode_paths(recs[TLV_INVREQ_PATHS], _ir_field(TLV_INVREQ_PATHS)):
                raise DecodeError(_ir_field(TLV_INVREQ_PATHS), "empty list of blinded paths")
        if len(recs[TLV_SIGNATURE]) != 64:
            raise DecodeError(_ir_field(TLV_SIGNATURE), f"expected 64 bytes, got {len(recs[TLV_SIGNATURE])}")
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

    @property
    def invreq_metadata(self) -> bytes:
        return self.stream.get(TLV_INVREQ_METADATA)

    @property
    def chain(self) -> Optional[bytes]:
        return self.stream.get(TLV_INVREQ_CHAIN)

    @property
    def invreq_amount(self) -> Optional[int]:
        v = self.stream.get(TLV_INVREQ_AMOUNT)
        return int.from_bytes(v, "big") if v is not None else None

    @property
    def quantity(self) -> Optional[int]:
        v = self.stream.get(TLV_INVREQ_QUANTITY)
        return int.from_bytes(v, "big") if v is not None else None

    @property
    def payer_id(self) -> bytes:
        return self.stream.get(TLV_INVREQ_PAYER_ID)

    invreq_payer_id = payer_id

    @property
    def payer_note(self) -> Optional[str]:
        v = self.stream.get(TLV_INVREQ_PAYER_NOTE)
        return v.decode() if v is not None else None

    invreq_payer_note = payer_note

    @property
    def signature(self) -> bytes:
        return self.stream.get(TLV_SIGNATURE)


# --------------------------------------------------------------------------------------------------
# invoice (BOLT 12 type 66, a payee's answer to an invoice_request)
# --------------------------------------------------------------------------------------------------

INVOICE_FIELD_NAMES: Dict[int, str] = {
    **{t: n for t, n in STATIC_INVOICE_FIELD_NAMES.items() if t != TLV_INVOICE_HELD_HTLC_PATHS},
    TLV_INVOICE_PAYMENT_HASH: "invoice_payment_hash", TLV_INVOICE_AMOUNT: "invoice_amount"}
#: BOLT 12: invoice_relative_expiry defaults to 7200 seconds
DEFAULT_INVOICE_RELATIVE_EXPIRY = 7200

_INV = "invoice"


def _inv_field(t: int) -> str:
    if t in INVOICE_FIELD_NAMES:
        return f"{_INV}.{INVOICE_FIELD_NAMES[t]}"
    if t in INVREQ_FIELD_NAMES:
        return f"{_INV}.{INVREQ_FIELD_NAMES[t]}"
    return _offer_field(_INV, t) if in_offer_range(t) else f"{_INV}[{t}]"


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
            if t % 2 == 0 and not in_offer_range(t) and t not in INVOICE_FIELD_NAMES and t not in INVREQ_FIELD_NAMES:
                raise DecodeError(f, "unknown even TLV type")
        if any(in_offer_range(t) for t in recs):
            _validate_offer_records(stream, _INV)
        _check_invoice_records(recs, _inv_field, (TLV_INVOICE_PAYMENT_HASH, TLV_INVOICE_AMOUNT))
        if len(recs[TLV_INVOICE_PAYMENT_HASH]) != 32:
            raise DecodeError(_inv_field(TLV_INVOICE_PAYMENT_HASH), "expected 32 bytes")
        decode_tu(recs[TLV_INVOICE_AMOUNT], 8, _inv_field(TLV_INVOICE_AMOUNT))
        return Invoice(stream)._verified(check_signature, _inv_field(TLV_SIGNATURE))

    def to_string(self) -> str:
        return bech32_encode(HRP_INVOICE, self.encode())

    def verify_signature(self) -> bool:
        return schnorr_verify(self.node_id, self.stream.get(TLV_SIGNATURE),
                              sighash("invoice", "signature", merkle_root(self.stream)))

    def invreq_records(self) -> TlvStream:
        """The invoice_request's records (offer fields included) as the invoice copied them, byte for byte."""
        return TlvStream(tuple((t, v) for t, v in self.stream.records if in_invreq_range(t)))

    @property
    def payment_hash(self) -> bytes:
        return self.stream.get(TLV_INVOICE_PAYMENT_HASH)

    @property
    def invoice_amount(self) -> int:
        return int.from_bytes(self.stream.get(TLV_INVOICE_AMOUNT), "big")


__all__ = [
    "Invoice", "bech32_encode", "bech32_decode", "tagged_hash", "merkle_root", "sighash", "schnorr_sign", "schnorr_verify",
    "feature_bits", "Offer", "StaticInvoice", "InvoiceRequest", "HRP_OFFER", "HRP_INVOICE_REQUEST",
    "DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY", "BASIC_MPP_OPTIONAL", "BITCOIN_CHAIN",
]
