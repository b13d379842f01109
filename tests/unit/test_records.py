"""The generic record codec (asyncreceive/wire/records.py) and every record declared with it."""

import importlib
import pkgutil

import pytest
from hypothesis import given, settings, strategies as st

import asyncreceive
from asyncreceive.errors import DecodeError
from asyncreceive.wire.records import (BYTES, TU64, U16, Field, Table, TableRecord, check_record,
                                       fixed_bytes)
from asyncreceive.wire.tlv import bigsize, encode_tlv

DEMO = Table("demo", [
    Field(0, "id", BYTES, required=True),
    Field(2, "count", TU64, required=True),
    Field(4, "slot", U16),
    Field(5, "tag", fixed_bytes(8)),
])
DEMO_PREFIXED = Table("demo", DEMO.fields, length_prefixed=True)

values = st.fixed_dictionaries({
    "id": st.binary(max_size=40), "count": st.integers(0, 2**64 - 1),
    "slot": st.none() | st.integers(0, 0xFFFF), "tag": st.none() | st.binary(min_size=8, max_size=8)})


def all_record_classes():
    for info in pkgutil.walk_packages(asyncreceive.__path__, "asyncreceive."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
    out, todo = [], list(TableRecord.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if "TABLE" in vars(cls) or any("TABLE" in vars(b) for b in cls.__mro__[1:-1] if b is not TableRecord):
            out.append(cls)
    return out


@settings(max_examples=300)
@given(values, st.booleans())
def test_round_trip(v, prefixed):
    table = DEMO_PREFIXED if prefixed else DEMO
    assert table.decode(table.encode(v)) == v


@settings(max_examples=500)
@given(st.binary(max_size=80), st.booleans())
def test_any_bytes_decode_or_raise_decode_error(data, prefixed):
    table = DEMO_PREFIXED if prefixed else DEMO
    try:
        v = table.decode(data)
    except DecodeError:
        return
    # what decodes re-encodes to a record that decodes to the same values (odd unknowns are dropped)
    assert table.decode(table.encode(v)) == v


def test_rules_and_error_names():
    with pytest.raises(DecodeError, match=r"demo\.count.*required"):
        DEMO.decode(encode_tlv([(0, b"x")]))
    with pytest.raises(DecodeError, match="unknown even"):
        DEMO.decode(encode_tlv([(0, b"x"), (2, b"\x01"), (6, b"")]))
    # unknown odd records are skipped, or kept on request
    data = encode_tlv([(0, b"x"), (2, b"\x01"), (7, b"zz")])
    assert DEMO.decode(data)["count"] == 1
    assert DEMO.decode(data, keep_unknown=True)["unknown"] == ((7, b"zz"),)
    with pytest.raises(DecodeError, match=r"demo\.count"):
        DEMO.decode(encode_tlv([(0, b"x"), (2, b"\x00\x01")]))      # not minimal
    with pytest.raises(DecodeError, match=r"demo\.tag"):
        DEMO.decode(encode_tlv([(0, b"x"), (2, b"\x01"), (5, b"short")]))
    with pytest.raises(DecodeError, match=r"where\.slot"):
        DEMO.decode(encode_tlv([(0, b"x"), (2, b"\x01"), (4, b"\x01")]), "where")
    inner = encode_tlv([(0, b"x"), (2, b"\x01")])
    assert DEMO_PREFIXED.decode(bigsize(len(inner)) + inner)["id"] == b"x"
    with pytest.raises(DecodeError):
        DEMO_PREFIXED.decode(bigsize(len(inner)) + inner + b"\x00")    # trailing bytes
    with pytest.raises(ValueError):
        DEMO.encode({"id": b"x"})                                        # a required field is None
    with pytest.raises(ValueError):
        Table("twice", [Field(0, "a", BYTES), Field(0, "b", BYTES)])


def test_every_declared_record_matches_its_table():
    classes = all_record_classes()
    assert len(classes) >= 3
    for cls in classes:
        check_record(cls)


def test_also_known_types_are_kept_not_refused():
    table = Table("env", [Field(2, "a", BYTES)], also_known=lambda t: t >= 64)
    data = encode_tlv([(2, b"x"), (7, b"o"), (64, b"m")])
    assert table.decode(data, keep_unknown=True) == {"a": b"x", "unknown": ((7, b"o"), (64, b"m"))}
    with pytest.raises(DecodeError, match=r"env\[6\]: unknown even"):
        table.decode(encode_tlv([(6, b"")]))
    assert table.encode({"a": b"x"}, [(7, b"o"), (64, b"m")]) == data
    assert table.by_type(2).name == "a" and table.by_type(64) is None and table.known(64) and not table.known(6)


@given(st.lists(st.binary(min_size=4, max_size=4), max_size=4), st.booleans())
def test_array_and_nonempty(items, required):
    from asyncreceive.wire.records import array, nonempty
    codec = array(4, "no items") if required else array(4)
    raw = codec.encode(items)
    if required and not items:
        with pytest.raises(DecodeError, match="no items"):
            codec.decode(raw, "x")
    else:
        assert codec.decode(raw, "x") == items
    with pytest.raises(DecodeError, match="^x: "):
        codec.decode(raw + b"\x00", "x")
    if not items:
        with pytest.raises(DecodeError, match="^y: empty$"):
            nonempty(array(4)).decode(raw, "y")
