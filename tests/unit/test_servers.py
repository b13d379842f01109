"""Several static invoice servers: server health (pure), the cache policy with two servers, and two real
server services and a recipient over the in-memory network (one offer through both, failover, removal)."""

from dataclasses import replace

from hypothesis import given, settings, strategies as st

from asyncreceive.app import route
from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.paying.payer import build_invoice_request
from asyncreceive.recipient import cache as c
from asyncreceive.recipient import servers as sv
from asyncreceive.recipient import store
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.recipient.store import SERVERS_KEY, encode_servers
from asyncreceive.server.service import ServerConfig, ServerService
from asyncreceive.server.store import InvoiceRecord, invoice_key
from asyncreceive.wire import messages as m
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
from asyncreceive.wire.paths import decode_path_list, encode_path_list

from asyncreceive.wire.tlv import decode_tlv, encode_tlv

from .fakes import FakeNetwork

NOW = 1_800_000_000
YEAR = 365 * 24 * 3600
A, B = b"A" * 8, b"B" * 8


# ---- health --------------------------------------------------------------------------------------------
def test_a_server_is_down_once_unanswered_for_the_timeout_then_tried_in_rounds():
    h = sv.sent(sv.Health(), NOW)
    assert sv.state(h, NOW) == "waiting" and sv.may_send(h, NOW)
    assert sv.state(h, NOW + sv.SERVER_TIMEOUT) == "down"
    t = NOW + sv.SERVER_TIMEOUT
    assert sv.may_send(h, t)  # the first round while down is due at once
    rounds = []
    while t < NOW + 4 * 3600:
        if sv.may_send(h, t):
            rounds.append(t)
            for _ in range(5):   # a round of several messages costs one backoff step
                h = sv.sent(h, t)
        t += 1
    gaps = [b - a for a, b in zip(rounds, rounds[1:])]
    assert gaps[:3] == [sv.DOWN_RETRY_BASE, 2 * sv.DOWN_RETRY_BASE, 4 * sv.DOWN_RETRY_BASE]
    assert max(gaps) == sv.DOWN_RETRY_CAP
    h = sv.answered(h, t)
    assert sv.state(h, t) == "answering" and sv.may_send(h, t) and h.tries == 0


@given(st.lists(st.tuples(st.sampled_from(["sent", "answered"]), st.integers(0, 100)), max_size=30))
def test_health_property_an_answer_always_makes_a_server_answering(events):
    h, t = sv.Health(), NOW
    for kind, dt in events:
        t += dt
        h = sv.sent(h, t) if kind == "sent" else sv.answered(h, t)
        if kind == "answered":
            assert sv.state(h, t) == "answering" and sv.may_send(h, t)
        assert sv.may_send(h, t) or sv.is_down(h, t)   # only a down server is ever held back


def test_server_id_is_stable_and_tells_path_lists_apart():
    assert sv.server_id(b"paths") == sv.server_id(b"paths") != sv.server_id(b"other")
    assert len(sv.server_id(b"paths")) == sv.ID_LEN


# ---- the cache policy with two servers --------------------------------------------------------------------
def holder(server, paths, persisted=None):
    return c.Holder(server, paths, b"reply-" + server, b"", persisted, NOW + YEAR)


def built(cache, index, holders, offer_id, now=NOW):
    return c.offer_built(cache, index, c.CachedOffer(b"o", offer_id, holders, NOW + YEAR, now, 0))


def test_each_slot_is_asked_of_every_server_and_its_offer_grows_with_each_answer():
    cache, actions = c.tick(c.new_cache(2), NOW, start=True, servers=(A, B))
    assert actions == [c.SendRequest(0, A), c.SendRequest(0, B), c.SendRequest(1, A), c.SendRequest(1, B)]
    # A answers first: an offer on A's paths alone
    assert c.check_offer_paths(cache, 0, b"pA", None, NOW, A) is None
    hs = c.offer_holders(cache, 0, holder(A, b"pA"), NOW)
    assert hs == (holder(A, b"pA"),)
    cache, _ = built(cache, 0, hs, b"\x01" * 32)
    cache = c.invoice_sent(cache, 0, c.invoice_time(cache[0], NOW), None)   # its invoice, made at NOW
    cache, _ = c.persisted(cache, b"\x01" * 32, NOW, server=A)
    assert cache[0].status == c.READY
    # B's answer for the same slot: the offer (not handed out yet) is rebuilt on both servers' paths
    assert c.check_offer_paths(cache, 0, b"pB", None, NOW, B) is None
    hs = c.offer_holders(cache, 0, holder(B, b"pB"), NOW)
    assert [h.server for h in hs] == [A, B] and all(h.persisted_at is None for h in hs)
    cache, actions = built(cache, 0, hs, b"\x02" * 32, NOW)
    assert cache[0].status == c.PENDING and actions == [c.SendInvoice(0)]
    # its invoice is newer than the one A stored for the old offer, made in this same second
    cache = c.invoice_sent(cache, 0, c.invoice_time(cache[0], NOW), None)
    assert cache[0].offer.invoice_created_at == NOW + 1
    # one confirmation makes it ready; the other holder's comes later; duplicates change nothing
    cache, changed = c.persisted(cache, b"\x02" * 32, NOW + 1, server=B)
    assert changed and cache[0].status == c.READY and c.held_by(cache[0]) == 1
    cache, _ = c.persisted(cache, b"\x02" * 32, NOW + 1, server=A)
    assert c.held_by(cache[0]) == 2
    assert c.persisted(cache, b"\x02" * 32, NOW + 1, server=A) == (cache, False)
    # a server that is not a holder cannot confirm, and a held slot asks nobody again
    assert c.persisted(cache, b"\x02" * 32, NOW + 5, server=b"C" * 8) == (cache, False)
    assert c.check_offer_paths(cache, 0, b"pB2", None, NOW, B) == "slot_not_wanting"


def test_a_down_server_is_skipped_and_its_slots_fill_from_the_other():
    cache, _ = c.tick(c.new_cache(1), NOW, start=True, servers=(A, B))
    cache, _ = built(cache, 0, (holder(B, b"pB"),), b"\x01" * 32)
    # A never answered and is down now: no request and no invoice goes to it until its round is due
    cache, actions = c.tick(cache, NOW + 30, servers=(A, B), may_send=lambda x: x != A)
    assert actions == [c.SendInvoice(0)]
    # A's round is due: the slot asks it again (its offer lacks A's paths)
    cache, actions = c.tick(cache, NOW + 60, servers=(A, B))
    assert c.SendRequest(0, A) in actions and c.SendRequest(0, B) not in actions
    # a ready offer that only B confirmed re-sends its invoice to the holder that did not confirm
    both = (holder(A, b"pA"), holder(B, b"pB", persisted=NOW))
    cache = (c.Slot(0, c.READY, c.CachedOffer(b"o", b"\x03" * 32, both, NOW + YEAR, NOW, NOW)),)
    _, actions = c.tick(cache, NOW + 1, servers=(A, B))
    assert actions == [c.SendInvoice(0, (A,))]
    _, actions = c.tick(cache, NOW + 1, servers=(A, B), may_send=lambda x: x != A)
    assert actions == []


def test_getoffer_prefers_offers_that_answering_servers_hold():
    def ready(i, servers, created):
        hs = tuple(holder(x, b"p%d" % i + x, persisted=NOW) for x in servers)
        return c.Slot(i, c.READY, c.CachedOffer(b"o", bytes([i]) * 32, hs, NOW + YEAR, created, NOW))
    cache = (ready(0, (A,), NOW), ready(1, (A, B), NOW - 10), ready(2, (B,), NOW + 5))
    assert c.newest_ready(cache).index == 1                        # two holders beat a newer offer
    assert c.newest_ready(cache, frozenset({A})).index == 2         # A is down: B's newest
    assert c.newest_ready(cache, frozenset({B})).index == 0
    cache, got = c.get_offer(cache, NOW, frozenset({A}))
    assert got.index == 2 and cache[2].status == c.USED


@given(st.integers(1, 4), st.integers(0, 100), st.randoms())
def test_ordered_turns_the_servers_order_by_slot(n, index, rnd):
    servers = tuple(bytes([65 + i]) * 8 for i in range(n))
    hs = [holder(x, b"p" + x) for x in servers]
    rnd.shuffle(hs)                       # whatever order the answers came in
    got = [h.server for h in c.ordered(tuple(hs), index, servers)]
    k = index % n
    assert got == list(servers[k:] + servers[:k])
    assert {c.ordered(tuple(hs), i, servers)[0].server for i in range(n)} == set(servers)  # each comes first


def test_getoffer_prefers_an_offer_whose_first_path_is_up():
    both = lambda i, first: c.Slot(i, c.READY, c.CachedOffer(  # noqa: E731
        b"o", bytes([i]) * 32, tuple(holder(x, b"p%d" % i + x, persisted=NOW) for x in first), NOW + YEAR,
        NOW + i, NOW))
    cache = (both(0, (B, A)), both(1, (A, B)))
    assert c.newest_ready(cache).index == 1                   # all up: the newest
    assert c.newest_ready(cache, frozenset({A})).index == 0   # A down: B's path first


def test_a_removed_server_frees_the_slots_not_handed_out_and_keeps_used_offers():
    hs = (holder(A, b"pA", NOW), holder(B, b"pB", NOW))
    o = lambda i: c.CachedOffer(b"o", bytes([i]) * 32, hs if i < 2 else hs[1:], NOW + YEAR, NOW, NOW)  # noqa
    cache = (c.Slot(0, c.READY, o(0)), c.Slot(1, c.USED, o(1)), c.Slot(2, c.READY, o(2)))
    after = c.servers_removed(cache, {A})
    assert after[0] == c.Slot(0) and after[1] == cache[1] and after[2] == cache[2]
    _, actions = c.tick(after, NOW + 1, servers=(B,))
    assert actions == [c.SendRequest(0, B)]


def test_slot_record_keeps_every_holder_and_reads_an_older_versions_record():
    s = c.Slot(4, c.READY, c.CachedOffer(b"o", b"\x01" * 32, (holder(A, b"pA", NOW), replace(
        holder(B, b"pB"), mailbox_node=b"\x02" * 33)), NOW + YEAR, NOW, NOW, NOW + 99, b"n" * 16))
    assert store.decode_slot(store.encode_slot(s)) == s
    # an older version's record: one server's paths in 12, its reply path in 18, its mailbox in 27
    recs = [r for r in decode_tlv(store.encode_slot(s), "x", allow_unknown_even=True).records
            if r[0] not in (12, 18, 27, 35, 37)]
    old = encode_tlv(sorted(recs + [(12, b"pA"), (18, b"reply-A"), (27, b"\x02" * 33)]))
    got = store.decode_slot(old, legacy_server=A)
    assert got.offer.holders == (c.Holder(A, b"pA", b"reply-A", b"\x02" * 33, NOW, NOW + YEAR),)
    assert got.invoice_floor == NOW    # its offer's invoice time
    # and an older version reads ours: the first holder in 12, 18 and 27
    mine = dict(decode_tlv(store.encode_slot(s), "x", allow_unknown_even=True).records)
    assert (mine[12], mine[18]) == (b"pA", b"reply-" + A) and 27 not in mine
    assert store.encode_slot(s).count(b"reply-" + A) == 1    # not written twice (12/18 and 35)
    assert store.decode_servers(store.encode_servers([b"x", b"yy"])) == [b"x", b"yy"]


# ---- two real servers and a recipient over the in-memory network ------------------------------------------
class TwoServers:
    def __init__(self, slots=2):
        self.now = NOW
        self.net = FakeNetwork(lambda: self.now)
        log = lambda msg, level="info": self.net.log.append(("svc", level, msg))  # noqa: E731
        self.nodes, self.servers = [], []
        for name in ("server-a", "server-b"):
            node, t = self.net.add(name)
            self.nodes.append(node)
            self.servers.append(ServerService(t, ServerConfig(), log, clock=lambda: self.now))
            route(t, server=self.servers[-1])
        self.rnode, self.rt = self.net.add("recipient")
        self.payer_node, self.payer = self.net.add("payer")
        from asyncreceive.recipient.service import RecipientService
        self.recipient = RecipientService(self.rt, slots, log, "regtest", b"\x07" * 32, 18, clock=lambda: self.now)
        route(self.rt, recipient=self.recipient)
        self.path_lists = [decode_path_list(bytes.fromhex(s.add_client(b"phone")["paths_hex"])) for s in self.servers]
        self.ids = self.recipient.set_servers(self.path_lists)
        self.recipient.load([])

    def settle(self, ticks=3):
        for _ in range(ticks):
            self.now += 1
            self.recipient.tick()

    def stored(self, k, slot):
        got = self.nodes[k].ds_get(invoice_key(b"phone", slot))
        return None if got is None else StaticInvoice.decode(InvoiceRecord.decode(got[0]).invoice)


def test_one_offer_through_two_servers_each_storing_its_invoice():
    w = TwoServers()
    w.recipient.tick(start=True)
    w.settle()
    assert c.counts(w.recipient.cache)["ready"] == 2
    for s in w.recipient.cache:
        # the servers' order, turned by the slot index: each server comes first in some offers
        k = s.index % 2
        assert [h.server for h in s.offer.holders] == w.ids[k:] + w.ids[:k] and c.held_by(s) == 2
        offer = Offer.decode(s.offer.offer)
        # the offer carries both servers' paths, each ending at that server's phantom
        assert len(offer.paths) == 2
        for k in (0, 1):
            inv = w.stored(k, s.index)
            assert inv is not None and inv.offer_id == s.offer.offer_id
            # each invoice's held-HTLC paths go through both servers' mailboxes first
            assert len(inv.message_paths) >= 3
    status = w.recipient.status()["servers"]
    assert [x["state"] for x in status] == ["answering", "answering"] and [x["offers"] for x in status] == [2, 2]
    # after a reload (a restart) the same holders, and the same servers
    before = w.recipient.cache
    w.recipient.load([])
    assert w.recipient.cache == before and [i for i, _ in w.recipient.servers] == w.ids


def test_server_a_down_a_payer_is_answered_by_b_and_slots_fill_from_b():
    w = TwoServers()
    w.recipient.tick(start=True)
    w.settle()
    offer = Offer.decode(w.recipient.cache[0].offer.offer)
    assert [p.first_node_id for p in offer.paths] == [n.node_id for n in w.nodes]
    w.nodes[0].online = False
    # a payer's invoice_request over A's path is lost; over B's path it gets the static invoice (and the
    # recipient, online here, answers the forwarded request with its own invoice)
    got = []
    w.payer.on_kind(Kind.PAYER_REPLY, got.append)
    invreq = build_invoice_request(offer, 50_000, b"\x05" * 32, chain=CHAINS["regtest"]).encode()
    w.payer.send(offer.paths[0], m.INVOICE_REQUEST, invreq, reply_context=PathContext(Kind.PAYER_REPLY))
    assert got == []
    w.payer.send(offer.paths[1], m.INVOICE_REQUEST, invreq, reply_context=PathContext(Kind.PAYER_REPLY))
    static = [g for g in got if g.msg_type == m.STATIC_INVOICE]
    assert len(static) == 1 and StaticInvoice.decode(static[0].body).offer_id == offer.offer_id
    # A is not connected: getoffer hands out the offer whose first path is B's (stock CLN payers use the
    # first path), slot 1
    assert [x["connected"] for x in w.recipient.status()["servers"]] == [False, True]
    out = Offer.from_string(w.recipient.get_offer()["offer"])
    assert out.paths[0].first_node_id == w.nodes[1].node_id
    # the recipient loses A: a new slot (more slots) fills from B alone, and A is shown down
    w.recipient.set_slots(3)
    w.recipient.tick()
    for _ in range(sv.SERVER_TIMEOUT + 2):
        w.now += 1
        w.recipient.tick()
    new = next(s for s in w.recipient.cache if s.index == 2)
    assert new.status == c.READY and [h.server for h in new.offer.holders] == [w.ids[1]]
    status = w.recipient.status()["servers"]
    assert [x["state"] for x in status] == ["down", "answering"] and [x["connected"] for x in status] == [False, True]
    # A comes back: its round asks it again, and the slot not handed out yet gains A's paths
    w.nodes[0].online = True
    w.now += sv.DOWN_RETRY_CAP
    w.recipient.tick()
    w.settle()
    again = next(s for s in w.recipient.cache if s.index == 2)
    assert [h.server for h in again.offer.holders] == w.ids and c.held_by(again) == 2   # slot 2: A first
    assert [x["state"] for x in w.recipient.status()["servers"]] == ["answering", "answering"]


def test_removing_a_server_refills_its_slots_from_the_other():
    w = TwoServers()
    w.recipient.tick(start=True)
    w.settle()
    w.recipient.get_offer()   # one offer is out: it keeps both servers' paths
    used = next(s for s in w.recipient.cache if s.status == c.USED)
    w.recipient.set_servers([w.path_lists[1]])
    w.recipient.tick(start=True)
    w.settle()
    for s in w.recipient.cache:
        if s.index == used.index:
            assert s == used
        else:
            assert s.status == c.READY and [h.server for h in s.offer.holders] == [w.ids[1]]
    # and after a restart: one server, the same slots
    before = w.recipient.cache
    w.recipient.load([])
    assert w.recipient.cache == before and [i for i, _ in w.recipient.servers] == [w.ids[1]]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["tick", "pathsA", "pathsB", "ackA", "ackB", "get", "down"]),
                          st.integers(0, 2), st.integers(0, 120)), max_size=40))
def test_two_server_invariants_under_any_event_order(evs):
    """Whatever arrives from two servers, in any order: holders are distinct servers, no two offers share
    paths, a ready/used offer was confirmed by a holder, and nothing handed out ever changes."""
    cache, _ = c.tick(c.new_cache(3), NOW, start=True, servers=(A, B))
    t, handed = NOW, {}
    for kind, i, dt in evs:
        t += dt
        if kind == "tick":
            cache, _ = c.tick(cache, t, servers=(A, B))
        elif kind == "down":
            cache, _ = c.tick(cache, t, servers=(A, B), may_send=lambda x: x != A)
        elif kind.startswith("paths"):
            x = A if kind == "pathsA" else B
            p = b"p-%s-%d-%d" % (x, i, t)
            if c.check_offer_paths(cache, i, p, None, t, x) is None:
                hs = c.offer_holders(cache, i, holder(x, p), t)
                cache, _ = built(cache, i, hs, p.ljust(32, b"\0")[:32], t)
        elif kind.startswith("ack"):
            x = A if kind == "ackA" else B
            s = cache[i]
            if s.offer is not None:
                cache, _ = c.persisted(cache, s.offer.offer_id, t, server=x)
        else:
            cache, s = c.get_offer(cache, t)
            if s is not None:
                handed[s.index] = s.offer
        for s in cache:
            if s.offer is None:
                continue
            ids = [h.server for h in s.offer.holders]
            assert len(ids) == len(set(ids))
            if s.payable:
                assert c.held_by(s) >= 1
        paths = [h.paths for s in cache if s.offer is not None for h in s.offer.holders]
        assert len(paths) == len(set(paths))
        for index, o in handed.items():
            assert cache[index].offer.offer_id == o.offer_id and cache[index].offer.holders[0].paths == o.holders[0].paths


# ---- found by review: each failed before its fix -------------------------------------------------------
def test_a_dedicated_offer_is_confirmed_by_each_holder_anew():
    """(review) make_offer copied the ready offer's holders with their confirmations: a holder that never
    stored the dedicated offer's invoice counted as confirmed, and was not re-served for 2 h."""
    w = TwoServers(slots=2)
    w.recipient.tick(start=True)
    w.settle()
    assert c.counts(w.recipient.cache)["ready"] == 2
    w.nodes[1].online = False     # B unreachable while the dedicated offer is served
    got = w.recipient.make_offer(1000, "coffee", None, timeout=0.1)
    w.nodes[1].online = True
    s = next(x for x in w.recipient.cache if x.offer.offer_id.hex() == got["offer_id"])
    for _ in range(5):
        w.now += 1
        w.recipient.tick()
    inv_b = w.stored(1, s.index)
    assert got["servers"][1]["confirmed"] is False, "B shown confirmed for a dedicated offer it never stored"
    assert inv_b.offer_id.hex() == got["offer_id"]


def _fat_b(w, n):
    """Server B answers offer_paths with its path repeated n times (a server may send any number)."""
    t = w.servers[1].t
    orig = t.send
    def send(path, typ, body, **kw):
        if typ == m.OFFER_PATHS:
            op = m.OfferPaths.decode(body)
            body = m.OfferPaths(op.paths * n, op.paths_absolute_expiry, op.mailbox_node_id).encode()
        return orig(path, typ, body, **kw)
    t.send = send


def test_a_server_sending_many_paths_cannot_keep_offers_from_ready():
    """(review) every path a server sent went into the offer: 8 from B made 9, which A refuses."""
    w = TwoServers(slots=2)
    _fat_b(w, 8)
    w.recipient.tick(start=True)
    w.settle(10)
    assert c.counts(w.recipient.cache)["ready"] == 2
    # each offer takes at most MAX_PATHS_PER_SERVER of B's paths, and both servers store its invoice
    assert all(len(Offer.decode(s.offer.offer).paths) == 1 + c.MAX_PATHS_PER_SERVER and c.held_by(s) == 2
               for s in w.recipient.cache)


def test_a_missing_servers_late_answer_extends_an_old_offer():
    """(review) asking a missing server marked a replacement request: its answer, on an offer over 2 h old,
    replaced the offer (dropping A's confirmed paths, even if it was the last payable one)."""
    hA = holder(A, b"pA", persisted=NOW)
    cache = (c.Slot(0, c.READY, c.CachedOffer(b"o", b"\x01" * 32, (hA,), NOW + YEAR, NOW, NOW)),)
    t = NOW + 3 * 3600
    cache, actions = c.tick(cache, t, servers=(A, B))   # B is missing: asked again
    assert c.SendRequest(0, B) in actions
    hs = c.offer_holders(cache, 0, holder(B, b"pB"), t + 1)
    assert [h.server for h in hs] == [A, B]   # added to A's, not a replacement on B's alone


def test_after_a_removal_the_new_offers_invoice_is_newer_than_the_stored():
    """(review) a slot emptied by a removal forgot its last invoice time: the new offer's invoice, made in
    the same second, was older than A's stored one, which A acknowledged without storing it."""
    w = TwoServers(slots=1)
    w.recipient.tick(start=True)          # A and B answer at NOW: offer rebuilt, invoice NOW+1 stored at A
    w.recipient.set_servers([w.path_lists[0]])
    w.recipient.tick(start=True)          # same second: new offer, invoice at NOW
    s = w.recipient.cache[0]
    stored = w.stored(0, 0)
    assert not (s.status == c.READY and stored.offer_id != s.offer.offer_id)


def test_a_kill_after_setserver_wrote_its_record_still_frees_slots():
    """SIGKILL between set_servers' ds_set(SERVERS_KEY) and its slot commits (or a restart with changed
    --asyncreceive-server options): the removed server's unused offers keep its paths."""
    w = TwoServers(slots=2)
    w.recipient.tick(start=True)
    w.settle()
    w.rnode.ds_set(SERVERS_KEY, encode_servers([encode_path_list(w.path_lists[0])]))   # the first write only
    w.recipient.load([])
    w.recipient.tick(start=True)
    w.settle()
    for s in w.recipient.cache:
        assert [h.server for h in s.offer.holders] == [w.ids[0]]
