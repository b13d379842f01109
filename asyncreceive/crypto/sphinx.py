"""BOLT 4 Sphinx onion packets with a variable routing-info size (1300 for payments and small onion
messages, 32768 for large onion messages), and the ``onion_message`` (type 513) wire wrapper.

Packet: ``version (0x00) || ephemeral pubkey (33) || routing_info (size) || hmac (32)``.  Each hop's
slice of the routing info is ``bigsize(len) || payload || next_hmac(32)``; a zero ``next_hmac`` marks the
final hop.  Keys per hop: ``rho``/``mu`` = HMAC256(label, shared secret); the initial routing info is
the ChaCha20 stream keyed by HMAC256("pad", session key).
"""

import hmac as _hmac
from typing import List, Optional, Sequence, Tuple

from coincurve import PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from ..errors import DecodeError
from ..wire.tlv import Reader, bigsize, decode_point, u16
from .blinding import ecdh, hmac256, pubkey_of, secret_times, sha256

VERSION = 0
HMAC_LEN = 32
SMALL_SIZE = 1300
LARGE_SIZE = 32768
ONION_MESSAGE_TYPE = 513


def chacha_stream(key: bytes, n: int) -> bytes:
    """``n`` bytes of ChaCha20 keystream, key ``key``, zero nonce and counter."""
    return Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor().update(b"\x00" * n)


def chacha_xor(key: bytes, data: bytes) -> bytes:
    """``data`` XOR the ChaCha20 keystream of ``key`` (zero nonce and counter), in C: what
    ``_xor(data, chacha_stream(key, len(data)))`` gives, without big-integer arithmetic."""
    return Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor().update(data)


def _xor(a: bytes, b: bytes) -> bytes:
    n = len(a)
    return (int.from_bytes(a, "big") ^ int.from_bytes(b[:n], "big")).to_bytes(n, "big")


def _mac(key: bytes, data: bytes) -> bytes:
    return _hmac.digest(key, data, "sha256")


def hop_size(payload: bytes) -> int:
    """Routing-info bytes one hop takes: bigsize(len) || payload || hmac."""
    return len(bigsize(len(payload))) + len(payload) + HMAC_LEN


def _shared_secrets(session_key: bytes, pubkeys: Sequence[bytes]) -> List[bytes]:
    e = session_key
    out = []
    for pk in pubkeys:
        E = pubkey_of(e)
        ss = ecdh(e, pk)
        out.append(ss)
        e = secret_times(e, sha256(E + ss))
    return out


def _filler(secrets: Sequence[bytes], sizes: Sequence[int], size: int) -> bytes:
    filler = b""
    for ss, n in zip(secrets[:-1], sizes[:-1]):
        stream = chacha_stream(hmac256(b"rho", ss), size + n)
        filler = _xor(filler + b"\x00" * n, stream[size - len(filler):])
    return filler


def build_packet(session_key: bytes, hops: Sequence[Tuple[bytes, bytes]], size: Optional[int] = None,
                 assocdata: bytes = b"") -> bytes:
    """Build an onion for ``hops`` = [(pubkey33, payload without its length prefix)], first hop first.

    ``size`` is the routing-info size: None picks 1300 if everything fits, else 32768.  Raises
    ValueError if there are no hops, a payload is empty, or the payloads don't fit.
    """
    if not hops:
        raise ValueError("an onion needs at least one hop")
    payloads = [bytes(p) for _, p in hops]
    if any(len(p) == 0 for p in payloads):
        raise ValueError("empty hop payloads are not supported (zero length means a legacy payload)")
    sizes = [hop_size(p) for p in payloads]
    need = sum(sizes)
    if size is None:
        size = SMALL_SIZE if need <= SMALL_SIZE else LARGE_SIZE
    if need > size:
        raise ValueError(f"hop payloads need {need} bytes, more than the routing info size {size}")

    secrets = _shared_secrets(session_key, [pk for pk, _ in hops])
    filler = _filler(secrets, sizes, size)
    info = chacha_stream(hmac256(b"pad", session_key), size)
    next_hmac = b"\x00" * HMAC_LEN
    for i in range(len(hops) - 1, -1, -1):
        ss = secrets[i]
        hop = bigsize(len(payloads[i])) + payloads[i] + next_hmac
        info = chacha_xor(hmac256(b"rho", ss), hop + info[:size - len(hop)])
        if i == len(hops) - 1 and filler:
            info = info[:size - len(filler)] + filler
        next_hmac = _mac(hmac256(b"mu", ss), info + assocdata)
    return bytes([VERSION]) + pubkey_of(session_key) + info + next_hmac


def peel_packet(priv: bytes, packet: bytes, assocdata: bytes = b"") -> Tuple[bytes, Optional[bytes]]:
    """Remove one layer with our (possibly blinded) private key.

    Returns (our payload without its length prefix, the next hop's packet or None if we are the final hop).
    Anything malformed or not for us raises DecodeError with a field starting ``onion.``.
    """
    packet = bytes(packet)
    size = len(packet) - 1 - 33 - HMAC_LEN
    if size <= 0:
        raise DecodeError("onion", f"packet of {len(packet)} bytes is too short")
    if packet[0] != VERSION:
        raise DecodeError("onion.version", f"unknown version {packet[0]}")
    eph = decode_point(packet[1:34], "onion.ephemeral_key")
    info = packet[34:34 + size]
    mac = packet[34 + size:]
    try:
        ss = ecdh(priv, eph)
    except Exception as e:
        raise DecodeError("onion.ephemeral_key", f"ECDH failed: {e}")
    if not _hmac.compare_digest(_mac(hmac256(b"mu", ss), info + assocdata), mac):
        raise DecodeError("onion.hmac", "HMAC mismatch (not for this key, or tampered)")
    rho = hmac256(b"rho", ss)
    # the payload's length first (a bigsize is at most 9 bytes), then the payload and the next HMAC;
    # the rest of the routing info only when there is a next hop
    head = chacha_xor(rho, info[:9])
    r = Reader(head)
    length = r.bigsize("onion.payload.length")
    if length == 0:
        raise DecodeError("onion.payload.length", "zero length (legacy payloads are not supported)")
    shift = r.pos + length + HMAC_LEN
    if shift > size:
        raise DecodeError("onion.payload.length", f"payload of {length} bytes does not fit in {size}")
    plain = chacha_xor(rho, info[:shift])
    payload = plain[r.pos:r.pos + length]
    next_mac = plain[shift - HMAC_LEN:shift]
    if next_mac == b"\x00" * HMAC_LEN:
        return payload, None
    next_info = chacha_xor(rho, info + b"\x00" * shift)[shift:]
    next_eph = PublicKey(eph).multiply(sha256(eph + ss)).format()
    return payload, bytes([VERSION]) + next_eph + next_info + next_mac


def encode_onion_message(path_key: bytes, packet: bytes) -> bytes:
    """Wire ``onion_message``: type 513 || path_key(33) || u16 len || onion_message_packet."""
    if len(path_key) != 33:
        raise ValueError("path_key must be a 33-byte point")
    if len(packet) > 0xFFFF:
        raise ValueError("onion message packet longer than 65535 bytes")
    return u16(ONION_MESSAGE_TYPE) + path_key + u16(len(packet)) + packet


def decode_onion_message(data: bytes) -> Tuple[bytes, bytes]:
    """Parse a wire ``onion_message`` into (path_key, packet)."""
    r = Reader(bytes(data))
    t = r.u16("onion_message.type")
    if t != ONION_MESSAGE_TYPE:
        raise DecodeError("onion_message.type", f"expected {ONION_MESSAGE_TYPE}, got {t}")
    path_key = decode_point(r.read(33, "onion_message.path_key"), "onion_message.path_key")
    n = r.u16("onion_message.len")
    packet = r.read(n, "onion_message.onion_message_packet")
    r.expect_end("onion_message")
    return path_key, packet
