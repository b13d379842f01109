"""A reply path that starts at a node which accepts TCP and never finishes the handshake does not stall
the plugin: the reply does not connect to it, and the next message is handled at once.

x -- m -- r with announced channels, so r knows x's address from gossip.  x is stopped and a socket
server that accepts and never answers takes its port: a ``connect`` to x would now hang for lightningd's
whole handshake timeout (60 s), and before the fix r's one worker thread waited for it.
"""

import os
import socket
import threading
import time

from pyln.testing.utils import wait_for

from asyncreceive.crypto.blinding import EncryptedData, build_blinded_path
from asyncreceive.wire import messages as m


def received(node):
    return node.rpc.call("asyncreceive-dev-received")["received"]


def send(node, path, t, body, **kw):
    return node.rpc.call("asyncreceive-dev-send", {"path": path, "msgtype": t, "body": body.hex(), **kw})


class SilentServer:
    """Accepts TCP connections on ``port`` and never says anything."""

    def __init__(self, port):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.accepted = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)   # held open, never answered

    def close(self):
        for c in self.accepted:
            c.close()
        self.sock.close()


def test_reply_towards_a_silent_node_does_not_stall_the_plugin(node_factory, plugin_opts):
    x, mid, r = node_factory.line_graph(3, fundchannel=True, wait_for_announce=True,
                                        opts=[{"may_reconnect": True, "dev-allow-localhost": None}, plugin_opts, plugin_opts])
    x_id = x.info["id"]
    wait_for(lambda: r.rpc.listnodes(x_id)["nodes"] and r.rpc.listnodes(x_id)["nodes"][0].get("addresses"))
    assert not r.rpc.listpeers(x_id)["peers"], "r must not be x's peer"
    x.stop()
    silent = SilentServer(x.port)
    try:
        # replies never fetch the whole graph: an own send of r's towards x first (its connect to x
        # times out, so it goes through the graph, via m: the cached one or x's neighbours looked up)
        to_x = build_blinded_path(os.urandom(32), [(bytes.fromhex(x_id), EncryptedData(path_id=bytes(32)).encode())])
        send(r, to_x.encode().hex(), m.STATIC_INVOICE_PERSISTED, m.StaticInvoicePersisted().encode(), reply=True)
        r.daemon.wait_for_log(r"cannot connect to .*: sending through (our peer|the graph) .*instead", timeout=30)
        echo = r.rpc.call("asyncreceive-dev-makepath", {"echo": True})["path"]
        plain = r.rpc.call("asyncreceive-dev-makepath")["path"]
        # a held_htlc_available whose reply path starts at x: r answers over it (echo)
        send(mid, echo, m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode(), reply=True, reply_via=[x_id])
        wait_for(lambda: len(received(r)) == 1)
        t0 = time.time()
        send(mid, plain, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode())
        wait_for(lambda: len(received(r)) == 2, timeout=15)
        took = time.time() - t0
        print(f"next message handled {took:.2f}s after the one whose reply goes towards the silent node")
        # the echo went to m (r's peer with a channel to x), never through a connect to x
        r.daemon.wait_for_log(r"sent held_htlc_available \(\d+ bytes\) via " + mid.info["id"][:16])
        assert not r.rpc.listpeers(x_id)["peers"]
        # and r keeps answering: an echo over a reply path that starts at m comes back
        send(mid, echo, m.OFFER_PATHS_REQUEST, m.OfferPathsRequest(1).encode(), reply=True)
        wait_for(lambda: any(e["type"] == m.OFFER_PATHS_REQUEST for e in received(mid)), timeout=15)
    finally:
        silent.close()
