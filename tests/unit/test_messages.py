import pytest
from hypothesis import given, strategies as st

from asyncreceive.errors import DecodeError
from asyncreceive.wire import messages as m

from .strategies import blinded_paths, points

# Appendix A of the research notes, derived from LDK's serialisation rules
KNOWN_BYTES = [
    (m.OfferPathsRequest(3), m.OFFER_PATHS_REQUEST, "fe00012714050400020003"),
    (m.StaticInvoicePersisted(), m.STATIC_INVOICE_PERSISTED, "fe0001271a0100"),
    (m.HeldHtlcAvailable(), m.HELD_HTLC_AVAILABLE, "480100"),
    (m.ReleaseHeldHtlc(), m.RELEASE_HELD_HTLC, "4a0100"),
]


@pytest.mark.parametrize("msg,t,record", KNOWN_BYTES)
def test_records_match_ldk_framing(msg, t, record):
    assert m.OnionMessagePayload(t, msg.encode()).encode().hex() == record
    p = m.OnionMessagePayload.decode(bytes.fromhex(record))
    assert m.decode_async_message(p.message_type, p.message) == msg


def test_empty_messages_are_one_zero_byte():
    for cls in (m.StaticInvoicePersisted, m.HeldHtlcAvailable, m.ReleaseHeldHtlc):
        assert cls().encode() == b"\x00"
        with pytest.raises(DecodeError):
            cls.decode(b"")  # a zero-length value is what LDK rejects too


def test_draft_numbers_accepted():
    for draft, ldk in m.BLIP66_DRAFT_TYPES.items():
        assert m.canonical_type(draft) == ldk
    body = m.OfferPathsRequest(9).encode()
    assert m.decode_async_message(65540, body) == m.OfferPathsRequest(9)
    p = m.OnionMessagePayload.decode(m.OnionMessagePayload(65546, b"\x00").encode())
    assert m.canonical_type(p.message_type) == m.STATIC_INVOICE_PERSISTED


slots = st.integers(0, 2**16 - 1)
expiries = st.one_of(st.none(), st.integers(0, 2**64 - 1))


@given(slots)
def test_offer_paths_request_roundtrip(s):
    assert m.OfferPathsRequest.decode(m.OfferPathsRequest(s).encode()) == m.OfferPathsRequest(s)


@given(st.lists(blinded_paths, max_size=3), expiries)
def test_offer_paths_roundtrip(paths, exp):
    msg = m.OfferPaths(paths, exp)
    assert m.OfferPaths.decode(msg.encode()) == msg


@given(st.binary(min_size=1, max_size=4000), blinded_paths)
def test_serve_static_invoice_roundtrip(inv, path):
    msg = m.ServeStaticInvoice(inv, path)
    assert m.ServeStaticInvoice.decode(msg.encode()) == msg


pubkey_paths = blinded_paths.filter(lambda p: p.first_node_id is not None)


@given(st.lists(blinded_paths, min_size=1, max_size=2), expiries, points)
def test_offer_paths_with_mailbox_roundtrip(paths, exp, node):
    msg = m.OfferPaths(paths, exp, node)
    assert m.OfferPaths.decode(msg.encode()) == msg
    # what an implementation without our extension sees: the same offer_paths, record ignored
    plain = m.OfferPaths(paths, exp)
    assert m.OfferPaths.decode(msg.encode()).paths == plain.paths
    assert msg.encode() != plain.encode() and m.OFFER_PATHS_MAILBOX_NODE % 2 == 1


@given(st.binary(min_size=1, max_size=600), blinded_paths, points, pubkey_paths)
def test_serve_static_invoice_with_mailbox_roundtrip(inv, fwd, phantom, delivery):
    msg = m.ServeStaticInvoice(inv, fwd, m.MailboxRegistration(phantom, bytes(range(64)), delivery))
    assert m.ServeStaticInvoice.decode(msg.encode()) == msg
    assert m.SERVE_MAILBOX % 2 == 1 and m.HELD_ONION_MESSAGE % 2 == 1


@given(points, blinded_paths.filter(lambda p: p.first_node_id is None))
def test_mailbox_registration_rejects_scid_delivery_path(phantom, path):
    with pytest.raises(DecodeError, match="node id"):
        m.MailboxRegistration.decode(phantom + b"\x00" * 64 + path.encode())


def test_mailbox_node_must_be_a_point():
    body = m.encode_struct([(0, b""), (m.OFFER_PATHS_MAILBOX_NODE, b"\x02" * 32)])
    with pytest.raises(DecodeError, match="mailbox_node_id"):
        m.OfferPaths.decode(body)


@given(blinded_paths, st.sampled_from(sorted(m.KNOWN_MESSAGE_TYPES)), st.binary(max_size=500),
       st.one_of(st.none(), st.binary(max_size=60)))
def test_envelope_roundtrip(reply, t, body, enc):
    p = m.OnionMessagePayload(t, body, reply, enc)
    assert m.OnionMessagePayload.decode(p.encode()) == p


def test_required_fields_and_strictness():
    with pytest.raises(DecodeError, match="invoice_slot"):
        m.OfferPathsRequest.decode(b"\x00")
    with pytest.raises(DecodeError, match="expected 2 bytes"):
        m.OfferPathsRequest.decode(bytes.fromhex("050003000003"))
    with pytest.raises(DecodeError, match="paths"):
        m.OfferPaths.decode(b"\x00")
    with pytest.raises(DecodeError, match="unknown even"):
        m.OfferPathsRequest.decode(bytes.fromhex("080002000304020000"))  # unknown even type 4
    # unknown odd inner records are ignored
    assert m.OfferPathsRequest.decode(bytes.fromhex("0700020003050100")) == m.OfferPathsRequest(3)
    with pytest.raises(DecodeError, match="trailing"):
        m.HeldHtlcAvailable.decode(b"\x00\x00")
    # two messages in one onion message
    with pytest.raises(DecodeError, match="second message"):
        m.OnionMessagePayload.decode(bytes.fromhex("480100" + "4a0100"))
    # unknown even onionmsg type
    with pytest.raises(DecodeError, match="unknown even"):
        m.OnionMessagePayload.decode(bytes.fromhex("500100"))


@given(st.sampled_from(sorted(m.ASYNC_MESSAGES)), st.binary(max_size=300))
def test_garbage_bodies_only_decode_error(t, body):
    try:
        m.decode_async_message(t, body)
    except DecodeError:
        pass


@pytest.mark.parametrize("decode", [m.OnionMessagePayload.decode, m.MailboxRegistration.decode],
                         ids=["onionmsg_tlv", "mailbox_registration"])
@given(data=st.binary(max_size=300))
def test_garbage_only_decode_error(decode, data):
    try:
        decode(data)
    except DecodeError:
        pass


odd_unknown = st.lists(st.tuples(st.integers(0, 2**32).map(lambda n: 2 * n + 5)
                                 .filter(lambda t: t not in m.KNOWN_MESSAGE_TYPES), st.binary(max_size=20)),
                       max_size=3, unique_by=lambda r: r[0]).map(lambda rs: tuple(sorted(rs)))


@given(st.one_of(st.none(), blinded_paths), st.one_of(st.none(), st.sampled_from(sorted(m.KNOWN_MESSAGE_TYPES))),
       st.binary(max_size=100), st.one_of(st.none(), st.binary(max_size=60)), odd_unknown)
def test_envelope_roundtrip_keeps_unknown_odd_records(reply, t, body, enc, unknown):
    p = m.OnionMessagePayload(t, body if t is not None else b"", reply, enc, unknown)
    data = p.encode()
    assert m.OnionMessagePayload.decode(data) == p
    assert m.OnionMessagePayload.decode(data).encode() == data


@given(st.sampled_from([m.StaticInvoicePersisted, m.HeldHtlcAvailable, m.ReleaseHeldHtlc]), odd_unknown)
def test_empty_messages_skip_odd_records_only(cls, unknown):
    body = m.encode_struct(unknown)
    assert cls.decode(body) == cls() and cls().encode() == b"\x00"
    with pytest.raises(DecodeError, match=rf"{m.MESSAGE_NAMES[cls.TYPE]}\[0\]: unknown even"):
        cls.decode(m.encode_struct([(0, b"")] + list(unknown)))


def test_serve_static_invoice_errors_name_the_field():
    with pytest.raises(DecodeError, match=r"serve_static_invoice\.invoice: empty"):
        m.ServeStaticInvoice.decode(m.encode_struct([(0, b""), (2, b"")]))
    with pytest.raises(DecodeError, match=r"serve_static_invoice\.forward_invoice_request_path: required"):
        m.ServeStaticInvoice.decode(m.encode_struct([(0, b"inv")]))
    with pytest.raises(DecodeError, match=r"serve_static_invoice\.forward_invoice_request_path"):
        m.ServeStaticInvoice.decode(m.encode_struct([(0, b"inv"), (2, b"\x02")]))
    with pytest.raises(DecodeError, match=r"serve_static_invoice\.mailbox\.phantom_id"):
        m.ServeStaticInvoice.decode(m.encode_struct([(0, b"inv"), (m.SERVE_MAILBOX, b"\x02")]))
