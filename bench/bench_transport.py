"""`make bench`: figures for the transport (codec speed, plugin CPU per message, end-to-end latency).

Run with pytest -s so the figures are printed; nothing here asserts a speed.
"""

import os
import shutil
import statistics
import time
from pathlib import Path

import pytest

from asyncreceive.crypto.context import ContextKey, Kind, PathContext
from asyncreceive.crypto.onion import build_outgoing, build_reply_path, peel_phantom
from asyncreceive.crypto.sphinx import build_packet, encode_onion_message
from asyncreceive.wire import messages as m
from coincurve import PrivateKey

PLUGIN = str(Path(__file__).resolve().parents[1] / "plugin.py")
HAVE_NODES = all(shutil.which(b) for b in ("lightningd", "bitcoind", "bitcoin-cli"))


def report(name, value, unit):
    print(f"BENCH {name:<48} {value:>12.3f} {unit}")


def per_call(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def test_bench_codecs():
    """Pure-Python cost of building a message and of peeling the phantom layer."""
    ours, peer, phantom = (PrivateKey() for _ in range(3))
    key = ContextKey(os.urandom(32))
    ctx = PathContext(Kind.PROBE, None, {}).encode()
    path = build_reply_path([peer.public_key.format()], phantom.public_key.format(), key.path_id(ctx), ctx)
    for size, body in (("small", m.OfferPathsRequest(1).encode()),
                       ("3000B", m.ServeStaticInvoice(os.urandom(3000), path).encode())):
        out = build_outgoing(ours.public_key.format(), path, m.SERVE_STATIC_INVOICE, body)
        report(f"build hops ({size})", 1e3 * per_call(
            lambda: build_outgoing(ours.public_key.format(), path, m.SERVE_STATIC_INVOICE, body), 50), "ms")
        # The packet as the phantom sees it: only its own hop is left.
        packet = build_packet(os.urandom(32), [out.hops[-1]], size=out.onion_size)
        from asyncreceive.crypto.blinding import decrypt_hop
        # path key at the phantom hop: walk the path keys from the first hop
        pk = path.first_path_key
        for sk, hop in zip((peer,), path.hops):
            _, pk = decrypt_hop(sk.secret, pk, hop.encrypted_recipient_data)
        wire = encode_onion_message(pk, packet)
        report(f"peel phantom layer ({size}, onion {out.onion_size})",
               1e3 * per_call(lambda: peel_phantom(phantom.secret, wire), 50), "ms")


def plugin_cpu(node, split: bool = False):
    """User+system CPU seconds of the node's plugin.py process (``split``: (user, system))."""
    ld = node.daemon.proc.pid
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == ld and b"plugin.py" in cmd:
            user, system = (int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK"))
            return (user, system) if split else user + system
    raise RuntimeError("plugin process not found")


@pytest.mark.skipif(not HAVE_NODES, reason="needs lightningd, bitcoind, bitcoin-cli on PATH")
def test_bench_live(node_factory):
    opts = {"plugin": PLUGIN, "asyncreceive-dev": None}
    l1, l2 = node_factory.line_graph(2, fundchannel=False, opts=opts)
    path = l2.rpc.call("asyncreceive-dev-makepath")["path"]
    n = 40
    body = m.OfferPathsRequest(1).encode().hex()
    c1, c2 = plugin_cpu(l1), plugin_cpu(l2)
    t0 = time.time()
    for _ in range(n):
        l1.rpc.call("asyncreceive-dev-send", {"path": path, "msgtype": m.OFFER_PATHS_REQUEST, "body": body})
    l2.daemon.wait_for_logs([r"received offer_paths_request"] * n)
    elapsed = time.time() - t0
    report(f"sender plugin CPU per message (n={n})", 1e3 * (plugin_cpu(l1) - c1) / n, "ms")
    report(f"receiver plugin CPU per message (n={n})", 1e3 * (plugin_cpu(l2) - c2) / n, "ms")
    report(f"throughput, paced at 4/s per peer (n={n})", n / elapsed, "msg/s")

    lat = []
    for i in range(15):
        before = len(l2.rpc.call("asyncreceive-dev-received")["received"])
        t = time.perf_counter()
        l1.rpc.call("asyncreceive-dev-send", {"path": path, "msgtype": m.HELD_HTLC_AVAILABLE, "body": "00"})
        while len(l2.rpc.call("asyncreceive-dev-received")["received"]) == before:
            time.sleep(0.002)
        lat.append(time.perf_counter() - t)
        time.sleep(0.3)  # stay clear of the 250 ms pacing
    report("end-to-end latency l1->l2, median (n=15)", 1e3 * statistics.median(lat), "ms")
    report("end-to-end latency l1->l2, max (n=15)", 1e3 * max(lat), "ms")
