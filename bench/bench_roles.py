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
