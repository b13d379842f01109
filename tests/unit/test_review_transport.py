"""What a stranger can make the transport do: fill our send queues, hold our sender threads with
connects that hang, make us fetch the channel graph, drain the guesses of unknown channels.  A send is
our own when we expect an answer (``reply_context``) or may connect; any other is a reply."""

import threading
import time

import pytest

from asyncreceive.logs import short_id
from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.shell.graph import ChannelGraph
from asyncreceive.shell.lightningd import MAX_CONNECTING, Lightningd, NodeError
from asyncreceive.shell.sender import REPLIES_PER_PEER, Sender
from asyncreceive.shell.transport import TransportError
from asyncreceive.wire import messages as m
from asyncreceive.wire.paths import BlindedPath, SciddirOrPubkey

from .fakes import FakeNetwork, wait_until

NOW = 1_800_000_000
BODY = m.HeldHtlcAvailable().encode()
OWN = PathContext(Kind.PROBE, NOW + 60)


def world(*names):
    net = FakeNetwork(lambda: NOW)
    return net, [net.add(n) for n in names]


def test_replies_towards_a_peer_cannot_fill_the_room_of_our_own_sends():
    """Strangers' invoice_requests with reply paths through peer P make us queue static invoices to P
    faster than P's pacing drains them: they fill the replies' share of P's queue only."""
    net, [(us, t), (p, pt)] = world("us", "p")
    sender = t.sender = Sender(t._log, interval=0)
    release = threading.Event()
    real = us.send_onion
    us.send_onion = lambda out: (release.wait(10), real(out))
    got = []
    pt.on_kind(Kind.PROBE, lambda msg: got.append(msg.msg_type))
    path = pt.make_path(PathContext(Kind.PROBE))
    try:
        t.send(path, m.STATIC_INVOICE, BODY)           # taken by a sender thread, which waits
        assert wait_until(lambda: sender.queued() == 0)
        refused = 0
        for _ in range(100):
            try:
                t.send(path, m.STATIC_INVOICE, BODY)
            except TransportError:
                refused += 1
        assert refused >= 100 - REPLIES_PER_PEER
        t.send(path, m.OFFER_PATHS, BODY)              # a reply of another type still fits
        t.send(path, m.OFFER_PATHS_REQUEST, BODY, reply_context=OWN)   # and our own send
    finally:
        release.set()
    assert wait_until(lambda: m.OFFER_PATHS_REQUEST in got and m.OFFER_PATHS in got)


def test_replies_take_at_most_half_of_all_the_send_queues():
    s = Sender(lambda *a: None, total=8, threads=1)
    s._started = True                                  # no thread takes anything: we only count
    assert [s.submit(bytes([i]), lambda: None, reply="static_invoice") for i in range(6)] == [True] * 4 + [False] * 2
    assert all(s.submit(bytes([i]), lambda: None) for i in range(4))
    assert not s.submit(b"\xff", lambda: None)


class HangingRpc:
    """lightningd whose connects hang (a host that accepts TCP and never finishes the handshake)."""

    def __init__(self, node_id: bytes):
        self.node_id, self.release, self.connects = node_id, threading.Event(), []

    def getinfo(self):
        return {"id": self.node_id.hex()}

    def listpeers(self, node_id=None):
        return {"peers": []}

    def connect(self, node_id):
        self.connects.append(node_id)
        self.release.wait(30)
        raise ConnectionError("gone")


def test_connects_that_hang_hold_no_sender_thread():
    """10 sends that must connect to introductions that hang: 8 connects are pending, the other sends
    fail at once; meanwhile a message to a connected peer goes out at once."""
    net, [(us, t), (p, pt), *fars] = world("us", "p", *[f"far{i}" for i in range(10)])
    t.sender = Sender(t._log, interval=0)
    rpc = HangingRpc(us.node_id)
    us.connect_then = Lightningd(rpc).connect_then
    us.connect = lambda node_id, timeout: rpc.connect(node_id.hex())   # how the transport connected before
    got = threading.Event()
    pt.on_kind(Kind.PROBE, lambda msg: got.set())
    errors = []
    try:
        for far, _ in fars:
            far.online = False
            try:
                t.send(net.by_node[far.node_id].make_path(PathContext(Kind.PROBE)), m.OFFER_PATHS_REQUEST, BODY,
                       may_connect=True)
            except TransportError as e:
                errors.append(str(e))
        started = time.monotonic()
        t.send(pt.make_path(PathContext(Kind.PROBE)), m.HELD_HTLC_AVAILABLE, BODY)
        assert got.wait(2), "the message to a connected peer waited for connects"
        assert time.monotonic() - started < 1
        assert len(errors) == 10 - MAX_CONNECTING
        assert all("too many connections pending" in e for e in errors)
        assert len(rpc.connects) == MAX_CONNECTING
    finally:
        rpc.release.set()


def test_a_connect_that_times_out_is_told_while_lightningd_still_tries_and_keeps_its_slot():
    rpc = HangingRpc(b"\x02" * 33)
    ln = Lightningd(rpc)
    told = []
    done = threading.Event()
    try:
        ln.connect_then(b"\x03" * 33, 0.05, lambda e: (told.append(e), done.set()))
        assert done.wait(5) and "no answer within 0.05 s" in told[0]
        assert len(rpc.connects) == 1 and not rpc.release.is_set()
        for i in range(MAX_CONNECTING - 1):
            ln.connect_then(bytes([4 + i]) * 33, 30, lambda e: None)
        with pytest.raises(NodeError, match="too many connections pending"):
            ln.connect_then(b"\x7f" * 33, 30, lambda e: None)
        late = []
        ln.connect_then(b"\x03" * 33, 30, late.append)   # joins the attempt that timed out: told at once
        assert len(late) == 1 and "no answer" in late[0]
    finally:
        rpc.release.set()


def sent_via(net, peer):
    return sum(f"via {short_id(peer.node_id)}" in text for _, _, text in net.log)


def _counting_graph(us):
    calls = []
    real = us.channel_adjacency
    us.channel_adjacency = lambda: (calls.append(1), real())[1]
    return calls


def test_a_reply_to_an_unknown_node_never_fetches_the_graph_and_an_own_send_does():
    net, [(us, t), (far, ft), (hop, _)] = world("us", "far", "hop")
    far.online = False
    net.channels[(900 << 40) | (1 << 16)] = (hop.node_id, far.node_id)
    calls = _counting_graph(us)
    sent = []
    us.send_onion = sent.append
    path = ft.make_path(PathContext(Kind.PROBE))
    with pytest.raises(TransportError, match="no route"):
        t.send(path, m.STATIC_INVOICE, BODY)          # a reply: the cached graph (empty) only
    assert calls == [] and sent == []
    t.send(path, m.OFFER_PATHS_REQUEST, BODY, reply_context=OWN)   # our own: fetches, then routed once
    assert calls == [1] and len(sent) == 1 and sent_via(net, hop) == 1
    t.send(path, m.STATIC_INVOICE, BODY)             # a reply now finds the cached route
    assert calls == [1] and len(sent) == 2


def test_an_own_send_waiting_for_the_graph_holds_no_sender_thread():
    """With a single sender thread: an own send to a node we know no route to starts a graph fetch
    that takes long; a message to a connected peer goes out meanwhile, the own send once it is over."""
    net, [(us, t), (far, ft), (hop, _), (p, pt)] = world("us", "far", "hop", "p")
    far.online = False
    net.channels[(900 << 40) | (1 << 16)] = (hop.node_id, far.node_id)
    t.sender = Sender(t._log, interval=0, threads=1)
    t.graph = ChannelGraph(us, t._log)                 # fetches in its own thread
    fetching, release = threading.Event(), threading.Event()
    real = us.channel_adjacency
    us.channel_adjacency = lambda: (fetching.set(), release.wait(30), real())[2]
    got = threading.Event()
    pt.on_kind(Kind.PROBE, lambda msg: got.set())
    try:
        t.send(ft.make_path(PathContext(Kind.PROBE)), m.OFFER_PATHS_REQUEST, BODY, reply_context=OWN)
        assert fetching.wait(5)
        t.send(pt.make_path(PathContext(Kind.PROBE)), m.HELD_HTLC_AVAILABLE, BODY)
        assert got.wait(2), "the sender thread waited for the graph"
    finally:
        release.set()
    assert wait_until(lambda: sent_via(net, hop) == 1)


def _compact(t, scid):
    base = t.make_path(PathContext(Kind.PROBE))
    return BlindedPath(SciddirOrPubkey(scid=(700 << 40) | scid, direction=0), base.first_path_key, base.hops)


def test_a_flood_of_guesses_for_many_unknown_channels_does_not_stop_other_guesses():
    net, [(us, t), (p1, _), (p2, _)] = world("us", "p1", "p2")
    us.rpc.peer_channels = [{"peer_id": n.node_id.hex(), "peer_connected": True, "state": "CHANNELD_NORMAL"}
                            for n in (p1, p2)]
    us.send_onion = lambda out: None

    def flood(scids, each):
        for scid in scids:
            for _ in range(each):
                try:
                    t.send(_compact(t, scid), m.RELEASE_HELD_HTLC, BODY)
                except TransportError:
                    pass
    flood(range(1, 51), 5)                            # 50 unknown channels, 5 replies each
    t.send(_compact(t, 1000), m.RELEASE_HELD_HTLC, BODY)   # a reply guessing a channel not yet used
    flood(range(51, 500), 1)                          # enough channels to drain the replies' own bucket
    with pytest.raises(TransportError, match="not guessing"):
        t.send(_compact(t, 1001), m.RELEASE_HELD_HTLC, BODY)
    t.send(_compact(t, 1002), m.INVOICE_REQUEST, BODY, reply_context=OWN)   # our own send still guesses


def test_a_reply_missing_from_the_cached_graph_asks_lightningd_for_that_node_at_a_bounded_rate():
    """Found by the integration tests: the graph cached at start-up, before the channels towards a
    payer were announced, had no route, so the recipient's invoice to a stock CLN payer was lost.  A
    miss now looks up that one node's neighbours in the gossip; never the whole graph, 20 then 2/s."""
    net, [(us, t), (far, ft), (hop, _)] = world("us", "far", "hop")
    far.online = False
    net.channels[(900 << 40) | (1 << 16)] = (hop.node_id, far.node_id)
    calls = _counting_graph(us)
    asked = []
    us.gossip_route = lambda node_id: (asked.append(node_id), [hop.node_id])[1]
    sent = []
    us.send_onion = sent.append
    path = ft.make_path(PathContext(Kind.PROBE))
    t.send(path, m.STATIC_INVOICE, BODY)              # a reply: not in the cached graph, looked up
    assert calls == [] and asked == [far.node_id] and len(sent) == 1
    for _ in range(40):
        try:
            t.send(path, m.STATIC_INVOICE, BODY)
        except TransportError:
            pass
    assert len(asked) <= 21
