"""Dedicated offers (getoffer with an amount, description or issuer): the slot policy, the slot record, the
recipient over the in-memory network, and both ends of a payment checking the offer's amount."""

import os
import threading
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.errors import DecodeError
from asyncreceive.shell.transport import Received
from asyncreceive.paying.service import PayError
from asyncreceive.paying.payer import build_invoice_request
from asyncreceive.recipient import cache as c
from asyncreceive.recipient import store
from asyncreceive.recipient.invoice import (CHAINS, MAX_AMOUNT_MSAT, MAX_DESCRIPTION_BYTES, MAX_ISSUER_BYTES,
                                            check_offer_fields)
from asyncreceive.recipient.service import RecipientError
from asyncreceive.wire import messages as m
from asyncreceive.wire.bolt12.invoice import Invoice
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.tlv import decode_tlv, encode_tlv

from .test_protocol import NOW, World, mailbox_world, stored_invoice


def ready_world(slots=2):
    w = World(slots=slots)
    w.enrol()
    w.recipient.tick(start=True)
    assert w.statuses()["ready"] == slots
    return w


# ---- the policy -------------------------------------------------------------------------------------
def _offer(**kw):
    return c.CachedOffer(b"o", os.urandom(32), (c.Holder(b"", os.urandom(8), b"r", persisted_at=NOW),), NOW + 10 ** 6,
                         NOW, NOW, **kw)


def test_a_dedicated_offer_is_used_once_persisted_and_never_handed_out_again():
    # each slot's invoice was served at NOW
    cache = (c.Slot(0, c.READY, _offer(), invoice_floor=NOW), c.Slot(1, c.READY, _offer(), invoice_floor=NOW))
    s = c.newest_ready(cache)
    dedicated = replace(s.offer, offer_id=os.urandom(32), amount_msat=5000, description="tea")
    cache, actions = c.offer_built(cache, s.index, dedicated)
    assert actions == [c.SendInvoice(s.index)] and cache[s.index].status == c.PENDING
    # its first invoice is newer than the one it replaces at the server, even in the same second
    assert c.invoice_time(cache[s.index], NOW) == NOW + 1
    cache, changed = c.persisted(cache, dedicated.offer_id, NOW + 1)
    assert changed and cache[s.index].status == c.USED
    # plain getoffer takes the other (ready) slot, then hands out only amount-less used offers
    cache, got = c.get_offer(cache, NOW)
    assert got.index != s.index and not got.offer.dedicated
    cache = c._set(cache, replace(got, offer=replace(got.offer, expires_at=NOW + 1)))  # expires first
    _, again = c.get_offer(cache, NOW)
    assert again.index == got.index
    assert c.newest_ready(cache) is None


def test_fewer_slots_keep_a_pending_dedicated_offer():
    cache = (c.Slot(0, c.READY, _offer()), c.Slot(1, c.PENDING, _offer(issuer="shop")))
    assert [s.index for s in c.resize(cache, 1)] == [0, 1]


# ---- the record -------------------------------------------------------------------------------------
def test_slot_record_keeps_the_dedicated_fields_and_older_records_still_decode():
    s = c.Slot(3, c.USED, _offer(amount_msat=2 ** 64 - 1, description="é" * 3, issuer="shop"))
    assert store.decode_slot(store.encode_slot(s)) == s
    plain = c.Slot(3, c.READY, _offer())
    data = store.encode_slot(plain)
    assert 29 not in dict(decode_tlv(data, "x", allow_unknown_even=True).records) and store.decode_slot(data) == plain
    recs = [r for r in decode_tlv(store.encode_slot(s), "x", allow_unknown_even=True).records if r[0] != 33]
    bad = encode_tlv(sorted(recs + [(33, b"\xff")]))
    with pytest.raises(DecodeError, match="issuer"):
        store.decode_slot(bad)


@given(st.integers(0, 2 ** 64 - 1), st.text(max_size=20), st.text(max_size=20))
def test_slot_record_roundtrip(amount, description, issuer):
    s = c.Slot(1, c.PENDING, _offer(amount_msat=amount, description=description, issuer=issuer))
    assert store.decode_slot(store.encode_slot(s)) == s


# ---- bad values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("amount,description,issuer,why", [
    (0, "x", None, "amount_msat: an integer from 1"),
    (-5, "x", None, "amount_msat: an integer from 1"),
    (MAX_AMOUNT_MSAT + 1, "x", None, "amount_msat: an integer from 1"),
    ("1000", "x", None, "amount_msat: an integer from 1"),
    (True, "x", None, "amount_msat: an integer from 1"),
    (1000, None, None, "description: needed with amount_msat"),
    (1000, "", None, "description: a non-empty string"),
    (None, 7, None, "description: a non-empty string"),
    (None, "x" * (MAX_DESCRIPTION_BYTES + 1), None, f"description: {MAX_DESCRIPTION_BYTES + 1} bytes, at most"),
    (None, "\ud800", None, "description: not valid UTF-8"),
    (None, None, "é" * (MAX_ISSUER_BYTES // 2 + 1), f"issuer: {MAX_ISSUER_BYTES + 2} bytes, at most"),
    (None, None, "", "issuer: a non-empty string"),
])
def test_bad_values_are_refused_in_one_line(amount, description, issuer, why):
    assert check_offer_fields(amount, description, issuer).startswith(why)
    w = ready_world(slots=1)
    with pytest.raises(RecipientError, match="^" + why.split(":")[0]):
        w.recipient.make_offer(amount, description, issuer, 1)
    assert w.statuses()["ready"] == 1  # nothing taken


def test_good_values_pass():
    assert check_offer_fields(1, "x", None) is None
    assert check_offer_fields(MAX_AMOUNT_MSAT, "x" * MAX_DESCRIPTION_BYTES, "y" * MAX_ISSUER_BYTES) is None
    assert check_offer_fields(None, None, "shop") is None


# ---- the recipient over the in-memory network -----------------------------------------------------
def test_getoffer_with_an_amount_serves_its_own_invoice_in_the_slot_and_keeps_it():
    w = ready_world(slots=2)
    got = w.recipient.make_offer(21_000, "a coffee", "the café", 5)
    offer = Offer.from_string(got["offer"])
    assert (offer.amount, offer.description, offer.issuer) == (21_000, "a coffee", "the café")
    assert got["status"] == c.USED and got["amount_msat"] == 21_000 and got["issuer"] == "the café"
    ready_before = [s for s in w.recipient.cache if s.index != got["slot"]][0]
    # on the slot's offer paths, with its own per-offer issuer id
    slot = next(s for s in w.recipient.cache if s.index == got["slot"])
    assert offer.offer_paths and offer.issuer_id not in (
        Offer.decode(ready_before.offer.offer).issuer_id, None)
    # the server holds this offer's invoice for the slot now (made in the same second as the one it replaced)
    inv = stored_invoice(w, got["slot"])
    assert inv.offer_id == offer.offer_id and inv.offer.amount == 21_000 and inv.created_at == NOW + 1
    # a plain getoffer never returns it; the ready slot goes
    plain = w.recipient.get_offer()
    assert plain["slot"] != got["slot"] and "amount_msat" not in plain
    # every later re-serve and a restart keep the same offer
    w.recipient.load([])
    assert next(s for s in w.recipient.cache if s.index == got["slot"]) == slot
    w.now += c.INVOICE_REFRESH + 2  # its invoice was made at NOW + 1
    w.recipient.tick()
    inv = stored_invoice(w, got["slot"])
    assert inv.offer_id == offer.offer_id and inv.created_at == w.now
    w.recipient.refresh()
    assert stored_invoice(w, got["slot"]).offer_id == offer.offer_id
    assert [o["offer_id"] for o in w.recipient.list_offers("used")].count(offer.offer_id.hex()) == 1
    # no ready slot left: a clear error
    with pytest.raises(RecipientError, match="no async offer is ready yet"):
        w.recipient.make_offer(1000, "x", None, 1)


def test_server_silent_is_a_clear_timeout_and_the_offer_is_served_on_the_next_tick():
    w = ready_world(slots=1)
    w.snode.online = False
    with pytest.raises(RecipientError, match=r"did not confirm .* within 0.05s: offer [0-9a-f]{64} is built in "
                                             r"slot 0 \(pending\) and its invoice is re-served on every tick"):
        w.recipient.make_offer(5000, "tea", None, 0.05)
    assert w.statuses()["pending"] == 1
    pending = w.recipient.list_offers("pending")[0]
    assert pending["amount_msat"] == 5000
    w.snode.online = True
    w.now += 1
    w.recipient.tick()
    assert w.recipient.list_offers("used")[0]["offer_id"] == pending["offer_id"]
    assert stored_invoice(w, 0).offer_id.hex() == pending["offer_id"]


def test_the_wait_does_not_hold_the_lock_the_worker_needs():
    w = ready_world(slots=1)
    w.snode.online = False
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("got", w.recipient.make_offer(5000, "tea", None, 10)))
    t.start()
    while not w.recipient.list_offers("pending"):
        t.join(0.01)
    w.snode.online = True
    w.now += 1
    w.recipient.tick()  # what the worker does meanwhile: re-serve; the server's ack ends the wait
    t.join(5)
    assert not t.is_alive() and out["got"]["status"] == c.USED and out["got"]["amount_msat"] == 5000


# ---- online fallback: forwarded invoice_requests -------------------------------------------------------
def _dedicated_mailbox_world():
    w = mailbox_world()
    w.rt.running.set()
    w.invoices = []
    w.pt.on_kind(Kind.PAYER_REPLY, lambda msg: w.invoices.append(msg) if msg.msg_type == m.INVOICE else None)
    w.offer = Offer.from_string(w.recipient.make_offer(30_000, "lunch", None, 5)["offer"])
    return w


def _forward(w, amount):
    invreq = build_invoice_request(w.offer, amount, os.urandom(32), chain=CHAINS["regtest"])
    reply = w.pt.make_path(PathContext(Kind.PAYER_REPLY, None, {4: b"payment-1"}))
    w.rt.dispatch(Received(m.INVOICE_REQUEST, m.INVOICE_REQUEST, invreq.encode(), reply,
                           PathContext(Kind.FORWARD_INVREQ, None, {4: w.offer.offer_id}), b""))


def test_forwarded_invoice_request_without_amount_gets_the_offers_and_below_it_is_ignored():
    w = _dedicated_mailbox_world()
    _forward(w, None)  # BOLT 12: the payer may leave the amount out when the offer has one
    assert len(w.invoices) == 1 and Invoice.decode(w.invoices[0].body).invoice_amount == 30_000
    _forward(w, 29_999)
    assert len(w.invoices) == 1 and w.recipient.ignored.get("below_offer_amount") == 1
    _forward(w, 31_000)  # more is a tip
    assert len(w.invoices) == 2 and Invoice.decode(w.invoices[1].body).invoice_amount == 31_000


# ---- the payer and the HTLC checks --------------------------------------------------------------------
def test_payer_pays_an_amount_offer_its_amount_or_more_never_less():
    from .test_payer import World as PayerWorld
    w = PayerWorld()
    w.offer = Offer.build(w.issuer_id, w.offer.offer_paths, chains=[CHAINS["regtest"]], amount=40_000,
                          description="book")
    pid = w.pay(amount=None)  # omitted: the offer's
    rec = w.record(pid)
    from asyncreceive.wire.bolt12.invoice_request import InvoiceRequest
    assert rec.amount_msat == 40_000 and InvoiceRequest.decode(rec.invreq).invreq_amount == 40_000
    assert w.record(w.pay(amount=45_000)).amount_msat == 45_000
    with pytest.raises(PayError, match="amount_msat: 39999 is below the offer's amount 40000"):
        w.pay(amount=39_999)


def test_htlc_paying_less_than_the_offers_amount_is_refused():
    from .test_receive import OFFER, check, htlc
    offer = Offer.build(OFFER.issuer_id, OFFER.offer_paths, absolute_expiry=NOW + 1000, amount=50_000,
                        description="x")
    recs, ph = htlc(amount=50_000, invreq_amount=None, offer=offer)  # no invreq amount: the offer's
    assert check(recs, ph, amount=50_000, offer=offer).action == "claim"
    recs, ph = htlc(amount=40_000, invreq_amount=None, offer=offer)
    v = check(recs, ph, amount=40_000, offer=offer)
    assert v.action == "fail" and "below the invoice_request amount 50000" in v.reason
    # a payer's invoice_request asking less than the offer's amount does not lower it
    recs, ph = htlc(amount=40_000, invreq_amount=40_000, offer=offer)
    v = check(recs, ph, amount=40_000, offer=offer)
    assert v.action == "fail" and "below the offer's amount 50000" in v.reason, v.reason
