"""Recipient and server talking over the in-memory network (real crypto, codecs and services)."""

import functools
import os

import pytest
from coincurve import PrivateKey

from asyncreceive.app import route
from asyncreceive.crypto.context import ContextError, Kind, PathContext
from asyncreceive.errors import DecodeError
from asyncreceive.shell.lightningd import NodeError
from asyncreceive.shell.transport import Received
from asyncreceive.recipient import cache as c
from asyncreceive.recipient.service import RecipientService
from asyncreceive.server.ratelimit import RateLimiter
from asyncreceive.server.service import MAX_OFFER_PATHS_CHECKED, ServerConfig, ServerError, ServerService
from asyncreceive.server.store import InvoiceRecord, invoice_key
from asyncreceive.wire import messages as m
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
from asyncreceive.wire.paths import decode_path_list

from .fakes import FakeNetwork

NOW = 1_800_000_000


class World:
    def __init__(self, slots=10, config=None):
        self.now = NOW
        self.net = FakeNetwork(lambda: self.now)
        self.snode, self.st = self.net.add("server")
        self.rnode, self.rt = self.net.add("recipient")
        log = lambda msg, level="info": self.net.log.append(("svc", level, msg))  # noqa: E731
        self.server = ServerService(self.st, config or ServerConfig(), log, clock=lambda: self.now)
        self.recipient = RecipientService(self.rt, slots, log, "regtest", b"\x07" * 32, 18, clock=lambda: self.now)
        route(self.st, server=self.server)
        route(self.rt, recipient=self.recipient)
        self.sent = []
        orig = self.net.deliver
        self.net.deliver = lambda out: (self.sent.append(out), orig(out))[1]

    def enrol(self, client=b"phone"):
        r = self.server.add_client(client)
        self.recipient.set_servers([decode_path_list(bytes.fromhex(r["paths_hex"]))])
        self.recipient.load([])
        return r

    def statuses(self):
        return c.counts(self.recipient.cache)

    def drops(self, t):
        return dict(t.stats.dropped)


def test_handshake_fills_every_slot_and_server_stores_each():
    w = World()
    w.enrol()
    w.recipient.tick(start=True)
    # all ten serves arrive in the same instant: the server's persist limit (burst 5) defers half
    assert w.statuses() == {"empty": 0, "requested": 0, "pending": 5, "ready": 5, "used": 0}
    assert w.drops(w.st)["rate_limited"] == 5
    w.now += 1
    w.recipient.tick()  # pending invoices are re-sent on the next tick
    assert w.statuses()["ready"] == 10
    stored = w.server.list_invoices(b"phone")
    offers = w.recipient.list_offers("ready")
    assert {i["slot"]: i["offer_id"] for i in stored} == {o["slot"]: o["offer_id"] for o in offers}
    inv = stored_invoice(w, 0)
    assert len(inv.message_paths) >= 2
    assert inv.offer.issuer_id == inv.node_id
    assert inv.created_at == NOW + 1 or inv.created_at == NOW
    # the recipient's slots survive a reload from the datastore unchanged
    before = w.recipient.cache
    w.recipient.load([])
    assert w.recipient.cache == before


def test_server_persists_before_acknowledging():
    w = World(slots=1)
    w.enrol()
    real_put = w.snode.ds_put

    def failing_put(key, value, generation=None):
        if key[3] == "invoices":
            raise NodeError("disk full")
        return real_put(key, value, generation)

    w.snode.ds_put = failing_put
    w.recipient.tick(start=True)
    assert w.statuses()["pending"] == 1  # no ack without a stored invoice
    assert w.drops(w.st).get("rejected", 0) == 0
    w.snode.ds_put = real_put
    w.now += 60
    w.recipient.tick()  # pending invoices are re-sent every tick
    assert w.statuses()["ready"] == 1


def test_replayed_messages_change_nothing():
    w = World(slots=2)
    w.enrol()
    w.recipient.tick(start=True)
    cache, stored = w.recipient.cache, w.server.list_invoices()
    for out in list(w.sent):  # every message of the handshake, delivered again
        w.net.deliver(out)
    assert w.recipient.cache == cache
    assert [(i["slot"], i["offer_id"]) for i in w.server.list_invoices()] == \
        [(i["slot"], i["offer_id"]) for i in stored]
    assert w.recipient.ignored  # the replays were seen and ignored


def test_expired_reply_paths_are_dropped():
    w = World(slots=1)
    w.enrol()
    w.rnode.online = False  # the answers cannot arrive now
    w.recipient.tick(start=True)
    w.rnode.online = True
    late = [o for o in w.sent]
    w.now += c.REPLY_PATH_LIFETIME + 1  # the offer_paths_request reply path has expired
    for out in late:
        w.net.deliver(out)
    assert w.statuses()["ready"] == 0 and w.statuses()["pending"] == 0
    assert w.drops(w.rt).get("expired", 0) >= 1


def test_removed_and_unknown_clients_are_ignored():
    w = World(slots=1)
    w.enrol()
    w.server.remove_client(b"phone")
    w.recipient.tick(start=True)
    assert w.statuses()["requested"] == 1
    assert w.drops(w.st).get("unknown_client") == 1
    with pytest.raises(ServerError):
        w.server.remove_client(b"phone")


def test_slot_limit_and_client_limit():
    w = World(slots=3, config=ServerConfig(max_clients=1, max_slots=2))
    w.enrol()
    w.recipient.tick(start=True)
    assert w.statuses()["ready"] == 2 and w.statuses()["requested"] == 1
    assert w.drops(w.st).get("rejected", 0) >= 1
    with pytest.raises(ServerError, match="client limit"):
        w.server.add_client(b"second")


def stored_invoice(w, slot, client=b"phone"):
    return StaticInvoice.decode(InvoiceRecord.decode(w.snode.ds_get(invoice_key(client, slot))[0]).invoice)


def _offer_and_invoice(w, slot):
    s = next(x for x in w.recipient.cache if x.index == slot)
    return s, w.recipient.build_invoice(s.offer, w.now)


def serve_directly(w, slot, invoice_bytes, client=b"phone"):
    """Feed the server's serve handler a serve_static_invoice on the client's serve reply path."""
    rec = w.server._client(client)  # the context names the client's enrolment, as the server issues it
    ctx = PathContext(Kind.SERVE_REPLY, w.now + 100, w.server._fields(client, rec and rec.enrolment, slot))
    fwd = w.rt.make_path(PathContext(Kind.FORWARD_INVREQ, None, {4: b"x" * 32}))
    body = m.ServeStaticInvoice(invoice_bytes, fwd).encode()
    w.server.on_serve_static_invoice(Received(m.SERVE_STATIC_INVOICE, m.SERVE_STATIC_INVOICE, body,
                                              w.rt.make_path(PathContext(Kind.PROBE)), ctx, b""))


def test_server_validation_rules():
    w = World(slots=2)
    w.enrol()
    w.recipient.tick(start=True)
    # the server's serve handler, fed directly: each rule refuses something
    serve = functools.partial(serve_directly, w)
    w.server.persist_limit = RateLimiter(capacity=100)  # this test is about validation, not rate
    s0, inv0 = _offer_and_invoice(w, 0)
    serve(0, inv0.encode())  # valid: accepted
    with pytest.raises(DecodeError, match="an offer path we issued"):
        serve(1, inv0.encode())  # slot 0's offer served into slot 1
    w.server.add_client(b"other")
    with pytest.raises(DecodeError, match="an offer path we issued"):
        serve(0, inv0.encode(), client=b"other")  # another client's offer
    with pytest.raises(DecodeError):
        serve(0, inv0.encode()[:-1] + bytes([inv0.encode()[-1] ^ 1]))  # bad signature
    w.server.config.max_invoice_bytes = 100
    with pytest.raises(DecodeError, match="over the limit"):
        serve(0, inv0.encode())
    w.server.config.max_invoice_bytes = 5120
    w.now = inv0.expires_at + 1
    with pytest.raises(DecodeError, match="expired"):
        serve(0, inv0.encode())
    w.now = NOW
    with pytest.raises(ContextError, match="unknown_client"):
        serve(0, inv0.encode(), client=b"nobody")


def invoice_with_offer_paths(inv, paths):
    """``inv`` again, a second later (newer than the stored one), for an offer (of a key of its own) on ``paths``."""
    key = os.urandom(32)
    offer = Offer.build(PrivateKey(key).public_key.format(), paths, chains=[CHAINS["regtest"]])
    return StaticInvoice.build(offer, inv.paths, inv.payinfos, inv.created_at + 1, 3600, inv.message_paths, b"", key)


def test_server_stores_an_invoice_whose_offer_also_names_another_server():
    w = World(slots=2)
    w.enrol()
    w.recipient.tick(start=True)
    w.server.persist_limit = RateLimiter(capacity=100)
    _, b = w.net.add("server-b")   # the other static invoice server the offer names
    foreign = b.make_path(PathContext(Kind.OFFER, w.now + 1000, {4: b"phone"}))
    ours = stored_invoice(w, 0).offer_paths[0]
    other_slot = stored_invoice(w, 1).offer_paths[0]   # at our node, but issued for slot 1
    rpcs = []
    decrypt = w.snode.decrypt_encrypted_data
    w.snode.decrypt_encrypted_data = lambda *a: (rpcs.append(a), decrypt(*a))[1]
    inv = invoice_with_offer_paths(stored_invoice(w, 0), [foreign, ours])
    acks = w.st.stats.sent["static_invoice_persisted"]
    serve_directly(w, 0, inv.encode())
    assert stored_invoice(w, 0) == inv                                           # stored ...
    assert w.st.stats.sent["static_invoice_persisted"] == acks + 1               # ... and acknowledged
    assert len(rpcs) == 1            # server B's path was skipped without a decryptencrypteddata call
    for paths in ([foreign], [foreign, other_slot]):                    # none of ours for slot 0: refused
        with pytest.raises(DecodeError, match="none of them is an offer path we issued"):
            serve_directly(w, 0, invoice_with_offer_paths(inv, paths).encode())
    rpcs.clear()
    too_many = [ours] + [foreign] * MAX_OFFER_PATHS_CHECKED
    with pytest.raises(DecodeError, match=f"{MAX_OFFER_PATHS_CHECKED + 1} offer paths: more than"):
        serve_directly(w, 0, invoice_with_offer_paths(inv, too_many).encode())
    assert rpcs == [] and stored_invoice(w, 0) == inv


def test_persist_rate_limit():
    w = World(slots=1)
    w.enrol()
    w.recipient.tick(start=True)
    s, inv = _offer_and_invoice(w, 0)
    before = w.drops(w.st).get("rate_limited", 0)
    for _ in range(8):  # same instant: burst of 5 allowed
        w.recipient._send_invoice(0)
    assert w.drops(w.st).get("rate_limited", 0) - before >= 3


def test_channels_changed_reserves_invoices():
    w = World(slots=2)
    w.enrol()
    w.recipient.tick(start=True)
    created = {s.index: s.offer.invoice_created_at for s in w.recipient.cache}
    w.now += 10
    w.rnode.rpc.incoming = [{"id": w.snode.node_id.hex(), "short_channel_id": "103x1x0", "fee_base_msat": 1000,
                             "fee_proportional_millionths": 10, "cltv_expiry_delta": 6, "htlc_min_msat": 0,
                             "incoming_capacity_msat": 500000000}]
    w.recipient.check_channels()
    assert all(s.offer.invoice_created_at == created[s.index] + 10 for s in w.recipient.cache)
    inv = stored_invoice(w, 0)
    assert inv.payinfos[0].fee_base_msat == 1000 and inv.payinfos[0].cltv_expiry_delta == 6 + 18
    assert inv.created_at == NOW + 10


def test_getoffer_persists_used_before_returning():
    w = World(slots=2)
    w.enrol()
    w.recipient.tick(start=True)
    got = w.recipient.get_offer()
    w.recipient.load([])
    assert next(s for s in w.recipient.cache if s.index == got["slot"]).status == c.USED


def test_expired_client_paths_are_dropped():
    w = World(slots=1)
    r = w.server.add_client(b"phone", expiry=3600)
    w.recipient.set_servers([decode_path_list(bytes.fromhex(r["paths_hex"]))])
    w.now += 3601
    w.recipient.tick(start=True)
    assert w.statuses()["requested"] == 1
    assert w.drops(w.st).get("expired") == 1


# ---- the server's mailbox: held_htlc_available kept while the recipient is offline ----------------

def mailbox_world(config=None, live_config=None):
    """Server, recipient (1 slot, ready) and payer; ``live_config`` replaces the server's config after it
    was built (as setconfig does)."""
    from asyncreceive.receiving.service import PaymentsService
    from asyncreceive.crypto.context import Kind

    w = World(slots=1, config=config)
    if live_config is not None:
        w.server.config = live_config
    w.payments = PaymentsService(w.rt, w.recipient, lambda *a: None, lambda p: None, clock=lambda: w.now)
    route(w.rt, recipient=w.recipient, payments=w.payments)
    w.pnode, w.pt = w.net.add("payer")
    w.released = []
    w.pt.on_kind(Kind.PAYER_REPLY, w.released.append)
    w.server.load()
    w.enrol()
    w.recipient.tick(start=True)
    assert w.statuses()["ready"] == 1
    return w


def send_held_htlc_available(w, inv, paths=None):
    from asyncreceive.crypto.context import Kind, PathContext
    for p in paths if paths is not None else inv.message_paths:
        try:
            w.pt.send(p, m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode(),
                      reply_context=PathContext(Kind.PAYER_REPLY, None, {4: b"payment-1"}))
        except Exception as e:  # the direct paths cannot reach an offline recipient
            w.net.log.append(("payer", "debug", str(e)))


def test_offer_paths_name_the_mailbox_and_the_invoice_routes_through_it():
    w = mailbox_world()
    s = w.recipient.cache[0]
    assert s.offer.holders[0].mailbox_node == w.snode.node_id
    inv = stored_invoice(w, 0)
    first = inv.message_paths[0]
    assert first.first_node_id == w.snode.node_id and len(first.hops) == 2   # server -> phantom
    assert len(inv.message_paths) >= 3                                       # + the direct ones
    clients = w.server.list_clients()
    assert clients[0]["mailbox"] is True and clients[0]["node_id"] == w.rnode.node_id.hex()
    # the registration survives a restart of the server
    w.server._mailboxes = {}
    w.server.load()
    assert w.server._mailboxes[w.rt.phantom_id][0] == b"phone"


def test_held_htlc_available_waits_at_the_server_until_the_recipient_connects():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    w.rnode.online = False
    send_held_htlc_available(w, inv)
    assert w.server.held_count() == 1 and w.released == []
    w.now += 3600
    w.server.tick()                        # still offline: kept
    assert w.server.held_count() == 1
    w.rnode.online = True
    w.server.on_peer_connected(w.rnode.node_id)
    assert w.server.held_count() == 0
    assert w.rt.stats.relayed == {"held_htlc_available": 1}
    assert len(w.released) == 1 and w.released[0].msg_type == m.RELEASE_HELD_HTLC
    w.server.on_peer_connected(w.rnode.node_id)   # nothing is relayed twice
    assert w.rt.stats.relayed == {"held_htlc_available": 1} and len(w.released) == 1


def test_online_recipient_gets_mailbox_messages_at_once():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    send_held_htlc_available(w, inv, inv.message_paths[:1])
    assert w.server.held_count() == 0 and len(w.released) == 1


def test_mailbox_limits_expiry_and_removal():
    w = mailbox_world(ServerConfig(max_held=2, hold_seconds=600))
    inv = stored_invoice(w, 0)
    w.rnode.online = False
    for _ in range(3):                      # three payers: only the newest two are kept
        send_held_htlc_available(w, inv, inv.message_paths[:1])
        w.now += 1
    assert w.server.held_count() == 2
    w.now += 601
    w.server.tick()                         # too old: dropped, never relayed
    assert w.server.held_count() == 0
    send_held_htlc_available(w, inv, inv.message_paths[:1])
    assert w.server.held_count() == 1
    w.server.remove_client(b"phone")
    assert w.server.held_count() == 0 and w.server._mailboxes == {}


def test_a_client_cannot_take_over_another_clients_phantom():
    w = mailbox_world()
    from asyncreceive.crypto.context import Kind, PathContext
    w.server.add_client(b"other")
    # claiming the recipient's phantom (or any node id) without its key: the signature does not verify
    path = w.pt.make_path(PathContext(Kind.MAILBOX))
    for victim in (w.rt.phantom_id, w.rnode.node_id):
        forged = m.MailboxRegistration(victim, w.pt.mailbox_registration(w.snode.node_id).signature, path)
        w.server._register(b"other", forged, w.now)
    # a registration signed for another server is refused too
    w.server._register(b"other", w.pt.mailbox_registration(w.rnode.node_id), w.now)
    assert {c for c, _ in w.server._mailboxes.values()} == {b"phone"}
    # even with the key, a phantom already registered stays with its client
    w.server._register(b"other", w.rt.mailbox_registration(w.snode.node_id), w.now)
    assert w.server._mailboxes[w.rt.phantom_id][0] == b"phone"
    # a genuine registration of its own phantom is taken
    w.server._register(b"other", w.pt.mailbox_registration(w.snode.node_id), w.now)
    assert w.server._mailboxes[w.pt.phantom_id][0] == b"other"


def test_mailbox_holds_only_small_onions_and_never_blocks_on_one():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    w.rnode.online = False
    cid_phantom = w.rt.phantom_id
    w.server.on_undeliverable(cid_phantom, b"\x02\x01" + b"\x00" * 3000)   # too big to relay: not held
    assert w.server.held_count() == 0
    # a held record that cannot be relayed (too big, stored by an older version) is dropped while the
    # client is connected, and does not hold back the one behind it
    from asyncreceive.server import mailbox as mb
    big = b"\x02\x01" + b"\x00" * 33000
    w.snode.ds_put(mb.held_key(b"phone", w.now - 5, big), mb.HeldMessage(w.now - 5, big).encode())
    send_held_htlc_available(w, inv, inv.message_paths[:1])
    assert w.server.held_count() == 2
    w.rnode.online = True
    w.server.on_peer_connected(w.rnode.node_id)
    assert w.server.held_count() == 0 and len(w.released) == 1
    assert any("relayed 1 held onion message(s), 0 expired, 1 dropped" in e[2] for e in w.net.log)


def test_mailbox_admissions_are_rate_limited_per_client():
    w = mailbox_world(ServerConfig(max_held=100))
    inv = stored_invoice(w, 0)
    w.rnode.online = False
    for _ in range(25):                     # same instant: a burst of 20 is held
        send_held_htlc_available(w, inv, inv.message_paths[:1])
    assert w.server.held_count() == 20


def test_relayed_messages_are_authenticated_like_direct_ones():
    w = mailbox_world()
    from asyncreceive.crypto.context import Kind, PathContext
    # a held_onion_message on our mailbox path whose inner onion is garbage, or is itself a relay
    delivery = w.rt.mailbox_registration(w.snode.node_id).delivery_path
    w.st.send(delivery, m.HELD_ONION_MESSAGE, b"\x02\x01" + b"\x00" * 40)
    assert w.drops(w.rt).get("malformed") == 1
    inner_path = w.rt.make_mailbox_path(PathContext(Kind.MAILBOX), w.snode.node_id)
    captured = []
    w.st.on_undeliverable = lambda nid, onion, source=None: captured.append(onion)
    w.pt.send(inner_path, m.HELD_ONION_MESSAGE, b"\x00")       # a relay inside a relay, captured
    w.st.send(delivery, m.HELD_ONION_MESSAGE, captured[0])
    assert w.drops(w.rt).get("malformed") == 2 and w.rt.stats.relayed == {}
    # a mailbox delivery path only takes held_onion_message
    w.st.send(delivery, m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode())
    assert w.drops(w.rt).get("rejected") == 1


def test_server_without_mailbox_keeps_the_plain_paths():
    w = mailbox_world(ServerConfig(max_held=0))
    assert w.recipient.cache[0].offer.holders[0].mailbox_node == b""
    inv = stored_invoice(w, 0)
    assert all(p.first_node_id != w.snode.node_id or len(p.hops) == 3 for p in inv.message_paths)
    assert w.server.list_clients()[0]["mailbox"] is False


def test_unknown_sciddir_introduction_is_tried_through_our_peers():
    """A reply path whose compact introduction names a channel our gossip has not seen: sent through
    each connected channel peer; the right one (here the server) opens it, a wrong one drops it."""
    from asyncreceive.crypto.context import Kind, PathContext
    from asyncreceive.wire.paths import BlindedPath, SciddirOrPubkey

    w = World(slots=1)
    onode, _ = w.net.add("other-peer")
    got = []
    w.st.on_kind(Kind.PROBE, got.append)
    p = w.st.make_path(PathContext(Kind.PROBE))
    compact = BlindedPath(SciddirOrPubkey(scid=(700 << 40) | (3 << 16) | 1, direction=1), p.first_path_key, p.hops)
    body = m.OfferPathsRequest(1).encode()
    with pytest.raises(Exception, match="no channels"):
        w.rt.send(compact, m.OFFER_PATHS_REQUEST, body)   # no peers to try
    w.rnode.rpc.peer_channels = [{"peer_id": n.node_id.hex(), "peer_connected": True, "state": "CHANNELD_NORMAL"}
                                 for n in (onode, w.snode)]
    w.rt.send(compact, m.OFFER_PATHS_REQUEST, body)
    assert len(got) == 1 and got[0].msg_type == m.OFFER_PATHS_REQUEST
    assert w.net.dropped == 3          # the other peer, and the scid forwards no one could open or make
    assert w.rt.stats.sent == {"offer_paths_request": 1}

    # the introduction is the payer *behind* the server, named by the payer--server channel
    pnode, pt = w.net.add("payer")
    scid = (800 << 40) | (1 << 16)
    w.net.channels[scid] = (w.snode.node_id, pnode.node_id)
    got_p = []
    pt.on_kind(Kind.PROBE, got_p.append)
    pp = pt.make_path(PathContext(Kind.PROBE))
    w.rt.send(BlindedPath(SciddirOrPubkey(scid=scid, direction=1), pp.first_path_key, pp.hops),
              m.OFFER_PATHS_REQUEST, body)
    assert len(got_p) == 1 and len(got) == 1


def test_held_paths_go_through_channel_peers_before_listincoming_knows_them():
    """listincoming lists a channel only once its channel_update arrived; message paths do not need it."""
    w = mailbox_world(ServerConfig(max_held=0))
    assert w.rnode.rpc.incoming == []
    s = w.recipient.cache[0]
    before = w.recipient.build_invoice(s.offer, w.now)
    assert all(p.first_node_id == w.rnode.node_id for p in before.message_paths)   # direct only
    w.rnode.rpc.peer_channels = [{"peer_id": w.snode.node_id.hex(), "peer_connected": True,
                                  "state": "CHANNELD_NORMAL"}]
    after = w.recipient.build_invoice(s.offer, w.now)
    assert after.message_paths[0].first_node_id == w.snode.node_id and len(after.message_paths[0].hops) == 3


def test_the_recipient_connects_to_its_server_at_start_even_with_nothing_to_send():
    """Its server relays held messages only once it is connected: at start (and on refresh) the recipient
    connects to the server's introduction node, also when every slot is ready and nothing needs sending."""
    w = World(slots=2)
    w.enrol()
    w.recipient.tick(start=True)
    w.now += 1
    w.recipient.tick()
    assert w.statuses()["ready"] == 2
    w.rnode.connects.clear()
    w.recipient.load([])                     # a restart: every slot ready
    w.recipient.tick(start=True)
    assert w.rnode.connects == [w.snode.node_id]
    w.rnode.connects.clear()
    w.recipient.tick()                       # an ordinary tick does not
    assert w.rnode.connects == []
    w.snode.online = False                   # a server that cannot be reached is logged, nothing raises
    w.recipient.tick(start=True)
    assert w.rnode.connects == [w.snode.node_id]
    assert any("could not connect to our server" in msg for _, _, msg in w.net.log)


def test_addclient_says_what_it_did_and_listinvoices_refuses_an_unknown_client():
    w = World()
    first = w.server.add_client(b"phone")
    again = w.server.add_client(b"phone")
    rotated = w.server.add_client(b"phone", rotate=True)
    assert [r["enrolment"] for r in (first, again, rotated)] == ["new", "kept", "rotated"]
    assert "keep working" in again["note"] and "stopped working" in rotated["note"]
    with pytest.raises(ServerError, match="unknown client nobody"):
        w.server.invoices_page(b"nobody")
    with pytest.raises(ServerError, match="unknown client nobody"):
        w.server.remove_client(b"nobody")
    assert w.server.invoices_page(b"phone")["invoices"] == []     # enrolled, nothing stored yet


def test_the_recipient_replies_through_its_server_when_it_has_a_channel_with_it_even_before_it_reconnects():
    """At start the first connect may be another channel peer: the reply path still starts at our server
    (a channel peer that lightningd reconnects), not at whichever peer connected first."""
    w = World(slots=1)
    w.enrol()
    hub, _ = w.net.add("hub")
    w.rnode.rpc.peer_channels = [{"peer_id": hub.node_id.hex(), "peer_connected": True, "state": "CHANNELD_NORMAL"},
                                 {"peer_id": w.snode.node_id.hex(), "peer_connected": False,
                                  "state": "CHANNELD_NORMAL"}]
    server_path = w.recipient.server_paths[0]
    w.snode.online = False                                          # not connected (yet)
    assert w.rt.reply_via(server_path, prefer_connected_intro=True) == [w.snode.node_id]
    assert w.rt.reply_via(server_path) == [hub.node_id]             # the payer's choice: a connected peer
    w.rnode.rpc.peer_channels = w.rnode.rpc.peer_channels[:1]    # no channel with the server either
    assert w.rt.reply_via(server_path, prefer_connected_intro=True) == [hub.node_id]


def test_turning_the_mailbox_on_at_run_time_holds_messages():
    """A server started with asyncserver-max-held=0 and switched on with setconfig holds (the handler is
    always wired; it checks the live config)."""
    # built with holding off, then setconfig asyncserver-max-held 64: offers come with the server's mailbox
    w = mailbox_world(ServerConfig(max_held=0), live_config=ServerConfig(max_held=64))
    inv = stored_invoice(w, 0)
    w.rnode.online = False
    send_held_htlc_available(w, inv, inv.message_paths[:1])
    assert w.server.held_count() == 1
