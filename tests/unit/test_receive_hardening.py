"""Recipient-side hardening: online-fallback records bounded, expiring and sealed; the HTLC checks shared
by both routes; replays only on our path; rate limits; peer-connect retries; damaged records."""

import hashlib
import os
import threading
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.errors import DecodeError
from asyncreceive.shell.transport import Received
from asyncreceive.receiving import service as ps
from asyncreceive.paying.payer import build_invoice_request
from asyncreceive.wire.payment_hop import (AMT_TO_FORWARD, CURRENT_PATH_KEY, ENCRYPTED_RECIPIENT_DATA, OUTGOING_CLTV,
                                           TOTAL_AMOUNT)
from asyncreceive.fallback import policy as fb
from asyncreceive.fallback import store as fstore
from asyncreceive.receiving import htlc
from asyncreceive.recipient import service as rs
from asyncreceive.recipient import store
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.wire import messages as m
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.paths import decode_paths
from asyncreceive.wire.tlv import bigsize, decode_tlv, encode_tlv, tu64

from .strategies import points
from .test_protocol import NOW, mailbox_world, send_held_htlc_available, stored_invoice

OID_A, OID_B = b"\xaa" * 32, b"\xbb" * 32


# ---- the pure policy ------------------------------------------------------------------------------
def doomed(*a, **kw):
    return fb.fallbacks_to_delete(*a, **kw)[1]


def test_expired_records_go_after_the_grace():
    issued = {b"old": fb.Issued(OID_A, 1000), b"new": fb.Issued(OID_A, 5000)}
    assert fb.fallbacks_to_delete(issued, 1000 + fb.KEEP_AFTER_EXPIRY) == (True, [])
    assert fb.fallbacks_to_delete(issued, 1001 + fb.KEEP_AFTER_EXPIRY) == (True, [b"old"])


def test_bounds_drop_the_oldest_and_make_room_for_the_new_one():
    issued = {bytes([i]): fb.Issued(OID_A if i < 5 else OID_B, 100 + i, i) for i in range(8)}
    now = fb.MIN_AGE + 10     # every record is old enough to go
    # per offer: A has 5, bound 3 -> its two oldest go (B has 3: none); admitting one more of A -> three
    assert doomed(issued, now, per_offer=3, total=100) == [b"\x00", b"\x01"]
    assert doomed(issued, now, admitting=OID_A, per_offer=3, total=100) == [b"\x00", b"\x01", b"\x02"]
    assert doomed(issued, now, admitting=OID_B, per_offer=3, total=100) == [b"\x00", b"\x01", b"\x05"]
    # in total: 8 kept under a bound of 6 (room for one new one) -> the three oldest go, whatever the offer
    assert doomed(issued, now, admitting=OID_B, per_offer=100, total=6) == [b"\x00", b"\x01", b"\x02"]


def test_young_records_are_never_pushed_out_and_the_new_one_is_refused():
    issued = {bytes([i]): fb.Issued(OID_A, 10_000 + i, 100 + i) for i in range(3)}
    young = 100 + fb.MIN_AGE - 1            # record 0 is one second short of MIN_AGE
    assert fb.fallbacks_to_delete(issued, young, admitting=OID_A, per_offer=3, total=100) == (False, [])
    assert fb.fallbacks_to_delete(issued, young, admitting=OID_B, per_offer=3, total=3) == (False, [])
    assert fb.fallbacks_to_delete(issued, young, admitting=OID_B, per_offer=3, total=4) == (True, [])
    assert fb.fallbacks_to_delete(issued, young + 1, admitting=OID_A, per_offer=3, total=100) == (True, [b"\x00"])
    # over a bound (e.g. lowered) without a newcomer: only the old enough go
    assert fb.fallbacks_to_delete(issued, young + 1, per_offer=1, total=100) == (True, [b"\x00"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.binary(min_size=1, max_size=2),
                       st.tuples(st.sampled_from([OID_A, OID_B]), st.integers(0, 3000), st.integers(0, 3000)),
                       max_size=40),
       st.integers(0, 4000), st.sampled_from([None, OID_A, OID_B]), st.integers(1, 10), st.integers(1, 20),
       st.integers(0, 2000))
def test_policy_properties(raw, now, admitting, per_offer, total, min_age):
    issued = {h: fb.Issued(o, e, at) for h, (o, e, at) in raw.items()}
    admit, gone = fb.fallbacks_to_delete(issued, now, admitting, per_offer, total, min_age=min_age)
    assert len(set(gone)) == len(gone) and set(gone) <= set(issued)
    expired = {h for h, i in issued.items() if now > i.expires_at + fb.KEEP_AFTER_EXPIRY}
    young = {h for h, i in issued.items() if h not in expired and now - i.issued_at < min_age}
    assert expired <= set(gone) and not young & set(gone)       # young live records never go
    kept = {h: i for h, i in issued.items() if h not in gone}
    room = 1 if admitting is not None and admit else 0

    def n(o):
        return sum(1 for i in kept.values() if i.offer_id == o) + (room if o == admitting else 0)
    # a bound is over only where every record left is young
    assert len(kept) + room <= total or set(kept) <= young
    for o in (OID_A, OID_B):
        assert n(o) <= per_offer or {h for h, i in kept.items() if i.offer_id == o} <= young
    if admitting is None:
        assert admit
    else:   # refused exactly when the young records alone leave no room
        young_a = sum(1 for h in young if issued[h].offer_id == admitting)
        assert admit == (young_a + 1 <= per_offer and len(young) + 1 <= total)
        if admit:
            assert n(admitting) <= per_offer and len(kept) + 1 <= total
    # nothing unexpired goes while the bounds hold without deleting it
    live = len(issued) - len(expired)
    if live + (admitting is not None) <= min(per_offer, total):
        assert set(gone) == expired


def test_payer_note_is_cut_at_a_character_boundary():
    assert htlc.cap_note("é" * 300) == "é" * 256            # 2 bytes each: 512 bytes exactly
    assert htlc.cap_note("a" + "é" * 300) == "a" + "é" * 255  # the 512th byte would split a character
    assert htlc.cap_note(None) is None and htlc.cap_note("hi") == "hi"


def test_worst_case_record_size():
    """README: what the bounds cost at most in lightningd's datastore."""
    h = b"\x11" * 32
    big = fstore.FallbackInvoice(h, b"\x22" * 32, 2 ** 64 - 1, 2 ** 64 - 1, b"\x33" * (fstore.NONCE_LEN + 48), True,
                                "x" * htlc.MAX_NOTE_BYTES)
    value = len(fstore.encode_fallback(big))
    key = len("/".join(fstore.fallback_key(h)))
    print(f"worst-case fallback record: value {value} B, key {key} B; x {fb.MAX_TOTAL} = "
          f"{(value + key) * fb.MAX_TOTAL} B")
    assert value == 632 and key == 98


# ---- the shell: forwarded invoice_requests ----------------------------------------------------------
def world():
    w = mailbox_world()
    w.rt.running.set()
    w.invoices = []
    w.pt.on_kind(Kind.PAYER_REPLY, lambda msg: (w.invoices if msg.msg_type == m.INVOICE else w.released).append(msg))
    w.offer = Offer.decode(w.recipient.cache[0].offer.offer)
    return w


def forward_invreq(w, amount=50_000, note=None, offer=None):
    offer = offer or w.offer
    invreq = build_invoice_request(offer, amount, os.urandom(32), chain=CHAINS["regtest"], payer_note=note)
    reply = w.pt.make_path(PathContext(Kind.PAYER_REPLY, None, {4: b"payment-1"}))
    w.rt.dispatch(Received(m.INVOICE_REQUEST, m.INVOICE_REQUEST, invreq.encode(), reply,
                           PathContext(Kind.FORWARD_INVREQ, None, {4: offer.offer_id}), b""))


def fallback_records(w):
    return {k: v for k, (v, _) in w.rnode.ds.items() if list(k[:4]) == fstore.FALLBACK_PREFIX}


def test_fallback_records_are_bounded_and_expire():
    w = world()
    for _ in range(fb.MAX_PER_OFFER + 5):
        forward_invreq(w)
        w.now += int(fb.ANSWER_REFILL_SECONDS)  # within the answer rate
    assert len(w.invoices) == fb.MAX_PER_OFFER + 5
    assert len(fallback_records(w)) == fb.MAX_PER_OFFER      # old code: 105
    assert w.recipient.fallback.count() == fb.MAX_PER_OFFER
    w.now += fb.FALLBACK_INVOICE_LIFETIME + fb.KEEP_AFTER_EXPIRY + 1
    w.recipient.tick()
    assert fallback_records(w) == {} and w.recipient.fallback.count() == 0


def test_fallback_index_is_loaded_once_and_damaged_records_are_deleted():
    w = world()
    forward_invreq(w)
    w.rnode.ds[tuple(fstore.fallback_key(b"\x01" * 32))] = (b"\x02\x01", 0)   # damaged
    w.recipient.load([])
    assert w.recipient.fallback.count() == 1 and len(fallback_records(w)) == 1
    reads = []
    w.rnode.ds_get, real = (lambda k: (reads.append(k), real(k))[1]), w.rnode.ds_get
    assert w.recipient.fallback.invoice(os.urandom(32)) is None and reads == []  # unknown: no datastore read


def test_invoice_requests_are_answered_at_a_bounded_rate():
    w = world()
    for _ in range(fb.ANSWER_BURST + 3):
        forward_invreq(w)
    assert len(w.invoices) == fb.ANSWER_BURST and w.drops(w.rt)["rate_limited"] == 3
    w.now += int(fb.ANSWER_REFILL_SECONDS)
    forward_invreq(w)
    assert len(w.invoices) == fb.ANSWER_BURST + 1


def test_preimage_is_sealed_and_note_capped():
    w = world()
    forward_invreq(w, note="n" * 5000)
    (key, val), = fallback_records(w).items()
    ph = bytes.fromhex(key[-1])
    f = w.recipient.fallback.invoice(ph)
    assert hashlib.sha256(f.preimage).digest() == ph
    assert f.preimage not in val                          # not in clear in the datastore
    assert f.payer_note == "n" * htlc.MAX_NOTE_BYTES
    other = rs.RecipientService(w.rt, 1, lambda *a: None, "regtest", b"\x08" * 32, 18, clock=lambda: w.now)
    other.load([])
    assert other.fallback.invoice(ph) is None             # another key cannot open it


# ---- htlc_accepted on the fallback route ---------------------------------------------------------------
def issued_invoice(w, amount=50_000):
    forward_invreq(w, amount)
    recs = dict(decode_tlv(w.invoices[-1].body, "invoice", known=lambda t: True).records)
    return recs[168], decode_paths(recs[160])[0]


def htlc_for(w, ph, path, amount=50_000, total=None, fwd=None, cltv=None, hid=1, scid="1x1x1", path_key=True,
             total_raw=None):
    cltv = cltv or w.rnode.height + 40
    recs = {AMT_TO_FORWARD: tu64(fwd or amount), OUTGOING_CLTV: tu64(cltv),
            ENCRYPTED_RECIPIENT_DATA: path.hops[0].encrypted_recipient_data,
            TOTAL_AMOUNT: total_raw if total_raw is not None else tu64(total or amount)}
    if path_key:
        recs[CURRENT_PATH_KEY] = path.first_path_key
    body = encode_tlv(sorted(recs.items()))
    onion = {"payload": (bigsize(len(body)) + body).hex()}
    return onion, {"payment_hash": ph.hex(), "amount_msat": amount, "cltv_expiry": cltv, "id": hid,
                   "short_channel_id": scid}


def decide(w, onion, htlc):
    got = []
    ours = w.payments.on_htlc(onion, htlc, got.append)
    return got[0]["result"] if got else ("held" if ours else "continue")


def test_fallback_htlc_claimed_and_its_record_goes():
    w = world()
    ph, path = issued_invoice(w)
    assert decide(w, *htlc_for(w, ph, path)) == "resolve"
    assert fallback_records(w) == {} and w.recipient.fallback.count() == 0
    assert w.payments.list_payments()[0]["amount_msat"] == 50_000


def test_malformed_total_fails_the_htlc_without_raising():
    w = world()
    ph, path = issued_invoice(w)
    assert decide(w, *htlc_for(w, ph, path, total_raw=b"\x00\x01")) == "fail"   # not minimal


def test_fallback_route_checks_expiry_max_cltv_and_amount_to_forward():
    w = world()
    ph, path = issued_invoice(w)
    assert decide(w, *htlc_for(w, ph, path, amount=49_000, fwd=50_000, total=50_000)) == "fail"
    assert decide(w, *htlc_for(w, ph, path, cltv=w.rnode.height + 100_000)) == "fail"   # past max_cltv_expiry
    w.now += fb.FALLBACK_INVOICE_LIFETIME + htlc.HTLC_GRACE + 1
    assert decide(w, *htlc_for(w, ph, path)) == "fail"
    assert w.payments.list_payments() == []


def test_replay_resolved_only_on_our_path_and_when_it_pays_enough():
    w = world()
    ph, path = issued_invoice(w)
    assert decide(w, *htlc_for(w, ph, path)) == "resolve"
    # after a restart lightningd has no path key: the same path (its encrypted data) is recognised
    assert decide(w, *htlc_for(w, ph, path, path_key=False)) == "resolve"
    # the same payment_hash on a path that is not ours (someone else's encrypted data): forward it
    foreign = replace(path, hops=(replace(path.hops[0], encrypted_recipient_data=os.urandom(60)),))
    assert decide(w, *htlc_for(w, ph, foreign, path_key=False)) == "continue"
    # another of our paths, with its path key, but for another payment: its path_id is not this hash's
    _, other = issued_invoice(w)
    assert decide(w, *htlc_for(w, ph, other)) == "continue"
    # our path but paying less than was recorded
    assert decide(w, *htlc_for(w, ph, path, amount=10_000, total=10_000)) == "continue"


def test_mpp_parts_with_look_alike_ids_are_distinct():
    w = world()
    ph, path = issued_invoice(w)
    assert decide(w, *htlc_for(w, ph, path, amount=25_000, total=50_000, hid=1, scid="23x4x5")) == "held"
    assert decide(w, *htlc_for(w, ph, path, amount=25_000, total=50_000, hid=12, scid="3x4x5")) == "resolve"


def test_an_incomplete_mpp_payment_fails_its_parts_when_its_timeout_is_over():
    """No timer per payment: the worker's wake-up (asked for at the first part) fails the parts of a payment
    still incomplete MPP_TIMEOUT after its first part; a later one waits for its own time."""
    w = world()
    wakes = []
    w.payments = ps.PaymentsService(w.rt, w.recipient, lambda *a: None, lambda p: None, clock=lambda: w.now,
                                    wake=wakes.append)
    ph, path = issued_invoice(w)
    ph2, path2 = issued_invoice(w)
    first, second = [], []
    assert w.payments.on_htlc(*htlc_for(w, ph, path, amount=25_000, total=50_000), first.append) is True
    w.now += 30
    assert w.payments.on_htlc(*htlc_for(w, ph2, path2, amount=25_000, total=50_000, hid=2), second.append)
    assert wakes == [ps.MPP_TIMEOUT, ps.MPP_TIMEOUT] and first == second == []
    w.payments.run_due()                                   # too early: nothing fails
    assert first == second == []
    w.now += ps.MPP_TIMEOUT - 30
    w.payments.run_due()
    assert [r["result"] for r in first] == ["fail"] and second == [] and wakes[-1] == 30
    w.now += 30
    w.payments.run_due()
    assert [r["result"] for r in second] == ["fail"] and w.payments.list_payments() == []


def test_no_decrypt_before_lightningd_runs_and_the_htlc_is_decided_after():
    w = world()
    ph, path = issued_invoice(w)
    w.rt.running.clear()
    calls = []
    real = w.rnode.decrypt_encrypted_data
    w.rnode.decrypt_encrypted_data = lambda *a: (calls.append(w.rt.running.is_set()), real(*a))[1]
    got, done = [], threading.Event()
    assert w.payments.on_htlc(*htlc_for(w, ph, path), lambda r: (got.append(r), done.set())) is True
    assert not done.wait(0.3) and calls == []           # waiting, not decrypting
    w.rt.running.set()
    assert done.wait(5) and got[0]["result"] == "resolve" and calls == [True]


def test_static_invoice_expiry_is_checked():
    from asyncreceive.crypto.blinding import EncryptedData, PaymentConstraints
    from asyncreceive.wire.payment_hop import INVREQ_LDK, KEYSEND_PREIMAGE
    from asyncreceive.receiving.htlc import check_htlc
    w = world()
    pre = os.urandom(32)
    invreq = build_invoice_request(w.offer, 50_000, os.urandom(32), chain=CHAINS["regtest"])
    recs = {KEYSEND_PREIMAGE: pre, INVREQ_LDK: invreq.encode(), TOTAL_AMOUNT: tu64(50_000)}
    data = EncryptedData(path_id=b"\x01" * 32, payment_constraints=PaymentConstraints(10_000, 1))
    args = (recs, data, w.offer, hashlib.sha256(pre).digest(), 50_000, 200, 100, 18)
    assert check_htlc(*args, NOW, invoice_expires_at=NOW - htlc.HTLC_GRACE).action == "claim"
    v = check_htlc(*args, NOW, invoice_expires_at=NOW - htlc.HTLC_GRACE - 1)
    assert v.action == "fail" and "invoice expired" in v.reason


# ---- held_htlc_available ---------------------------------------------------------------------------
def test_held_htlc_available_answers_are_rate_limited_per_offer():
    w = world()
    inv = stored_invoice(w, 0)
    for _ in range(ps.RELEASE_BURST + 4):
        send_held_htlc_available(w, inv, inv.message_paths[:1])
    assert len(w.released) == ps.RELEASE_BURST and w.drops(w.rt)["rate_limited"] == 4


# ---- peer connections ---------------------------------------------------------------------------------
def test_only_our_server_or_channel_peers_reset_the_backoff():
    w = world()
    w.recipient.cache = tuple(s.__class__(s.index, "requested", None, 3, w.now + 1000, w.now)
                              for s in w.recipient.cache)
    sent = len(w.sent)
    w.recipient.on_peer_connected(os.urandom(33))         # a stranger
    assert len(w.sent) == sent
    w.recipient.on_peer_connected(w.snode.node_id)        # our server's introduction node
    assert len(w.sent) > sent
    sent = len(w.sent)
    w.recipient.cache = tuple(s.__class__(s.index, "requested", None, 3, w.now + 1000, w.now)
                              for s in w.recipient.cache)
    w.now += rs.PEER_RETRY_INTERVAL - 1
    w.recipient.on_peer_connected(w.snode.node_id)        # again too soon
    assert len(w.sent) == sent
    w.now += 1
    w.recipient.on_peer_connected(w.snode.node_id)
    assert len(w.sent) > sent


# ---- damaged records ------------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_record_decoders_raise_only_decode_error(data):
    for decode in (ps.decode_payment, lambda d: fstore.decode_fallback(b"\x00" * 32, d), store.decode_slot):
        try:
            decode(data)
        except DecodeError:
            pass


@pytest.mark.parametrize("missing", [0, 2, 4, 6])
def test_damaged_records_raise_decode_error_and_are_skipped(missing):
    good = dict(decode_tlv(ps.encode_payment(OID_A, 5, 6, b"\x01" * 32, None), "p", known=lambda t: True).records)
    del good[missing]
    with pytest.raises(DecodeError):
        ps.decode_payment(encode_tlv(sorted(good.items())))
    w = world()
    w.rnode.ds[tuple(ps.payment_key(b"\x05" * 32))] = (encode_tlv(sorted(good.items())), 0)
    assert w.payments.list_payments() == []


def test_slot_index_beyond_u16_is_damage():
    from asyncreceive.recipient import cache as c
    with pytest.raises(DecodeError):
        store.decode_slot(store.encode_slot(c.Slot(70_000)))


def test_damaged_servers_record_does_not_stop_loading():
    """A damaged servers record (or an older version's server_paths record, read when there is none):
    logged, and the options' servers are used."""
    w = world()
    assert tuple(store.SERVERS_KEY) in w.rnode.ds
    w.rnode.ds[tuple(store.SERVERS_KEY)] = (b"\xff\x01", 0)
    w.recipient.load([])
    assert w.recipient.servers == [] and w.recipient.cache
    del w.rnode.ds[tuple(store.SERVERS_KEY)]
    w.rnode.ds[tuple(store.SERVER_PATHS_KEY)] = (b"\xff\x01", 0)
    w.recipient.load([])
    assert w.recipient.servers == [] and w.recipient.cache


@settings(deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "invoice_request_draft": st.binary(max_size=20), "amt_to_forward": st.integers(0, 2**64 - 1),
    "outgoing_cltv_value": st.integers(0, 2**32 - 1), "encrypted_recipient_data": st.binary(max_size=40),
    "current_path_key": points, "total_amount_msat": st.integers(0, 2**64 - 1),
    "invoice_request": st.binary(max_size=40), "sender_preimage": st.binary(min_size=32, max_size=32)}),
    st.integers(0, 2**40))
def test_payment_hop_table_round_trip_and_amount_defaults(values, htlc_msat):
    from asyncreceive.wire.payment_hop import PAYMENT_HOP_TABLE, parse_payload
    from asyncreceive.receiving.htlc import onion_amounts
    body = PAYMENT_HOP_TABLE.encode(values)
    decoded = PAYMENT_HOP_TABLE.decode(body)
    assert {k: v for k, v in decoded.items() if v is not None} == values
    records = parse_payload(bigsize(len(body)) + body)
    assert onion_amounts(records, htlc_msat) == (values.get("total_amount_msat", htlc_msat),
                                                 values.get("amt_to_forward", htlc_msat),
                                                 values.get("outgoing_cltv_value", 0))


def test_payment_hop_bad_amount_is_named():
    from asyncreceive.receiving.htlc import onion_amounts
    with pytest.raises(DecodeError, match="^total_amount_msat: "):
        onion_amounts({18: b"\x00\x01"}, 1)
    with pytest.raises(DecodeError, match="^outgoing_cltv_value: "):
        onion_amounts({4: b"\x01" * 5}, 1)
