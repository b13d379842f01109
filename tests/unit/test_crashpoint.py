"""Crash points (asyncreceive-dev-crash-at) and what a crash between two steps leaves to recover."""

import os
import signal

import pytest

from asyncreceive.shell import crashpoint as cp
from asyncreceive.paying.service import Payment, PayService, key

from .fakes import FakeNetwork
from .test_pay import payment


@pytest.fixture
def kills(monkeypatch):
    out = []
    monkeypatch.setattr(cp.os, "kill", lambda pid, sig: out.append((pid, sig)))
    monkeypatch.setattr(cp, "LOG_GRACE", 0)
    yield out
    cp.set_crash_at(None, lambda *a: None, False)


def test_unset_or_other_points_do_nothing(kills, monkeypatch):
    monkeypatch.setattr(cp, "_parent_is_lightningd", lambda ppid: True)
    cp.set_crash_at(None, lambda *a: None, False)
    for name in cp.POINTS:
        cp.crashpoint(name)
    cp.set_crash_at("payer-sending", lambda *a: None, True)
    cp.crashpoint("payer-onion-sent")
    assert kills == []


def test_armed_point_kills_lightningd_then_itself(kills, monkeypatch):
    monkeypatch.setattr(cp, "_parent_is_lightningd", lambda ppid: True)
    logs = []
    cp.set_crash_at("server-invoice-stored", lambda msg, level: logs.append((level, msg)), True)
    cp.crashpoint("server-invoice-stored")
    assert kills == [(os.getppid(), signal.SIGKILL), (os.getpid(), signal.SIGKILL)]
    assert logs == [("info", "crashpoint server-invoice-stored: killing lightningd")]


def test_never_kills_a_parent_that_is_not_lightningd(kills):
    logs = []
    cp.set_crash_at("payer-sending", lambda msg, level: logs.append(msg), True)
    cp.crashpoint("payer-sending")  # our parent here is not lightningd
    assert kills == [] and "not lightningd" in logs[0]


def test_unknown_point_or_no_dev_refused():
    with pytest.raises(ValueError, match="unknown crash point"):
        cp.set_crash_at("everywhere", lambda *a: None, True)
    with pytest.raises(ValueError, match="needs --asyncreceive-dev"):
        cp.set_crash_at("payer-sending", lambda *a: None, False)


def test_sending_payment_whose_htlc_never_went_out_is_sent_after_a_restart():
    """Crash between the step to sending and sendonion: lightningd has no part for the hash, so the
    HTLC is sent now (once: the tick leaves a payment alone while a thread of ours sends it), and not
    before a channel peer is connected again."""
    net = FakeNetwork(lambda: 1_800_000_000)
    node, t = net.add("payer")
    p = payment()
    node.ds_put(key(p.payment_id), p.encode())
    node.rpc.listsendpays = lambda payment_hash: {"payments": []}
    peers = []
    node.connected_channel_peers = lambda: peers
    pending = []
    svc = PayService(t, "regtest", lambda *a: None, 3600, spawn=pending.append)
    sent = []
    svc._send_htlc = lambda x: sent.append(x.payment_id)
    svc.check_sending()
    assert pending == []                       # no channel peer yet: wait for the next tick
    peers.append(b"\x02" * 33)
    svc.check_sending()
    svc.check_sending()                        # the sending thread has not finished: not started again
    assert len(pending) == 1
    pending.pop()()
    assert sent == [p.payment_id]
    assert Payment.decode(p.payment_id, node.ds_get(key(p.payment_id))[0]).status == "sending"
