"""`make bench`: recipient (start to N slots ready, CPU per handled message) and server (static
invoices served per second, CPU per served request) figures on regtest.  Prints, asserts nothing."""

import time

import pytest
from pyln.client import RpcError
from pyln.testing.utils import wait_for

from bench.bench_transport import HAVE_NODES, PLUGIN, plugin_cpu, report

pytestmark = pytest.mark.skipif(not HAVE_NODES, reason="needs lightningd, bitcoind, bitcoin-cli on PATH")


def ready(node):
    return len(node.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"])


def received(node):
    return sum(node.rpc.call("asyncreceive-status")["messages"]["received"].values())


@pytest.mark.parametrize("n", [1, 10])
def test_bench_start_to_ready(node_factory, n):
    opts = {"plugin": PLUGIN, "may_reconnect": True}
    server, recipient = node_factory.line_graph(2, fundchannel=True,
                                                opts=[opts, dict(opts, **{"asyncreceive-slots": n})])
    r = server.rpc.call("asyncserver-addclient", {"client_id": "bench"})
    recipient.stop()
    recipient.daemon.opts["asyncreceive-server-path"] = r["paths_hex"]
    t0 = time.time()
    recipient.start()
    wait_for(lambda: ready(recipient) == n, timeout=120)
    elapsed = time.time() - t0
    cpu = plugin_cpu(recipient)
    msgs = received(recipient)
    report(f"recipient: lightningd start to {n} slot(s) ready", elapsed, "s")
    report(f"recipient: plugin CPU per handled message (N={n}, {msgs} msgs, incl. startup)",
           1e3 * cpu / max(1, msgs), "ms")


def test_bench_server_serving(node_factory):
    opts = {"plugin": PLUGIN}
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=opts)
    payers = node_factory.get_nodes(2)
    for p in payers:
        p.connect(server)
    r = server.rpc.call("asyncserver-addclient", {"client_id": "bench"})
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    wait_for(lambda: ready(recipient) == 10)
    offers = [o["offer"] for o in recipient.rpc.call("asyncreceive-listoffers")["offers"]]
    before = sum(i["times_served"] for i in server.rpc.call("asyncserver-listinvoices")["invoices"])
    cpu0 = plugin_cpu(server)
    n = 20
    t0 = time.time()
    for i in range(n):  # the recipient is online: it answers too, and fetchinvoice returns its invoice
        try:
            payers[i % 2].rpc.fetchinvoice(offer=offers[i % 10], amount_msat=1000 + i, timeout=1)
        except RpcError:
            pass
    wait_for(lambda: sum(i["times_served"] for i in server.rpc.call("asyncserver-listinvoices")["invoices"])
             - before == n)
    elapsed = time.time() - t0
    report(f"server: plugin CPU per served invoice_request (n={n})", 1e3 * (plugin_cpu(server) - cpu0) / n, "ms")
    report(f"server: invoice_requests served per second, sequential fetchinvoice (n={n})", n / elapsed, "req/s")


def _first_invoice(server, recipient):
    from asyncreceive.server.store import InvoiceRecord, invoice_key
    from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
    slot = recipient.rpc.call("asyncreceive-getoffer")["slot"]
    rec = server.rpc.listdatastore(key=invoice_key(b"bench", slot))["datastore"][0]
    return StaticInvoice.decode(InvoiceRecord.decode(bytes.fromhex(rec["hex"])).invoice)


def test_bench_mailbox(node_factory):
    """held_htlc_available -> release_held_htlc round trips, payer l1 -> server l2 -> recipient l3:
    over the invoice's mailbox path (server -> recipient phantom, relayed by the server's plugin) and
    over its plain path through the server; then messages held while the recipient is down."""
    from asyncreceive.wire import messages as m
    opts = {"plugin": PLUGIN, "asyncreceive-dev": None, "may_reconnect": True}
    payer, server, recipient = node_factory.line_graph(3, fundchannel=True, opts=opts)
    r = server.rpc.call("asyncserver-addclient", {"client_id": "bench"})
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    wait_for(lambda: ready(recipient) == 10)
    inv = _first_invoice(server, recipient)
    mailbox, plain = inv.message_paths[0], inv.message_paths[1]
    got = lambda: len(payer.rpc.call("asyncreceive-dev-received")["received"])  # noqa: E731

    def send(path):
        payer.rpc.call("asyncreceive-dev-send", {"path": path.encode().hex(), "msgtype": m.HELD_HTLC_AVAILABLE,
                                                 "body": "00", "reply": True, "reply_via": [server.info["id"]]})

    for name, path in (("mailbox path (relayed by the server)", mailbox), ("plain path through the server", plain)):
        times = []
        for _ in range(15):
            before = got()
            t0 = time.perf_counter()
            send(path)
            while got() == before and time.perf_counter() - t0 < 30:
                time.sleep(0.002)
            times.append(time.perf_counter() - t0)
            time.sleep(0.3)  # stay clear of the 250 ms pacing
        times.sort()
        report(f"held_htlc_available round trip, {name}, median (n=15)", 1e3 * times[7], "ms")

    n = 10
    recipient.stop()
    cpu0 = plugin_cpu(server)
    for _ in range(n):
        send(mailbox)
    wait_for(lambda: server.rpc.call("asyncreceive-status")["held_messages"] == n)
    held_cpu = plugin_cpu(server) - cpu0
    before = got()
    t0 = time.time()
    recipient.start()
    wait_for(lambda: got() == before + n, timeout=120)
    report(f"recipient start to {n} held messages answered", time.time() - t0, "s")
    report("server plugin CPU per held message (hold + relay)", 1e3 * (plugin_cpu(server) - cpu0) / n, "ms")
    report("server plugin CPU per message held (datastore write)", 1e3 * held_cpu / n, "ms")
