"""asyncreceive-pay against real nodes (payer l1 -> server l2 -> recipient l3): offers whose paths start at
a node that is not our peer, proof of payment when the payee is online, and cancel racing a release."""

import hashlib
import time

from pyln.testing.utils import wait_for

from tests.integration.test_payments import pay_of, pays, setup


def paid_by(payer, offer, amount):
    t0 = time.time()
    r = payer.rpc.call("asyncreceive-pay", {"offer": offer, "amount_msat": amount})
    wait_for(lambda: pay_of(payer, r["payment_id"])["status"] in ("complete", "failed"), timeout=60)
    done = pay_of(payer, r["payment_id"])
    return done, time.time() - t0


def test_stock_cln_offers_whose_path_starts_elsewhere(node_factory, plugin_opts):
    """Offers made by stock CLN on a line payer - hop - server - recipient: CLN starts an offer's blinded
    path at a peer of its node (or at the node), which is not the payer's peer.  The reply path starts
    at the payer's channel peer, so the answer finds its way back; each offer is paid with the payee's
    invoice (proof of payment)."""
    payer, hop, server, recipient = node_factory.line_graph(4, fundchannel=True, wait_for_announce=True,
                                                            opts=plugin_opts)
    for node in (server, recipient):
        offer = node.rpc.offer(amount="any", description="stock offer")["bolt12"]
        d = payer.rpc.decode(offer)
        intro = d["offer_paths"][0].get("first_node_id") if d.get("offer_paths") else None
        print(f"offer by {node.info['id'][:8]}: path starts at {intro and intro[:8]} (payer "
              f"{payer.info['id'][:8]}, its peer {hop.info['id'][:8]}, server {server.info['id'][:8]}, "
              f"recipient {recipient.info['id'][:8]})")
        done, took = paid_by(payer, offer, 7000)
        print(f"paid in {took:.2f} s: {done['step']}, route {done['route']}, attempts {done['attempts']}")
        assert done["status"] == "complete" and done["route"] == "normal"
        assert hashlib.sha256(bytes.fromhex(done["payment_preimage"])).hexdigest() == done["payment_hash"]
        invs = [i for i in node.rpc.listinvoices()["invoices"] if i["status"] == "paid"]
        assert invs[-1]["payment_hash"] == done["payment_hash"]


def test_online_recipient_gives_proof_of_payment(node_factory, plugin_opts):
    """Our async offer, recipient online: the server's static invoice arrives first, the recipient's own
    invoice during the grace time, and that one is paid (proof of payment), not the static route."""
    payer, server, recipient, offer, _ = setup(node_factory, plugin_opts)
    done, took = paid_by(payer, offer.to_string(), 30_000)
    print(f"online recipient: {done['status']} via {done['route']} in {took:.2f} s")
    assert done["status"] == "complete" and done["route"] == "normal" and done["invoice"] == "normal"
    assert hashlib.sha256(bytes.fromhex(done["payment_preimage"])).hexdigest() == done["payment_hash"]
    got = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    assert [g["preimage"] for g in got] == [done["payment_preimage"]]
    assert payer.rpc.listsendpays(payment_hash=done["payment_hash"])["payments"][-1]["status"] == "complete"


def test_cancel_then_release_pays_nothing(node_factory, plugin_opts):
    """Recipient offline: the payment waits for its release; it is cancelled; the recipient comes back and
    releases (our server relays the held message): nothing is sent, nothing is received."""
    payer, server, recipient, offer, _ = setup(node_factory, dict(plugin_opts, may_reconnect=True))
    recipient.stop()
    r = payer.rpc.call("asyncreceive-pay", {"offer": offer.to_string(), "amount_msat": 40_000})
    wait_for(lambda: "asking it to release" in pays(payer)[0]["step"], timeout=60)
    server.daemon.wait_for_log("holding an onion message for client")
    c = payer.rpc.call("asyncreceive-cancelpay", {"payment_id": r["payment_id"]})
    assert c["status"] == "cancelled"
    recipient.start()
    recipient.daemon.wait_for_log("released held HTLC", timeout=120)
    time.sleep(3)  # the release reaches the payer
    done = pays(payer)[0]
    assert done["status"] == "cancelled"
    assert payer.rpc.listsendpays()["payments"] == []
    assert recipient.rpc.call("asyncreceive-listpayments")["payments"] == []
