"""Live interop with ldk-node 0.7.1 (crates.io): LDK as static invoice server for a CLN recipient, and a CLN
static invoice server for an LDK recipient (issue 6, scenarios 1 and 2)."""

import time

from pyln.testing.utils import wait_for

from asyncreceive.wire.paths import decode_path_list
from tests.interop.conftest import PLUGIN, fund_ldk


def ready(node):
    return node.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]


def cln_channel_normal(node, peer_id):
    chans = node.rpc.listpeerchannels(peer_id)["channels"]
    return bool(chans) and chans[0]["state"] == "CHANNELD_NORMAL"


def ldk_channel_usable(ldk, peer_id):
    return any(c["counterparty_node_id"] == peer_id and c["is_usable"] for c in ldk.call("list_channels"))


def test_ldk_server_cln_recipient(node_factory, ldk_factory, bitcoind):
    """Scenario 1: ldk-node (role Server) is the static invoice server of a CLN recipient with our plugin."""
    cln = node_factory.get_node(options={"plugin": PLUGIN, "asyncreceive-tick-seconds": 10})
    ldk = ldk_factory("server")
    fund_ldk(bitcoind, ldk)
    # the LSP opens an announced channel to its client: the client gets inbound liquidity, and the LDK
    # node becomes announced, so its offer paths start at itself
    ldk.call("open_announced_channel", cln.info["id"], f"127.0.0.1:{cln.port}", 1_000_000)
    bitcoind.generate_block(6, wait_for_mempool=1)
    wait_for(lambda: cln_channel_normal(cln, ldk.id), timeout=90)
    wait_for(lambda: ldk_channel_usable(ldk, cln.info["id"]), timeout=90)
    wait_for(lambda: ldk.id in ldk.call("graph_nodes"), timeout=90)

    paths_hex = ldk.call("blinded_paths_for_async_recipient", b"cln-recipient".hex())
    paths = decode_path_list(bytes.fromhex(paths_hex))
    assert 1 <= len(paths) <= 3
    t0 = time.time()
    cln.rpc.call("asyncreceive-setserver", {"paths": paths_hex})
    wait_for(lambda: len(ready(cln)) == 10, timeout=150)
    print(f"10 slots ready {time.time() - t0:.1f}s after setserver to the LDK server")
    offers = ready(cln)
    assert sorted(o["slot"] for o in offers) == list(range(10))
    assert len({o["offer_id"] for o in offers}) == 10
    for o in offers:
        d = cln.rpc.decode(o["offer"])
        assert d["valid"] and d["type"] == "bolt12 offer"
        assert d["offer_id"] == o["offer_id"]
        assert d["offer_paths"] and all(p["first_node_id"] == ldk.id for p in d["offer_paths"]), d["offer_paths"]
    st = cln.rpc.call("asyncreceive-status")
    assert st["slot_status"]["ready"] == 10
    # LDK persisted them: its log says so for every slot
    log = ldk.log()
    assert log.count("Persisting static invoice") + log.count("persist") >= 1


def test_cln_server_ldk_recipient(node_factory, ldk_factory, bitcoind):
    """Scenario 2: a CLN node with our plugin is the static invoice server of an ldk-node (role Client)."""
    cln = node_factory.get_node(options={"plugin": PLUGIN})
    ldk = ldk_factory("client")
    cln.fundwallet(10**7)
    cln.rpc.connect(ldk.id, "127.0.0.1", ldk.port)
    # the server (LSP) opens an unannounced channel to its client: the client gets inbound liquidity for the
    # blinded payment paths of its static invoice
    cln.rpc.fundchannel(ldk.id, 1_000_000, announce=False)
    bitcoind.generate_block(6, wait_for_mempool=1)
    wait_for(lambda: cln_channel_normal(cln, ldk.id), timeout=90)
    wait_for(lambda: ldk_channel_usable(ldk, cln.info["id"]), timeout=90)

    r = cln.rpc.call("asyncserver-addclient", {"client_id": "ldk-recipient"})
    t0 = time.time()
    ldk.call("set_paths_to_static_invoice_server", r["paths_hex"])
    wait_for(lambda: ldk.try_call("async_offer") is not None, timeout=150)
    offer = ldk.call("async_offer")
    print(f"LDK async offer ready {time.time() - t0:.1f}s after set_paths_to_static_invoice_server")
    d = cln.rpc.decode(offer)
    assert d["valid"] and d["type"] == "bolt12 offer"
    assert all(p["first_node_id"] == cln.info["id"] for p in d["offer_paths"]), d["offer_paths"]
    stored = cln.rpc.call("asyncserver-listinvoices", {"client_id": "ldk-recipient"})["invoices"]
    assert d["offer_id"] in {i["offer_id"] for i in stored}, (d["offer_id"], stored)
    inv = next(i for i in stored if i["offer_id"] == d["offer_id"])
    assert inv["size"] <= 5120
