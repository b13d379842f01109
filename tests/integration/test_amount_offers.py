"""Offers with an amount, description and issuer (asyncreceive-getoffer's dedicated offers) on real nodes:
payer l1 -> server l2 -> recipient l3.  Paid by asyncreceive-pay with the recipient online and offline, by a
stock CLN fetchinvoice + pay; bad values and a server that does not confirm are clear errors."""

import time

import pytest
from pyln.client import RpcError
from pyln.testing.utils import wait_for

from asyncreceive.server.store import InvoiceRecord, invoice_key
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
from tests.integration.test_payments import pay_of, pays


def enrolled(node_factory, opts, slots=2):
    payer, server, recipient = node_factory.line_graph(3, fundchannel=True, wait_for_announce=True,
                                                       opts=dict(opts, **{"asyncreceive-slots": slots}))
    r = server.rpc.call("asyncserver-addclient", {"client_id": "phone"})
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    wait_for(lambda: len(recipient.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]) == slots)
    return payer, server, recipient


def stored_offer_id(server, slot):
    rec = server.rpc.listdatastore(key=invoice_key(b"phone", slot))["datastore"][0]
    return StaticInvoice.decode(InvoiceRecord.decode(bytes.fromhex(rec["hex"])).invoice).offer_id.hex()


def pay_and_wait(payer, offer, amount=None, timeout=60):
    params = {"offer": offer} if amount is None else {"offer": offer, "amount_msat": amount}
    r = payer.rpc.call("asyncreceive-pay", params)
    wait_for(lambda: pay_of(payer, r["payment_id"])["status"] in ("complete", "failed"), timeout=timeout)
    return pay_of(payer, r["payment_id"])


def test_amount_offer_paid_online_offline_and_by_stock_cln(node_factory, plugin_opts):
    payer, server, recipient = enrolled(node_factory, dict(plugin_opts, may_reconnect=True))
    t0 = time.time()
    got = recipient.rpc.call("asyncreceive-getoffer", {"amount_msat": 25_000, "description": "a coffee",
                                                       "issuer": "Café Zürich"})
    print(f"getoffer with an amount: {time.time() - t0:.2f} s")
    assert got["status"] == "used" and got["amount_msat"] == 25_000
    d = payer.rpc.decode(got["offer"])
    assert d["valid"] and d["offer_amount_msat"] == 25_000 and d["offer_description"] == "a coffee"
    assert d["offer_issuer"] == "Café Zürich" and d["offer_id"] == got["offer_id"]
    assert stored_offer_id(server, got["slot"]) == got["offer_id"]  # served before it was returned
    # a plain getoffer hands out the other slot's amount-less offer
    plain = recipient.rpc.call("asyncreceive-getoffer")
    assert plain["slot"] != got["slot"] and "offer_amount_msat" not in payer.rpc.decode(plain["offer"])

    # the payer checks the amount
    with pytest.raises(RpcError, match="amount_msat: 24999 is below the offer's amount 25000"):
        payer.rpc.call("asyncreceive-pay", {"offer": got["offer"], "amount_msat": 24_999})
    # a stock CLN payer, recipient online: its own invoice for the offer's amount
    inv = payer.rpc.fetchinvoice(offer=got["offer"], timeout=30)
    di = payer.rpc.decode(inv["invoice"])
    assert di["invoice_amount_msat"] == 25_000 and di["offer_description"] == "a coffee"
    assert payer.rpc.pay(inv["invoice"])["status"] == "complete"
    # asyncreceive-pay, amount left out (the offer's), recipient online
    done = pay_and_wait(payer, got["offer"])
    print(f"online: {done['status']} via {done['route']}, {done['amount_msat']} msat")
    assert done["status"] == "complete" and done["amount_msat"] == 25_000

    # recipient offline: the static route, released when it comes back
    recipient.stop()
    r = payer.rpc.call("asyncreceive-pay", {"offer": got["offer"]})
    wait_for(lambda: pay_of(payer, r["payment_id"])["status"] == "waiting_release", timeout=60)
    recipient.start()
    wait_for(lambda: pay_of(payer, r["payment_id"])["status"] == "complete", timeout=180)
    done = pay_of(payer, r["payment_id"])
    print(f"offline: {done['status']} via {done['route']}")
    assert done["route"] == "static" and done["amount_msat"] == 25_000
    recv = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    assert [p["preimage"] for p in recv if p["preimage"] == done["payment_preimage"]]
    assert all(p["offer_id"] == got["offer_id"] and p["amount_msat"] >= 25_000 for p in recv)
    # after the restart the slot still holds the same offer, and the server its invoice
    again = recipient.rpc.call("asyncreceive-listoffers", {"status": "used"})["offers"]
    assert [o["offer"] for o in again if o["slot"] == got["slot"]] == [got["offer"]]
    assert stored_offer_id(server, got["slot"]) == got["offer_id"]


def test_getoffer_bad_values_and_a_server_that_does_not_confirm(node_factory, plugin_opts):
    payer, server, recipient = enrolled(node_factory, dict(plugin_opts, may_reconnect=True))
    bad = [({"amount_msat": 0, "description": "x"}, "amount_msat: an integer from 1 to"),
           ({"amount_msat": "lots", "description": "x"}, "amount_msat: an integer from 1 to"),
           ({"amount_msat": 1000}, "description: needed with amount_msat"),
           ({"description": "x" * 641}, "description: 641 bytes, at most 640"),
           ({"issuer": ""}, "issuer: a non-empty string"),
           ({"description": "x", "timeout": 0}, "timeout: seconds, more than 0 and at most 600")]
    for params, why in bad:
        with pytest.raises(RpcError) as e:
            recipient.rpc.call("asyncreceive-getoffer", params)
        assert e.value.error["message"].startswith(why) and "traceback" not in e.value.error, e.value.error
    assert len(recipient.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]) == 2  # none taken

    server.stop()
    t0 = time.time()
    with pytest.raises(RpcError) as e:
        recipient.rpc.call("asyncreceive-getoffer", {"amount_msat": 5000, "description": "tea", "timeout": 5})
    took = time.time() - t0
    print(f"no confirmation: {e.value.error['message']} ({took:.1f} s)")
    assert "the server did not confirm it stored the static invoice within 5s" in e.value.error["message"]
    assert "(pending)" in e.value.error["message"] and 5 <= took < 15
    # the plugin kept working meanwhile, and the offer is re-served once the server is back
    assert recipient.rpc.call("asyncreceive-status")["slot_status"]["pending"] == 1
    server.start()
    recipient.rpc.call("asyncreceive-refresh")
    wait_for(lambda: recipient.rpc.call("asyncreceive-listoffers", {"status": "used"})["offers"], timeout=90)
    used = recipient.rpc.call("asyncreceive-listoffers", {"status": "used"})["offers"][0]
    assert used["amount_msat"] == 5000 and stored_offer_id(server, used["slot"]) == used["offer_id"]
    # its only ready slot taken by the dedicated offer, one is left; then none
    recipient.rpc.call("asyncreceive-getoffer", {"description": "for Bob"})
    with pytest.raises(RpcError, match="no async offer is ready yet"):
        recipient.rpc.call("asyncreceive-getoffer", {"issuer": "shop"})
