"""The payer's policy (asyncreceive/paying/policy.py), pure: its invariants under arbitrary event
sequences (never two sends, every payment ends, backoff bounded), the statuses as shown, and the record's
bytes in the datastore."""

from dataclasses import replace

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings, strategies as st

from asyncreceive.errors import DecodeError
from asyncreceive.paying import policy as pol
from asyncreceive.paying.policy import (ENDED, FAILURE_STANDS, OPEN, PAYER_RETRY_BASE, PAYER_RETRY_CAP,
                                              PayState, Payment, Status)
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.tlv import decode_tlv

NOW = 1_800_000_000
OFFER = Offer.build(PrivateKey(b"\x01" * 32).public_key.format(), [], amount=50_000, description="x").encode()
#: a record with every field, as the code before the policy's move wrote it (the datastore's bytes)
FULL_RECORD = bytes.fromhex(
    "00030a01410202c350040400026162062007070707070707070707070707070707070707070707070707070707070707070801020a07"
    "050505050505050c046b49d2000e046b49e01010086e6f20726f7574651202138814019015010317046b49d20a19046b49d2141b04"
    "6b49d2051d01001f046b49d21e2100")
SMALL_RECORD = bytes.fromhex(
    "00030a01410202c35004040002616206200707070707070707070707070707070707070707070707070707070707070707080100"
    "0c000e001200140207e01500")
FULL_ARGS = ((b"\x01" * 16, b"\x0a\x01\x41", 50_000, b"\x00\x02ab", b"\x07" * 32, "sending"),
             dict(invoice=b"\x05" * 7, created_at=NOW, deadline=NOW + 3600, error="no route", max_fee_msat=5000,
                  max_delay=144, attempts=3, error_at=NOW + 10, next_try_at=NOW + 20, held_at=NOW + 5,
                  route="static", sending_at=NOW + 30, handed_over=True))


def payment(timeout=3600, **kw) -> Payment:
    return Payment(b"\x01" * 16, OFFER, 50_000, b"invreq", b"\x07" * 32, created_at=NOW, deadline=NOW + timeout, **kw)


# ---- the record: statuses and bytes unchanged -----------------------------------------------------

def test_statuses_are_an_enum_shown_as_the_same_strings_in_the_same_stored_order():
    assert [s.value for s in pol.STATUSES] == ["requested", "waiting_release", "sending", "complete", "failed",
                                               "cancelled"]
    assert all(isinstance(s, Status) for s in pol.STATUSES) and str(Status.SENDING) == "sending"
    for i, s in enumerate(pol.STATUSES):
        p = payment(status=s.value)               # a string still makes the enum
        assert p.status is s
        out = p.json()
        assert type(out["status"]) is str and out["status"] == s.value
        assert Payment.decode(p.payment_id, p.encode()).status is s
        assert dict(decode_tlv(p.encode(), "p", known=lambda t: True).records)[pol.PAYMENT_RECORD.field("status").type] \
            == bytes([i])


def test_the_record_bytes_are_those_written_before():
    args, kw = FULL_ARGS
    assert Payment(*args, **kw).encode() == FULL_RECORD
    assert Payment(*args[:5]).encode() == SMALL_RECORD
    assert Payment.decode(args[0], FULL_RECORD) == Payment(*args, **kw)


def test_truncated_or_damaged_records_raise_only_decode_error():
    ok = 0
    for raw in (FULL_RECORD, SMALL_RECORD):
        for n in range(len(raw)):
            try:
                Payment.decode(b"\x01" * 16, raw[:n])
                ok += 1
            except DecodeError:
                pass
        for i in range(len(raw)):
            for flip in (0x01, 0x80, 0xff):
                try:
                    Payment.decode(b"\x01" * 16, raw[:i] + bytes([raw[i] ^ flip]) + raw[i + 1:])
                except DecodeError:
                    pass
    with pytest.raises(DecodeError):
        Payment.decode(b"\x01" * 16, FULL_RECORD[:-3])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_records_raise_only_decode_error(raw):
    try:
        Payment.decode(b"\x01" * 16, raw)
    except DecodeError:
        pass


# ---- the policy under arbitrary events ------------------------------------------------------------

EVENTS = st.one_of(
    st.tuples(st.just("tick"), st.booleans()),
    st.tuples(st.just("to_due"), st.none()),
    st.tuples(st.just("restart"), st.none()),
    st.tuples(st.just("static"), st.sampled_from([0, 1.5, 5])),
    st.tuples(st.just("invoice"), st.none()),
    st.tuples(st.just("release"), st.none()),
    st.tuples(st.just("cancel"), st.none()),
    st.tuples(st.just("problem"), st.text(max_size=5)),
    st.tuples(st.just("records"), st.tuples(st.sampled_from(["complete", "failed", "pending", "none"]),
                                            st.booleans())),
    st.tuples(st.just("handover"), st.none()),
    st.tuples(st.just("result"), st.sampled_from([Status.COMPLETE, Status.FAILED])),
    st.tuples(st.just("stopped"), st.none()),
)
#: who may move a payment from one status to another
MOVES = {(Status.REQUESTED, Status.WAITING_RELEASE), (Status.REQUESTED, Status.SENDING),
         (Status.WAITING_RELEASE, Status.SENDING), (Status.SENDING, Status.COMPLETE), (Status.SENDING, Status.FAILED)}
MOVES |= {(s, e) for s in OPEN for e in (Status.FAILED, Status.CANCELLED)}


class Run:
    """Drives the policy as the shell does: a send of ours (a thread) runs after StartSend and may hand the
    payment over, end it and stop; a restart forgets the memory and the threads (the record stays)."""

    def __init__(self, timeout):
        self.now = float(NOW)
        self.state = PayState(payment(timeout))
        self.deadline = self.state.rec.deadline
        self.threads = 0
        self.proceeds = 0          # sends that went to lightningd
        self.finished = 0
        self.last_delay = 0        # the backoff of this round so far
        self.step(pol.Resume())

    def step(self, ev):
        before = self.state
        snapshot = replace(before.rec)
        new, actions = pol.step(before, ev, self.now)
        assert before.rec == snapshot                                # pure: the old record is untouched
        b, a = before.rec.status, new.rec.status
        assert a == b or (b, a) in MOVES, (b, a, ev)
        if b in ENDED:
            assert new.rec == before.rec and actions == []           # an ended payment never changes
        if isinstance(ev, (pol.Resume, pol.GotStaticInvoice)):
            self.last_delay = 0
        for act in actions:
            if isinstance(act, pol.StartSend):
                # never a second send while one runs, nor one after a send went to lightningd
                assert not before.busy and not before.rec.handed_over and self.threads == 0
                assert a is Status.SENDING and new.busy
                self.threads += 1
            elif isinstance(act, pol.Proceed):
                self.proceeds += 1
            elif isinstance(act, pol.Finished):
                self.finished += 1
                assert a in ENDED
            elif isinstance(act, (pol.SendInvoiceRequest, pol.SendHeld)):
                assert b in OPEN and new.rec.attempts == before.rec.attempts + 1
                delay = new.due - self.now
                assert 0 < delay <= PAYER_RETRY_CAP
                if new.due < self.deadline:                          # not cut short by the deadline
                    assert delay >= PAYER_RETRY_BASE and delay >= self.last_delay
                    self.last_delay = delay
        assert self.proceeds <= 1 and self.finished == (1 if a in ENDED else 0)
        if a in OPEN:
            assert new.due is None or new.due <= self.deadline       # the wake-up comes by the deadline
        else:
            assert new.due is None
        self.state = new
        return actions

    def event(self, kind, arg):
        s = self.state
        if kind == "tick":
            return self.step(pol.Tick(settle=arg))
        if kind == "to_due":
            if s.due is not None:
                self.now = max(self.now, s.due)
            return self.step(pol.Tick())
        if kind == "restart":
            self.state, self.threads = PayState(s.rec), 0
            return self.step(pol.Resume())
        if kind in ("handover", "result", "stopped"):
            if not self.threads:
                return None
            if kind == "stopped":
                self.threads -= 1
                return self.step(pol.Stopped())
            return self.step(pol.HandOver() if kind == "handover" else pol.Result(arg, "", None, "test"))
        ev = {"static": lambda: pol.GotStaticInvoice(b"static", arg), "invoice": lambda: pol.GotInvoice(b"inv"),
              "release": lambda: pol.GotRelease(), "cancel": lambda: pol.Cancel(),
              "problem": lambda: pol.Problem(arg),
              "records": lambda: pol.Records(arg[0], None, arg[1])}[kind]()
        return self.step(ev)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, 4000), st.lists(st.tuples(st.integers(0, 400), EVENTS), max_size=40))
def test_never_two_sends_and_every_payment_ends(timeout, events):
    run = Run(timeout)
    for dt, (kind, arg) in events:
        run.now += dt
        run.event(kind, arg)
    # every payment ends: an open one at its deadline ...
    run.now = max(run.now, run.deadline)
    run.step(pol.Tick())
    assert run.state.rec.status not in OPEN
    # ... one in sending when our send ends, or lightningd's records say so (a failure once it stood)
    while run.threads:
        run.event("stopped", None)
    run.step(pol.Records("failed"))
    run.now += FAILURE_STANDS
    run.step(pol.Records("failed"))
    assert run.state.rec.status in ENDED and run.finished == 1
    assert run.proceeds <= 1


def test_a_payment_handed_over_is_never_sent_again_after_a_restart():
    run = Run(3600)
    run.event("invoice", None)
    assert run.threads == 1
    run.event("handover", None)
    assert run.proceeds == 1 and run.state.rec.handed_over
    run.event("restart", None)                      # the plugin died with the send; autoclean ran
    for _ in range(3):
        run.now += 100
        assert run.step(pol.Records("none")) in ([], [pol.Log(
            "pay 01010101: lightningd has no record of this payment, which was handed to it: not sent again",
            "unusual")])
    assert run.threads == 0 and run.state.rec.status is Status.SENDING and "not sent again" in run.state.rec.error


def test_a_payment_not_handed_over_yet_is_sent_after_a_restart_once():
    run = Run(3600)
    run.event("static", 0)
    run.event("to_due", None)
    run.event("release", None)
    run.event("restart", None)                      # died between the step to sending and sendonion
    actions = run.step(pol.Records("none", peers=False))
    assert actions == [] and run.threads == 0      # no channel peer: nothing could go out
    run.step(pol.Records("none", peers=True))
    assert run.threads == 1 and run.step(pol.Records("none")) == []    # it runs: not a second one
    run.event("handover", None)
    run.event("handover", None)
    assert run.proceeds == 1


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10 ** 6), st.sampled_from([0, 1.5, 5]), st.booleans())
def test_backoff_doubles_from_the_base_up_to_the_cap_and_ends_at_the_deadline(timeout, grace, held):
    run = Run(timeout)
    if held and run.state.rec.status is Status.REQUESTED:
        run.event("static", grace)
        first = run.state.due - run.now
        assert first == min(grace, run.deadline - run.now)   # the grace for the payee's own invoice
    tries = []
    while run.state.rec.status in OPEN:
        t = run.now
        run.event("to_due", None)
        tries.append(run.now - t)
    delays = tries[1 if held else 0:]
    assert run.state.rec.status is Status.FAILED and "timed out" in run.state.rec.error
    assert run.now == run.deadline
    full = [d for d in delays[:-1]]                 # the last wait is cut by the deadline
    assert full == [min(PAYER_RETRY_CAP, PAYER_RETRY_BASE * 2 ** i) for i in range(len(full))]


def test_records_of_lightningd_in_one_word():
    assert pol.records_result([]) == ("none", None)
    assert pol.records_result([{"status": "failed"}, {"status": "complete", "preimage": "ab"}]) == ("complete", "ab")
    assert pol.records_result([{"status": "failed"}, {"status": "pending"}]) == ("pending", None)
    assert pol.records_result([{"status": "failed"}] * 2) == ("failed", None)
