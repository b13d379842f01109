"""Getting paid: payer l1 -> server l2 -> recipient l3 on regtest, async HTLCs claimed by the plugin.

The payer here is lightningd itself driven with a hand-built onion (createonion + sendonion), built by
the package's payer helpers: exactly the HTLC an LDK payer sends for a static invoice (TLV 77777
invoice_request, TLV 5482373484 sender preimage).
"""

import hashlib
import os
import time

import pytest
from coincurve import PrivateKey
from pyln.client import RpcError
from pyln.testing.utils import wait_for

from asyncreceive.paying.payer import build_invoice_request, build_payment_onion
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.server.store import InvoiceRecord, invoice_key
from asyncreceive.wire import messages as m
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
from asyncreceive.wire.tlv import bigsize


def setup(node_factory, plugin_opts):
    payer, server, recipient = node_factory.line_graph(3, fundchannel=True, wait_for_announce=True,
                                                       opts=plugin_opts)
    return (payer, server, recipient) + enrol_and_get_offer(server, recipient)


def enrol_and_get_offer(server, recipient):
    """Enrol ``recipient`` at ``server`` as client "phone", wait for its 10 offers, take one: the offer and
    the static invoice the server stores for it."""
    r = server.rpc.call("asyncserver-addclient", {"client_id": "phone"})
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    wait_for(lambda: len(recipient.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]) == 10)
    offer = recipient.rpc.call("asyncreceive-getoffer")
    rec = server.rpc.listdatastore(key=invoice_key(b"phone", offer["slot"]))["datastore"][0]
    invoice = StaticInvoice.decode(InvoiceRecord.decode(bytes.fromhex(rec["hex"])).invoice)
    return Offer.from_string(offer["offer"]), invoice


def pay(payer, invoice, invreq, preimage, amount, payment_hash=None):
    height = payer.rpc.getinfo()["blockheight"]
    po = build_payment_onion(invoice, invreq, preimage, amount, height)
    payment_hash = payment_hash or hashlib.sha256(preimage).digest()
    onion = payer.rpc.createonion(hops=[{"pubkey": k.hex(), "payload": (bigsize(len(p)) + p).hex()}
                                        for k, p in po.hops], assocdata=payment_hash.hex())
    payer.rpc.sendonion(onion=onion["onion"], payment_hash=payment_hash.hex(),
                        first_hop={"id": po.first_node_id.hex(), "amount_msat": po.first_amount_msat,
                                   "delay": po.first_cltv - height},
                        shared_secrets=onion["shared_secrets"])
    return payer.rpc.waitsendpay(payment_hash.hex(), timeout=60)


def test_async_payment_claimed_and_recorded(node_factory, plugin_opts):
    payer, server, recipient, offer, invoice = setup(node_factory, plugin_opts)
    preimage = os.urandom(32)
    invreq = build_invoice_request(offer, 50_000, os.urandom(32), chain=CHAINS["regtest"], payer_note="thanks")
    before = recipient.rpc.listpeerchannels()["channels"][0]["to_us_msat"]
    res = pay(payer, invoice, invreq, preimage, 50_000)
    assert res["status"] == "complete" and res["payment_preimage"] == preimage.hex()
    pays = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    # the blinded path's fee is rounded up by the payer (BOLT 4), so the recipient may get a msat more
    assert len(pays) == 1 and 50_000 <= pays[0]["amount_msat"] <= 50_001 and pays[0]["payer_note"] == "thanks"
    assert pays[0]["offer_id"] == offer.offer_id.hex() and pays[0]["preimage"] == preimage.hex()
    recipient.daemon.wait_for_log(r"received async payment .*: 5000[01] msat")
    wait_for(lambda: recipient.rpc.listpeerchannels()["channels"][0]["to_us_msat"] == before + pays[0]["amount_msat"])


def test_bad_async_htlcs_are_not_claimed(node_factory, plugin_opts):
    payer, server, recipient, offer, invoice = setup(node_factory, plugin_opts)
    key = os.urandom(32)
    # 1. less than the invoice_request's amount
    invreq = build_invoice_request(offer, 60_000, key, chain=CHAINS["regtest"])
    with pytest.raises(RpcError):
        pay(payer, invoice, invreq, os.urandom(32), 50_000)
    recipient.daemon.wait_for_log(r"refused async HTLC .*total 50000 msat below the invoice_request amount 60000")
    # 2. a payment_hash that is not SHA256(preimage)
    invreq = build_invoice_request(offer, 50_000, key, chain=CHAINS["regtest"])
    with pytest.raises(RpcError):
        pay(payer, invoice, invreq, os.urandom(32), 50_000, payment_hash=os.urandom(32))
    recipient.daemon.wait_for_log(r"refused async HTLC .*sha256\(preimage\) != payment_hash")
    # 3. an invoice_request for an offer that is not ours
    other = Offer.build(PrivateKey().public_key.format(), offer.paths, chains=[CHAINS["regtest"]])
    with pytest.raises(RpcError):
        pay(payer, invoice, build_invoice_request(other, 50_000, key, chain=CHAINS["regtest"]),
            os.urandom(32), 50_000)
    recipient.daemon.wait_for_log(r"refused async HTLC .*invoice_request is for another offer")
    assert recipient.rpc.call("asyncreceive-listpayments")["payments"] == []
    assert recipient.rpc.getinfo()["id"]  # lightningd is still running
    # a correct payment still goes through afterwards
    pre = os.urandom(32)
    assert pay(payer, invoice, invreq, pre, 50_000)["payment_preimage"] == pre.hex()


def test_held_htlc_released(node_factory, plugin_opts):
    payer, server, recipient, offer, invoice = setup(node_factory, plugin_opts)
    assert len(invoice.message_paths) >= 2
    for _ in range(2):  # a duplicate is answered again and harms nothing
        payer.rpc.call("asyncreceive-dev-send", {"path": invoice.message_paths[0].encode().hex(),
                                                 "msgtype": m.HELD_HTLC_AVAILABLE, "body": "00", "reply": True,
                                                 "reply_via": [server.info["id"]]})
    wait_for(lambda: len(payer.rpc.call("asyncreceive-dev-received")["received"]) == 2)
    assert {r["type"] for r in payer.rpc.call("asyncreceive-dev-received")["received"]} == {m.RELEASE_HELD_HTLC}
    recipient.daemon.wait_for_log("released held HTLC for offer %s" % offer.offer_id.hex()[:16])


@pytest.mark.parametrize("server_restart", [False, True], ids=["", "server_restarts"])
def test_server_holds_held_htlc_available_for_offline_recipient(node_factory, plugin_opts, server_restart):
    """The server's mailbox, with real nodes: held_htlc_available sent *once* on the invoice's
    server -> phantom path while the recipient is down is stored by the server (lightningd could not
    forward it: onionmessage_forward_fail), relayed whole when the recipient reconnects, and answered;
    also when the server restarts while it holds the message."""
    payer, server, recipient, offer, invoice = setup(node_factory, dict(plugin_opts, may_reconnect=True))
    mailbox_path = invoice.message_paths[0]
    assert mailbox_path.first_node_id == bytes.fromhex(server.info["id"]) and len(mailbox_path.hops) == 2
    client = server.rpc.call("asyncserver-listclients")["clients"][0]
    assert client["mailbox"] is True and client["node_id"] == recipient.info["id"]
    recipient.stop()
    payer.rpc.call("asyncreceive-dev-send", {"path": mailbox_path.encode().hex(), "msgtype": m.HELD_HTLC_AVAILABLE,
                                             "body": "00", "reply": True, "reply_via": [server.info["id"]]})
    wait_for(lambda: server.rpc.call("asyncreceive-status")["held_messages"] == 1)
    time.sleep(2)
    assert payer.rpc.call("asyncreceive-dev-received")["received"] == []
    if server_restart:
        server.restart()
        assert server.rpc.call("asyncreceive-status")["held_messages"] == 1
        assert server.rpc.call("asyncserver-listclients")["clients"][0]["mailbox"] is True
        wait_for(lambda: server.rpc.listpeers(payer.info["id"])["peers"][0]["connected"])
    recipient.start()
    wait_for(lambda: len(payer.rpc.call("asyncreceive-dev-received")["received"]) == 1, timeout=60)
    assert payer.rpc.call("asyncreceive-dev-received")["received"][0]["type"] == m.RELEASE_HELD_HTLC
    server.daemon.wait_for_log(r"client 'phone': relayed 1 held onion message\(s\), 0 expired")
    assert server.rpc.call("asyncreceive-status")["held_messages"] == 0
    st = recipient.rpc.call("asyncreceive-status")["messages"]
    print("recipient messages after reconnect:", st)
    assert st["relayed"] == {"held_htlc_available": 1} and st["dropped"] == {}


def pays(node):
    return node.rpc.call("asyncreceive-listpays")["pays"]


def pay_of(node, payment_id):
    """One payment by id: listpays orders by created_at in seconds, so two made in the same second may
    come in either order."""
    return next(p for p in pays(node) if p["payment_id"] == payment_id)


def test_pay_while_recipient_offline(node_factory, plugin_opts):
    """asyncreceive-pay: the recipient is stopped, the payer gets the static invoice from the server and
    waits; when the recipient comes back it releases the payment, which completes once."""
    payer, server, recipient, offer, invoice = setup(node_factory, dict(plugin_opts, may_reconnect=True))
    recipient.stop()
    r = payer.rpc.call("asyncreceive-pay", {"offer": offer.to_string(), "amount_msat": 40_000,
                                            "payer_note": "while you were out"})
    assert r["status"] == "requested"
    wait_for(lambda: pays(payer)[0]["status"] == "waiting_release")
    server.daemon.wait_for_log(r"served static invoice of client 'phone'")
    time.sleep(5)
    assert pays(payer)[0]["status"] == "waiting_release"  # the payment waits for the recipient
    payer.restart()  # a restart of the payer loses nothing: the payment is resumed from the datastore
    assert pays(payer)[0]["status"] == "waiting_release"
    recipient.start()
    wait_for(lambda: pays(payer)[0]["status"] == "complete", timeout=180)
    done = pays(payer)[0]
    got = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    assert len(got) == 1 and got[0]["preimage"] == done["payment_preimage"]
    assert 40_000 <= got[0]["amount_msat"] <= 40_001 and got[0]["payer_note"] == "while you were out"
    recipient.daemon.wait_for_log("released held HTLC")
    sent = payer.rpc.listsendpays(payment_hash=done["payment_hash"])["payments"]
    assert [s["status"] for s in sent] == ["complete"]  # paid exactly once
    assert done["route"] == "static" and done["step"] == "paid"  # offline: no invoice of its own came


def test_pay_rejects_bad_input(node_factory, plugin_opts):
    node = node_factory.get_node(options=plugin_opts)
    with pytest.raises(RpcError, match="offer:"):
        node.rpc.call("asyncreceive-pay", {"offer": "lno1qqqq", "amount_msat": 1000})
    own = node.rpc.offer(amount="any")["bolt12"]  # an offer without an amount
    with pytest.raises(RpcError, match="amount_msat is needed"):
        node.rpc.call("asyncreceive-pay", {"offer": own})
    with pytest.raises(RpcError, match="positive integer"):
        node.rpc.call("asyncreceive-pay", {"offer": own, "amount_msat": -5})


def test_online_recipient_answers_with_a_normal_invoice(node_factory, plugin_opts):
    """Recipient online: the server forwards a stock CLN payer's invoice_request to it, it answers with
    a normal BOLT 12 invoice signed with the offer's key, CLN pays it and gets proof of payment."""
    payer, server, recipient, offer, invoice = setup(node_factory, plugin_opts)
    got = payer.rpc.fetchinvoice(offer=offer.to_string(), amount_msat=30_000, payer_note="online")
    d = payer.rpc.decode(got["invoice"])
    assert d["valid"] and d["invoice_amount_msat"] == 30_000
    assert d["invoice_node_id"] == offer.issuer_id.hex()
    res = payer.rpc.pay(got["invoice"])
    assert res["status"] == "complete"
    assert hashlib.sha256(bytes.fromhex(res["payment_preimage"])).hexdigest() == d["invoice_payment_hash"]
    recv = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    assert [p["amount_msat"] for p in recv] == [30_000]
    assert recv[0]["preimage"] == res["payment_preimage"] and recv[0]["payer_note"] == "online"
    recipient.daemon.wait_for_log(r"answered with an invoice for 30000 msat")


def test_multi_part_async_payment(node_factory, plugin_opts):
    """Two parts of one async payment: the recipient holds the first until the total has arrived."""
    payer, server, recipient, offer, invoice = setup(node_factory, plugin_opts)
    preimage = os.urandom(32)
    payment_hash = hashlib.sha256(preimage).digest()
    invreq = build_invoice_request(offer, 60_000, os.urandom(32), chain=CHAINS["regtest"])
    height = payer.rpc.getinfo()["blockheight"]
    for partid, amount in ((1, 25_000), (2, 35_000)):
        po = build_payment_onion(invoice, invreq, preimage, amount, height, total_msat=60_000)
        onion = payer.rpc.createonion(hops=[{"pubkey": k.hex(), "payload": (bigsize(len(p)) + p).hex()}
                                            for k, p in po.hops], assocdata=payment_hash.hex())
        payer.rpc.call("sendonion", {"onion": onion["onion"], "payment_hash": payment_hash.hex(),
                                     "partid": partid, "groupid": 1, "shared_secrets": onion["shared_secrets"],
                                     "first_hop": {"id": po.first_node_id.hex(), "amount_msat": po.first_amount_msat,
                                                   "delay": po.first_cltv - height}})
        if partid == 1:
            recipient.daemon.wait_for_log(r"holding part of async payment")
    for partid in (1, 2):
        res = payer.rpc.call("waitsendpay", {"payment_hash": payment_hash.hex(), "partid": partid, "groupid": 1,
                                             "timeout": 60})
        assert res["status"] == "complete" and res["payment_preimage"] == preimage.hex()
    got = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    assert len(got) == 1 and 60_000 <= got[0]["amount_msat"] <= 60_002


def test_pay_takes_the_payees_own_invoice_when_it_answers(node_factory, plugin_opts):
    """asyncreceive-pay on an offer whose node answers with a normal invoice (type 66, here CLN's own
    offer): it is paid through lightningd's pay, with proof of payment."""
    payer, server, recipient, offer, invoice = setup(node_factory, plugin_opts)
    plain = recipient.rpc.offer(amount="any", description="coffee")["bolt12"]
    if not payer.rpc.decode(plain).get("offer_paths"):
        pytest.skip("this lightningd made an offer without blinded paths")
    payer.rpc.call("asyncreceive-pay", {"offer": plain, "amount_msat": 21_000})
    wait_for(lambda: pays(payer)[0]["status"] == "complete")
    done = pays(payer)[0]
    paid = [i for i in recipient.rpc.listinvoices()["invoices"] if i["status"] == "paid"]
    assert len(paid) == 1 and paid[0]["payment_preimage"] == done["payment_preimage"]
    assert hashlib.sha256(bytes.fromhex(done["payment_preimage"])).hexdigest() == paid[0]["payment_hash"]
    assert done["invoice"] == "normal" and done["payment_hash"] == paid[0]["payment_hash"]
    payer.daemon.wait_for_log("the payee answered with an invoice; paying it")
    assert done["route"] == "normal"


def test_recipient_connects_to_its_server_at_start(node_factory, plugin_opts):
    """payer - server - hub - recipient: the recipient's only channel is with the hub, so after a restart
    nothing but the plugin connects it to its server, whose mailbox relays only to a connected client."""
    # the server announces its address (localhost: a dev option), so the recipient can connect to it by id
    opts = dict(plugin_opts, may_reconnect=True)
    payer, server, hub, recipient = node_factory.line_graph(
        4, fundchannel=True, wait_for_announce=True,
        opts=[opts, dict(opts, **{"dev-allow-localhost": None}), opts, opts])
    _, invoice = enrol_and_get_offer(server, recipient)
    mailbox_path = invoice.message_paths[0]
    assert mailbox_path.first_node_id == bytes.fromhex(server.info["id"])
    wait_for(lambda: any(a.get("port") == server.port
                         for n in recipient.rpc.listnodes(server.info["id"])["nodes"] for a in n.get("addresses", [])))
    recipient.stop()
    payer.rpc.call("asyncreceive-dev-send", {"path": mailbox_path.encode().hex(), "msgtype": m.HELD_HTLC_AVAILABLE,
                                             "body": "00", "reply": True, "reply_via": [server.info["id"]]})
    wait_for(lambda: server.rpc.call("asyncreceive-status")["held_messages"] == 1)
    t0 = time.time()
    recipient.start()
    wait_for(lambda: len(payer.rpc.call("asyncreceive-dev-received")["received"]) == 1, timeout=60)
    print(f"released {time.time() - t0:.1f}s after the recipient started")
    assert server.rpc.listpeers(recipient.info["id"])["peers"][0]["connected"]
    assert not server.rpc.listpeerchannels(recipient.info["id"])["channels"]     # no channel between them
