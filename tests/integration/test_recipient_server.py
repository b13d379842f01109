"""A CLN recipient fills its offer cache through a CLN static invoice server (issues 3 and 4)."""

import time

import pytest
from pyln.client import RpcError

from pyln.testing.utils import wait_for

from asyncreceive.wire.bolt12 import Offer, StaticInvoice
from asyncreceive.wire.paths import decode_path_list


def ready(node):
    return node.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]


def enrol(server, recipient, client_id="recipient"):
    r = server.rpc.call("asyncserver-addclient", {"client_id": client_id})
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    return r


def test_all_slots_become_ready(node_factory, plugin_opts):
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=plugin_opts)
    r = enrol(server, recipient)
    assert len(decode_path_list(bytes.fromhex(r["paths_hex"]))) == len(r["paths"]) >= 1
    t0 = time.time()
    wait_for(lambda: len(ready(recipient)) == 10)
    print(f"10 slots ready {time.time() - t0:.1f}s after setserver")
    offers = ready(recipient)
    assert sorted(o["slot"] for o in offers) == list(range(10))
    assert len({o["offer_id"] for o in offers}) == 10
    for o in offers:
        d = recipient.rpc.decode(o["offer"])
        assert d["valid"] and d["type"] == "bolt12 offer"
        assert d["offer_id"] == o["offer_id"]
        assert all(p["first_node_id"] == server.info["id"] for p in d["offer_paths"])
        assert d["offer_issuer_id"] != recipient.info["id"]  # a per-offer key, not the node id
        assert o["invoice_expires_at"] and o["offer_expires_at"]
    stored = server.rpc.call("asyncserver-listinvoices")["invoices"]
    assert sorted(i["slot"] for i in stored) == list(range(10))
    assert {i["offer_id"] for i in stored} == {o["offer_id"] for o in offers}
    # getoffer hands out the newest ready offer and marks it used
    got = recipient.rpc.call("asyncreceive-getoffer")
    assert got["status"] == "used"
    assert len(ready(recipient)) == 9
    st = recipient.rpc.call("asyncreceive-status")
    assert st["slot_status"]["ready"] == 9 and st["slot_status"]["used"] == 1


def test_stock_cln_payer_reaches_server_and_recipient(node_factory, plugin_opts):
    """A stock CLN payer (no plugin) asks for an invoice on an async offer: the server forwards the
    invoice_request to the recipient and answers with the static invoice.  CLN's payer cannot read a
    static invoice (type 70), so fetchinvoice times out; we check the server's and recipient's side."""
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=plugin_opts)
    payer = node_factory.get_node()
    payer.connect(server)
    enrol(server, recipient)
    wait_for(lambda: len(ready(recipient)) == 10)
    offer = recipient.rpc.call("asyncreceive-getoffer")
    with pytest.raises(RpcError):
        payer.rpc.fetchinvoice(offer=offer["offer"], amount_msat=1000, timeout=5)
    server.daemon.wait_for_log(r"served static invoice of client b'recipient' slot %d" % offer["slot"])
    served = [i for i in server.rpc.call("asyncserver-listinvoices", {"client_id": "recipient"})["invoices"]
              if i["slot"] == offer["slot"]]
    assert served[0]["times_served"] == 1 and served[0]["last_served_at"]
    recipient.daemon.wait_for_log(r"forwarded invoice_request for offer %s received \(amount 1000, reply path yes\)"
                                  % offer["offer_id"][:16])
    assert recipient.rpc.call("asyncreceive-status")["forwarded_invoice_requests"] == 1
