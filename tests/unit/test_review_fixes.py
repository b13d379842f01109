"""Findings of a review of the hardening change: each test failed before its fix."""

from asyncreceive.shell.lightningd import NodeError
from asyncreceive.recipient import cache as c
from asyncreceive.recipient.store import slot_key

from .test_protocol import World
from .test_receive_hardening import decide, htlc_for, issued_invoice, world


def test_parts_are_answered_when_recording_the_payment_fails():
    """Recording a complete payment failed (an RPC error): every part held in the hook must still get
    an answer (failed: the payment was not recorded, so not claimed); before, none did."""
    w = world()
    ph, path = issued_invoice(w)
    real = w.rnode.ds_put

    def failing(key, value, generation=None):
        if "payment" in key:
            raise NodeError("datastore write failed: disk full")
        return real(key, value, generation)

    w.rnode.ds_put = failing
    assert decide(w, *htlc_for(w, ph, path)) == "fail"
    assert w.payments.list_payments() == []


def test_a_damaged_slot_record_is_replaced_not_left_failing_every_tick():
    w = World(slots=2)
    w.enrol()
    w.rnode.ds_put(slot_key(1), b"\xff\xff garbage")
    w.recipient.load([])
    w.recipient.tick(start=True)          # before: every write of slot 1 failed as a must-create
    w.now += 1
    w.recipient.tick()
    assert c.counts(w.recipient.cache)["ready"] == 2
