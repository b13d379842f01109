"""Review fixes: rate limits and record bounds that one stranger could use to starve real payers, and the
server's mailbox keeping what it has not really delivered (in-memory network, real crypto)."""

import os

from asyncreceive.app import route
from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.shell.transport import Received
from asyncreceive.receiving import service as ps
from asyncreceive.paying.payer import build_invoice_request
from asyncreceive.fallback import policy as fb
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.recipient.service import F_OFFER_ID, HELD_HTLC_GRACE
from asyncreceive.wire import messages as m

from .test_protocol import NOW, mailbox_world


def held_path_via(w, peer):
    """A held-HTLC path ``peer -> recipient -> phantom`` for the recipient's offer, as its static
    invoice carries for each channel peer: what arrives on it has ``source`` = ``peer``."""
    offer_id = w.recipient.cache[0].offer.offer_id
    ctx = PathContext(Kind.HELD_HTLC, w.now + 3600 + HELD_HTLC_GRACE, {F_OFFER_ID: offer_id})
    return w.rt.make_path(ctx, via=[peer.node_id])


def send_held(w, sender, path):
    sender.send(path, m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode(),
                reply_context=PathContext(Kind.PAYER_REPLY, None, {4: b"payment-1"}))


# ---- 1: held_htlc_available answers per (offer, incoming peer) ----------------------------------------
def test_junk_from_one_peer_does_not_use_up_a_payers_release():
    w = mailbox_world()
    w.rt.running.set()
    anode, at = w.net.add("attacker")
    rel = []
    at.on_kind(Kind.PAYER_REPLY, rel.append)
    for _ in range(ps.RELEASE_BURST + 5):            # the attacker's peer drains its bucket ...
        send_held(w, at, held_path_via(w, anode))
    assert len(rel) == ps.RELEASE_BURST and w.drops(w.rt)["rate_limited"] == 5
    w.now += 1
    send_held(w, w.pt, held_path_via(w, w.pnode))      # ... a payer arriving through another peer is released
    assert len(w.released) == 1 and w.released[0].msg_type == m.RELEASE_HELD_HTLC


def test_releases_per_offer_are_capped_over_all_peers():
    w = mailbox_world()
    w.rt.running.set()
    peers = [w.net.add(f"peer{i}") for i in range(ps.RELEASE_OFFER_BURST // ps.RELEASE_BURST + 1)]
    for node, t in peers:
        for _ in range(ps.RELEASE_BURST):
            send_held(w, t, held_path_via(w, node))
    assert w.payments.released == ps.RELEASE_OFFER_BURST
    assert w.drops(w.rt)["rate_limited"] == ps.RELEASE_BURST


# ---- 2: online-fallback answers per (offer, incoming peer); young records are never pushed out ---------
def fallback_world():
    w = mailbox_world()
    w.rt.running.set()
    w.invoices = []
    w.pt.on_kind(Kind.PAYER_REPLY, lambda msg: (w.invoices if msg.msg_type == m.INVOICE else w.released).append(msg))
    return w


def forward_invreq(w, source):
    """A forwarded invoice_request for the recipient's offer that arrived from peer ``source``."""
    from asyncreceive.wire.bolt12.offer import Offer
    offer = Offer.decode(w.recipient.cache[0].offer.offer)
    invreq = build_invoice_request(offer, 50_000, os.urandom(32), chain=CHAINS["regtest"])
    reply = w.pt.make_path(PathContext(Kind.PAYER_REPLY, None, {4: b"payment-1"}))
    w.rt.dispatch(Received(m.INVOICE_REQUEST, m.INVOICE_REQUEST, invreq.encode(), reply,
                           PathContext(Kind.FORWARD_INVREQ, None, {4: offer.offer_id}), b"", source))


PEER_X, PEER_Y, PEER_Z = b"\x02" + b"\x11" * 32, b"\x03" + b"\x22" * 32, b"\x02" + b"\x33" * 32


def test_invoice_requests_from_one_peer_do_not_use_up_another_peers_answers():
    w = fallback_world()
    for _ in range(fb.ANSWER_BURST + 3):
        forward_invreq(w, PEER_X)
    assert len(w.invoices) == fb.ANSWER_BURST and w.drops(w.rt)["rate_limited"] == 3
    forward_invreq(w, PEER_Y)
    assert len(w.invoices) == fb.ANSWER_BURST + 1


def test_a_flood_of_invoice_requests_does_not_push_out_an_invoice_being_paid():
    from .test_receive_hardening import decide, htlc_for
    from asyncreceive.wire.paths import decode_paths
    from asyncreceive.wire.tlv import decode_tlv
    w = fallback_world()
    forward_invreq(w, PEER_Y)                              # a genuine payer gets its invoice ...
    recs = dict(decode_tlv(w.invoices[-1].body, "invoice", known=lambda t: True).records)
    ph, path = recs[168], decode_paths(recs[160])[0]
    for i in range(140):                                   # ... then junk from two peers, within the rates
        forward_invreq(w, (PEER_X, PEER_Z)[i % 2])
        w.now += 4
    assert w.now - NOW < 600                               # fb.MIN_AGE: every record is young
    assert w.recipient.fallback.count() == fb.MAX_PER_OFFER
    assert decide(w, *htlc_for(w, ph, path)) == "resolve"  # the payer's HTLC, nine minutes later
    assert len(w.invoices) == fb.MAX_PER_OFFER and w.drops(w.rt)["rate_limited"] == 140 - 99
    # once the records are old enough, new requests push out the oldest again
    w.now += fb.MIN_AGE
    forward_invreq(w, PEER_Y)
    assert len(w.invoices) == fb.MAX_PER_OFFER + 1 and w.recipient.fallback.count() == fb.MAX_PER_OFFER


# ---- 5: the mailbox deletes a held message only once lightningd took it -------------------------------
class ManualSender:
    """The server's sender, run by hand: ``submit`` only queues (up to ``limit``), ``pump`` runs jobs."""

    def __init__(self, limit=64):
        self.jobs, self.limit = [], limit

    def submit(self, peer, job, reply=None):
        if len(self.jobs) >= self.limit:
            return False
        self.jobs.append(job)
        return True

    def pump(self, n=None):
        todo, self.jobs = self.jobs[:n], self.jobs[n:] if n is not None else []
        for job in todo:
            job()
        return len(todo)


def offline_with_held(w, n):
    from .test_protocol import send_held_htlc_available, stored_invoice
    inv = stored_invoice(w, 0)
    w.rnode.online = False
    for _ in range(n):
        send_held_htlc_available(w, inv, inv.message_paths[:1])
        w.now += 1
    assert w.server.held_count() == n


def test_held_messages_are_deleted_only_once_lightningd_took_them():
    from asyncreceive.shell.lightningd import NodeError
    w = mailbox_world()
    offline_with_held(w, 3)
    w.st.sender = ManualSender()
    w.rnode.online = True
    w.server.on_peer_connected(w.rnode.node_id)
    assert len(w.st.sender.jobs) == 3
    assert w.server.held_count() == 3          # queued is not sent: a restart now loses nothing
    w.server.tick()                            # and what is in flight is not queued twice
    assert len(w.st.sender.jobs) == 3
    real = w.snode.send_onion
    w.snode.send_onion = lambda out: (_ for _ in ()).throw(NodeError("peer gone"))
    w.st.sender.pump(1)                        # lightningd refused the first: kept
    w.snode.send_onion = real
    w.st.sender.pump()
    assert w.server.held_count() == 1 and len(w.released) == 2
    w.server.tick()                            # the refused one goes again on the next tick
    w.st.sender.pump()
    assert w.server.held_count() == 0 and len(w.released) == 3


def test_a_full_send_queue_keeps_the_held_messages_for_later():
    w = mailbox_world()
    offline_with_held(w, 3)
    w.st.sender = ManualSender(limit=1)
    w.rnode.online = True
    w.server.on_peer_connected(w.rnode.node_id)   # one fits; "send queue full" for the next: stop, keep
    assert w.server.held_count() == 3 and len(w.st.sender.jobs) == 1
    w.st.sender.pump()                            # ... once it is through, the rest goes, one at a time
    while w.st.sender.pump():
        pass
    assert w.server.held_count() == 0 and len(w.released) == 3


def test_delivery_goes_in_batches_within_the_senders_queue_for_a_peer():
    from asyncreceive.shell.sender import PER_PEER
    from asyncreceive.server import mailbox as mb
    from asyncreceive.server.service import ServerConfig
    w = mailbox_world(ServerConfig(max_held=40))
    offline_with_held(w, 40)
    w.st.sender = ManualSender()
    w.rnode.online = True
    w.server.on_peer_connected(w.rnode.node_id)
    assert len(w.st.sender.jobs) == mb.DELIVER_BATCH < PER_PEER
    w.st.sender.pump()                         # when a batch is through, the next one is queued
    assert len(w.st.sender.jobs) == mb.DELIVER_BATCH and w.server.held_count() == 40 - mb.DELIVER_BATCH
    while w.st.sender.pump():
        pass
    assert w.server.held_count() == 0 and w.rt.stats.relayed == {"held_htlc_available": 40}


# ---- 9: the tick reads no held message of a client that is not connected ------------------------------
def test_tick_reads_nothing_held_for_clients_that_are_not_connected():
    from asyncreceive.server import mailbox as mb
    from asyncreceive.server.service import ServerService
    w = mailbox_world()
    offline_with_held(w, 3)
    reads = []
    ds_list, ds_get = w.snode.ds_list, w.snode.ds_get
    w.snode.ds_list = lambda prefix: (reads.append(("list", tuple(prefix))), ds_list(prefix))[1]
    w.snode.ds_get = lambda key: (reads.append(("get", tuple(key))), ds_get(key))[1]
    held = tuple(mb.held_prefix())
    w.server.tick()
    assert [r for r in reads if r[1][:len(held)] == held] == []
    w.snode.ds_list, w.snode.ds_get = ds_list, ds_get
    assert w.server.held_count() == 3
    # after a restart, too (the index is loaded once), and expiry still works from the index
    w.snode.ds_list, w.snode.ds_get = ds_list, ds_get
    w.server = ServerService(w.st, w.server.config, lambda *a: None, clock=lambda: w.now)
    route(w.st, server=w.server)
    w.server.load()
    w.snode.ds_list = lambda prefix: (reads.append(("list", tuple(prefix))), ds_list(prefix))[1]
    w.server.tick()
    assert [r for r in reads if r[1][:len(held)] == held] == []
    w.now += w.server.config.hold_seconds + 10
    w.server.tick()
    assert [r for r in reads if r[1][:len(held)] == held] == []
    w.snode.ds_list = ds_list
    assert w.server.held_count() == 0


def test_on_sent_reports_each_send_once():
    import pytest
    from asyncreceive.shell.lightningd import NodeError
    from asyncreceive.shell.transport import TransportError
    w = mailbox_world()
    path = w.rt.make_path(PathContext(Kind.MAILBOX))
    got = []
    w.st.sender = ManualSender(limit=1)
    w.st.send(path, m.HELD_ONION_MESSAGE, b"\x00", on_sent=got.append)
    with pytest.raises(TransportError):      # the queue is full: the exception says so, no callback
        w.st.send(path, m.HELD_ONION_MESSAGE, b"\x00", on_sent=got.append)
    assert got == []
    w.st.sender.pump()
    assert got == [True]
    w.snode.send_onion = lambda out: (_ for _ in ()).throw(NodeError("refused"))
    w.st.send(path, m.HELD_ONION_MESSAGE, b"\x00", on_sent=got.append)
    w.st.sender.pump()
    assert got == [True, False]
