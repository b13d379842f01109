"""Build the recipient's async offer and its static invoice (pure: every input is a parameter).

- Offer: the server's paths as received, our per-offer ``offer_issuer_id``, ``offer_absolute_expiry``
  = the paths' expiry, ``offer_chains`` off mainnet.  No amount or description (as LDK), except in a
  dedicated offer (getoffer with ``amount_msat``, ``description``, ``issuer``: see :func:`check_offer_fields`).
- Static invoice: blinded payment paths ``[channel peer -> us]`` (fees and cltv from the peer's channel
  update, as ``listincoming`` reports them), or ``[us]`` with no channels; held_htlc_available message
  paths (TLV 236); expiry with the offer; basic_mpp optional; signed with the offer's key.
"""

import hashlib
import hmac
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

from coincurve import PrivateKey

from ..crypto.blinding import EncryptedData, PaymentConstraints, PaymentRelay, build_blinded_path
from ..wire.bolt12.fields import BASIC_MPP_OPTIONAL, TLV_OFFER_ISSUER
from ..wire.bolt12.offer import Offer
from ..wire.bolt12.static_invoice import StaticInvoice
from ..wire.paths import BlindedPath, BlindedPayInfo

MAX_U32 = 2 ** 32 - 1
#: bounds of a dedicated offer's fields: no more msat than bitcoin has; text short enough that the offer
#: stays a usable QR code and its static invoice fits the server's limit with room for the paths
MAX_AMOUNT_MSAT = 21_000_000 * 100_000_000 * 1000
MAX_DESCRIPTION_BYTES = 640
MAX_ISSUER_BYTES = 128

#: BOLT 12 chain hashes (genesis block hash, internal byte order) by lightningd network name
CHAINS = {
    "bitcoin": None,  # mainnet is implied: no offer_chains
    "testnet": bytes.fromhex("43497fd7f826957108f4a30fd9cec3aeba79972084e90ead01ea330900000000"),
    "testnet4": bytes.fromhex("00000000da84f2bafbbc53dee25a72ae507ff4914b867c565be350b0da8bf043")[::-1],
    "signet": bytes.fromhex("f61eee3b63a380a477a063af32b2bbc97c9ff9f01f2c4225e973988108000000"),
    "regtest": bytes.fromhex("06226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f"),
}


def offer_signing_key(base_secret: bytes, nonce: bytes) -> bytes:
    """Per-offer key: offers made by one node cannot be linked through their issuer ids."""
    for i in range(256):
        k = hmac.new(base_secret, b"asyncreceive/offer-key" + nonce + bytes([i]), hashlib.sha256).digest()
        try:
            PrivateKey(k)
            return k
        except Exception:
            continue
    raise ValueError("could not derive an offer key")


def build_offer(signing_key: bytes, paths: Sequence[BlindedPath], paths_expiry: Optional[int],
                network: str, amount_msat: Optional[int] = None, description: Optional[str] = None,
                issuer: Optional[str] = None) -> Offer:
    chain = CHAINS.get(network)
    return Offer.build(PrivateKey(signing_key).public_key.format(), list(paths), absolute_expiry=paths_expiry,
                       chains=[chain] if chain else None, description=description, amount=amount_msat,
                       extra_records=[(TLV_OFFER_ISSUER, issuer.encode())] if issuer is not None else ())


def _text_problem(name: str, value, max_bytes: int) -> Optional[str]:
    if not isinstance(value, str) or not value:
        return f"{name}: a non-empty string"
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{name}: not valid UTF-8"
    if n > max_bytes:
        return f"{name}: {n} bytes, at most {max_bytes}"
    return None


def check_offer_fields(amount_msat, description, issuer) -> Optional[str]:
    """Why a dedicated offer's fields are refused (one line for the operator), or None.  Each may be
    None (absent); BOLT 12 wants a description with an amount."""
    if amount_msat is not None:
        if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) \
                or not 1 <= amount_msat <= MAX_AMOUNT_MSAT:
            return f"amount_msat: an integer from 1 to {MAX_AMOUNT_MSAT}"
        if description is None:
            return "description: needed with amount_msat (BOLT 12: an offer with an amount has a description)"
    for name, value, most in (("description", description, MAX_DESCRIPTION_BYTES),
                              ("issuer", issuer, MAX_ISSUER_BYTES)):
        why = value is not None and _text_problem(name, value, most)
        if why:
            return why
    return None


@dataclass(frozen=True)
class IncomingChannel:
    """One way into our node, as ``listincoming`` describes it."""

    peer_id: bytes
    short_channel_id: int
    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    incoming_capacity_msat: int
    htlc_maximum_msat: int = 0      # from the peer's channel_update (listincoming htlc_max_msat)


def scid_int(s: str) -> int:
    b, t, o = (int(x) for x in s.split("x"))
    return (b << 40) | (t << 16) | o


def payment_paths(our_id: bytes, channels: Sequence[IncomingChannel], path_id: bytes, height: int,
                  relative_expiry: int, final_cltv: int, max_paths: int = 3, *,
                  random_bytes: Callable[[int], bytes]):
    """Blinded payment paths to us and their payinfo.  ``max_cltv_expiry`` follows LDK:
    ``height + max(relative_expiry / 540, 2016) + 3`` (enough blocks to outlive the invoice).
    ``random_bytes(32)`` gives each path's session key (the caller's randomness: this stays pure)."""
    max_cltv = height + max(relative_expiry // 540, 2016) + 3
    out_paths: List[BlindedPath] = []
    infos: List[BlindedPayInfo] = []
    final = EncryptedData(path_id=path_id, payment_constraints=PaymentConstraints(max_cltv, 1))
    best = sorted(channels, key=lambda c: -c.incoming_capacity_msat)[:max_paths]
    for ch in best:
        hop = EncryptedData(short_channel_id=ch.short_channel_id,
                            payment_relay=PaymentRelay(ch.cltv_expiry_delta, ch.fee_proportional_millionths,
                                                       ch.fee_base_msat),
                            payment_constraints=PaymentConstraints(max_cltv + ch.cltv_expiry_delta,
                                                                   ch.htlc_minimum_msat))
        out_paths.append(build_blinded_path(random_bytes(32), [(ch.peer_id, hop.encode()), (our_id, final.encode())]))
        infos.append(BlindedPayInfo(ch.fee_base_msat, ch.fee_proportional_millionths,
                                    ch.cltv_expiry_delta + final_cltv, max(1, ch.htlc_minimum_msat),
                                    _htlc_max(ch)))
    if not out_paths:
        out_paths.append(build_blinded_path(random_bytes(32), [(our_id, final.encode())]))
        infos.append(BlindedPayInfo(0, 0, final_cltv, 1, 2 ** 63))
    return out_paths, infos


def _htlc_max(ch: IncomingChannel) -> int:
    """The most one HTLC can carry over this path: the peer's channel_update htlc_maximum_msat.

    Not ``incoming_capacity_msat``: lightningd derives that from the peer's *other* public channels,
    so it is 0 when the peer has none, and an LDK payer then finds no route (htlc_maximum_msat = 1).
    """
    return max(1, ch.htlc_maximum_msat or ch.incoming_capacity_msat)


def build_static_invoice(offer: Offer, signing_key: bytes, created_at: int, pay_paths: List[BlindedPath],
                         payinfos: List[BlindedPayInfo], message_paths: List[BlindedPath]) -> StaticInvoice:
    exp = offer.absolute_expiry
    relative = MAX_U32 if exp is None else max(1, min(MAX_U32, exp - created_at))
    return StaticInvoice.build(offer, pay_paths, payinfos, created_at, relative, message_paths,
                               BASIC_MPP_OPTIONAL, signing_key)


def relative_expiry(offer: Offer, now: int) -> int:
    exp = offer.absolute_expiry
    return MAX_U32 if exp is None else max(1, min(MAX_U32, exp - now))
