import pytest
from hypothesis import given, strategies as st

from asyncreceive.crypto.context import ContextError, ContextKey, Kind, PathContext

KEY = ContextKey(b"\x11" * 32)
OTHER = ContextKey(b"\x22" * 32)

contexts = st.builds(PathContext, st.sampled_from(list(Kind)), st.one_of(st.none(), st.integers(0, 2**63)),
                     st.dictionaries(st.integers(4, 1000), st.binary(max_size=40), max_size=4))


@given(contexts)
def test_roundtrip_and_verify(ctx):
    b = ctx.encode()
    assert PathContext.decode(b) == PathContext(ctx.kind, ctx.expiry, ctx.fields or {})
    now = 0 if ctx.expiry is None else ctx.expiry
    assert KEY.verify(b, KEY.path_id(b), now).kind == ctx.kind


@given(contexts)
def test_other_key_rejected(ctx):
    b = ctx.encode()
    with pytest.raises(ContextError) as e:
        KEY.verify(b, OTHER.path_id(b), 0)
    assert e.value.reason == "bad_path_id"


@given(contexts, st.data())
def test_modified_context_rejected(ctx, data):
    b = bytearray(ctx.encode())
    i = data.draw(st.integers(0, len(b) - 1))
    pid = KEY.path_id(bytes(b))
    b[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ContextError) as e:
        KEY.verify(bytes(b), pid, 0)
    assert e.value.reason == "bad_path_id"


def test_expiry_and_kind():
    ctx = PathContext(Kind.OFFER_PATHS_REPLY, 1000, {4: b"\x00\x01"})
    b = ctx.encode()
    pid = KEY.path_id(b)
    assert KEY.verify(b, pid, 1000).get(4) == b"\x00\x01"
    with pytest.raises(ContextError, match="expired"):
        KEY.verify(b, pid, 1001)
    with pytest.raises(ContextError, match="wrong_kind"):
        KEY.verify(b, pid, 5, expect_kind=Kind.HELD_HTLC)
    with pytest.raises(ContextError, match="no_context"):
        KEY.verify(None, pid, 5)


def test_compact_path_id():
    ctx = PathContext(Kind.OFFER, 1_800_000_000, {4: b"\x00\x03"})
    pid = KEY.compact_path_id(ctx)
    assert len(pid) == 32
    assert KEY.verify_compact(pid, 5) == ctx
    with pytest.raises(ContextError, match="bad_path_id"):
        OTHER.verify_compact(pid, 5)
    with pytest.raises(ContextError, match="expired"):
        KEY.verify_compact(pid, 1_800_000_001)
    with pytest.raises(ValueError, match="does not fit"):
        KEY.compact_path_id(PathContext(Kind.OFFER, None, {4: b"x" * 20}))
    tampered = bytearray(pid)
    tampered[3] ^= 1
    with pytest.raises(ContextError):
        KEY.verify_compact(bytes(tampered), 5)


@pytest.mark.parametrize("t", [1, 3])
def test_context_records_below_4_other_than_kind_and_expiry_are_refused(t):
    """Found by fuzzing (fuzz/targets.py path_context): decode took odd types 1 and 3 as fields, which
    encode() then refused (field types start at 4), so such a context did not re-encode."""
    from asyncreceive.errors import DecodeError
    from asyncreceive.wire.tlv import encode_tlv
    b = encode_tlv([(0, bytes([Kind.OFFER])), (t, b"")])
    with pytest.raises(DecodeError, match="start at 4"):
        PathContext.decode(b)
    with pytest.raises(ContextError, match="bad_context"):
        KEY.verify(b, KEY.path_id(b), 0)


@given(st.binary(max_size=60))
def test_any_bytes_decode_to_the_same_bytes_or_raise_decode_error_naming_path_context(data):
    from asyncreceive.errors import DecodeError
    try:
        ctx = PathContext.decode(data)
    except DecodeError as e:
        assert e.field.startswith("path_context")
        return
    assert ctx.encode() == data
