"""One offer through two static invoice servers, with real nodes.

Payer l1 has channels to server A (l2) and server B (l3); both have a channel to the recipient l4.  The
recipient is enrolled at both: each offer carries A's and B's offer paths, and each server stores its
static invoice.  (a) the server of the offer's first path stopped: asyncreceive-pay is still answered by
the other and paid, also while the recipient is offline (the other's mailbox holds the release
request); (b) A stopped before the recipient starts: every slot
fills from B; (c) A removed with setserver: its slots are refilled from B, and that survives a restart.
"""

import json
import subprocess
import time

from pyln.testing.utils import wait_for

from asyncreceive.wire.bolt12.offer import Offer

from tests.integration.test_payments import pay_of

SLOTS = 3
FILL_TIMEOUT = 90


def four_nodes(node_factory, plugin_opts, slots=SLOTS):
    opts = dict(plugin_opts, may_reconnect=True, **{"asyncreceive-slots": slots, "asyncreceive-tick-seconds": 2})
    payer, a, b, recipient = node_factory.get_nodes(4, opts=opts)
    node_factory.join_nodes([payer, a, recipient], wait_for_announce=False)
    node_factory.join_nodes([payer, b, recipient], wait_for_announce=True)
    for n in (payer, a, b, recipient):   # everyone sees all four channels, both ways
        wait_for(lambda: len([c for c in n.rpc.listchannels()["channels"] if c["active"]]) == 8)
    return payer, a, b, recipient


def enrol(server):
    return server.rpc.call("asyncserver-addclient", {"client_id": "phone"})["paths_hex"]


def servers(recipient):
    return recipient.rpc.call("asyncreceive-status")["servers"]


def held_by_both(recipient, n=SLOTS):
    offers = recipient.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]
    return len([o for o in offers if sum(s["confirmed"] for s in o["servers"]) == 2]) >= n


def server_id(recipient, server):
    """The recipient's id for a server, found by the node its offers' paths name."""
    for o in recipient.rpc.call("asyncreceive-listoffers")["offers"]:
        for p, srv in zip(Offer.from_string(o["offer"]).paths, o["servers"]):
            if p.first_node_id.hex() == server.info["id"]:
                return srv["id"]
    raise AssertionError(f"no offer has a path at {server.info['id']}")


def pay(payer, offer, amount):
    r = payer.rpc.call("asyncreceive-pay", {"offer": offer, "amount_msat": amount})
    return r["payment_id"]


def test_two_servers_one_down_payer_paid_via_b(node_factory, plugin_opts):
    """(a) Redundant offers, paid by stock fetchinvoice + pay; the server of the offer's first path stopped:
    an offer handed out since starts at the other server and stock CLN pays it; the offer handed out
    before is paid by asyncreceive-pay (answered by the other), recipient online; then recipient offline
    too: the other server's mailbox holds the release request, paid when the recipient returns."""
    payer, a, b, recipient = four_nodes(node_factory, plugin_opts)
    recipient.rpc.call("asyncreceive-setserver", {"servers": [enrol(a), enrol(b)]})
    t0 = time.time()
    wait_for(lambda: held_by_both(recipient), timeout=FILL_TIMEOUT)
    print(f"{SLOTS} offers held by both servers in {time.time() - t0:.1f} s")
    got = recipient.rpc.call("asyncreceive-getoffer")
    offer = Offer.from_string(got["offer"])
    ids = [p.first_node_id.hex() for p in offer.paths]
    assert sorted(ids) == sorted([a.info["id"], b.info["id"]])
    for server in (a, b):
        assert [i["offer_id"] for i in server.rpc.call("asyncserver-listinvoices")["invoices"]
                if i["slot"] == got["slot"]] == [got["offer_id"]]
    # a stock CLN payer uses such an offer (recipient online: its own invoice, proof of payment)
    inv = payer.rpc.fetchinvoice(offer=got["offer"], amount_msat=11_000, timeout=30)
    assert payer.rpc.pay(inv["invoice"])["status"] == "complete"
    # the server whose path comes first in the offer goes down: payers try that one first.  (Stock CLN's
    # fetchinvoice then times out: it moves to the next path only when it cannot route to the first's
    # introduction node; see docs/recipient.md.)
    down, up = (a, b) if ids[0] == a.info["id"] else (b, a)
    down.stop()
    # the recipient sees it is no longer connected to it: getoffer now hands out an offer whose first path
    # is the other server's, which a stock CLN payer can use
    wait_for(lambda: [s["connected"] for s in servers(recipient) if s["id"] == server_id(recipient, down)] == [False])
    fresh = recipient.rpc.call("asyncreceive-getoffer")
    assert Offer.from_string(fresh["offer"]).paths[0].first_node_id.hex() == up.info["id"]
    t0 = time.time()
    inv = payer.rpc.fetchinvoice(offer=fresh["offer"], amount_msat=10_000, timeout=30)
    assert payer.rpc.pay(inv["invoice"])["status"] == "complete"
    print(f"stock fetchinvoice + pay, one server down, an offer handed out since: complete in "
          f"{time.time() - t0:.1f} s")

    # our payer, recipient online: its first try goes to A's path (lost), the next to B's
    t0 = time.time()
    pid = pay(payer, got["offer"], 12_000)
    wait_for(lambda: pay_of(payer, pid)["status"] in ("complete", "failed"), timeout=90)
    done = pay_of(payer, pid)
    print(f"asyncreceive-pay, first server down, recipient online: {done['status']} via {done['route']} in "
          f"{time.time() - t0:.1f} s, {done['attempts']} tries")
    assert done["status"] == "complete"

    # recipient offline too: B's static invoice, B's mailbox holds held_htlc_available until it returns
    recipient.stop()
    t0 = time.time()
    pid = pay(payer, got["offer"], 13_000)
    wait_for(lambda: pay_of(payer, pid)["status"] == "waiting_release", timeout=90)
    up.daemon.wait_for_log("holding an onion message for client")
    print(f"asyncreceive-pay, first server and recipient down: waiting for the release after {time.time() - t0:.1f} s")
    recipient.start()
    wait_for(lambda: pay_of(payer, pid)["status"] in ("complete", "failed"), timeout=180)
    done = pay_of(payer, pid)
    print(f"... paid after the recipient came back: {done['status']} via {done['route']} "
          f"({time.time() - t0:.1f} s in all)")
    assert done["status"] == "complete" and done["route"] == "static"
    received = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    assert done["payment_preimage"] in [p["preimage"] for p in received]


def test_server_down_before_start_slots_fill_from_other(node_factory, plugin_opts):
    """(b) Server A is stopped before the recipient starts: every slot fills from B within the usual time,
    and A is shown down."""
    payer, a, b, recipient = four_nodes(node_factory, plugin_opts)
    pa, pb = enrol(a), enrol(b)
    recipient.stop()
    a.stop()
    recipient.start()
    # as the README says to: lightning-cli with -k servers='[...]'
    out = subprocess.run(["lightning-cli", f"--lightning-dir={recipient.daemon.lightning_dir}", "--network=regtest",
                          "asyncreceive-setserver", "-k", f'servers=["{pa}","{pb}"]'],
                         capture_output=True, text=True, check=True).stdout
    assert [x["id"] for x in json.loads(out)["servers"]] == [s["id"] for s in servers(recipient)]
    t0 = time.time()
    wait_for(lambda: len(recipient.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]) == SLOTS,
             timeout=FILL_TIMEOUT)
    took = time.time() - t0
    print(f"{SLOTS} slots ready from B alone in {took:.1f} s")
    wait_for(lambda: [s["state"] for s in servers(recipient)] == ["down", "answering"], timeout=60)
    for o in recipient.rpc.call("asyncreceive-listoffers")["offers"]:
        assert [s["confirmed"] for s in o["servers"]] == [True] and o["servers"][0]["id"] == servers(recipient)[1]["id"]
    # A comes back: its next round adds its paths to the offers not handed out yet
    a.start()
    t0 = time.time()
    wait_for(lambda: held_by_both(recipient), timeout=300)
    print(f"A back: offers held by both after {time.time() - t0:.1f} s")


def test_removed_server_slots_refilled_after_restart(node_factory, plugin_opts):
    """(c) Server A removed with setserver: the slots it held that were not handed out are refilled from
    B; the handed-out offer keeps both servers' paths; all of it survives a restart."""
    payer, a, b, recipient = four_nodes(node_factory, plugin_opts)
    pa, pb = enrol(a), enrol(b)
    recipient.rpc.call("asyncreceive-setserver", {"servers": [pa, pb]})
    wait_for(lambda: held_by_both(recipient), timeout=FILL_TIMEOUT)
    out = recipient.rpc.call("asyncreceive-getoffer")
    recipient.rpc.call("asyncreceive-setserver", {"servers": [pb]})
    t0 = time.time()

    def refilled():
        offers = recipient.rpc.call("asyncreceive-listoffers")["offers"]
        rest = [o for o in offers if o["offer_id"] != out["offer_id"]]
        return len(rest) == SLOTS - 1 and all(o["status"] == "ready" and len(o["servers"]) == 1 for o in rest)
    wait_for(refilled, timeout=FILL_TIMEOUT)
    print(f"A removed: {SLOTS - 1} slots refilled from B in {time.time() - t0:.1f} s")
    before = recipient.rpc.call("asyncreceive-listoffers")["offers"]
    kept = next(o for o in before if o["offer_id"] == out["offer_id"])
    assert kept["status"] == "used" and len(kept["servers"]) == 2
    recipient.restart()
    assert recipient.rpc.call("asyncreceive-listoffers")["offers"] == before
    assert [s["paths_hex"] for s in servers(recipient)] == [pb]
    # the offer handed out still pays (A is still up and still serves it, B too)
    pid = pay(payer, out["offer"], 9_000)
    wait_for(lambda: pay_of(payer, pid)["status"] in ("complete", "failed"), timeout=90)
    assert pay_of(payer, pid)["status"] == "complete"
