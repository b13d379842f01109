"""Datastore encoding of the online-fallback invoices we issued (TLV values, versioned keys)::

    asyncreceive/v1/recipient/invoice/<hash>       one invoice: sealed preimage, amount, offer, expiry, note

The record is declared as a table (:mod:`..wire.records`); its preimage is sealed (ChaCha20-Poly1305)
with a key derived from the offer key base (``makesecret``).  The decoder raises only DecodeError on a
damaged record.
"""

import hashlib
from dataclasses import dataclass
from typing import List, Optional

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import DecodeError
from ..wire.records import TU64, UTF8_REPLACE, Field, Table, fixed_bytes

FALLBACK_PREFIX = ["asyncreceive", "v1", "recipient", "invoice"]
NONCE_LEN = 12


def fallback_key(payment_hash: bytes) -> List[str]:
    """An online-fallback invoice we issued: sealed preimage, amount, offer_id, expiry (TLV)."""
    return FALLBACK_PREFIX + [payment_hash.hex()]


def record_key(offer_key_base: bytes) -> bytes:
    """The key that seals preimages in the datastore, derived from the makesecret-based offer key base
    under its own label (so it is never the same key as any offer's)."""
    return HKDF(hashes.SHA256(), 32, None, b"asyncreceive/v1/record-key").derive(offer_key_base)


def _aad(payment_hash: bytes) -> bytes:
    return b"asyncreceive/v1/preimage" + payment_hash  # a sealed preimage opens only under its own key


def seal_preimage(key: bytes, payment_hash: bytes, preimage: bytes, nonce: bytes) -> bytes:
    """nonce (12 bytes, random, from the caller) || ChaCha20-Poly1305(preimage)."""
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, preimage, _aad(payment_hash))


def open_preimage(key: bytes, payment_hash: bytes, sealed: bytes) -> bytes:
    try:
        pre = ChaCha20Poly1305(key).decrypt(sealed[:NONCE_LEN], sealed[NONCE_LEN:], _aad(payment_hash))
    except InvalidTag:
        raise DecodeError("fallback_invoice.preimage", "does not open with our key")
    if hashlib.sha256(pre).digest() != payment_hash:
        raise DecodeError("fallback_invoice.preimage", "does not hash to the payment_hash")
    return pre


@dataclass(frozen=True)
class FallbackInvoice:
    """An online-fallback invoice we issued.  ``preimage`` is sealed (``sealed``) or, in records written
    before sealing, clear."""

    payment_hash: bytes
    offer_id: bytes
    amount_msat: int
    expires_at: int
    preimage: bytes
    sealed: bool = True
    payer_note: Optional[str] = None


FALLBACK_RECORD = Table("fallback_invoice", [
    Field(0, "clear_preimage", fixed_bytes(32)),            # records written before preimages were sealed
    Field(2, "amount_msat", TU64, required=True),
    Field(4, "offer_id", fixed_bytes(32), required=True),
    Field(6, "expires_at", TU64, required=True),
    Field(8, "payer_note", UTF8_REPLACE),
    Field(10, "sealed_preimage", fixed_bytes(NONCE_LEN + 32 + 16)),   # seal_preimage's
])


def encode_fallback(f: FallbackInvoice) -> bytes:
    return FALLBACK_RECORD.encode({
        "clear_preimage": None if f.sealed else f.preimage, "sealed_preimage": f.preimage if f.sealed else None,
        "amount_msat": f.amount_msat, "offer_id": f.offer_id, "expires_at": f.expires_at,
        "payer_note": f.payer_note or None})


def decode_fallback(payment_hash: bytes, data: bytes) -> FallbackInvoice:
    r = FALLBACK_RECORD.decode(data)
    sealed = r["sealed_preimage"] is not None
    pre = r["sealed_preimage"] if sealed else r["clear_preimage"]
    if pre is None:
        raise DecodeError("fallback_invoice.preimage", "missing")
    return FallbackInvoice(payment_hash, r["offer_id"], r["amount_msat"], r["expires_at"], pre, sealed,
                           r["payer_note"])
