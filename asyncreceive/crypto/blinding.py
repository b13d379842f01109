"""BOLT 4 route blinding: ``encrypted_data_tlv``, building blinded paths, and decrypting one hop.

Notation (BOLT 4 "Route Blinding")::

    e_0 = session key, E_i = e_i·G
    ss_i = ECDH(e_i, N_i)                      (SHA256 of the compressed shared point)
    B_i  = HMAC256("blinded_node_id", ss_i)·N_i
    rho_i = HMAC256("rho", ss_i)
    enc_i = ChaCha20-Poly1305(rho_i, nonce = 12 zero bytes, no AAD).encrypt(tlv_i)
    e_{i+1} = SHA256(E_i || ss_i)·e_i

``HMAC256(label, secret)`` is HMAC-SHA256 keyed with the ASCII label over the secret.
"""

import hashlib
import hmac as _hmac
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

from coincurve import PublicKey
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT
from coincurve.utils import validate_secret
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import DecodeError
from ..wire.paths import BlindedHop, BlindedPath, SciddirOrPubkey
from ..wire.records import BYTES, POINT, U64, Field, Table, record_codec
from ..wire.tlv import bigsize, decode_point, decode_tu, tu64, u16, u32

ZERO_NONCE = b"\x00" * 12

# encrypted_data_tlv types
PADDING = 1
SHORT_CHANNEL_ID = 2
NEXT_NODE_ID = 4
PATH_ID = 6
NEXT_PATH_KEY_OVERRIDE = 8
PAYMENT_RELAY = 10
PAYMENT_CONSTRAINTS = 12
ALLOWED_FEATURES = 14


# --- primitives -------------------------------------------------------------------------------------

def hmac256(label: bytes, secret: bytes) -> bytes:
    """HMAC-SHA256 with key = ``label`` and message = ``secret``."""
    return _hmac.digest(label, secret, "sha256")


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# coincurve's PrivateKey computes two public keys when it is made (about 40 µs): the three operations
# below call libsecp256k1 through coincurve's own binding without making one (constant time, as
# PrivateKey's methods are); tests/unit/test_blinding.py checks them against PrivateKey's.

def ecdh(priv32: bytes, pub33: bytes) -> bytes:
    """BOLT ECDH: SHA256 of the compressed point priv·pub.  Raises ValueError on a bad key."""
    out = ffi.new("unsigned char [32]")
    if not lib.secp256k1_ecdh(GLOBAL_CONTEXT.ctx, out, PublicKey(pub33).public_key, validate_secret(priv32),
                              ffi.NULL, ffi.NULL):
        raise ValueError("ECDH failed")
    return bytes(ffi.buffer(out, 32))


def pubkey_of(priv32: bytes) -> bytes:
    """priv·G, compressed.  Raises ValueError on a bad key."""
    return PublicKey.from_valid_secret(validate_secret(priv32)).format()


def secret_times(priv32: bytes, scalar32: bytes) -> bytes:
    """priv·scalar mod n (a private key tweaked by multiplication).  Raises ValueError on a bad key."""
    out = ffi.new("unsigned char [32]", validate_secret(priv32))
    if not lib.secp256k1_ec_seckey_tweak_mul(GLOBAL_CONTEXT.ctx, out, validate_secret(scalar32)):
        raise ValueError("private key tweak failed")
    return bytes(ffi.buffer(out, 32))


def derive_next_path_key(path_key33: bytes, shared_secret32: bytes) -> bytes:
    """``SHA256(E || ss)·E``: the next path key when there is no override."""
    return PublicKey(path_key33).multiply(sha256(path_key33 + shared_secret32)).format()


# --- encrypted_data_tlv -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PaymentRelay:
    cltv_expiry_delta: int
    fee_proportional_millionths: int
    fee_base_msat: int = 0

    def encode(self) -> bytes:
        if self.fee_base_msat > 0xFFFFFFFF:
            raise ValueError("fee_base_msat does not fit in a tu32")
        return u16(self.cltv_expiry_delta) + u32(self.fee_proportional_millionths) + tu64(self.fee_base_msat)

    @staticmethod
    def decode(value: bytes, field: str) -> "PaymentRelay":
        if len(value) < 6:
            raise DecodeError(field, f"payment_relay needs at least 6 bytes, got {len(value)}")
        return PaymentRelay(int.from_bytes(value[0:2], "big"), int.from_bytes(value[2:6], "big"),
                            decode_tu(value[6:], 4, field + ".fee_base_msat"))


@dataclass(frozen=True)
class PaymentConstraints:
    max_cltv_expiry: int
    htlc_minimum_msat: int = 0

    def encode(self) -> bytes:
        return u32(self.max_cltv_expiry) + tu64(self.htlc_minimum_msat)

    @staticmethod
    def decode(value: bytes, field: str) -> "PaymentConstraints":
        if len(value) < 4:
            raise DecodeError(field, f"payment_constraints needs at least 4 bytes, got {len(value)}")
        return PaymentConstraints(int.from_bytes(value[0:4], "big"),
                                  decode_tu(value[4:], 8, field + ".htlc_minimum_msat"))


#: BOLT 4's encrypted_data_tlv; unknown odd records are kept (:attr:`EncryptedData.unknown`)
ENCRYPTED_DATA_TABLE = Table("encrypted_data", [
    Field(PADDING, "padding", BYTES),
    Field(SHORT_CHANNEL_ID, "short_channel_id", U64),
    Field(NEXT_NODE_ID, "next_node_id", POINT),
    Field(PATH_ID, "path_id", BYTES),
    Field(NEXT_PATH_KEY_OVERRIDE, "next_path_key_override", POINT),
    Field(PAYMENT_RELAY, "payment_relay", record_codec(PaymentRelay)),
    Field(PAYMENT_CONSTRAINTS, "payment_constraints", record_codec(PaymentConstraints)),
    Field(ALLOWED_FEATURES, "allowed_features", BYTES),
])


@dataclass(frozen=True)
class EncryptedData:
    """One hop's ``encrypted_data_tlv`` (:data:`ENCRYPTED_DATA_TABLE`).  ``unknown`` holds odd records we
    don't interpret, in type order (our own authenticated context goes there as type 65537)."""

    padding: Optional[bytes] = None
    short_channel_id: Optional[int] = None
    next_node_id: Optional[bytes] = None
    path_id: Optional[bytes] = None
    next_path_key_override: Optional[bytes] = None
    payment_relay: Optional[PaymentRelay] = None
    payment_constraints: Optional[PaymentConstraints] = None
    allowed_features: Optional[bytes] = None
    unknown: Tuple[Tuple[int, bytes], ...] = ()

    def encode(self) -> bytes:
        for name in ("next_node_id", "next_path_key_override"):
            v = getattr(self, name)
            if v is not None and len(v) != 33:
                raise ValueError(f"{name} must be a 33-byte point")
        for t, _ in self.unknown:
            if ENCRYPTED_DATA_TABLE.known(t) or t % 2 == 0:
                raise ValueError(f"unknown encrypted_data record must be an odd, unknown type (got {t})")
        return ENCRYPTED_DATA_TABLE.encode({f.name: getattr(self, f.name) for f in ENCRYPTED_DATA_TABLE.fields},
                                           self.unknown)

    @staticmethod
    def decode(data: bytes, field: str = "encrypted_data") -> "EncryptedData":
        return EncryptedData(**ENCRYPTED_DATA_TABLE.decode(data, field, keep_unknown=True))


def _padding_record_size(n: int) -> int:
    """Bytes taken by a type-1 padding record whose value is ``n`` bytes."""
    return 1 + len(bigsize(n)) + n


def _padding_for(total: int) -> Optional[bytes]:
    """A padding value whose whole record takes exactly ``total`` bytes, or None if impossible."""
    for n in (total - 2, total - 4, total - 6, total - 10):
        if n >= 0 and _padding_record_size(n) == total:
            return b"\x00" * n
    return None


def pad_payloads(datas: Sequence[EncryptedData]) -> List[EncryptedData]:
    """Replace each hop's padding (type 1) so every hop's encoding has the same, smallest possible length.

    Hops already at the target length get no padding record; a 1-byte gap can't be padded, so then the
    target grows until every gap is 0 or fillable.
    """
    bases = [replace(d, padding=None) for d in datas]
    if not bases:
        return []
    lens = [len(b.encode()) for b in bases]
    target = max(lens)
    while True:
        pads = []
        for n in lens:
            gap = target - n
            pads.append(None if gap == 0 else _padding_for(gap))
            if gap != 0 and pads[-1] is None:
                break
        else:
            return [replace(b, padding=p) for b, p in zip(bases, pads)]
        target += 1


# --- building and unblinding --------------------------------------------------------------------------

def build_blinded_path(session_key: bytes, hops: Sequence[Tuple[bytes, bytes]],
                       introduction: Optional[SciddirOrPubkey] = None) -> BlindedPath:
    """Blind ``hops`` = [(real node id, plaintext encrypted_data_tlv bytes)], first hop first.

    The introduction point is the first hop's real node id unless ``introduction`` is given.
    """
    if not hops:
        raise ValueError("a blinded path needs at least one hop")
    e = session_key
    first_path_key = pubkey_of(e)
    out = []
    for node_id, plaintext in hops:
        E = pubkey_of(e)
        ss = ecdh(e, node_id)
        blinded = PublicKey(node_id).multiply(hmac256(b"blinded_node_id", ss)).format()
        enc = ChaCha20Poly1305(hmac256(b"rho", ss)).encrypt(ZERO_NONCE, plaintext, None)
        out.append(BlindedHop(blinded, enc))
        e = secret_times(e, sha256(E + ss))
    intro = introduction if introduction is not None else SciddirOrPubkey(node_id=hops[0][0])
    return BlindedPath(intro, first_path_key, tuple(out))


def _shared_secret(node_priv: bytes, path_key: bytes, keyfield: str) -> bytes:
    decode_point(bytes(path_key), keyfield)
    try:
        return ecdh(node_priv, bytes(path_key))
    except Exception as e:  # coincurve raises ValueError / its own errors on bad keys
        raise DecodeError(keyfield, f"ECDH failed: {e}")


def decrypt_hop(node_priv: bytes, path_key: bytes, encrypted: bytes,
                field: str = "encrypted_recipient_data") -> Tuple[EncryptedData, bytes]:
    """Decrypt one hop's ``encrypted_recipient_data`` with our real node key.

    Returns the decoded data and the next path key (``next_path_key_override`` if set, else
    ``SHA256(E || ss)·E``).  Bad input of any kind raises DecodeError.
    """
    ss = _shared_secret(node_priv, path_key, field + ".path_key")
    data = decrypt_with_secret(ss, encrypted, field)
    if data.next_path_key_override is not None:
        return data, data.next_path_key_override
    return data, derive_next_path_key(path_key, ss)


def hop_secret(node_priv: bytes, path_key: bytes, field: str = "path_key") -> bytes:
    """ECDH(path_key, k): the shared secret of our hop, from which both its blinded key
    (:func:`blinded_privkey`) and its data's key (:func:`decrypt_with_secret`) come.  DecodeError on a bad
    ``path_key``."""
    return _shared_secret(node_priv, path_key, field)


def decrypt_with_secret(ss: bytes, encrypted: bytes, field: str = "encrypted_recipient_data") -> EncryptedData:
    """A hop's ``encrypted_recipient_data`` decrypted with its shared secret (:func:`hop_secret`), for a
    final hop, which needs no next path key.  DecodeError on any bad input."""
    try:
        plain = ChaCha20Poly1305(hmac256(b"rho", ss)).decrypt(ZERO_NONCE, bytes(encrypted), None)
    except InvalidTag:
        raise DecodeError(field, "cannot decrypt (wrong key or tampered data)")
    return EncryptedData.decode(plain, field)


def blinded_privkey(node_priv: bytes, path_key: bytes, field: str = "path_key", ss: Optional[bytes] = None) -> bytes:
    """``k · HMAC256("blinded_node_id", ECDH(path_key, k)) mod n``: the key for our blinded node id
    (``ss``: that ECDH, if already computed by :func:`hop_secret`)."""
    if ss is None:
        ss = _shared_secret(node_priv, path_key, field)
    return secret_times(node_priv, hmac256(b"blinded_node_id", ss))
