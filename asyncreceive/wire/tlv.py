"""BOLT 1 primitives: BigSize, fixed and truncated integers, and TLV streams.

Decoding is strict, as BOLT 1 requires:
- BigSize and tu32/tu64 must be minimally encoded;
- TLV types must be strictly increasing;
- an unknown *even* type is an error, an unknown *odd* type is kept.

Every failure raises :class:`~asyncreceive.errors.DecodeError` naming the field.
"""

from dataclasses import dataclass
from typing import Callable, Container, Iterable, List, Optional, Tuple, Union

from ..errors import DecodeError


class Reader:
    """A cursor over bytes whose reads fail with a DecodeError naming the field."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: Optional[int] = None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def at_end(self) -> bool:
        return self.pos >= self.end

    def read(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise DecodeError(field, f"truncated: need {n} bytes, have {self.end - self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def rest(self) -> bytes:
        out = self.data[self.pos:self.end]
        self.pos = self.end
        return out

    def u8(self, field: str) -> int:
        return self.read(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.read(2, field), "big")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.read(4, field), "big")

    def u64(self, field: str) -> int:
        return int.from_bytes(self.read(8, field), "big")

    def bigsize(self, field: str) -> int:
        first = self.u8(field)
        if first < 0xFD:
            return first
        width, minimum = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x100000000)}[first]
        value = int.from_bytes(self.read(width, field), "big")
        if value < minimum:
            raise DecodeError(field, "BigSize not minimally encoded")
        return value

    def expect_end(self, field: str) -> None:
        if self.pos != self.end:
            raise DecodeError(field, f"{self.end - self.pos} unexpected trailing bytes")


def bigsize(n: int) -> bytes:
    if n < 0 or n > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"BigSize out of range: {n}")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "big")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "big")
    return b"\xff" + n.to_bytes(8, "big")


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def tu64(n: int) -> bytes:
    """Truncated integer: big-endian with leading zero bytes dropped (0 is the empty string)."""
    if n < 0 or n > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"tu64 out of range: {n}")
    return n.to_bytes(8, "big").lstrip(b"\x00")


tu32 = tu64


def decode_tu(value: bytes, maxlen: int, field: str) -> int:
    """Decode a tu16/tu32/tu64 of at most ``maxlen`` bytes, rejecting a leading zero byte."""
    if len(value) > maxlen:
        raise DecodeError(field, f"truncated integer longer than {maxlen} bytes")
    if value[:1] == b"\x00":
        raise DecodeError(field, "truncated integer not minimal (leading zero byte)")
    return int.from_bytes(value, "big")


def decode_fixed(value: bytes, size: int, field: str) -> int:
    if len(value) != size:
        raise DecodeError(field, f"expected {size} bytes, got {len(value)}")
    return int.from_bytes(value, "big")


def decode_point(value: bytes, field: str) -> bytes:
    """Check a 33-byte compressed secp256k1 point and return it unchanged."""
    from coincurve import PublicKey

    if len(value) != 33 or value[0] not in (2, 3):
        raise DecodeError(field, "not a 33-byte compressed public key")
    try:
        PublicKey(value)
    except Exception:
        raise DecodeError(field, "not a point on secp256k1")
    return value


Record = Tuple[int, bytes]


@dataclass(frozen=True)
class TlvStream:
    """An ordered TLV stream: ``records`` is a list of (type, value), strictly increasing by type."""

    records: Tuple[Record, ...]

    def get(self, t: int) -> Optional[bytes]:
        for typ, val in self.records:
            if typ == t:
                return val
        return None

    def __contains__(self, t: int) -> bool:
        return self.get(t) is not None

    def types(self) -> List[int]:
        return [t for t, _ in self.records]

    def encode(self) -> bytes:
        return encode_tlv(self.records)

    def raw_records(self) -> List[bytes]:
        """Each record's exact bytes (type || length || value), as used by the BOLT 12 merkle tree."""
        return [encode_record(t, v) for t, v in self.records]


def encode_record(t: int, value: bytes) -> bytes:
    return bigsize(t) + bigsize(len(value)) + value


def encode_tlv(records: Iterable[Record]) -> bytes:
    out = bytearray()
    last = -1
    for t, v in records:
        if t <= last:
            raise ValueError(f"TLV types must be strictly increasing ({t} after {last})")
        last = t
        out += encode_record(t, v)
    return bytes(out)


Known = Union[Container[int], Callable[[int], bool]]


def _is_known(known: Optional[Known], t: int) -> bool:
    if known is None:
        return False
    if callable(known):
        return bool(known(t))
    return t in known


def decode_tlv(data: Union[bytes, Reader], field: str, known: Optional[Known] = None,
               allow_unknown_even: bool = False) -> TlvStream:
    """Decode a whole TLV stream (to the end of ``data``) with BOLT 1 strictness.

    ``known`` lists the types the caller understands (a container or a predicate).  Unknown odd types are
    kept; unknown even types raise, unless ``allow_unknown_even`` (used where a caller wants to see every
    record, e.g. to report it, and checks types itself).
    """
    r = data if isinstance(data, Reader) else Reader(data)
    records = []
    last = -1
    while not r.at_end():
        t = r.bigsize(f"{field}.type")
        if t <= last:
            raise DecodeError(f"{field}.type", f"TLV type {t} not strictly increasing (after {last})")
        last = t
        length = r.bigsize(f"{field}[{t}].length")
        value = r.read(length, f"{field}[{t}].value")
        if t % 2 == 0 and not allow_unknown_even and not _is_known(known, t):
            raise DecodeError(f"{field}[{t}]", "unknown even TLV type")
        records.append((t, value))
    return TlvStream(tuple(records))
