"""Sending never blocks message handling: the network work of a send (connect, pacing, lightningd's
injectonionmessage) happens on the sender's threads; replies to strangers never connect."""

import threading
import time

import pytest

from asyncreceive.app import route
from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.shell.lightningd import NodeError
from asyncreceive.shell.sender import Sender
from asyncreceive.shell.transport import GUESS_BURST, GUESS_PER_SCID, TransportError
from asyncreceive.shell.worker import Worker
from asyncreceive.wire import messages as m
from asyncreceive.wire.paths import BlindedPath, SciddirOrPubkey

from .fakes import FakeNetwork

NOW = 1_800_000_000
BODY = m.HeldHtlcAvailable().encode()


def log_to(sink):
    return lambda msg, level="info": sink.append((level, msg))


def world(*names):
    net = FakeNetwork(lambda: NOW)
    return net, [net.add(n) for n in names]


def threaded(t, **kw):
    """Give transport ``t`` a real sender (its own threads)."""
    t.sender = Sender(t._log, **kw)
    return t.sender


def test_a_connect_that_hangs_does_not_delay_the_next_message():
    """A send to a node we must connect to, whose connect hangs (a host that accepts TCP and never
    finishes the handshake makes lightningd's connect take 60 s), returns at once; the next message's
    handling and its reply go out while the connect still hangs."""
    net, [(us, t), (far, ft), (peer, pt)] = world("us", "far", "peer")
    threaded(t, interval=0)
    far.online = False                              # not our peer: a send to it must connect
    release = threading.Event()
    connecting = threading.Event()

    def hanging_connect(node_id, timeout, on_done):
        connecting.set()
        threading.Thread(target=lambda: (release.wait(30), on_done("timed out")), daemon=True).start()
    us.connect_then = hanging_connect

    far_path = ft.make_path(PathContext(Kind.PROBE))
    got = threading.Event()
    pt.on_kind(Kind.PROBE, lambda msg: got.set())
    peer_path = pt.make_path(PathContext(Kind.PROBE))
    worker = Worker(t._log)
    worker.start()
    try:
        worker.submit(lambda: t.send(far_path, m.OFFER_PATHS_REQUEST, BODY, may_connect=True))
        worker.submit(lambda: t.send(peer_path, m.HELD_HTLC_AVAILABLE, BODY))
        assert got.wait(5), "the second message waited for the first one's connect"
        assert connecting.is_set() and not release.is_set()
    finally:
        release.set()
        worker.stop()


def test_a_reply_to_a_stranger_never_connects():
    """An echo (a reply over the sender's reply path) to an introduction that is not our peer goes
    through the cached graph to a connected peer, or is dropped; it never connects."""
    net, [(us, t), (sender, st), (intro, _), (hop, ht)] = world("us", "sender", "intro", "hop")
    from asyncreceive.shell.probe import Probe
    probe = Probe(t, clock=lambda: NOW)
    route(t, probe=probe)
    echo = probe.make_path(echo=True)
    intro.online = False
    # 1. no route to the reply path's introduction: the reply is dropped, nobody was asked to connect
    st.send(echo, m.HELD_HTLC_AVAILABLE, BODY, reply_context=probe.context(), reply_via=[intro.node_id])
    assert len(probe.received) == 1
    assert us.connects == []
    assert t.stats.sent == {} and "no route" in t.stats.last_error
    assert t.stats.as_json()["last_error_current"] is True
    assert t.graph.fetches == 0           # a reply does not fetch the graph: the tick does
    # 2. the introduction has a channel with a peer of ours: through it, still no connect
    net.channels[(900 << 40) | (1 << 16)] = (hop.node_id, intro.node_id)
    t.graph.refresh_if_due()              # the plugin's tick
    sent = []
    real = us.send_onion
    us.send_onion = lambda out: (sent.append(out), real(out))[1]
    for _ in range(5):
        st.send(echo, m.HELD_HTLC_AVAILABLE, BODY, reply_context=probe.context(), reply_via=[intro.node_id])
    assert len(sent) == 5 and us.connects == []
    assert t.stats.sent == {"held_htlc_available": 5}
    st_json = t.stats.as_json()     # the error is kept, with its time, but no longer holds
    assert "no route" in st_json["last_error"] and st_json["last_error_current"] is False
    assert st_json["last_sent_at"] is not None
    assert t.graph.fetches == 1           # listchannels once per refresh, not per send


def test_sends_we_start_may_connect_and_a_failed_connect_is_not_retried_at_once():
    net, [(us, t), (server, _)] = world("us", "server")
    path = net.by_node[server.node_id].make_path(PathContext(Kind.PROBE))
    server.online = False
    t.send(path, m.OFFER_PATHS_REQUEST, BODY, may_connect=True)   # queued: the connect fails later
    assert us.connects == [server.node_id]
    assert "cannot connect" in t.stats.last_error
    with pytest.raises(TransportError, match="no route"):
        t.send(path, m.OFFER_PATHS_REQUEST, BODY, may_connect=True)
    assert us.connects == [server.node_id]


def test_pacing_happens_on_the_sender_thread_and_order_per_peer_is_kept():
    net, [(us, t), (peer, pt)] = world("us", "peer")
    threaded(t, interval=0.2)
    got = []
    pt.on_kind(Kind.PROBE, lambda msg: got.append(msg.body))
    path = pt.make_path(PathContext(Kind.PROBE))
    for i in range(5):
        t.send(path, m.HELD_HTLC_AVAILABLE, bytes([i]))
    assert len(got) <= 1              # the caller did not wait for the pacing
    deadline = time.monotonic() + 10
    while len(got) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [bytes([i]) for i in range(5)]


def test_the_send_queue_is_bounded_per_peer_and_in_total():
    net, [(us, t), (a, at), (b, bt)] = world("us", "a", "b")
    sender = threaded(t, interval=0, per_peer=8, total=24)      # own sends: 8 per peer, 12 in all
    release = threading.Event()
    real = us.send_onion
    us.send_onion = lambda out: (release.wait(10), real(out))
    pa, pb = (x.make_path(PathContext(Kind.PROBE)) for x in (at, bt))
    own = PathContext(Kind.PROBE, NOW + 60)
    try:
        t.send(pa, m.HELD_HTLC_AVAILABLE, BODY, reply_context=own)   # taken by a sender thread, which waits
        deadline = time.monotonic() + 5
        while sender.queued() and time.monotonic() < deadline:
            time.sleep(0.005)
        for _ in range(8):
            t.send(pa, m.HELD_HTLC_AVAILABLE, BODY, reply_context=own)
        with pytest.raises(TransportError, match="queue full"):
            t.send(pa, m.HELD_HTLC_AVAILABLE, BODY, reply_context=own)
        for _ in range(3):     # b is on the other thread's plate: one taken, then the total bound
            t.send(pb, m.HELD_HTLC_AVAILABLE, BODY, reply_context=own)
        assert sender.queued() <= 12
        with pytest.raises(TransportError, match="queue full"):
            for _ in range(12):
                t.send(pb, m.HELD_HTLC_AVAILABLE, BODY, reply_context=own)
        assert t.stats.dropped["send_queue_full"] == 2
    finally:
        release.set()


def test_unknown_sciddir_guesses_are_bounded():
    net, [(us, t), (p1, _), (p2, _)] = world("us", "p1", "p2")
    us.rpc.peer_channels = [{"peer_id": n.node_id.hex(), "peer_connected": True, "state": "CHANNELD_NORMAL"}
                            for n in (p1, p2)]
    base = t.make_path(PathContext(Kind.PROBE))
    compact = BlindedPath(SciddirOrPubkey(scid=(700 << 40) | 1, direction=0), base.first_path_key, base.hops)
    sent = []
    us.send_onion = sent.append
    ok = 0
    for _ in range(3 * GUESS_BURST):
        try:
            t.send(compact, m.HELD_HTLC_AVAILABLE, BODY)
            ok += 1
        except TransportError:
            pass
    assert ok == GUESS_PER_SCID and len(sent) == 4 * GUESS_PER_SCID


BAD_NOTIFICATIONS = [
    None, [], "x", 5,
    {"next_node_id": 5, "outgoing": "00"},
    {"next_node_id": "zz", "outgoing": "00"},
    {"next_node_id": "02" * 33, "outgoing": "0g"},
    {"next_node_id": "02" * 33, "outgoing": "00", "source": "nothex"},
    {"next_node_id": "02" * 33, "outgoing": "00", "source": 7},
    {"next_node_id": None, "outgoing": []},
]


@pytest.mark.parametrize("notification", BAD_NOTIFICATIONS)
def test_malformed_forward_fail_notifications_are_dropped_not_raised(notification):
    net, [(us, t)] = world("us")
    t.on_undeliverable = lambda *a: pytest.fail("called")
    t.handle_forward_fail(notification)


def test_on_undeliverable_gets_the_peer_the_message_came_from():
    net, [(us, t)] = world("us")
    got = []
    t.on_undeliverable = lambda next_node_id, onion, source: got.append((next_node_id, onion, source))
    t.handle_forward_fail({"next_node_id": "03" * 33, "outgoing": "0201", "source": "02" * 33})
    t.handle_forward_fail({"next_node_id": "03" * 33, "outgoing": "0201"})
    assert got == [(b"\x03" * 33, b"\x02\x01", b"\x02" * 33), (b"\x03" * 33, b"\x02\x01", None)]


def _recv_secret(t, **fields):
    pid = t.ctx_key.compact_path_id(PathContext(Kind.PROBE, NOW + 60))
    return dict({"pathsecret": pid.hex()}, **fields)


BAD_RECV = [
    {"invoice_request": "zz"},
    {"invoice_request": 5},
    {"unknown_fields": [5]},
    {"unknown_fields": [{"number": m.HELD_HTLC_AVAILABLE}]},
    {"unknown_fields": [{"number": m.HELD_HTLC_AVAILABLE, "value": "zz"}]},
    {"unknown_fields": "nope"},
    {"invoice": "00", "reply_blindedpath": {"first_node_id": "zz"}},
    {"invoice": "00", "reply_blindedpath": "a string"},
    {"invoice": "00", "reply_blindedpath": {"first_scid": "1x2", "first_scid_dir": 0}},
    {"invoice": "00", "reply_blindedpath": {"first_node_id": "02" * 33, "first_path_key": "02" * 33, "hops": [1]}},
]


@pytest.mark.parametrize("fields", BAD_RECV)
def test_malformed_recv_secret_fields_are_dropped_not_raised(fields):
    net, [(us, t)] = world("us")
    assert t.check_recv_secret(_recv_secret(t, **fields)) is None
    assert t.stats.dropped == {"malformed": 1}


@pytest.mark.parametrize("payload", [None, [], "x", {"pathsecret": 5}, {"pathsecret": "zz"}])
def test_recv_secret_that_is_not_even_an_object_is_not_ours(payload):
    net, [(us, t)] = world("us")
    assert t.check_recv_secret(payload) is None
