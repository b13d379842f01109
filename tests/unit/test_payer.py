"""asyncreceive-pay on the in-memory network: what a payer checks before paying, fee and delay caps,
reply paths, the grace time for the payee's own invoice, cancel, and notifications."""

import os

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings, strategies as st
from pyln.client import RpcError

from asyncreceive.app import route
from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.errors import DecodeError
from asyncreceive.shell.transport import Received, TransportError
from asyncreceive.paying import service as pay_mod
from asyncreceive.paying.service import F_PAYMENT_ID, F_STEP, STEP_INVOICE, STEP_RELEASE, Payment, PayError, PayService
from asyncreceive.paying.payer import (PayLimits, build_invoice_request, check_invoice, path_fee,
                                         path_order, usable_paths)
from asyncreceive.fallback.policy import build_invoice
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.wire import messages as m
from asyncreceive.wire.bolt12.bech32 import HRP_OFFER, bech32_encode
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
from asyncreceive.wire.paths import BlindedPayInfo
from asyncreceive.wire.tlv import encode_tlv

from .fakes import FakeNetwork

NOW = 1_800_000_000


class Rpc:
    """The payer's lightningd calls used to pay: createonion, sendonion, waitsendpay, pay."""

    def __init__(self):
        self.calls = []
        self.wait_errors = []    # one per waitsendpay call: None = complete, else an RPC error code

    def call(self, method, params):
        self.calls.append((method, params))
        if method == "createonion":
            return {"onion": "00", "shared_secrets": []}
        if method == "sendonion":
            return {"status": "pending"}
        if method == "waitsendpay":
            code = self.wait_errors.pop(0) if self.wait_errors else None
            if code is not None:
                raise RpcError("waitsendpay", params, {"code": code, "message": f"error {code}"})
            return {"status": "complete"}
        if method == "pay":
            return {"status": "complete", "payment_preimage": "11" * 32}
        raise AssertionError(method)

    def methods(self):
        return [c[0] for c in self.calls]


class World:
    def __init__(self, grace=1.5, issuer=True):
        self.now = NOW
        self.net = FakeNetwork(lambda: self.now)
        self.pnode, self.pt = self.net.add("payer")
        self.snode, self.st = self.net.add("server")
        self.issuer_key = os.urandom(32)
        self.issuer_id = PrivateKey(self.issuer_key).public_key.format()
        offer_path = self.st.make_path(PathContext(Kind.PROBE))
        self.offer = Offer.build(self.issuer_id if issuer else None, [offer_path], chains=[CHAINS["regtest"]])
        self.rpc = Rpc()
        self.pnode.rpc.call = self.rpc.call
        self.notes = []
        self.logs = []
        self.svc = PayService(self.pt, "regtest", lambda msg, level="info": self.logs.append((level, msg)), 3600,
                              clock=lambda: self.now, invoice_grace=grace, notify=self.notes.append,
                              spawn=lambda fn: fn())
        route(self.pt, pay=self.svc)

    def pay(self, amount=50_000, limits=PayLimits()):
        return bytes.fromhex(self.svc.pay(self.offer.to_string(), amount, "hi", limits)["payment_id"])

    def record(self, pid) -> Payment:
        return Payment.decode(pid, self.pnode.ds_get(pay_mod.key(pid))[0])

    def reply(self, pid, msg_type, body, step=STEP_INVOICE):
        ctx = PathContext(Kind.PAYER_REPLY, NOW + 3600, {F_PAYMENT_ID: pid, F_STEP: step})
        self.svc.on_reply(Received(msg_type, msg_type, body, None, ctx, b"\x00" * 32))

    def invoice(self, pid, key=None, amount=None, created_at=None, invreq=None):
        """A normal invoice answering our invoice_request, signed by ``key`` (default: the issuer)."""
        rec = self.record(pid)
        invreq = invreq or pay_mod.InvoiceRequest.decode(rec.invreq)
        path = self.st.make_path(PathContext(Kind.PROBE))
        info = BlindedPayInfo(1000, 100, 40, 1, 10 ** 9)
        return build_invoice(invreq, key or self.issuer_key, os.urandom(32), amount or rec.amount_msat,
                             created_at or self.now, [path], [info])

    def static_invoice(self, fees=(1000, 100), cltv=40, paths=1):
        pay_paths = [self.st.make_path(PathContext(Kind.PROBE)) for _ in range(paths)]
        infos = [BlindedPayInfo(fees[0], fees[1], cltv, 1, 10 ** 12) for _ in range(paths)]
        held = [self.st.make_path(PathContext(Kind.PROBE))]
        return StaticInvoice.build(self.offer, pay_paths, infos, self.now, 3600, held, b"", self.issuer_key).encode()


# ---- 1. a normal invoice is paid only if the offer's issuer made it for our request --------------

def test_invoice_signed_by_the_server_key_is_refused_and_nothing_is_paid():
    w = World()
    pid = w.pay()
    server_key = os.urandom(32)          # the static invoice server saw our invoice_request: it forges one
    with pytest.raises(DecodeError, match="not the offer's issuer"):
        w.reply(pid, m.INVOICE, w.invoice(pid, key=server_key))
    rec = w.record(pid)
    assert rec.status == "requested" and "pay" not in w.rpc.methods()
    assert "not the offer's issuer" in w.svc.list_pays()[0]["last_error"]
    w.reply(pid, m.INVOICE, w.invoice(pid))          # the real payee's invoice still goes through
    assert w.record(pid).status == "complete" and w.rpc.methods() == ["pay"]
    assert w.rpc.calls[0][1]["maxfee"] == PayLimits().max_fee(50_000) and w.rpc.calls[0][1]["maxdelay"] == 2016


def test_invoice_checks_each_rule():
    w = World()
    pid = w.pay()
    rec = w.record(pid)
    offer, invreq = w.offer, pay_mod.InvoiceRequest.decode(rec.invreq)
    check_invoice(w.invoice(pid), offer, invreq, 50_000, NOW)       # the good one passes
    with pytest.raises(DecodeError, match="invoice_amount"):
        check_invoice(w.invoice(pid, amount=49_000), offer, invreq, 50_000, NOW)
    with pytest.raises(DecodeError, match="expired"):
        check_invoice(w.invoice(pid, created_at=NOW - 7201), offer, invreq, 50_000, NOW)
    other = build_invoice_request(offer, 50_000, os.urandom(32), CHAINS["regtest"], "hi")   # another request
    with pytest.raises(DecodeError, match="records are not those we sent"):
        check_invoice(w.invoice(pid, invreq=other), offer, invreq, 50_000, NOW)
    with pytest.raises(DecodeError):
        raw = w.invoice(pid)
        check_invoice(raw[:-1] + bytes([raw[-1] ^ 1]), offer, invreq, 50_000, NOW)   # bad signature


def test_offer_without_issuer_id_needs_the_final_blinded_node():
    w = World(issuer=False)
    pid = w.pay()
    invreq = pay_mod.InvoiceRequest.decode(w.record(pid).invreq)
    with pytest.raises(DecodeError, match="not the offer's issuer"):
        check_invoice(w.invoice(pid), w.offer, invreq, 50_000, NOW)


# ---- 2. fee and delay caps ---------------------------------------------------------------------

def test_static_invoice_with_a_huge_fee_is_refused_with_a_clear_error():
    w = World(grace=0)
    pid = w.pay(100_000_000)
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice(fees=(2 ** 32 - 1, 2 ** 32 - 1)))
    w.svc.run_due()                                 # the grace time (0) is over
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)
    got = w.svc.list_pays()[0]
    assert got["status"] == "failed" and "over the limit" in got["error"]
    assert "sendonion" not in w.rpc.methods()
    assert w.notes[-1]["status"] == "failed" and "over the limit" in w.notes[-1]["error"]


def test_long_delay_refused_and_caps_follow_lightningd_pay():
    w = World(grace=0)
    pid = w.pay(limits=PayLimits(maxdelay=100))
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice(cltv=65535))
    w.svc.run_due()                                 # the grace time (0) is over
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)
    assert "delay 65535 blocks over the limit 100" in w.svc.list_pays()[0]["error"]
    assert PayLimits().max_fee(100_000_000) == 500_000            # 0.5 %
    assert PayLimits().max_fee(1000) == 5000                       # exempt fee
    assert PayLimits(maxfee_msat=7).max_fee(10 ** 9) == 7          # maxfee replaces both


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1), st.integers(0, 65535),
       st.integers(1, 10 ** 12), st.integers(0, 10 ** 9), st.integers(1, 65535))
def test_usable_paths_never_exceed_the_caps(base, prop, cltv, amount, max_fee, max_delay):
    w = World.__new__(World)
    info = BlindedPayInfo(base, prop, cltv, 1, 2 ** 63)
    inv = type("I", (), {"payinfos": [info]})()
    ok, why = usable_paths(inv, amount, max_fee, max_delay)
    assert (ok == [0]) == (path_fee(info, amount) <= max_fee and cltv <= max_delay)
    assert ok or why


def test_within_caps_the_htlc_goes_out_over_the_cheapest_path():
    w = World(grace=0)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice(paths=2))
    w.svc.run_due()                                 # the grace time (0) is over
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)
    assert w.rpc.methods() == ["createonion", "sendonion", "waitsendpay"]
    assert w.record(pid).status == "complete" and w.notes[-1]["status"] == "complete"
    assert w.notes[-1]["payment_preimage"] == w.record(pid).preimage.hex()


# ---- 11. small ones: distinct reply contexts, currency, only definite failures move on ----------

def test_release_on_the_invoice_request_reply_path_is_refused():
    w = World(grace=0)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice())
    w.svc.run_due()                                 # the grace time (0) is over
    with pytest.raises(DecodeError, match="not on the reply path made for it"):
        w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_INVOICE)
    with pytest.raises(DecodeError, match="not on the reply path made for it"):
        w.reply(pid, m.STATIC_INVOICE, w.static_invoice(), STEP_RELEASE)
    assert w.record(pid).status == "waiting_release" and "sendonion" not in w.rpc.methods()


def test_release_before_held_htlc_available_was_sent_pays_nothing():
    w = World(grace=5)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice())
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)   # we have not asked yet
    assert w.record(pid).status == "waiting_release" and w.rpc.calls == []


def test_offer_priced_in_a_currency_is_refused():
    w = World()
    o = Offer.build(w.issuer_id, [], amount=5, description="x", extra_records=[(6, b"USD")])
    with pytest.raises(PayError, match="priced in 'USD'"):
        w.svc.pay(o.to_string(), None, None)


def test_unknown_result_after_sendonion_never_tries_the_next_path():
    w = World(grace=0)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice(paths=2))
    w.svc.run_due()                                 # the grace time (0) is over
    w.rpc.wait_errors = [200]            # waitsendpay timed out: the HTLC may still be in flight
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)
    assert w.rpc.methods().count("sendonion") == 1 and w.record(pid).status == "sending"


def test_definite_failure_moves_on_to_the_next_path():
    w = World(grace=0)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice(paths=2))
    w.svc.run_due()                                 # the grace time (0) is over
    w.rpc.wait_errors = [204, None]
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)
    assert w.rpc.methods().count("sendonion") == 2 and w.record(pid).status == "complete"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.binary(max_size=40)), max_size=12))
def test_damaged_payment_records_raise_only_decode_error(recs):
    recs = sorted(dict(recs).items())
    try:
        Payment.decode(b"\x01" * 16, encode_tlv(recs))
    except DecodeError:
        pass


# ---- issue 15: the payee's own invoice is preferred; cancel; watching a payment ------------------

def test_normal_invoice_within_the_grace_time_wins_over_the_static_route():
    w = World(grace=1.5)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice())          # the server answers first
    assert "waiting up to 1.5 s for the payee's own invoice" in w.svc.list_pays()[0]["step"]
    w.reply(pid, m.INVOICE, w.invoice(pid))                     # the online payee a moment later
    w.now += 2
    w.svc.run_due()                                             # the grace time is over: nothing to ask
    assert w.record(pid).held_at is None
    got = w.svc.list_pays()[0]
    assert got["status"] == "complete" and got["route"] == "normal" and w.rpc.methods() == ["pay"]


def test_normal_invoice_while_waiting_for_the_release_is_taken_once():
    w = World(grace=0)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice())
    w.svc.run_due()                                 # the grace time (0) is over
    assert w.record(pid).held_at == NOW
    w.reply(pid, m.INVOICE, w.invoice(pid))
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)  # late release: ignored
    assert w.rpc.methods() == ["pay"] and w.record(pid).route == "normal"


def test_cancel_before_sending_and_a_late_release_pays_nothing():
    w = World(grace=0)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice())
    w.svc.run_due()                                 # the grace time (0) is over
    assert w.svc.cancel(pid)["status"] == "cancelled"
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)
    w.now += 3600
    w.svc.run_due()                                             # no try is due for it any more
    w.svc.check_sending()
    assert w.rpc.calls == [] and w.record(pid).status == "cancelled"
    assert w.notes[-1]["status"] == "cancelled"
    with pytest.raises(PayError, match="payment is cancelled"):
        w.svc.cancel(pid)


def test_a_payment_that_may_be_in_flight_cannot_be_cancelled():
    w = World(grace=0)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice())
    w.svc.run_due()                                 # the grace time (0) is over
    w.rpc.wait_errors = [200]
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)
    with pytest.raises(PayError, match="payment is sending"):
        w.svc.cancel(pid)


def test_listpays_shows_step_attempts_next_try_and_deadline():
    w = World()
    pid = w.pay()
    got = w.svc.list_pays()[0]
    assert got["attempts"] == 1 and got["next_try_at"] == NOW + 5 and got["deadline"] == NOW + 3600
    assert got["step"] == "asking the offer's issuer for an invoice" and got["route"] is None
    w.now += 5
    w.svc.run_due()
    w.now += 10
    w.svc.run_due()
    got = w.svc.list_pays()[0]
    assert got["attempts"] == 3 and got["next_try_at"] == NOW + 15 + 20 and "no answer yet" in got["step"]
    assert any("no answer to the invoice_request yet" in msg for lvl, msg in w.logs if lvl == "info")


@given(st.integers(0, 20), st.integers(1, 10 ** 6))
def test_path_order_is_a_rotation_that_moves_on_each_try(n, attempt):
    order = path_order(n, attempt)
    assert sorted(order) == list(range(n))                              # every path, once
    assert all(order[(i + 1) % n] == (order[i] + 1) % n for i in range(n))   # fallbacks in the offer's order
    assert path_order(n, 1) == list(range(n))                           # the first try starts at path 0
    if n:
        assert order[0] == (attempt - 1) % n and path_order(n, attempt + 1)[0] == (order[0] + 1) % n


def test_each_invoice_request_try_starts_at_the_next_offer_path():
    """Two servers hold the offer's invoice: a send to one that is down "succeeds" (the message is
    lost), so the next try must go to the other server."""
    w = World()
    _, b = w.net.add("server-b")
    paths = [w.st.make_path(PathContext(Kind.PROBE)), b.make_path(PathContext(Kind.PROBE))]
    w.offer = Offer.build(w.issuer_id, paths, chains=[CHAINS["regtest"]])
    tried, down = [], set()
    send = w.pt.send

    def recording_send(path, *args, **kwargs):
        tried.append(paths.index(path))
        if paths.index(path) in down:
            raise TransportError("no route")
        return send(path, *args, **kwargs)

    w.pt.send = recording_send
    pid = w.pay()
    for _ in range(3):
        w.now += 300
        w.svc.run_due()
    assert tried == [0, 1, 0, 1]                       # the 2nd (and every even) try goes over server B's path
    down.add(1)
    tried.clear()
    w.now += 300
    w.svc.run_due()                                    # 5th try: starts at path 0
    w.now += 300
    w.svc.run_due()                                    # 6th: path 1 cannot be sent on, so path 0 in the same try
    assert tried == [0, 1, 0]
    down.clear()
    tried.clear()
    w.now += 300
    w.svc.run_due()                                    # 7th: path 0
    w.svc.resume()                                     # as after a restart: the count goes on, 8th try, path 1
    assert tried == [0, 1] and w.record(pid).attempts == 8


def test_timeout_fails_visibly_and_notifies():
    w = World()
    pid = w.pay()
    w.now += 3601
    w.svc.check_sending()
    got = w.svc.list_pays()[0]
    assert got["status"] == "failed" and "timed out" in got["error"] and w.notes[-1]["payment_id"] == pid.hex()


def test_reply_path_starts_at_a_channel_peer_when_the_offer_starts_elsewhere():
    w = World()
    far = w.net.add("far")[0]
    peer = w.snode
    w.pnode.connected_channel_peers = lambda: [peer.node_id]
    w.pnode.route_to = lambda node_id: [peer.node_id]
    path = w.net.by_node[far.node_id].make_path(PathContext(Kind.PROBE))
    assert w.svc._reply_via(path) == [peer.node_id]          # not the offer path's far introduction
    assert w.svc._reply_via(w.st.make_path(PathContext(Kind.PROBE))) == [peer.node_id]
    w.pnode.connected_channel_peers = lambda: []
    assert w.svc._reply_via(path) == [far.node_id]           # connected (fake network), no channel peer


def test_bech32_rejects_non_ascii_that_lower_cases_to_ascii():
    w = World()
    s = w.offer.to_string()
    i = s.index("k", 4) if "k" in s[4:] else None
    bad = (s[:i] + "\u212a" + s[i + 1:]) if i else "lno1\u212a" + s[4:]
    with pytest.raises(DecodeError, match="non-ASCII"):
        Offer.from_string(bad)
    assert Offer.from_string(bech32_encode(HRP_OFFER, w.offer.encode())) == w.offer



def test_invoice_request_for_an_offer_with_high_odd_records_is_well_ordered():
    """Found by fuzzing: offer records numbered 1e9 and up come after the signature (240)."""
    w = World()
    o = Offer.build(w.issuer_id, w.offer.paths, extra_records=[(1_000_000_001, b"odd")])
    ir = build_invoice_request(o, 1000, os.urandom(32))
    assert [t for t, _ in ir.stream.records][-1] == 1_000_000_001 and ir.offer_id == o.offer_id


def test_a_concurrent_write_of_ours_does_not_drop_a_release():
    """Review finding: a retry counting its try between our read and write made the release be dropped."""
    w = World(grace=0)
    pid = w.pay()
    w.reply(pid, m.STATIC_INVOICE, w.static_invoice())
    w.svc.run_due()                                 # the grace time (0) is over
    real, raced = w.pnode.ds_put, []

    def racing(key, value, generation=None):
        if not raced and generation is not None and key == pay_mod.key(pid):
            raced.append(True)
            cur = w.pnode.ds_get(key)
            real(key, cur[0], cur[1])            # a timer of ours wrote the record meanwhile
        return real(key, value, generation)

    w.pnode.ds_put = racing
    w.reply(pid, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode(), STEP_RELEASE)
    assert raced and w.record(pid).status == "complete" and "sendonion" in w.rpc.methods()


def test_static_invoice_without_message_paths_is_refused():
    w = World(grace=0)
    pid = w.pay()
    inv = StaticInvoice.build(w.offer, [w.st.make_path(PathContext(Kind.PROBE))], [BlindedPayInfo(1, 1, 40, 1, 10 ** 9)],
                              NOW, 3600, [], b"", w.issuer_key).encode()
    with pytest.raises(DecodeError, match="held_htlc_available_paths"):
        w.reply(pid, m.STATIC_INVOICE, inv)
    assert w.record(pid).status == "requested"


def test_fallback_invoice_for_an_invoice_request_with_experimental_records():
    """Review finding: invoice_request records numbered 1e9 and up made build_invoice raise."""
    w = World()
    o = Offer.build(w.issuer_id, w.offer.paths, extra_records=[(1_000_000_001, b"odd")])
    ir = build_invoice_request(o, 1000, os.urandom(32))
    raw = build_invoice(ir, w.issuer_key, os.urandom(32), 1000, NOW, [w.st.make_path(PathContext(Kind.PROBE))],
                        [BlindedPayInfo(1, 1, 40, 1, 10 ** 9)])
    assert check_invoice(raw, o, ir, 1000, NOW).invoice_amount == 1000
