"""Live interop with ldk-node 0.7.1 (crates.io), issue 6: LDK as static invoice server for a CLN recipient, a CLN
static invoice server for an LDK recipient (scenarios 1 and 2), an LDK payer paying a CLN recipient's async offer
(3) and `asyncreceive-pay` paying an LDK recipient's async offer (4)."""

import time

import pytest

from pyln.testing.utils import wait_for

from asyncreceive.wire.paths import decode_path_list
from tests.interop.conftest import PLUGIN, LdkNode, fund_ldk

# ldk-node on regtest has no fee estimates and uses 253 sat/kw; CLN's mocked default (lowest 3750) makes it
# refuse anything below 1875.  LDK warns CLN that it ignores peer_storage without a channel: allowed.
CLN_WITH_LDK = dict(feerates=(15000, 11000, 7500, 253), allow_warning=True)


def ready(node):
    return node.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]


#: what LDK's OnionMessenger logs when it drops a message it could not decode or authenticate
LDK_ONION_ERRORS = ("Errored decoding onion message packet", "Received bogus onion message packet",
                    "Received an unauthenticated", "wrong or missing context")


def ldk_onion_errors(ldk):
    return [line for line in ldk.log().splitlines() if any(e in line for e in LDK_ONION_ERRORS)]


def wait_with_blocks(bitcoind, success, timeout, every=40):
    """wait_for, mining a block every ``every`` seconds: gossip that one side sent before the other had
    seen enough blocks (under load) goes again on a later block."""
    deadline = time.time() + timeout
    while True:
        try:
            return wait_for(success, timeout=min(every, max(1, deadline - time.time())))
        except ValueError:
            if time.time() >= deadline:
                raise
            bitcoind.generate_block(1)


def cln_channel_normal(node, peer_id):
    chans = node.rpc.listpeerchannels(peer_id)["channels"]
    return bool(chans) and chans[0]["state"] == "CHANNELD_NORMAL"


def ldk_channel_usable(ldk, peer_id):
    return any(c["counterparty_node_id"] == peer_id and c["is_usable"] for c in ldk.call("list_channels"))


def intro_node(node, path):
    """A decoded offer path's introduction node id; a compact one (scid + direction, LDK's choice for offer
    paths) is resolved against `node`'s own channels: direction 0 is the channel's lesser node id."""
    if "first_node_id" in path:
        return path["first_node_id"]
    for c in node.rpc.listpeerchannels()["channels"]:
        if c.get("short_channel_id") == path["first_scid"]:
            return sorted([node.info["id"], c["peer_id"]])[path["first_scid_dir"]]
    raise AssertionError(f"introduction scid {path['first_scid']} is not a channel of {node.info['id']}")


def test_ldk_server_cln_recipient(node_factory, ldk_factory, bitcoind):
    """Scenario 1: ldk-node (role Server) is the static invoice server of a CLN recipient with our plugin."""
    cln = node_factory.get_node(options={"plugin": PLUGIN, "asyncreceive-tick-seconds": 10}, **CLN_WITH_LDK)
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
    # LDK's server paths start at the LDK node, given compactly (scid + direction, no dummy hops); the
    # recipient resolves the scid through lightningd
    for p in paths:
        i = p.introduction
        as_json = ({"first_node_id": i.node_id.hex()} if i.node_id else
                   {"first_scid": f"{i.scid >> 40}x{(i.scid >> 16) & 0xFFFFFF}x{i.scid & 0xFFFF}",
                    "first_scid_dir": i.direction})
        print("LDK server path:", as_json, len(p.hops), "hop(s)")
        assert intro_node(cln, as_json) == ldk.id, as_json
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
        assert d["offer_paths"] and all(intro_node(cln, p) == ldk.id for p in d["offer_paths"]), d["offer_paths"]
    st = cln.rpc.call("asyncreceive-status")
    print("recipient messages:", st["messages"], "ignored:", st["ignored"])
    assert st["slot_status"]["ready"] == 10
    assert st["messages"]["received"]["offer_paths"] >= 10
    assert st["messages"]["received"]["static_invoice_persisted"] >= 10
    assert st["messages"]["dropped"] == {} and st["ignored"] == {}
    assert ldk_onion_errors(ldk) == []


def lsp_channel_to_ldk_client(cln, ldk, bitcoind):
    """The CLN server (LSP) opens an unannounced channel to its LDK client: the client gets inbound
    liquidity for the blinded payment paths of its static invoice."""
    cln.fundwallet(10**7)
    cln.rpc.connect(ldk.id, "127.0.0.1", ldk.port)
    cln.rpc.fundchannel(ldk.id, 1_000_000, announce=False)
    bitcoind.generate_block(6, wait_for_mempool=1)
    wait_for(lambda: cln_channel_normal(cln, ldk.id), timeout=90)
    wait_for(lambda: ldk_channel_usable(ldk, cln.info["id"]), timeout=90)


def test_cln_server_ldk_recipient(node_factory, ldk_factory, bitcoind):
    """Scenario 2: a CLN node with our plugin is the static invoice server of an ldk-node (role Client)."""
    cln = node_factory.get_node(options={"plugin": PLUGIN}, **CLN_WITH_LDK)
    ldk = ldk_factory("client")
    lsp_channel_to_ldk_client(cln, ldk, bitcoind)

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
    st = cln.rpc.call("asyncreceive-status")
    print("server messages:", st["messages"])
    assert st["messages"]["received"]["offer_paths_request"] >= 1
    assert st["messages"]["received"]["serve_static_invoice"] >= 1
    assert st["messages"]["sent"]["static_invoice_persisted"] >= 1
    assert st["messages"]["dropped"] == {}
    assert ldk_onion_errors(ldk) == []


def ldk_payment(ldk, payment_id):
    return next(p for p in ldk.call("list_payments") if p["id"] == payment_id)


def ldk_payer_setup(node_factory, ldk_factory, bitcoind, public_peer, announced_payer=False):
    """LDK payer --unannounced--> CLN server --announced--> CLN recipient (both CLN nodes with our plugin);
    with `public_peer`, a third CLN node has an announced channel to the server as well (see below); with
    `announced_payer` the payer's channel is announced (its reply paths then use a compact introduction)."""
    opts = dict(plugin=PLUGIN, may_reconnect=True, **CLN_WITH_LDK)
    nodes = node_factory.line_graph(3 if public_peer else 2, fundchannel=True, wait_for_announce=True, opts=opts)
    server, recipient = nodes[-2:]
    payer = ldk_factory("none")
    fund_ldk(bitcoind, payer)
    payer.call("open_announced_channel" if announced_payer else "open_channel", server.info["id"],
               f"127.0.0.1:{server.port}", 1_000_000)
    bitcoind.generate_block(6, wait_for_mempool=1)
    wait_for(lambda: cln_channel_normal(server, payer.id), timeout=90)
    wait_for(lambda: ldk_channel_usable(payer, server.info["id"]), timeout=90)
    if public_peer:
        wait_for(lambda: recipient.rpc.listincoming()["incoming"][0]["incoming_capacity_msat"] > 0, timeout=60)
    print("recipient listincoming:", recipient.rpc.listincoming()["incoming"])
    r = server.rpc.call("asyncserver-addclient", {"client_id": "cln-recipient"})
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    wait_for(lambda: len(ready(recipient)) >= 1, timeout=120)
    return payer, server, recipient, recipient.rpc.call("asyncreceive-getoffer")


def check_ldk_paid(payer, recipient, pid, offer, t0, timeout=120):
    try:
        wait_for(lambda: ldk_payment(payer, pid)["status"] != "pending", timeout=timeout)
    except ValueError:
        keys = ("eld", "elease", "nion", "ayment", "HTLC")
        print("LDK payer log (payment lines):", *[ln for ln in payer.log().splitlines() if any(k in ln for k in keys)][-40:],
              sep="\n")
        raise
    p = ldk_payment(payer, pid)
    print(f"LDK payment {p['status']} {time.time() - t0:.1f}s after pay_offer:", p)
    assert p["status"] == "succeeded", (p, [ln for ln in payer.log().splitlines() if "Fail" in ln][-5:])
    got = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    assert len(got) == 1 and got[0]["offer_id"] == offer["offer_id"], got
    assert 50_000 <= got[0]["amount_msat"] <= 50_001 and got[0]["payer_note"] == "from ldk"
    assert got[0]["payment_hash"] == p["payment_hash"] and got[0]["preimage"] == p["preimage"]
    assert ldk_onion_errors(payer) == []


# Our recipient puts listincoming's `incoming_capacity_msat` into its blinded payment paths' payinfo as
# htlc_maximum_msat (asyncreceive/recipient/invoice.py, max(1, ch.incoming_capacity_msat)).  That field is the
# capacity of the *peer's other public channels* as the recipient's gossip knows them, so when the server has no
# other announced channel it is 0 and the payinfo says htlc_maximum_msat = 1: LDK's router then finds no route
# (PaymentFailed RouteNotFound).  With a third node's announced channel to the server it is > 0.
# server_only_private_payer once failed with LDK RouteNotFound: our payinfo took htlc_maximum_msat from
# listincoming's incoming_capacity_msat (0 when the server has no other public channel); it now uses the
# peer's channel_update htlc_max_msat.
# announced_payer: LDK's reply paths name the payer--server channel as a compact (sciddir) introduction, which
# the recipient's gossip may not have yet ("unknown channel"); the recipient then tries its channel peers.
@pytest.mark.parametrize("public_peer,announced_payer", [(True, False), (False, False), (False, True)],
                         ids=["server_has_public_peer", "server_only_private_payer", "announced_payer"])
def test_ldk_pays_cln_recipient(node_factory, ldk_factory, bitcoind, public_peer, announced_payer):
    """Scenario 3, recipient online: LDK's Bolt12Payment::send_using_amount on our recipient's async offer.
    LDK gets the static invoice from our server (and an invoice from the online recipient), sends
    held_htlc_available; the recipient answers release_held_htlc and claims the HTLC."""
    payer, server, recipient, offer = ldk_payer_setup(node_factory, ldk_factory, bitcoind, public_peer,
                                                      announced_payer)
    t0 = time.time()
    pid = payer.call("pay_offer", offer["offer"], 50_000, "from", "ldk")
    check_ldk_paid(payer, recipient, pid, offer, t0)
    if announced_payer:
        guessed = recipient.daemon.is_in_log(r"trying the path's introduction among our peers")
        print("recipient had to guess the compact introduction:", bool(guessed))


def test_ldk_pays_cln_amount_offer(node_factory, ldk_factory, bitcoind):
    """An offer with an amount and a description (asyncreceive-getoffer's dedicated offer): LDK's
    send_using_amount with the offer's amount pays it; the recipient claims it against that offer."""
    payer, server, recipient, _ = ldk_payer_setup(node_factory, ldk_factory, bitcoind, True)
    wait_for(lambda: len(ready(recipient)) >= 1, timeout=120)
    offer = recipient.rpc.call("asyncreceive-getoffer", {"amount_msat": 50_000, "description": "ldk's coffee"})
    assert recipient.rpc.decode(offer["offer"])["offer_amount_msat"] == 50_000
    t0 = time.time()
    pid = payer.call("pay_offer", offer["offer"], 50_000, "from", "ldk")
    check_ldk_paid(payer, recipient, pid, offer, t0)


def test_ldk_pays_offline_cln_recipient(node_factory, ldk_factory, bitcoind):
    """Scenario 3 as specified: the CLN recipient is stopped when LDK pays, and started again later.

    LDK sends held_htlc_available once per message path.  Our server holds the one on the invoice's
    server -> phantom path (its mailbox) and relays it when the recipient reconnects."""
    payer, server, recipient, offer = ldk_payer_setup(node_factory, ldk_factory, bitcoind, True)
    recipient.stop()
    t0 = time.time()
    pid = payer.call("pay_offer", offer["offer"], 50_000, "from", "ldk")
    server.daemon.wait_for_log(r"served static invoice of client 'cln-recipient'")
    wait_for(lambda: server.rpc.call("asyncreceive-status")["held_messages"] >= 1, timeout=30)
    time.sleep(5)
    print("LDK payment while the recipient is offline:", ldk_payment(payer, pid))
    assert ldk_payment(payer, pid)["status"] == "pending"
    t1 = time.time()
    recipient.start()
    check_ldk_paid(payer, recipient, pid, offer, t0, timeout=60)
    print(f"paid {time.time() - t1:.1f}s after the recipient started")
    server.daemon.wait_for_log(r"client 'cln-recipient': relayed [1-9]\d* held onion message")
    assert server.rpc.call("asyncreceive-status")["held_messages"] == 0
    relayed = recipient.rpc.call("asyncreceive-status")["messages"]["relayed"]
    print("recipient: relayed to it by the server:", relayed)
    assert relayed.get("held_htlc_available", 0) >= 1


def cln_payer_setup(node_factory, ldk_factory, bitcoind):
    """CLN payer --announced--> CLN server --unannounced--> LDK recipient (role Client, as in scenario 2)."""
    payer, server = node_factory.line_graph(2, fundchannel=True, wait_for_announce=True,
                                            opts=dict(plugin=PLUGIN, may_reconnect=True, **CLN_WITH_LDK))
    ldk = ldk_factory("client")
    lsp_channel_to_ldk_client(server, ldk, bitcoind)
    r = server.rpc.call("asyncserver-addclient", {"client_id": "ldk-recipient"})
    ldk.call("set_paths_to_static_invoice_server", r["paths_hex"])
    wait_for(lambda: ldk.try_call("async_offer") is not None, timeout=150)
    return payer, server, ldk, ldk.call("async_offer")


def cln_pay(payer, pid):
    return next(p for p in payer.rpc.call("asyncreceive-listpays")["pays"] if p["payment_id"] == pid)


def check_ldk_received(payer, ldk, pid, t0, timeout=120):
    wait_for(lambda: cln_pay(payer, pid)["status"] in ("complete", "failed"), timeout=timeout)
    p = cln_pay(payer, pid)
    print(f"asyncreceive-pay {p['status']} {time.time() - t0:.1f}s after the call:", p)
    assert p["status"] == "complete", p
    wait_for(lambda: any(x["direction"] == "inbound" and x["status"] == "succeeded"
                         for x in ldk.call("list_payments")), timeout=60)
    inbound = [x for x in ldk.call("list_payments") if x["direction"] == "inbound"]
    print("LDK received:", inbound)
    assert len(inbound) == 1 and inbound[0]["payment_hash"] == p["payment_hash"]
    assert inbound[0]["preimage"] == p["payment_preimage"] and inbound[0]["amount_msat"] >= 40_000
    assert ldk_onion_errors(ldk) == []


def test_cln_pays_ldk_recipient(node_factory, ldk_factory, bitcoind):
    """Scenario 4, recipient online: asyncreceive-pay on an ldk-node recipient's async offer."""
    payer, server, ldk, offer = cln_payer_setup(node_factory, ldk_factory, bitcoind)
    t0 = time.time()
    pid = payer.rpc.call("asyncreceive-pay", {"offer": offer, "amount_msat": 40_000,
                                              "payer_note": "from cln"})["payment_id"]
    check_ldk_received(payer, ldk, pid, t0)


def test_cln_pays_offline_ldk_recipient(node_factory, ldk_factory, ldk_binary, bitcoind):
    """Scenario 4 with the LDK recipient stopped when the CLN payer pays and started again (same storage)
    15 s later: the payer's held_htlc_available retries reach it and it releases the payment."""
    payer, server, ldk, offer = cln_payer_setup(node_factory, ldk_factory, bitcoind)
    ldk.stop()
    wait_for(lambda: not server.rpc.listpeers(ldk.id)["peers"]
             or not server.rpc.listpeers(ldk.id)["peers"][0]["connected"])
    t0 = time.time()
    pid = payer.rpc.call("asyncreceive-pay", {"offer": offer, "amount_msat": 40_000,
                                              "payer_note": "while you were out"})["payment_id"]
    wait_for(lambda: cln_pay(payer, pid)["status"] == "waiting_release")
    time.sleep(15)
    assert cln_pay(payer, pid)["status"] == "waiting_release"
    ldk = LdkNode(ldk_binary, ldk.directory, bitcoind, "client")
    try:
        ldk.call("connect", server.info["id"], f"127.0.0.1:{server.port}")
        check_ldk_received(payer, ldk, pid, t0, timeout=150)
    finally:
        ldk.stop()


def test_ldk_server_holds_for_offline_cln_recipient(node_factory, ldk_factory, bitcoind):
    """LDK payer -> ldk-node server (role Server, which holds onion messages for offline channel peers)
    -> CLN recipient, stopped when LDK pays.  The recipient's plain held-HTLC paths (server -> recipient
    node -> phantom) need nothing more: ldk-node re-sends the held onion_message when the recipient
    reconnects, lightningd peels its layer and hands the rest to our phantom as usual."""
    cln = node_factory.get_node(options={"plugin": PLUGIN}, may_reconnect=True, **CLN_WITH_LDK)
    server = ldk_factory("server")
    payer = ldk_factory("none")
    fund_ldk(bitcoind, server)
    fund_ldk(bitcoind, payer)
    server.call("open_announced_channel", cln.info["id"], f"127.0.0.1:{cln.port}", 1_000_000)
    payer.call("open_channel", server.id, f"127.0.0.1:{server.port}", 1_000_000)
    bitcoind.generate_block(6, wait_for_mempool=2)
    wait_for(lambda: cln_channel_normal(cln, server.id), timeout=90)
    wait_for(lambda: ldk_channel_usable(server, cln.info["id"]) and ldk_channel_usable(payer, server.id), timeout=90)
    # the recipient's payment paths need the server's channel_update (listincoming), which LDK sends once
    # the channel is announced; under load that takes a while
    wait_for(lambda: server.id in server.call("graph_nodes"), timeout=120)
    wait_with_blocks(bitcoind, lambda: any(c["id"] == server.id for c in cln.rpc.listincoming()["incoming"]),
                     timeout=420)   # LDK may first announce it disabled, and re-enable it minutes later
    cln.rpc.call("asyncreceive-setserver",
                 {"paths": server.call("blinded_paths_for_async_recipient", b"cln-recipient".hex())})
    wait_for(lambda: len(ready(cln)) >= 1, timeout=150)
    offer = cln.rpc.call("asyncreceive-getoffer")
    cln.stop()
    t0 = time.time()
    pid = payer.call("pay_offer", offer["offer"], 50_000, "from", "ldk")
    time.sleep(10)
    print("LDK payment while the recipient is offline:", ldk_payment(payer, pid)["status"])
    assert ldk_payment(payer, pid)["status"] == "pending"
    t1 = time.time()
    cln.start()
    cln.rpc.connect(server.id, "127.0.0.1", server.port)  # as a wallet does with its LSP when it starts
    try:
        check_ldk_paid(payer, cln, pid, offer, t0, timeout=90)
    finally:
        keys = ("ntercept", "atelimit", "Failed to forward", "peer_connected", "PeerConnected", "arning")
        print("LDK server log:", *[ln[:300] for ln in server.log().splitlines() if any(k in ln for k in keys)][-30:],
              sep="\n")
    print(f"paid {time.time() - t1:.1f}s after the recipient started")
    assert cln.rpc.call("asyncreceive-status")["messages"]["relayed"] == {}  # LDK's mailbox, not ours


def test_ldk_and_cln_servers_hold_same_offers(node_factory, ldk_factory, bitcoind):
    """A CLN recipient enrolled at two static invoice servers at once: ldk-node (role Server, announced
    channel to the recipient) and a CLN node with our plugin (announced channel to the recipient).  Every
    offer carries both servers' offer paths and the same static invoice is served to both; LDK's server
    checks only the invoice's expiry, size and reply path (lightning 0.2.7, `verify_serve_static_invoice_
    message`), not the offer's paths, so it stores and confirms the invoice as ours does.  Then one offer is
    paid with asyncreceive-pay from the CLN server (recipient online: it answers the invoice_request)."""
    slots = 3
    opts = {"plugin": PLUGIN, "asyncreceive-slots": slots, "asyncreceive-tick-seconds": 2}
    cln, server = node_factory.get_nodes(2, opts=dict(opts, **CLN_WITH_LDK))
    ldk = ldk_factory("server")
    fund_ldk(bitcoind, ldk)
    ldk.call("open_announced_channel", cln.info["id"], f"127.0.0.1:{cln.port}", 1_000_000)
    server.fundwallet(10**7)
    server.rpc.connect(cln.info["id"], "127.0.0.1", cln.port)
    server.rpc.fundchannel(cln.info["id"], 1_000_000)
    bitcoind.generate_block(6, wait_for_mempool=2)
    wait_for(lambda: cln_channel_normal(cln, ldk.id) and cln_channel_normal(cln, server.info["id"]), timeout=90)
    wait_for(lambda: ldk_channel_usable(ldk, cln.info["id"]), timeout=90)
    wait_for(lambda: ldk.id in ldk.call("graph_nodes"), timeout=90)

    paths_ldk = ldk.call("blinded_paths_for_async_recipient", b"cln-recipient".hex())
    paths_cln = server.rpc.call("asyncserver-addclient", {"client_id": "phone"})["paths_hex"]
    t0 = time.time()
    cln.rpc.call("asyncreceive-setserver", {"servers": [paths_ldk, paths_cln]})
    ids = {s["paths_hex"]: s["id"] for s in cln.rpc.call("asyncreceive-status")["servers"]}
    assert set(ids) == {paths_ldk, paths_cln}

    def held_by_both():
        offers = ready(cln)
        return len(offers) == slots and all(sorted(s["id"] for s in o["servers"]) == sorted(ids.values())
                                            and [s["confirmed"] for s in o["servers"]] == [True, True]
                                            for o in offers)
    try:
        wait_for(held_by_both, timeout=150)
    finally:
        print("recipient offers:", cln.rpc.call("asyncreceive-listoffers")["offers"])
        print("recipient servers:", cln.rpc.call("asyncreceive-status")["servers"])
    took = time.time() - t0
    print(f"{slots} slots held by both the LDK and the CLN server {took:.1f}s after setserver")

    offers = ready(cln)
    assert sorted(o["slot"] for o in offers) == list(range(slots))
    for o in offers:
        d = cln.rpc.decode(o["offer"])
        assert d["valid"] and d["type"] == "bolt12 offer" and d["offer_id"] == o["offer_id"]
        intros = [intro_node(cln, p) for p in d["offer_paths"]]
        assert set(intros) == {ldk.id, server.info["id"]}, (intros, d["offer_paths"])
        print(f"slot {o['slot']}: offer paths start at", ["LDK" if i == ldk.id else "CLN" for i in intros])
    stored = server.rpc.call("asyncserver-listinvoices", {"client_id": "phone"})["invoices"]
    assert {o["offer_id"] for o in offers} <= {i["offer_id"] for i in stored}, (offers, stored)
    st = cln.rpc.call("asyncreceive-status")
    for s in st["servers"]:
        assert s["state"] == "answering" and s["offers"] == slots and s["payable_offers"] == slots, s
    print("recipient messages:", st["messages"], "ignored:", st["ignored"])
    assert st["messages"]["received"]["static_invoice_persisted"] >= 2 * slots
    assert st["messages"]["dropped"] == {}
    # an offer first built on one server's paths is rebuilt (a new offer_id) when the other's arrive; the
    # first server's confirmation of the replaced offer is then stale, and only that is ignored
    assert set(st["ignored"]) <= {"stale_persisted"}, st["ignored"]
    assert server.rpc.call("asyncreceive-status")["messages"]["dropped"] == {}
    assert ldk_onion_errors(ldk) == []

    # one of these offers paid: asyncreceive-pay on the CLN server (recipient online)
    wait_for(lambda: any(c["id"] == server.info["id"] for c in cln.rpc.listincoming()["incoming"]), timeout=90)
    offer = cln.rpc.call("asyncreceive-getoffer")
    t1 = time.time()
    pid = server.rpc.call("asyncreceive-pay", {"offer": offer["offer"], "amount_msat": 20_000})["payment_id"]
    wait_for(lambda: cln_pay(server, pid)["status"] in ("complete", "failed"), timeout=90)
    p = cln_pay(server, pid)
    print(f"asyncreceive-pay from the CLN server: {p['status']} via {p.get('route')} in {time.time() - t1:.1f}s")
    assert p["status"] == "complete", p
    got = cln.rpc.call("asyncreceive-listpayments")["payments"]
    assert [(x["offer_id"], x["preimage"]) for x in got] == [(offer["offer_id"], p["payment_preimage"])], got
