"""Records declared once, as tables, with one strict generic codec on top of :mod:`.tlv`.

A record set (a wire message body, a datastore value) is a :class:`Table` of :class:`Field` rows:
type number, name, value codec, and whether the field is required.  The table alone says how the
record is written and read, so each record set is declared in one place, the way the spec's CSV
tables are:

    OFFER_PATHS_TABLE = Table("offer_paths", [
        Field(0, "paths", BLINDED_PATHS, required=True),
        Field(2, "paths_absolute_expiry", U64),
    ], length_prefixed=True)

Decoding keeps BOLT 1's rules (minimal BigSize, strictly increasing types, an unknown even type is an
error, an unknown odd type is skipped) and raises only :class:`~asyncreceive.errors.DecodeError`, naming
the record and the field (``offer_paths.paths``).  A value codec's decoder must do the same; the ones
here do.  A dataclass that subclasses :class:`TableRecord` gets ``encode``/``decode`` from its table;
its field names are the table's.
"""

from dataclasses import dataclass, fields as dataclass_fields
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import DecodeError
from .paths import BlindedPath, decode_paths, decode_payinfos, encode_paths, encode_payinfos
from .tlv import Reader, bigsize, decode_fixed, decode_point, decode_tlv, decode_tu, encode_tlv, tu64


@dataclass(frozen=True)
class Codec:
    """How one field's value becomes the bytes of its TLV record, and back.

    ``decode(value_bytes, field_name)`` raises only DecodeError."""

    name: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes, str], Any]


def fixed_int(size: int) -> Codec:
    return Codec(f"u{size * 8}", lambda n: n.to_bytes(size, "big"), lambda v, f: decode_fixed(v, size, f))


def truncated_int(size: int) -> Codec:
    return Codec(f"tu{size * 8}", tu64, lambda v, f: decode_tu(v, size, f))


def fixed_bytes(size: int) -> Codec:
    def decode(v: bytes, f: str) -> bytes:
        if len(v) != size:
            raise DecodeError(f, f"{len(v)} bytes, not {size}")
        return v
    return Codec(f"byte[{size}]", bytes, decode)


def _nonempty(v: bytes, f: str) -> bytes:
    if not v:
        raise DecodeError(f, "empty")
    return v


U16 = fixed_int(2)
U32 = fixed_int(4)
U64 = fixed_int(8)
TU32 = truncated_int(4)
TU64 = truncated_int(8)
BYTES = Codec("byte[]", bytes, lambda v, f: v)
NONEMPTY_BYTES = Codec("byte[1..]", bytes, _nonempty)
POINT = Codec("point", bytes, decode_point)
NODE_ID_BYTES = fixed_bytes(33)    # 33 bytes, not checked to be on the curve (records we wrote)
UTF8 = Codec("utf8", lambda s: s.encode(), lambda v, f: _utf8(v, f))


def _utf8(v: bytes, f: str) -> str:
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f, "not valid UTF-8")


def nonempty(codec: Codec, why: str = "empty") -> Codec:
    """``codec`` whose decoded value (a list or bytes) must not be empty."""
    def decode(v: bytes, f: str):
        out = codec.decode(v, f)
        if not out:
            raise DecodeError(f, why)
        return out
    return Codec(codec.name + "[1..]", codec.encode, decode)


def array(size: int, why: Optional[str] = None) -> Codec:
    """A list of ``size``-byte items, concatenated (``chain_hash[]``); at least one with ``why`` (the
    error when it is empty)."""
    def decode(v: bytes, f: str):
        if len(v) % size or (why is not None and not v):
            raise DecodeError(f, why or f"{len(v)} bytes is not a whole number of {size}-byte items")
        return [v[i:i + size] for i in range(0, len(v), size)]
    return Codec(f"byte[{size}][]", lambda items: b"".join(items), decode)


def record_codec(cls) -> Codec:
    """A field whose value is itself a record (anything with ``encode()`` and ``decode(data, field)``)."""
    return Codec(cls.__name__, lambda r: r.encode(), lambda v, f: cls.decode(v, f))


BLINDED_PATH = record_codec(BlindedPath)
BLINDED_PATHS = Codec("blinded_path[]", encode_paths, decode_paths)
BLINDED_PAYINFOS = Codec("blinded_payinfo[]", encode_payinfos, decode_payinfos)
SIGNATURE = fixed_bytes(64)        # BIP-340
SHA256 = fixed_bytes(32)

# ---- codecs of the datastore records (server, mailbox, recipient, received payments) ----
U8 = fixed_int(1)
#: text read as older versions read it: bytes that are not UTF-8 become U+FFFD, never an error (a payer's note)
UTF8_REPLACE = Codec("utf8 (lossy)", lambda s: s.encode(), lambda v, f: v.decode("utf-8", "replace"))


def one_of(name: str, values: Sequence[Any]) -> Codec:
    """One byte: the value's index in ``values`` (stored, so ``values`` is append-only)."""
    def decode(v: bytes, f: str):
        i = decode_fixed(v, 1, f)
        if i >= len(values):
            raise DecodeError(f, f"unknown {name} {i}")
        return values[i]
    return Codec(name, lambda x: bytes([values.index(x)]), decode)


#: a field whose presence is the value (True); its bytes, empty when we write them, are not read
FLAG = Codec("flag", lambda _: b"", lambda v, f: True)


def table_codec(table: "Table") -> Codec:
    """A field whose value is a record of another table, as that table's {field name: value}."""
    return Codec(table.name, table.encode, lambda v, f: table.decode(v, f))


def u16_prefixed_list(item: Codec, min_count: int = 0, max_count: Optional[int] = None) -> Codec:
    """Items each written as u16 length || item, one after another to the end of the value (a tuple)."""
    def encode(items) -> bytes:
        out = b""
        for x in items:
            data = item.encode(x)
            out += len(data).to_bytes(2, "big") + data
        return out

    def decode(v: bytes, f: str) -> tuple:
        r, out = Reader(v), []
        while not r.at_end():
            name = f"{f}[{len(out)}]"
            out.append(item.decode(r.read(r.u16(f"{name}.length"), name), name))
            if max_count is not None and len(out) > max_count:
                raise DecodeError(f, f"more than {max_count} items")
        if len(out) < min_count:
            raise DecodeError(f, f"{len(out)} items, fewer than {min_count}")
        return tuple(out)
    return Codec(f"({item.name} with u16 length)[]", encode, decode)


@dataclass(frozen=True)
class Field:
    type: int
    name: str
    codec: Codec
    required: bool = False
    default: Any = None      # the value when an optional field is absent


class Table:
    """One record set: its fields by type number, and whether its stream is LDK's length-prefixed
    "TLV struct" (``BigSize(len) || TLV stream``) or a plain TLV stream."""

    def __init__(self, name: str, fields: Sequence[Field], length_prefixed: bool = False,
                 also_known: Optional[Callable[[int], bool]] = None):
        types = [f.type for f in fields]
        names = [f.name for f in fields]
        if len(set(types)) != len(types) or len(set(names)) != len(names):
            raise ValueError(f"{name}: duplicate field type or name")
        self.name = name
        self.fields: Tuple[Field, ...] = tuple(sorted(fields, key=lambda f: f.type))
        self.length_prefixed = length_prefixed
        self.types = frozenset(types)
        self._by_type: Dict[int, Field] = {f.type: f for f in self.fields}
        # types outside the table that its owner reads itself (e.g. onionmsg_tlv's one message record):
        # not refused when even; ``decode(keep_unknown=True)`` returns them with the unknown odd ones
        self.also_known = also_known

    def by_type(self, t: int) -> Optional[Field]:
        return self._by_type.get(t)

    def known(self, t: int) -> bool:
        return t in self.types or (self.also_known is not None and bool(self.also_known(t)))

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def encode(self, values: Mapping[str, Any], extra: Iterable[Tuple[int, bytes]] = ()) -> bytes:
        """The record's bytes; a field whose value is None is left out (a required one may not be).
        ``extra`` adds records outside the table (e.g. unknown odd records kept from input)."""
        for f in self.fields:
            if f.required and values.get(f.name) is None:
                raise ValueError(f"{self.name}.{f.name} is required")
        records = self.records(values)
        records.extend(extra)
        stream = encode_tlv(sorted(records))
        return bigsize(len(stream)) + stream if self.length_prefixed else stream

    def records(self, values: Mapping[str, Any]) -> List[Tuple[int, bytes]]:
        """(type, value bytes) of each field whose value is not None, in type order; no field is
        required here (for a record still being built, e.g. before its signature)."""
        return [(f.type, f.codec.encode(values[f.name])) for f in self.fields if values.get(f.name) is not None]

    def decode(self, data: bytes, field: Optional[str] = None,
               keep_unknown: bool = False) -> Dict[str, Any]:
        """{field name: value} for every field of the table (absent optional ones get their default).
        With ``keep_unknown``, unknown odd records (and ``also_known`` ones) are returned under the key
        ``"unknown"``."""
        where = field or self.name
        if self.length_prefixed:
            r = Reader(data)
            length = r.bigsize(f"{where}.length")
            inner = r.read(length, f"{where}.tlv")
            r.expect_end(where)
        else:
            inner = data
        out: Dict[str, Any] = {f.name: f.default for f in self.fields}
        seen = set()
        unknown = []
        known = self.types if self.also_known is None else self.known
        for t, v in decode_tlv(inner, where, known=known).records:
            f = self._by_type.get(t)
            if f is None:
                unknown.append((t, v))
                continue
            out[f.name] = f.codec.decode(v, f"{where}.{f.name}")
            seen.add(t)
        for f in self.fields:
            if f.required and f.type not in seen:
                raise DecodeError(f"{where}.{f.name}", "required field missing")
        if keep_unknown:
            out["unknown"] = tuple(unknown)
        return out


class TableRecord:
    """Base of a frozen dataclass declared by a table: ``TABLE`` names its fields, which are the
    dataclass's own fields (checked by :func:`check_record`)."""

    TABLE: ClassVar[Table]

    def encode(self) -> bytes:
        return self.TABLE.encode({f.name: getattr(self, f.name) for f in self.TABLE.fields})

    @classmethod
    def decode(cls, data: bytes, field: Optional[str] = None):
        return cls(**cls.TABLE.decode(data, field))


def check_record(cls) -> None:
    """Raise if a TableRecord's dataclass fields are not exactly its table's fields."""
    own = {f.name for f in dataclass_fields(cls)}
    table = {f.name for f in cls.TABLE.fields}
    if own != table:
        raise TypeError(f"{cls.__name__}: dataclass fields {sorted(own)} != table {cls.TABLE.name} "
                        f"fields {sorted(table)}")
