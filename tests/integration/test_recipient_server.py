"""A CLN recipient fills its offer cache through a CLN static invoice server (issues 3 and 4)."""

import time

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
