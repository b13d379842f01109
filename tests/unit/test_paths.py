import pytest
from hypothesis import given, strategies as st

from asyncreceive.errors import DecodeError
from asyncreceive.wire.paths import (BlindedPath, decode_path_list, decode_paths,
                                     decode_payinfos, decode_server_paths, encode_path_list, encode_paths,
                                     encode_payinfos)
from asyncreceive.wire.tlv import Reader

from .strategies import blinded_paths, payinfos


@given(blinded_paths)
def test_path_roundtrip(p):
    assert BlindedPath.decode(p.encode()) == p
    assert decode_server_paths(p.encode()) == [p]


@given(st.lists(blinded_paths, max_size=4))
def test_path_lists_roundtrip(ps):
    assert decode_paths(encode_paths(ps)) == ps
    assert decode_path_list(encode_path_list(ps)) == ps
    if ps:
        assert decode_server_paths(encode_path_list(ps)) == ps


@given(st.lists(payinfos, max_size=4))
def test_payinfo_roundtrip(infos):
    assert decode_payinfos(encode_payinfos(infos)) == infos


@given(blinded_paths, st.data())
def test_truncated_path_rejected(p, data):
    enc = p.encode()
    cut = data.draw(st.integers(0, len(enc) - 1))
    with pytest.raises(DecodeError):
        BlindedPath.decode(enc[:cut])


@given(blinded_paths)
def test_trailing_bytes_rejected(p):
    with pytest.raises(DecodeError, match="trailing"):
        BlindedPath.decode(p.encode() + b"\x00")


@given(st.binary(max_size=300))
def test_garbage_only_decode_error(data):
    for fn in (BlindedPath.decode, decode_paths, decode_path_list, decode_server_paths, decode_payinfos):
        try:
            fn(data)
        except DecodeError:
            pass


@given(blinded_paths)
def test_zero_hops_and_bad_points_rejected(p):
    enc = bytearray(p.encode())
    intro_len = 33 if p.introduction.node_id else 9
    zero = bytes(enc[:intro_len + 33]) + b"\x00"
    with pytest.raises(DecodeError, match="at least one hop"):
        BlindedPath.decode(zero)
    bad = bytearray(enc)
    bad[intro_len] = 0x04  # first_path_key prefix
    with pytest.raises(DecodeError, match="first_path_key"):
        BlindedPath.decode(bytes(bad))


def test_intro_byte_rejected():
    with pytest.raises(DecodeError, match="neither a sciddir"):
        BlindedPath.read(Reader(b"\x05" + b"\x00" * 80))


def test_server_paths_error_names_both_forms():
    with pytest.raises(DecodeError, match="neither a blinded_path .* nor a u16-counted list"):
        decode_server_paths(b"\x07\x07")
