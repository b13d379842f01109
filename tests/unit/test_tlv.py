import pytest
from hypothesis import given, strategies as st

from asyncreceive.errors import DecodeError
from asyncreceive.wire.tlv import Reader, bigsize, decode_tlv, decode_tu, encode_tlv, tu64

# BOLT 1 BigSize vectors (appendix A)
BIGSIZE = [(0, "00"), (252, "fc"), (253, "fd00fd"), (65535, "fdffff"), (65536, "fe00010000"),
           (4294967295, "feffffffff"), (4294967296, "ff0000000100000000"),
           (18446744073709551615, "ffffffffffffffffff")]
NON_MINIMAL = ["fd00fc", "fe0000ffff", "ff00000000ffffffff"]
TRUNCATED = ["fd00", "feffff", "ffffffffff", "", "fd", "fe", "ff"]


@pytest.mark.parametrize("n,hexs", BIGSIZE)
def test_bigsize_vectors(n, hexs):
    assert bigsize(n).hex() == hexs
    assert Reader(bytes.fromhex(hexs)).bigsize("x") == n


@pytest.mark.parametrize("hexs", NON_MINIMAL + TRUNCATED)
def test_bigsize_rejects(hexs):
    with pytest.raises(DecodeError) as e:
        Reader(bytes.fromhex(hexs)).bigsize("thing.length")
    assert e.value.field == "thing.length"


@given(st.integers(0, 2**64 - 1))
def test_bigsize_roundtrip(n):
    r = Reader(bigsize(n))
    assert r.bigsize("n") == n and r.at_end()


@given(st.integers(0, 2**64 - 1))
def test_tu64_roundtrip_and_minimal(n):
    enc = tu64(n)
    assert decode_tu(enc, 8, "x") == n
    assert enc[:1] != b"\x00"
    with pytest.raises(DecodeError, match="not minimal"):
        decode_tu(b"\x00" + enc, 9, "x")


def test_tu32_too_long():
    with pytest.raises(DecodeError, match="longer than 4"):
        decode_tu(b"\x01\x00\x00\x00\x00", 4, "x")


records = st.dictionaries(st.integers(0, 2**40), st.binary(max_size=300), max_size=8).map(
    lambda d: sorted(d.items()))


@given(records)
def test_stream_roundtrip(recs):
    enc = encode_tlv(recs)
    s = decode_tlv(enc, "s", known=lambda t: True)
    assert list(s.records) == recs
    assert s.encode() == enc
    assert b"".join(s.raw_records()) == enc


def test_stream_rules():
    # strictly increasing
    with pytest.raises(DecodeError, match="strictly increasing"):
        decode_tlv(bytes.fromhex("0100" + "0100"), "s", known={1})
    with pytest.raises(DecodeError, match="strictly increasing"):
        decode_tlv(bytes.fromhex("0300" + "0100"), "s", known={1, 3})
    # unknown even rejected, unknown odd kept
    with pytest.raises(DecodeError, match="unknown even") as e:
        decode_tlv(bytes.fromhex("0200"), "msg", known=set())
    assert e.value.field == "msg[2]"
    assert decode_tlv(bytes.fromhex("0301ff"), "s", known=set()).get(3) == b"\xff"
    # length past the end
    with pytest.raises(DecodeError, match="truncated"):
        decode_tlv(bytes.fromhex("0105ff"), "s", known={1})
    # non-minimal type and length encodings
    with pytest.raises(DecodeError, match="minimal"):
        decode_tlv(bytes.fromhex("fd000100"), "s", known={1})
    with pytest.raises(DecodeError, match="minimal"):
        decode_tlv(bytes.fromhex("01fd0001ff"), "s", known={1})


@given(st.binary(max_size=200))
def test_stream_garbage_raises_only_decode_error(data):
    try:
        decode_tlv(data, "s", known=lambda t: True)
    except DecodeError:
        pass
