"""BOLT 12 merkle root, tagged hashes and signatures: the merkle tree over a message's TLV records (signature
types 240..1000 excluded), the ``sighash`` a key signs, and BIP-340 schnorr signing and verification.

Pure: no I/O; verification never raises on bad input.
"""

import hashlib
from typing import Iterable, Optional, Union

from ..tlv import Record, TlvStream, bigsize, encode_record

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
