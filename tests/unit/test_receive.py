"""The pure checks on an async HTLC: each rule refuses, a correct HTLC is claimed, MPP parts add up."""

import hashlib
import os

from coincurve import PrivateKey

from asyncreceive.crypto.blinding import EncryptedData, PaymentConstraints
from asyncreceive.paying.payer import build_invoice_request
from asyncreceive.wire.payment_hop import (INVREQ_DRAFT, INVREQ_LDK, KEYSEND_PREIMAGE, OUTGOING_CLTV, TOTAL_AMOUNT,
                                           parse_payload)
from asyncreceive.receiving.htlc import Part, PartSet, check_htlc
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.paths import BlindedHop, BlindedPath, SciddirOrPubkey
from asyncreceive.wire.tlv import bigsize, encode_tlv, tu64

NOW = 1_800_000_000
PATH = BlindedPath(SciddirOrPubkey(node_id=PrivateKey().public_key.format()), PrivateKey().public_key.format(),
                   (BlindedHop(PrivateKey().public_key.format(), b"\x00" * 40),))
OFFER = Offer.build(PrivateKey().public_key.format(), [PATH], absolute_expiry=NOW + 1000)
DATA = EncryptedData(path_id=b"\x01" * 32, payment_constraints=PaymentConstraints(900, 1))


def htlc(amount=50_000, invreq_amount=50_000, offer=OFFER, preimage=None, payment_hash=None, total=None,
         cltv_asked=100, invreq_type=INVREQ_LDK, drop=()):
    pre = preimage or os.urandom(32)
    invreq = build_invoice_request(offer, invreq_amount, os.urandom(32))
    recs = {KEYSEND_PREIMAGE: pre, invreq_type: invreq.encode(), OUTGOING_CLTV: tu64(cltv_asked),
            TOTAL_AMOUNT: tu64(total or amount)}
    for t in drop:
        recs.pop(t)
    return recs, payment_hash or hashlib.sha256(pre).digest()


def check(recs, ph, amount=50_000, cltv=120, height=100, now=NOW, offer=OFFER):
    return check_htlc(recs, DATA, offer, ph, amount, cltv, height, 18, now)


def test_correct_htlc_is_claimed_with_its_preimage():
    recs, ph = htlc()
    v = check(recs, ph)
    assert v.action == "claim" and hashlib.sha256(v.preimage).digest() == ph and v.total_msat == 50_000
    recs, ph = htlc(invreq_type=INVREQ_DRAFT)  # the draft spec's TLV 1 is accepted too
    assert check(recs, ph).action == "claim"


def test_each_rule_refuses():
    cases = {
        "no 32-byte sender preimage": htlc(drop=[KEYSEND_PREIMAGE]),
        "sha256(preimage) != payment_hash": htlc(payment_hash=os.urandom(32)),
        "no invoice_request": htlc(drop=[INVREQ_LDK]),
        "for another offer": htlc(offer=Offer.build(PrivateKey().public_key.format(), [PATH])),
        "below the invoice_request amount": htlc(amount=40_000, invreq_amount=50_000),
    }
    for reason, (recs, ph) in cases.items():
        amount = 40_000 if "below" in reason else 50_000
        v = check(recs, ph, amount=amount)
        assert v.action == "fail" and reason in v.reason, (reason, v.reason)
    recs, ph = htlc()
    assert "too soon" in check(recs, ph, cltv=117).reason           # height 100 + final 18
    assert "past the path's max" in check(recs, ph, cltv=901).reason
    assert "has expired" in check(recs, ph, now=NOW + 1001).reason
    recs, ph = htlc(cltv_asked=130)
    assert "too soon" in check(recs, ph, cltv=125).reason           # less than the onion asked for


def test_mpp_parts_add_up_once():
    recs, ph = htlc(amount=20_000, total=50_000)
    v = check(recs, ph, amount=20_000)
    assert v.action == "claim" and v.total_msat == 50_000
    s = PartSet(v.total_msat, 0)
    assert not s.add(Part("a", 20_000, 120))
    assert not s.add(Part("a", 20_000, 120))  # the same part again counts once
    assert s.add(Part("b", 30_000, 120))


def test_parse_payload_rejects_bad_framing():
    body = encode_tlv([(2, tu64(5)), (KEYSEND_PREIMAGE, b"\x00" * 32)])
    assert parse_payload(bigsize(len(body)) + body)[KEYSEND_PREIMAGE] == b"\x00" * 32
    import pytest
    from asyncreceive.errors import DecodeError
    with pytest.raises(DecodeError):
        parse_payload(bigsize(len(body) + 1) + body)
