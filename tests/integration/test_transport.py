"""Onion messages of every async type through stock lightningd nodes (no channels needed).

(a) l1 -> l2 over a path l2 built; (b) across l1 -> l2 -> l3; (c) replies over the reply_path;
(d) garbage, tampered, forged and expired messages are dropped with a log line, lightningd and the
plugin keep running.
"""

import hashlib
import os

import pytest
from coincurve import PrivateKey
from pyln.client import RpcError
from pyln.testing.utils import wait_for

from asyncreceive.crypto.blinding import EncryptedData, build_blinded_path
from asyncreceive.crypto.context import ContextKey, Kind, PathContext
from asyncreceive.crypto.onion import build_outgoing, build_reply_path
from asyncreceive.wire import messages as m
from asyncreceive.wire.paths import BlindedHop, BlindedPath, SciddirOrPubkey
from asyncreceive.wire.tlv import bigsize

CONTEXT_LABEL = "asyncreceive/context/v1"


def _a_path():
    k = [PrivateKey().public_key.format() for _ in range(3)]
    return BlindedPath(SciddirOrPubkey(node_id=k[0]), k[1], (BlindedHop(k[2], b"\x01" * 40),))


def sample_messages():
    """(type, body) for each async type, in LDK's and the draft's numbering, plus a 3000-byte body."""
    p = _a_path()
    return [
        (m.OFFER_PATHS_REQUEST, m.OfferPathsRequest(7).encode()),
        (m.OFFER_PATHS, m.OfferPaths([p, p], 1_900_000_000).encode()),
        (m.SERVE_STATIC_INVOICE, m.ServeStaticInvoice(os.urandom(3000), p).encode()),
        (m.STATIC_INVOICE_PERSISTED, m.StaticInvoicePersisted().encode()),
        (m.STATIC_INVOICE, os.urandom(700)),
        (m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode()),
        (m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode()),
        (65540, m.OfferPathsRequest(1).encode()),
        (65546, m.StaticInvoicePersisted().encode()),
    ]


def received(node):
    return node.rpc.call("asyncreceive-dev-received")["received"]


def send(node, path, t, body, **kw):
    return node.rpc.call("asyncreceive-dev-send", {"path": path, "msgtype": t, "body": body.hex(), **kw})


def assert_all_arrived(node, msgs, start=0):
    wait_for(lambda: len(received(node)) >= start + len(msgs))
    got = received(node)[start:]
    assert len(got) == len(msgs)
    for (t, body), r in zip(msgs, got):
        assert r["type"] == t
        assert r["length"] == len(body)
        assert r["sha256"] == hashlib.sha256(body).hexdigest()
        assert bytes.fromhex(r["body"]) == body


def test_each_type_two_nodes(node_factory, plugin_opts):
    l1, l2 = node_factory.line_graph(2, fundchannel=False, opts=plugin_opts)
    path = l2.rpc.call("asyncreceive-dev-makepath")["path"]
    msgs = sample_messages()
    for t, body in msgs:
        send(l1, path, t, body)
    assert_all_arrived(l2, msgs)
    assert max(len(b) for _, b in msgs) > 3000  # the 3000-byte invoice body needed a 32768-byte onion
    st = l2.rpc.call("asyncreceive-status")["messages"]
    assert st["received"]["serve_static_invoice"] == 1
    assert st["received"]["offer_paths_request"] == 2  # 75540 and 65540
    assert l1.rpc.call("asyncreceive-status")["messages"]["sent"]["held_htlc_available"] == 1
    # read from a created_index on (a poller's next read is the entry after the last it saw)
    every = received(l2)
    assert [r["created_index"] for r in every] == list(range(1, len(msgs) + 1))
    page = l2.rpc.call("asyncreceive-dev-received", {"start": 3, "limit": 2})["received"]
    assert page == every[2:4]
    assert l2.rpc.call("asyncreceive-dev-received", {"start": len(msgs) + 1})["received"] == []
    for bad in ({"start": -1}, {"start": "3"}, {"limit": 0}):
        with pytest.raises(RpcError, match="start|limit"):
            l2.rpc.call("asyncreceive-dev-received", bad)


def test_each_type_three_node_line(node_factory, plugin_opts):
    # l2 is a stock node without the plugin: it only forwards.
    l1, l2, l3 = node_factory.get_nodes(3, opts=[plugin_opts, {}, plugin_opts])
    l1.connect(l2)
    l2.connect(l3)
    path = l3.rpc.call("asyncreceive-dev-makepath", {"via": [l2.info["id"]]})["path"]
    assert BlindedPath.decode(bytes.fromhex(path)).first_node_id.hex() == l2.info["id"]
    msgs = sample_messages()
    for t, body in msgs:
        send(l1, path, t, body)
    assert_all_arrived(l3, msgs)
    assert not l1.rpc.listpeers(l3.info["id"])["peers"], "l1 must not have connected to l3 directly"


def test_reply_over_reply_path(node_factory, plugin_opts):
    l1, l2 = node_factory.line_graph(2, fundchannel=False, opts=plugin_opts)
    path = l2.rpc.call("asyncreceive-dev-makepath", {"echo": True})["path"]
    msgs = [(m.OFFER_PATHS_REQUEST, m.OfferPathsRequest(2).encode()),
            (m.SERVE_STATIC_INVOICE, m.ServeStaticInvoice(os.urandom(3000), _a_path()).encode())]
    for t, body in msgs:
        send(l1, path, t, body, reply=True)
    assert_all_arrived(l2, msgs)
    assert all(r["reply_path"] for r in received(l2))
    assert_all_arrived(l1, msgs)  # echoed back over l1's reply path


def test_reply_across_three_nodes(node_factory, plugin_opts):
    l1, l2, l3 = node_factory.get_nodes(3, opts=[plugin_opts, {}, plugin_opts])
    l1.connect(l2)
    l2.connect(l3)
    path = l3.rpc.call("asyncreceive-dev-makepath", {"echo": True, "via": [l2.info["id"]]})["path"]
    msgs = [(m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode())]
    send(l1, path, *msgs[0], reply=True, reply_via=[l2.info["id"]])
    assert_all_arrived(l3, msgs)
    assert_all_arrived(l1, msgs)


def test_garbage_and_tampered_are_dropped(node_factory, plugin_opts):
    l1, l2 = node_factory.line_graph(2, fundchannel=False, opts=plugin_opts)
    good = bytes.fromhex(l2.rpc.call("asyncreceive-dev-makepath")["path"])
    path = BlindedPath.decode(good)
    l1_id = bytes.fromhex(l1.info["id"])
    l2_id = bytes.fromhex(l2.info["id"])
    phantom = bytes.fromhex(l2.rpc.call("asyncreceive-status")["phantom_id"])

    # 1. tampered: flip a byte of the phantom hop's encrypted data
    last = path.hops[-1]
    bad = bytearray(last.encrypted_recipient_data)
    bad[5] ^= 1
    tampered = BlindedPath(path.introduction, path.first_path_key,
                           path.hops[:-1] + (BlindedHop(last.blinded_node_id, bytes(bad)),))
    send(l1, tampered.encode().hex(), m.OFFER_PATHS, m.OfferPaths([path]).encode())
    l2.daemon.wait_for_log(r"dropped onion message \(malformed\)")

    # 2. forged: a well-formed path to our phantom, but a path_id made without our key
    ctx = PathContext(Kind.PROBE, None, {}).encode()
    forged = build_reply_path([l2_id], phantom, os.urandom(32), ctx)
    send(l1, forged.encode().hex(), m.OFFER_PATHS_REQUEST, m.OfferPathsRequest(1).encode())
    l2.daemon.wait_for_log(r"dropped onion message \(bad_path_id\)")

    # 3. expired: correctly authenticated (the test can ask l2's makesecret) but past its expiry
    key = ContextKey(bytes.fromhex(l2.rpc.makesecret(string=CONTEXT_LABEL)["secret"]))
    ctx = PathContext(Kind.PROBE, 1_000_000_000, {}).encode()
    expired = build_reply_path([l2_id], phantom, key.path_id(ctx), ctx)
    send(l1, expired.encode().hex(), m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode())
    l2.daemon.wait_for_log(r"dropped onion message \(expired\)")

    # 4. garbage: a final payload that is not a TLV stream at all, built and injected by hand on l1
    out = build_outgoing(l1_id, path, m.HELD_HTLC_AVAILABLE, b"\x00")
    hops = [{"pubkey": n.hex(), "payload": (bigsize(len(p)) + p).hex()} for n, p in out.hops]
    junk = b"\xff" * 60
    hops[-1]["payload"] = (bigsize(len(junk)) + junk).hex()
    onion = l1.rpc.createonion(hops=hops, assocdata="")["onion"]
    l1.rpc.injectonionmessage(path_key=out.path_key.hex(), message=onion)
    wait_for(lambda: l2.rpc.call("asyncreceive-status")["messages"]["dropped"].get("malformed", 0) >= 2)

    # nothing was delivered, and both lightningd and the plugin are still alive and working
    assert received(l2) == []
    drops = l2.rpc.call("asyncreceive-status")["messages"]["dropped"]
    assert drops["bad_path_id"] == 1 and drops["expired"] == 1 and drops["malformed"] == 2
    assert any(p["name"].endswith("plugin.py") and p["active"] for p in l2.rpc.plugin_list()["plugins"])
    msgs = [(m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode())]
    send(l1, good.hex(), *msgs[0])
    assert_all_arrived(l2, msgs)


def test_bad_rpc_input_gets_clear_errors(node_factory, plugin_opts):
    l1 = node_factory.get_node(options=plugin_opts)
    with pytest.raises(RpcError, match="path: not a hex string"):
        send(l1, "zz", m.HELD_HTLC_AVAILABLE, b"\x00")
    with pytest.raises(RpcError, match="invalid blinded_path"):
        send(l1, "00", m.HELD_HTLC_AVAILABLE, b"\x00")
    with pytest.raises(RpcError, match="msgtype"):
        send(l1, _a_path().encode().hex(), 12345, b"\x00")


def test_known_types_on_paths_ending_at_our_node(node_factory, plugin_opts):
    """invoice_request/invoice/invoice_error on a path that ends at our real node arrive through
    onion_message_recv_secret, are authenticated by the compact path_id and reach the same dispatcher;
    the offers plugin never sees them (it would answer 'Unknown offer')."""
    l1, l2 = node_factory.line_graph(2, fundchannel=False, opts=plugin_opts)
    path = l2.rpc.call("asyncreceive-dev-makepath", {"compact": True})["path"]
    assert len(BlindedPath.decode(bytes.fromhex(path)).hops) == 1
    invreq = bytes.fromhex("0a0568656c6c6f")  # a TLV stream: lightningd only carries it
    msgs = [(m.INVOICE_REQUEST, invreq), (m.INVOICE_ERROR, bytes.fromhex("0503666f6f"))]
    for t, body in msgs:
        send(l1, path, t, body, reply=True)
    assert_all_arrived(l2, msgs)
    assert all(r["reply_path"] for r in received(l2))
    assert not l2.daemon.is_in_log("Unknown offer")
    # a path_id that isn't ours on such a path is left to the other plugins (the hook says continue)
    foreign = build_blinded_path(os.urandom(32), [(bytes.fromhex(l2.info["id"]),
                                                   EncryptedData(path_id=os.urandom(32)).encode())])
    send(l1, foreign.encode().hex(), m.INVOICE_REQUEST, invreq)
    l2.daemon.wait_for_logs([r"Got onionmsg with pathsecret"] * 3)  # ours (2), then the foreign one
    assert len(received(l2)) == len(msgs)


def test_unknown_sciddir_introduction_tried_through_peers(node_factory, plugin_opts):
    """A path whose compact introduction names a channel our gossip lacks (as LDK's reply paths may,
    right after their channel is announced): l2 sends it through each of its channel peers, l1 (the
    real introduction) gets it once, l3 cannot open it; then an introduction one hop behind a peer."""
    l1, l2, l3 = node_factory.line_graph(3, fundchannel=True, opts=plugin_opts)
    p = BlindedPath.decode(bytes.fromhex(l1.rpc.call("asyncreceive-dev-makepath")["path"]))
    compact = BlindedPath(SciddirOrPubkey(scid=(1000 << 40) | (7 << 16) | 1, direction=0), p.first_path_key, p.hops)
    body = m.OfferPathsRequest(3).encode()
    send(l2, compact.encode().hex(), m.OFFER_PATHS_REQUEST, body)
    assert_all_arrived(l1, [(m.OFFER_PATHS_REQUEST, body)])
    l2.daemon.wait_for_log(r"unknown channel 1000x7x1: trying the path's introduction among our peers")
    assert l2.rpc.call("asyncreceive-status")["messages"]["sent"] == {"offer_paths_request": 1}
    assert received(l3) == []
    # the introduction is l3, named by its (unannounced) channel with l2, which l1 does not know: l1 sends
    # through its peer l2, which forwards by short_channel_id
    scid = l2.rpc.listpeerchannels(l3.info["id"])["channels"][0]["short_channel_id"]
    block, tx, out = (int(x) for x in scid.split("x"))
    direction = int(l3.info["id"] > l2.info["id"])
    p3 = BlindedPath.decode(bytes.fromhex(l3.rpc.call("asyncreceive-dev-makepath")["path"]))
    behind = BlindedPath(SciddirOrPubkey(scid=(block << 40) | (tx << 16) | out, direction=direction),
                         p3.first_path_key, p3.hops)
    send(l1, behind.encode().hex(), m.OFFER_PATHS_REQUEST, body)
    assert_all_arrived(l3, [(m.OFFER_PATHS_REQUEST, body)])
    l1.daemon.wait_for_log(r"unknown channel %s: trying" % scid)
