"""BOLT 4 ``blinded_path`` and BOLT 12 ``blinded_payinfo``, singly and in lists.

Wire form of a ``blinded_path``::

    first_node_id   33-byte point, or sciddir: 1 byte direction (0/1) || 8-byte short_channel_id
    first_path_key  33-byte point
    num_hops        u8 (at least 1)
    num_hops * (blinded_node_id 33 || enclen u16 || encrypted_recipient_data)

Lists come in two forms: concatenated paths with no count (inside TLV values, e.g. ``offer_paths``),
and LDK's ``u16 count || paths`` (how ldk-node hands out paths to a static invoice server).
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..errors import DecodeError
from .tlv import Reader, decode_point, u16, u32, u64


@dataclass(frozen=True)
class BlindedHop:
    blinded_node_id: bytes
    encrypted_recipient_data: bytes


@dataclass(frozen=True)
class SciddirOrPubkey:
    """An introduction node: either a ``node_id`` or a (short_channel_id, direction) pair."""

    node_id: Optional[bytes] = None
    scid: Optional[int] = None
    direction: Optional[int] = None

    def encode(self) -> bytes:
        if self.node_id is not None:
            return self.node_id
        return bytes([self.direction]) + u64(self.scid)

    @staticmethod
    def read(r: Reader, field: str) -> "SciddirOrPubkey":
        first = r.read(1, field)[0]
        if first in (0, 1):
            return SciddirOrPubkey(scid=r.u64(field + ".short_channel_id"), direction=first)
        if first in (2, 3):
            return SciddirOrPubkey(node_id=decode_point(bytes([first]) + r.read(32, field), field))
        raise DecodeError(field, f"neither a sciddir (0/1) nor a point (02/03): first byte {first:#04x}")

    def scid_str(self) -> str:
        s = self.scid
        return f"{s >> 40}x{(s >> 16) & 0xFFFFFF}x{s & 0xFFFF}"


@dataclass(frozen=True)
class BlindedPath:
    introduction: SciddirOrPubkey
    first_path_key: bytes
    hops: Tuple[BlindedHop, ...]

    @property
    def first_node_id(self) -> Optional[bytes]:
        return self.introduction.node_id

    @property
    def final_blinded_node_id(self) -> bytes:
        return self.hops[-1].blinded_node_id

    def encode(self) -> bytes:
        if not 1 <= len(self.hops) <= 255:
            raise ValueError("a blinded path has 1 to 255 hops")
        out = bytearray(self.introduction.encode())
        out += self.first_path_key
        out.append(len(self.hops))
        for h in self.hops:
            if len(h.encrypted_recipient_data) > 0xFFFF:
                raise ValueError("encrypted_recipient_data longer than 65535 bytes")
            out += h.blinded_node_id + u16(len(h.encrypted_recipient_data)) + h.encrypted_recipient_data
        return bytes(out)

    @staticmethod
    def read(r: Reader, field: str = "blinded_path") -> "BlindedPath":
        intro = SciddirOrPubkey.read(r, field + ".first_node_id")
        path_key = decode_point(r.read(33, field + ".first_path_key"), field + ".first_path_key")
        n = r.u8(field + ".num_hops")
        if n == 0:
            raise DecodeError(field + ".num_hops", "a blinded path needs at least one hop")
        hops = []
        for i in range(n):
            hf = f"{field}.hops[{i}]"
            node = decode_point(r.read(33, hf + ".blinded_node_id"), hf + ".blinded_node_id")
            enclen = r.u16(hf + ".enclen")
            hops.append(BlindedHop(node, r.read(enclen, hf + ".encrypted_recipient_data")))
        return BlindedPath(intro, path_key, tuple(hops))

    @staticmethod
    def decode(data: bytes, field: str = "blinded_path") -> "BlindedPath":
        r = Reader(data)
        p = BlindedPath.read(r, field)
        r.expect_end(field)
        return p


def encode_paths(paths: List[BlindedPath]) -> bytes:
    """Concatenated paths, no count (the form inside TLV values)."""
    return b"".join(p.encode() for p in paths)


def _read_all(data: bytes, read, field: str) -> list:
    """Read items back to back until the data ends (lists without a count)."""
    r = Reader(data)
    out = []
    while not r.at_end():
        out.append(read(r, f"{field}[{len(out)}]"))
    return out


def decode_paths(data: bytes, field: str = "paths") -> List[BlindedPath]:
    return _read_all(data, BlindedPath.read, field)


def encode_path_list(paths: List[BlindedPath]) -> bytes:
    """LDK's ``Vec<BlindedMessagePath>``: u16 count || paths."""
    return u16(len(paths)) + encode_paths(paths)


def decode_path_list(data: bytes, field: str = "path_list") -> List[BlindedPath]:
    r = Reader(data)
    n = r.u16(field + ".count")
    out = [BlindedPath.read(r, f"{field}[{i}]") for i in range(n)]
    r.expect_end(field)
    return out


def decode_server_paths(data: bytes, field: str = "paths") -> List[BlindedPath]:
    """Accept either one encoded ``blinded_path`` or LDK's ``u16 count || paths`` list.

    The two cannot be confused: a single path starts with 00/01/02/03 then a 33-byte point (02/03), while
    a list with at most 255 paths starts with 00 0N followed by a path (whose first byte is 00..03).
    """
    errors = []
    for fn in (BlindedPath.decode, decode_path_list):
        try:
            out = fn(data, field)
            return out if isinstance(out, list) else [out]
        except DecodeError as e:
            errors.append(e)
    raise DecodeError(field, f"neither a blinded_path ({errors[0].reason}) "
                             f"nor a u16-counted list of paths ({errors[1].reason})")


@dataclass(frozen=True)
class BlindedPayInfo:
    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int
    htlc_maximum_msat: int
    features: bytes = b""

    def encode(self) -> bytes:
        return (u32(self.fee_base_msat) + u32(self.fee_proportional_millionths) + u16(self.cltv_expiry_delta)
                + u64(self.htlc_minimum_msat) + u64(self.htlc_maximum_msat)
                + u16(len(self.features)) + self.features)

    @staticmethod
    def read(r: Reader, field: str = "blinded_payinfo") -> "BlindedPayInfo":
        base = r.u32(field + ".fee_base_msat")
        ppm = r.u32(field + ".fee_proportional_millionths")
        cltv = r.u16(field + ".cltv_expiry_delta")
        hmin = r.u64(field + ".htlc_minimum_msat")
        hmax = r.u64(field + ".htlc_maximum_msat")
        flen = r.u16(field + ".flen")
        return BlindedPayInfo(base, ppm, cltv, hmin, hmax, r.read(flen, field + ".features"))


def encode_payinfos(infos: List[BlindedPayInfo]) -> bytes:
    return b"".join(i.encode() for i in infos)


def decode_payinfos(data: bytes, field: str = "blindedpay") -> List[BlindedPayInfo]:
    return _read_all(data, BlindedPayInfo.read, field)
