"""asyncreceive-pay's records: which payment hash they show, and settling from lightningd after a restart."""

import hashlib
import os

from asyncreceive.paying.service import Payment, PayService, key
from asyncreceive.paying.policy import FAILURE_STANDS, PayState
from asyncreceive.wire.tlv import encode_tlv

from .fakes import FakeNetwork


def make_offer():
    from coincurve import PrivateKey
    return encode_tlv([(10, b"coffee"), (22, PrivateKey().public_key.format())])


def normal_invoice(payment_hash):
    """A BOLT 12 invoice with this payment hash, as check_invoice stores it (signed by the offer's key)."""
    from coincurve import PrivateKey
    from asyncreceive.crypto.blinding import EncryptedData, build_blinded_path
    from asyncreceive.fallback.policy import build_invoice
    from asyncreceive.paying.payer import build_invoice_request
    from asyncreceive.wire.bolt12.offer import Offer
    from asyncreceive.wire.paths import BlindedPayInfo
    issuer = PrivateKey()
    offer = Offer.build(issuer.public_key.format(), [], description="coffee")
    invreq = build_invoice_request(offer, 21_000, os.urandom(32))
    path = build_blinded_path(os.urandom(32), [(issuer.public_key.format(), EncryptedData(path_id=b"p").encode())])
    return build_invoice(invreq, issuer.secret, payment_hash, 21_000, 1_800_000_000, [path],
                         [BlindedPayInfo(0, 0, 18, 1, 10 ** 9)])


def payment(invoice=b"", status="sending"):
    return Payment(os.urandom(32), make_offer(), 21_000, b"invreq", os.urandom(32), status, invoice, 1, 2,
                   route="normal" if invoice else None)


def test_static_route_shows_the_hash_of_our_preimage():
    p = payment()
    assert p.json()["payment_hash"] == hashlib.sha256(p.preimage).hexdigest() and p.json()["invoice"] is None


def test_normal_invoice_shows_its_own_payment_hash_before_completion():
    h = os.urandom(32)
    p = payment(normal_invoice(h))
    assert p.json()["payment_hash"] == h.hex() and p.json()["invoice"] == "normal"
    assert "payment_preimage" not in p.json()


def test_a_damaged_normal_invoice_shows_the_hash_of_our_preimage_without_raising():
    for damaged in (b"\xff", encode_tlv([(168, b"short")])):
        p = payment(damaged)
        assert p.json()["payment_hash"] == hashlib.sha256(p.preimage).hexdigest()


def test_restart_settles_a_normal_invoice_payment_from_lightningd():
    net = FakeNetwork(lambda: 1_800_000_000)
    node, t = net.add("payer")
    preimage = os.urandom(32)
    h = hashlib.sha256(preimage).digest()
    p = payment(normal_invoice(h))
    node.ds_put(key(p.payment_id), p.encode())
    calls = []

    def listpays(payment_hash):
        calls.append(payment_hash)
        return {"pays": [{"status": "complete", "preimage": preimage.hex()}]}

    node.rpc.listpays = listpays
    svc = PayService(t, "regtest", lambda *a: None, 3600)
    svc.resume()
    svc.check_sending()              # the first tick after a restart runs both
    assert calls == [h.hex()]
    got = svc.list_pays()[0]
    assert got["status"] == "complete" and got["payment_preimage"] == preimage.hex() and got["payment_hash"] == h.hex()


def test_restart_leaves_an_in_flight_payment_alone():
    net = FakeNetwork(lambda: 1_800_000_000)
    node, t = net.add("payer")
    p = payment(normal_invoice(os.urandom(32)))
    node.ds_put(key(p.payment_id), p.encode())
    answer = {"pays": [{"status": "pending"}]}
    node.rpc.listpays = lambda payment_hash: answer
    now = [1_800_000_000]
    svc = PayService(t, "regtest", lambda *a: None, 3600, clock=lambda: now[0])
    svc.resume()
    svc.check_sending()
    assert Payment.decode(p.payment_id, node.ds_get(key(p.payment_id))[0]).status == "sending"
    answer["pays"] = [{"status": "failed"}]      # every attempt so far failed: pay may still try again
    svc.check_sending()
    now[0] += FAILURE_STANDS - 1
    svc.check_sending()
    assert Payment.decode(p.payment_id, node.ds_get(key(p.payment_id))[0]).status == "sending"
    answer["pays"] = [{"status": "failed"}, {"status": "complete", "preimage": "22" * 32}]   # and it did
    now[0] += 5
    svc.check_sending()
    got = Payment.decode(p.payment_id, node.ds_get(key(p.payment_id))[0])
    assert got.status == "complete" and got.preimage == bytes.fromhex("22" * 32)


def test_a_failure_that_stands_fails_the_payment():
    net = FakeNetwork(lambda: 1_800_000_000)
    node, t = net.add("payer")
    p = payment(normal_invoice(os.urandom(32)))
    node.ds_put(key(p.payment_id), p.encode())
    node.rpc.listpays = lambda payment_hash: {"pays": [{"status": "failed"}]}
    now = [1_800_000_000]
    svc = PayService(t, "regtest", lambda *a: None, 3600, clock=lambda: now[0])
    svc.check_sending()
    now[0] += FAILURE_STANDS
    svc.check_sending()
    assert Payment.decode(p.payment_id, node.ds_get(key(p.payment_id))[0]).status == "failed"


def test_a_payment_handed_to_lightningd_is_never_sent_again_when_its_records_are_gone():
    net = FakeNetwork(lambda: 1_800_000_000)
    node, t = net.add("payer")
    p = payment()                                   # static route, handed over, then autoclean ran
    p.handed_over, p.route = True, "static"
    node.ds_put(key(p.payment_id), p.encode())
    node.rpc.listsendpays = lambda payment_hash: {"payments": []}
    node.rpc.peer_channels = [{"peer_id": "02" + "11" * 32, "peer_connected": True, "state": "CHANNELD_NORMAL"}]
    node.connected_channel_peers = lambda: [b"\x02" + b"\x11" * 32]
    started = []
    svc = PayService(t, "regtest", lambda *a: None, 3600, spawn=started.append)
    svc.check_sending()
    got = Payment.decode(p.payment_id, node.ds_get(key(p.payment_id))[0])
    assert started == [] and got.status == "sending" and "not sent again" in got.error
    p2 = payment()                                  # not handed over yet (stopped before sendonion): sent
    p2.route = "static"
    node.ds_put(key(p2.payment_id), p2.encode())
    svc.check_sending()
    assert len(started) == 1


def test_static_route_payment_settles_from_sendpays_and_is_never_resent():
    net = FakeNetwork(lambda: 1_800_000_000)
    node, t = net.add("payer")
    p = payment()
    node.ds_put(key(p.payment_id), p.encode())
    seen = []
    node.rpc.listsendpays = lambda payment_hash: (seen.append(payment_hash),
                                                  {"payments": [{"status": "failed"}, {"status": "complete"}]})[1]
    svc = PayService(t, "regtest", lambda *a: None, 3600)
    svc._states[p.payment_id] = PayState(p, busy=True)   # a send of ours still waits on it: the tick leaves it alone
    svc.check_sending()
    assert seen == []
    svc._states.clear()
    svc.check_sending()
    assert seen == [hashlib.sha256(p.preimage).hexdigest()]
    assert svc.list_pays()[0]["status"] == "complete"
