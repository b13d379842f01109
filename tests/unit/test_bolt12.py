import hashlib
"""BOLT 12 codec properties: offers, strings, static invoices, invoice_request parsing."""

import string

import pytest
from coincurve import PrivateKey
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import asyncreceive.wire.bolt12.fields as fields
from asyncreceive.errors import DecodeError
from asyncreceive.wire.bolt12.bech32 import bech32_decode, bech32_encode
from asyncreceive.wire.bolt12.fields import BASIC_MPP_OPTIONAL, DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY, feature_bits
from asyncreceive.wire.bolt12.invoice import Invoice, _inv_field
from asyncreceive.wire.bolt12.invoice_request import InvoiceRequest, _ir_field
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.signature import is_signature_type, merkle_root, schnorr_sign, schnorr_verify, sighash
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice, _si_field
from asyncreceive.wire.paths import BlindedHop, BlindedPath, BlindedPayInfo, SciddirOrPubkey
from asyncreceive.wire.tlv import decode_tlv, encode_record, encode_tlv, tu64

from .strategies import blinded_paths, payinfos, points, secrets

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEY = bytes.fromhex("41" * 32)
ISSUER = PrivateKey(KEY).public_key.format()
OTHER_KEY = bytes.fromhex("42" * 32)


def _pt(i: int) -> bytes:
    return PrivateKey(i.to_bytes(32, "big")).public_key.format()


def _path(n_hops=2, seed=1, final_secret=None) -> BlindedPath:
    hops = [BlindedHop(_pt(seed * 10 + i), bytes([i]) * 8) for i in range(n_hops)]
    if final_secret is not None:
        hops[-1] = BlindedHop(PrivateKey(final_secret).public_key.format(), b"\x99" * 4)
    return BlindedPath(SciddirOrPubkey(node_id=_pt(seed * 100)), _pt(seed * 100 + 1), tuple(hops))


PAYINFO = BlindedPayInfo(1000, 100, 144, 1, 10**9)
OFFER = Offer.build(ISSUER, [_path(seed=1)], absolute_expiry=2_000_000_000)


def _invoice(offer=OFFER, key=KEY, **kw) -> StaticInvoice:
    args = dict(payment_paths=[_path(seed=2)], payinfos=[PAYINFO], created_at=1_700_000_000,
                relative_expiry=3600, message_paths=[_path(seed=3)], features=BASIC_MPP_OPTIONAL)
    args.update(kw)
    return StaticInvoice.build(offer, signing_key=key, **args)


def _signed(records, key=KEY, messagename="static_invoice") -> bytes:
    """Encode records (no signature) plus a valid signature 240, so only the rule under test can fail."""
    recs = sorted(r for r in records if r[0] != 240)
    sig = schnorr_sign(key, sighash(messagename, "signature", merkle_root(recs)))
    return encode_tlv(sorted(recs + [(240, sig)]))


INVOICE = _invoice()
INVOICE_BYTES = INVOICE.encode()

# --------------------------------------------------------------------------------------------------
# strategies
# --------------------------------------------------------------------------------------------------

chains = st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3)
amounts_desc = st.one_of(
    st.tuples(st.none(), st.none()),
    st.tuples(st.none(), st.text(max_size=20)),
    st.tuples(st.integers(1, 2**64 - 1), st.text(max_size=20)),
)


@st.composite
def offers(draw, single_chain=False, with_issuer=True):
    issuer = draw(points) if with_issuer else None
    paths = draw(st.lists(blinded_paths, min_size=0 if with_issuer else 1, max_size=3))
    expiry = draw(st.none() | st.integers(0, 2**64 - 1))
    ch = draw(st.none() | (st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=1)
                           if single_chain else chains))
    amount, desc = draw(amounts_desc)
    extras = draw(st.lists(st.tuples(st.sampled_from([1, 23, 33, 77, 79, 1_000_000_001, 1_999_999_999]),
                                     st.binary(max_size=20)), unique_by=lambda r: r[0], max_size=3))
    return Offer.build(issuer, paths, absolute_expiry=expiry, chains=ch, description=desc, amount=amount,
                       extra_records=extras)


# --------------------------------------------------------------------------------------------------
# offers and strings
# --------------------------------------------------------------------------------------------------

@SETTINGS
@given(points, st.lists(blinded_paths, max_size=3), st.none() | st.integers(0, 2**64 - 1),
       st.none() | chains, amounts_desc)
def test_offer_build_roundtrip(issuer, paths, expiry, ch, amount_desc):
    amount, desc = amount_desc
    o = Offer.build(issuer, paths, absolute_expiry=expiry, chains=ch, description=desc, amount=amount)
    assert o.stream.types() == sorted(o.stream.types())
    d = Offer.decode(o.encode())
    assert d == o and d.encode() == o.encode()
    assert d.issuer_id == issuer and d.paths == paths and d.absolute_expiry == expiry
    assert d.chains == (ch or []) and d.amount == amount and d.description == desc
    assert d.offer_id == hashlib.sha256(o.stream.encode()).digest()  # as lightningd's decode
    assert d.currency is None and d.issuer is None and d.quantity_max is None and d.features == b""


@SETTINGS
@given(offers(), st.data())
def test_offer_string_roundtrip(o, data):
    s = o.to_string()
    assert s.startswith("lno1") and s == s.lower()
    assert Offer.from_string(s) == o
    assert Offer.from_string(s.upper()) == o
    assert Offer.from_string(o.to_string(split=data.draw(st.integers(1, 60)))) == o
    # '+' (then optional whitespace) between any two characters
    body = list(s)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(s) - 1), max_size=5)), reverse=True)
    for c in cuts:
        body.insert(c, "+" + data.draw(st.sampled_from(["", " ", "\n", "\r\n  ", "\t"])))
    assert Offer.from_string("".join(body)) == o


@given(st.binary(max_size=100), st.sampled_from(["lno", "lnr", "lni", "x"]))
def test_bech32_roundtrip(data, hrp):
    assert bech32_decode(bech32_encode(hrp, data)) == (hrp, data)


def test_string_rejects():
    s = OFFER.to_string()
    for bad in [s[:5] + s[5].upper() + s[6:], s + "+", "+" + s, s[:6] + "++" + s[6:], s[:6] + " " + s[6:],
                s + "b", s.replace("lno1", "lno"), "1" + s[4:]]:
        with pytest.raises(DecodeError):
            Offer.from_string(bad)
    with pytest.raises(DecodeError, match="expected prefix"):
        Offer.from_string(bech32_encode("lnr", OFFER.encode()))
    with pytest.raises(DecodeError):
        Offer.from_string(b"lno1")  # not a str


def test_offer_rules():
    p = _path()
    with pytest.raises(DecodeError) as e:
        Offer.build(None, [])
    assert e.value.field == "offer.offer_issuer_id"
    with pytest.raises(DecodeError) as e:
        Offer.build(ISSUER, [p], amount=5)
    assert e.value.field == "offer.offer_description"
    with pytest.raises(DecodeError) as e:
        Offer.decode(encode_tlv([(16, b""), (22, ISSUER)]))
    assert e.value.field == "offer.offer_paths"
    with pytest.raises(DecodeError) as e:
        Offer.decode(encode_tlv([(22, ISSUER), (24, b"")]))
    assert e.value.field == "offer[24]"
    with pytest.raises(DecodeError) as e:
        Offer.decode(encode_tlv([(14, b"\x00\x01"), (22, ISSUER)]))
    assert e.value.field == "offer.offer_absolute_expiry"
    with pytest.raises(DecodeError) as e:
        Offer.decode(encode_tlv([(22, ISSUER), (80, b"")]))
    assert e.value.field == "offer[80]"
    # rules some spec vectors only reach through (accidentally) broken framing
    for recs, field in [([(22, ISSUER), (1_000_000_002, b"")], "offer[1000000002]"),
                        ([(22, ISSUER), (2_000_000_001, b"")], "offer[2000000001]"),
                        ([(22, ISSUER), (78, b"")], "offer[78]"),
                        ([(0, b""), (22, ISSUER)], "offer[0]"),
                        ([(16, p.encode()[:-50]), (22, ISSUER)], None),
                        ([(16, p.encode()[:66] + b"\x00"), (22, ISSUER)], "offer.offer_paths[0].num_hops"),
                        ([(16, b"\x04" + p.encode()[1:])], "offer.offer_paths[0].first_node_id"),
                        ([(22, b"\x02" + bytes(32))], "offer.offer_issuer_id")]:
        with pytest.raises(DecodeError) as e:
            Offer.decode(encode_tlv(recs))
        assert field is None or e.value.field == field, e.value
    # no-issuer offer with paths is fine
    assert Offer.build(None, [p]).issuer_id is None
    assert not OFFER.is_expired(2_000_000_000) and OFFER.is_expired(2_000_000_001)


def test_feature_bits():
    assert feature_bits(BASIC_MPP_OPTIONAL) == [17]
    assert feature_bits(b"\x01\x00") == [8]
    assert feature_bits(b"") == []


# --------------------------------------------------------------------------------------------------
# static invoices
# --------------------------------------------------------------------------------------------------

@SETTINGS
@given(offers(single_chain=True, with_issuer=False), secrets, st.lists(st.tuples(blinded_paths, payinfos),
       min_size=1, max_size=3), st.integers(0, 2**64 - 1), st.none() | st.integers(0, 2**32 - 1),
       st.lists(blinded_paths, max_size=3), st.sampled_from([b"", BASIC_MPP_OPTIONAL, b"\x02"]))
def test_static_invoice_roundtrip(base, key, pp, created, rel, msg_paths, features):
    # re-issue the offer with issuer_id = the signing key's public key (the async-receive case)
    node_id = PrivateKey(key).public_key.format()
    recs = sorted([r for r in base.stream.records if r[0] != 22] + [(22, node_id)])
    offer = Offer.decode(encode_tlv(recs))
    paths = [p for p, _ in pp]
    infos = [i for _, i in pp]
    inv = StaticInvoice.build(offer, paths, infos, created, rel, msg_paths, features, key)
    d = StaticInvoice.decode(inv.encode())
    assert d == inv
    assert d.verify_signature()
    assert schnorr_verify(node_id, d.signature, d.signature_digest())
    assert d.node_id == node_id == d.issuer_id
    assert d.paths == paths and d.payinfos == infos and d.message_paths == msg_paths
    assert d.created_at == created and d.features == features
    assert d.relative_expiry == (DEFAULT_STATIC_INVOICE_RELATIVE_EXPIRY if rel is None else rel)
    assert d.expires_at == created + d.relative_expiry
    assert not d.is_expired(d.expires_at) and d.is_expired(d.expires_at + 1)
    # offer part copied byte for byte, offer_id identical
    assert d.offer_records() == offer.stream
    assert d.offer == offer and d.offer_id == offer.offer_id
    assert d.offer_matches(offer) and d.offer_matches(offer.encode()) and d.offer_matches(offer.stream)
    assert inv.encode().startswith(b"".join(encode_record(t, v) for t, v in offer.stream.records if t < 80))


@FUZZ
@given(st.data())
def test_tampering_any_byte_is_rejected(data):
    i = data.draw(st.integers(0, len(INVOICE_BYTES) - 1))
    x = data.draw(st.integers(1, 255))
    tampered = bytearray(INVOICE_BYTES)
    tampered[i] ^= x
    with pytest.raises(DecodeError):
        StaticInvoice.decode(bytes(tampered))


@FUZZ
@given(st.data())
def test_truncation_and_extension_are_rejected(data):
    n = data.draw(st.integers(0, len(INVOICE_BYTES) - 1))
    with pytest.raises(DecodeError):
        StaticInvoice.decode(INVOICE_BYTES[:n])
    ext = data.draw(st.binary(min_size=1, max_size=10))
    try:  # an odd record in the signature range is outside the merkle tree: BOLT 12 readers accept it
        assume(not all(t % 2 and 240 < t <= 1000 for t, _ in decode_tlv(ext, "x", known=lambda t: True).records))
    except DecodeError:
        pass
    with pytest.raises(DecodeError):
        StaticInvoice.decode(INVOICE_BYTES + ext)


def test_tampering_every_byte_exhaustively():
    for i in range(len(INVOICE_BYTES)):
        for x in (0x01, 0x80):
            t = bytearray(INVOICE_BYTES)
            t[i] ^= x
            with pytest.raises(DecodeError):
                StaticInvoice.decode(bytes(t))


def _reject(records, field, match=None):
    with pytest.raises(DecodeError, match=match) as e:
        StaticInvoice.decode(_signed(records))
    assert e.value.field == field, e.value
    return e.value


def test_forbidden_fields_rejected():
    base = list(INVOICE.stream.records)
    _reject(base + [(168, bytes(32))], "static_invoice[168]", "payment_hash")
    _reject(base + [(170, tu64(1000))], "static_invoice[170]", "amount")
    _reject(base + [(88, ISSUER)], "static_invoice[88]", "invoice_request")
    _reject(base + [(0, b"meta")], "static_invoice[0]", "invoice_request")
    _reject(base + [(89, b"note")], "static_invoice[89]", "invoice_request")
    _reject(base + [(2_000_000_001, b"x")], "static_invoice[2000000001]", "invoice_request")
    _reject(base + [(1001, b"x")], "static_invoice[1001]", "outside")
    _reject(base + [(4_000_000_001, b"x")], "static_invoice[4000000001]", "outside")
    _reject(base + [(178, b"")], "static_invoice[178]", "unknown even")
    _reject(base + [(3_000_000_000, b"")], "static_invoice[3000000000]", "unknown even")
    _reject(base + [(24, b"")], "static_invoice[24]", "unknown even")
    # unknown odd types inside the ranges are fine (and covered by the signature)
    ok = StaticInvoice.decode(_signed(base + [(179, b"x"), (241, b"y"), (3_000_000_001, b"z")]))
    assert ok.stream.get(179) == b"x"


def test_required_fields():
    base = [r for r in INVOICE.stream.records]
    for t, name in [(160, "invoice_paths"), (162, "invoice_blindedpay"), (164, "invoice_created_at"),
                    (176, "invoice_node_id"), (236, "held_htlc_available_paths"), (16, "offer_paths")]:
        _reject([r for r in base if r[0] != t], f"static_invoice.{name}")
    with pytest.raises(DecodeError) as e:
        StaticInvoice.decode(encode_tlv([r for r in base if r[0] != 240]))
    assert e.value.field == "static_invoice.signature"
    # empty payment paths; payinfo count mismatch; empty message path list is accepted
    _reject([r for r in base if r[0] not in (160, 162)] + [(160, b""), (162, b"")], "static_invoice.invoice_paths")
    _reject([r for r in base if r[0] != 162] + [(162, PAYINFO.encode() * 2)], "static_invoice.invoice_blindedpay")
    assert StaticInvoice.decode(_signed([r for r in base if r[0] != 236] + [(236, b"")])).message_paths == []
    # an unknown required invoice feature
    _reject([r for r in base if r[0] != 174] + [(174, b"\x01\x00\x00\x00")], "static_invoice.invoice_features")
    # relative_expiry is a tu32
    _reject([r for r in base if r[0] != 166] + [(166, b"\x01\x00\x00\x00\x00")],
            "static_invoice.invoice_relative_expiry")


def test_bad_signature():
    recs = [(t, v) for t, v in INVOICE.stream.records if t != 240]
    other = schnorr_sign(OTHER_KEY, INVOICE.signature_digest())
    with pytest.raises(DecodeError) as e:
        StaticInvoice.decode(encode_tlv(recs + [(240, other)]))
    assert e.value.field == "static_invoice.signature"
    assert StaticInvoice.decode(encode_tlv(recs + [(240, other)]), check_signature=False).signature == other
    # signed with the wrong tag (a BOLT 12 invoice signature)
    with pytest.raises(DecodeError) as e:
        StaticInvoice.decode(_signed(recs, messagename="invoice"))
    assert e.value.field == "static_invoice.signature"


def test_node_id_must_match_issuer_id():
    with pytest.raises(DecodeError) as e:
        _invoice(key=OTHER_KEY)
    assert e.value.field == "static_invoice.invoice_node_id"
    # no issuer_id: node_id must be the final blinded node of an offer path
    offer = Offer.build(None, [_path(seed=5), _path(seed=6, final_secret=OTHER_KEY)])
    inv = _invoice(offer, key=OTHER_KEY)
    assert inv.issuer_id is None and StaticInvoice.decode(inv.encode()) == inv
    with pytest.raises(DecodeError) as e:
        _invoice(offer, key=KEY)
    assert e.value.field == "static_invoice.invoice_node_id"


def test_at_most_one_chain():
    two = Offer.build(ISSUER, [_path()], chains=[b"\x01" * 32, b"\x02" * 32])
    with pytest.raises(DecodeError) as e:
        _invoice(two)
    assert e.value.field == "static_invoice.offer_chains"
    one = Offer.build(ISSUER, [_path()], chains=[b"\x01" * 32])
    assert _invoice(one).chains == [b"\x01" * 32]


@pytest.mark.parametrize("extra", [[(33, b"helloworld")], [(1_000_000_001, b"exp")],
                                   [(1, b""), (33, b"\x00\xff"), (79, b"z"), (1_999_999_999, b"q")]])
def test_offer_records_copied_byte_for_byte(extra):
    offer = Offer.build(ISSUER, [_path()], absolute_expiry=2_000_000_000, chains=[b"\x07" * 32],
                        extra_records=extra)
    inv = _invoice(offer)
    raw = inv.encode()
    for rec in offer.stream.raw_records():
        assert rec in raw
    assert inv.offer_records() == offer.stream
    assert inv.offer_records().encode() == offer.encode()
    assert inv.offer_id == offer.offer_id
    assert inv.offer_matches(offer)
    assert not inv.offer_matches(OFFER)
    assert not inv.offer_matches(b"\xff")  # garbage is simply "no match"
    # experimental offer records come after the signature, in ascending order
    assert inv.stream.types() == sorted(inv.stream.types())
    # changing an unknown odd offer record breaks the signature
    t, v = extra[0]
    recs = [(a, (v + b"!" if a == t else b)) for a, b in inv.stream.records]
    with pytest.raises(DecodeError):
        StaticInvoice.decode(encode_tlv(recs))


def test_static_invoice_fields():
    assert INVOICE.paths == [_path(seed=2)] and INVOICE.payinfos == [PAYINFO]
    assert INVOICE.message_paths == [_path(seed=3)]
    assert INVOICE.features == BASIC_MPP_OPTIONAL and INVOICE.fallbacks == []
    assert INVOICE.relative_expiry == 3600 and INVOICE.expires_at == 1_700_003_600
    assert INVOICE.offer_paths == OFFER.paths and INVOICE.absolute_expiry == 2_000_000_000
    assert _invoice(relative_expiry=None).relative_expiry == 1_209_600
    # deterministic without aux randomness
    assert _invoice().encode() == INVOICE_BYTES
    # fallbacks structure
    base = list(INVOICE.stream.records)
    good = StaticInvoice.decode(_signed(base + [(172, b"\x00\x00\x02ab")]))
    assert good.fallbacks == [(0, b"ab")]
    _reject(base + [(172, b"\x00\x00\x05ab")], "static_invoice.invoice_fallbacks[0].address")


# --------------------------------------------------------------------------------------------------
# invoice_request
# --------------------------------------------------------------------------------------------------

PAYER_KEY = bytes.fromhex("43" * 32)
PAYER = PrivateKey(PAYER_KEY).public_key.format()


def _invreq(offer=OFFER, extra=()):
    recs = list(offer.stream.records) + [(0, b"\x01" * 8), (82, tu64(5000)), (86, tu64(2)), (88, PAYER),
                                         (89, "hi ✓".encode())] + list(extra)
    return _signed(recs, key=PAYER_KEY, messagename="invoice_request")


def test_invoice_request_parse():
    ir = InvoiceRequest.decode(_invreq())
    assert ir.payer_id == ir.invreq_payer_id == PAYER
    assert ir.invreq_amount == 5000 and ir.quantity == 2 and ir.payer_note == "hi ✓" and ir.chain is None
    assert ir.offer_records() == OFFER.stream and ir.offer_id == OFFER.offer_id
    assert INVOICE.offer_matches(ir)
    assert ir.verify_signature()
    assert InvoiceRequest.decode(_invreq(extra=[(80, b"\x06" * 32)])).chain == b"\x06" * 32
    # signed by someone else
    recs = list(decode_tlv(_invreq(), "x", allow_unknown_even=True).records)
    bad = encode_tlv([(t, v) for t, v in recs if t != 240] + [(240, schnorr_sign(KEY, bytes(32)))])
    with pytest.raises(DecodeError) as e:
        InvoiceRequest.decode(bad)
    assert e.value.field == "invoice_request.signature"
    assert InvoiceRequest.decode(bad, check_signature=False).payer_id == PAYER
    # an invoice field is not allowed; payer_id is required
    with pytest.raises(DecodeError) as e:
        InvoiceRequest.decode(_invreq(extra=[(160, b"")]))
    assert e.value.field == "invoice_request[160]"
    with pytest.raises(DecodeError) as e:
        InvoiceRequest.decode(_signed([(0, b"m")], key=PAYER_KEY, messagename="invoice_request"))
    assert e.value.field == "invoice_request.invreq_payer_id"
    with pytest.raises(DecodeError) as e:
        InvoiceRequest.decode(_invreq(extra=[(92, b"")]))
    assert e.value.field == "invoice_request[92]"


# --------------------------------------------------------------------------------------------------
# garbage in: only DecodeError out
# --------------------------------------------------------------------------------------------------

DECODERS = [Offer.decode, StaticInvoice.decode, InvoiceRequest.decode]


def _only_decode_errors(data):
    for dec in DECODERS:
        try:
            dec(data)
        except DecodeError:
            pass


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_only_decode_error(data):
    _only_decode_errors(data)


interesting_types = st.sampled_from(
    [0, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 33, 80, 82, 86, 88, 89, 90, 160, 162, 164, 166, 168, 170,
     172, 174, 176, 236, 240, 241, 1001, 1_000_000_001, 2_000_000_000, 3_000_000_001])
values = st.one_of(st.binary(max_size=40), points, st.binary(min_size=64, max_size=64),
                   blinded_paths.map(lambda p: p.encode()), payinfos.map(lambda i: i.encode()))


@FUZZ
@given(st.dictionaries(interesting_types, values, max_size=12))
def test_structured_garbage_only_decode_error(recs):
    data = encode_tlv(sorted(recs.items()))
    _only_decode_errors(data)
    _only_decode_errors(_signed(list(recs.items())) if any(not 240 <= t <= 1000 for t in recs) else data)


@FUZZ
@given(st.text(alphabet=string.ascii_letters + string.digits + "+ \n", max_size=120))
def test_random_strings_only_decode_error(s):
    for f in (Offer.from_string, InvoiceRequest.from_string):
        try:
            f(s)
        except DecodeError:
            pass
    try:
        bech32_decode(s)
    except DecodeError:
        pass


# ---- the field tables ---------------------------------------------------------------------------------
u64s = st.integers(0, 2**64 - 1)
texts = st.text(max_size=20)
odd_features = st.binary(max_size=4).map(lambda b: bytes(x & 0xAA for x in b))   # optional (odd) bits only
FIELD_VALUES = {
    "offer_chains": st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3),
    "offer_metadata": st.binary(max_size=20), "offer_currency": texts, "offer_amount": st.integers(1, 2**64 - 1),
    "offer_description": texts, "offer_features": odd_features, "offer_absolute_expiry": u64s,
    "offer_paths": st.lists(blinded_paths, min_size=1, max_size=2), "offer_issuer": texts,
    "offer_quantity_max": u64s, "offer_issuer_id": points,
    "invreq_metadata": st.binary(max_size=20), "invreq_chain": st.binary(min_size=32, max_size=32),
    "invreq_amount": u64s, "invreq_features": odd_features, "invreq_quantity": u64s, "invreq_payer_id": points,
    "invreq_payer_note": texts, "invreq_paths": st.lists(blinded_paths, min_size=1, max_size=2),
    "invreq_bip_353_name": st.binary(max_size=20), "signature": st.binary(min_size=64, max_size=64),
    "invoice_paths": st.lists(blinded_paths, min_size=1, max_size=2),
    "invoice_blindedpay": st.lists(payinfos, max_size=2), "invoice_created_at": u64s,
    "invoice_relative_expiry": st.integers(0, 2**32 - 1),
    "invoice_fallbacks": st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=2),
    "invoice_features": odd_features | st.just(bytes.fromhex("010000")), "invoice_node_id": points,
    "held_htlc_available_paths": st.lists(blinded_paths, max_size=2),
    "invoice_payment_hash": st.binary(min_size=32, max_size=32), "invoice_amount": u64s,
}
TABLES = [fields.OFFER_TABLE, fields.INVOICE_REQUEST_TABLE, fields.STATIC_INVOICE_TABLE, fields.INVOICE_TABLE]
FIELDS = [(table, f) for table in TABLES for f in table.fields]


def test_every_table_field_has_a_strategy_and_a_name_of_its_range():
    assert {f.name for _, f in FIELDS} == set(FIELD_VALUES)
    assert all(fields.in_offer_range(f.type) for f in fields.OFFER_TABLE.fields)
    assert all(fields.in_invreq_range(f.type) or is_signature_type(f.type)
               for f in fields.INVOICE_REQUEST_TABLE.fields)
    for table in (fields.STATIC_INVOICE_TABLE, fields.INVOICE_TABLE):
        assert all(fields.in_invoice_range(f.type) or is_signature_type(f.type) for f in table.fields)


@SETTINGS
@given(st.sampled_from(FIELDS), st.data())
def test_field_codecs_round_trip(table_field, data):
    table, f = table_field
    value = data.draw(FIELD_VALUES[f.name])
    assert f.codec.decode(f.codec.encode(value), f.name) == value
    # the record set's encoder writes exactly that record
    assert dict(table.records({f.name: value})) == {f.type: f.codec.encode(value)}


@FUZZ
@given(st.sampled_from(FIELDS), st.binary(max_size=120))
def test_field_codecs_take_any_bytes_or_raise_decode_error_naming_the_field(table_field, raw):
    table, f = table_field
    try:
        value = f.codec.decode(raw, f"{table.name}.{f.name}")
    except DecodeError as e:
        assert e.field.startswith(f"{table.name}.{f.name}")
        return
    assert f.codec.decode(f.codec.encode(value), f.name) == value


def test_field_names_in_errors_come_from_the_tables():
    assert _inv_field(fields.TLV_INVREQ_PAYER_ID) == "invoice.invreq_payer_id"
    assert _inv_field(fields.TLV_OFFER_PATHS) == "invoice.offer_paths"
    assert _inv_field(241) == "invoice[241]"
    assert _si_field(fields.TLV_INVREQ_PAYER_ID) == "static_invoice[88]"
    assert _ir_field(fields.TLV_SIGNATURE) == "invoice_request.signature"
    assert Invoice.DEFAULT_RELATIVE_EXPIRY == fields.DEFAULT_INVOICE_RELATIVE_EXPIRY


def test_accessors_parse_each_record_once(monkeypatch):
    """A decoded message's accessors read the values its decoder parsed: no record is parsed again (the
    server reads them on every invoice_request); one read later, not parsed at decode, is parsed once; a
    list read is a copy the caller may change."""
    from dataclasses import replace
    from asyncreceive.wire.bolt12.invoice import InvoiceFields
    from asyncreceive.wire.records import Codec
    calls = []
    for name in ("paths", "node_id"):
        v = InvoiceFields.__dict__[name]
        c = v.field.codec
        counting = Codec(c.name, c.encode, lambda data, f, c=c: (calls.append(f), c.decode(data, f))[1])
        monkeypatch.setattr(v, "field", replace(v.field, codec=counting))
    inv = StaticInvoice.decode(INVOICE.encode())
    for _ in range(3):
        assert inv.paths == INVOICE.paths and inv.node_id == INVOICE.node_id
    assert calls == []                                      # the decoder's values
    built = StaticInvoice(INVOICE.stream)                   # not through decode: parsed at the first read
    for _ in range(3):
        assert built.paths == INVOICE.paths
    assert len(calls) == 1
    got = inv.paths
    got.clear()
    assert inv.paths == INVOICE.paths
