"""A CLN recipient fills its offer cache through a CLN static invoice server (issues 3 and 4)."""

import os
import subprocess
import time

import pytest
from pyln.client import RpcError

from pyln.testing.utils import wait_for

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
    static invoice (type 70, dropped); the recipient is online, so its normal invoice is what
    fetchinvoice returns.  We check the server's and the recipient's side."""
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=plugin_opts)
    payer = node_factory.get_node()
    payer.connect(server)
    enrol(server, recipient)
    wait_for(lambda: len(ready(recipient)) == 10)
    offer = recipient.rpc.call("asyncreceive-getoffer")
    got = payer.rpc.fetchinvoice(offer=offer["offer"], amount_msat=1000, timeout=20)
    assert payer.rpc.decode(got["invoice"])["invoice_amount_msat"] == 1000
    server.daemon.wait_for_log(r"served static invoice of client 'recipient' slot %d" % offer["slot"])
    served = [i for i in server.rpc.call("asyncserver-listinvoices", {"client_id": "recipient"})["invoices"]
              if i["slot"] == offer["slot"]]
    assert served[0]["times_served"] == 1 and served[0]["last_served_at"]
    recipient.daemon.wait_for_log(r"forwarded invoice_request for offer %s received \(amount 1000, reply path yes\)"
                                  % offer["offer_id"][:16])
    assert recipient.rpc.call("asyncreceive-status")["forwarded_invoice_requests"] == 1


def consistent(server, recipient, client_id="recipient"):
    """Every slot holds one ready offer, and the server stores exactly that offer's invoice for it."""
    offers = ready(recipient)
    stored = {i["slot"]: i["offer_id"]
              for i in server.rpc.call("asyncserver-listinvoices", {"client_id": client_id})["invoices"]}
    return (sorted(o["slot"] for o in offers) == list(range(10))
            and all(stored.get(o["slot"]) == o["offer_id"] for o in offers))


STEPS = {
    "after_request": r"sent offer_paths_request",
    "after_offer_paths": r"slot \d: offer [0-9a-f]+ built",
    "after_serve": r"sent serve_static_invoice",
    "after_persisted": r"offer [0-9a-f]+ ready: server persisted",
}


def log_count(node, text):
    with open(os.path.join(node.daemon.lightning_dir, "log")) as f:
        return f.read().count(text)


@pytest.mark.parametrize("step", sorted(STEPS))
def test_recipient_restart_mid_handshake(node_factory, plugin_opts, step):
    """Restart the recipient right after each protocol step: no slot is lost or duplicated and the cache
    converges to all ready, each slot's offer being the one the server stores for that slot."""
    opts = dict(plugin_opts, **{"asyncreceive-tick-seconds": 2, "may_reconnect": True})
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=[dict(plugin_opts, may_reconnect=True),
                                                                        opts])
    enrol(server, recipient)
    recipient.daemon.wait_for_log(STEPS[step])
    recipient.restart()
    before = recipient.rpc.call("asyncreceive-status")["slot_status"]
    server.connect(recipient)
    wait_for(lambda: consistent(server, recipient))
    print(f"restart {step}: slots after restart {before}; converged")
    assert len({o["offer_id"] for o in ready(recipient)}) == 10


def test_server_down_backoff_then_fill(node_factory, plugin_opts):
    opts = dict(plugin_opts, **{"asyncreceive-tick-seconds": 1, "may_reconnect": True})
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=[dict(plugin_opts, may_reconnect=True),
                                                                        opts])
    r = server.rpc.call("asyncserver-addclient", {"client_id": "recipient"})
    server.stop()
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    recipient.daemon.wait_for_log("SendRequest for slot 9 failed")
    time.sleep(20)
    attempts = log_count(recipient, "SendRequest for slot 0 failed")
    # it ticks every second for 20 s, but backs off 5, 10, 20 s: at most 4 rounds, not 20
    assert 2 <= attempts <= 4, attempts
    server.start()
    server.connect(recipient)
    wait_for(lambda: consistent(server, recipient), timeout=90)


def test_server_restart_keeps_serving(node_factory, plugin_opts):
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=dict(plugin_opts, may_reconnect=True))
    payer = node_factory.get_node(may_reconnect=True)
    enrol(server, recipient)
    wait_for(lambda: consistent(server, recipient))
    server.restart()
    server.connect(payer)
    server.connect(recipient)
    offer = recipient.rpc.call("asyncreceive-getoffer")
    got = payer.rpc.fetchinvoice(offer=offer["offer"], amount_msat=5000, timeout=20)
    assert payer.rpc.decode(got["invoice"])["invoice_amount_msat"] == 5000
    server.daemon.wait_for_log(r"served static invoice of client 'recipient' slot %d" % offer["slot"])
    # the enrolled client paths still work after the restart: a refresh is persisted again
    recipient.rpc.call("asyncreceive-refresh")
    server.daemon.wait_for_log(r"stored static invoice for client 'recipient'")
    assert len(server.rpc.call("asyncserver-listclients")["clients"]) == 1


def test_rpc_help_options_and_errors(node_factory, plugin_opts):
    node = node_factory.get_node(options=dict(plugin_opts, **{"asyncreceive-slots": 4}))
    configs = node.rpc.listconfigs()["configs"]
    assert configs["asyncreceive-slots"]["value_int"] == 4
    assert configs["asyncreceive-tick-seconds"]["value_int"] == 60
    assert configs["asyncserver-max-invoice-bytes"]["value_int"] == 5120
    helps = {h["command"].split()[0]: h for h in node.rpc.help()["help"]}
    for cmd in ("asyncreceive-listoffers", "asyncreceive-getoffer", "asyncreceive-status", "asyncreceive-refresh",
                "asyncreceive-setserver", "asyncserver-addclient", "asyncserver-listclients",
                "asyncserver-removeclient", "asyncserver-listinvoices"):
        assert cmd in helps, cmd
    with pytest.raises(RpcError, match="not a hex string"):
        node.rpc.call("asyncreceive-setserver", {"paths": "xyz"})
    with pytest.raises(RpcError, match="neither a blinded_path"):
        node.rpc.call("asyncreceive-setserver", {"paths": "0001"})
    with pytest.raises(RpcError, match="no static invoice server is set: .*asyncreceive-setserver"):
        node.rpc.call("asyncreceive-getoffer")
    with pytest.raises(RpcError, match="status must be one of"):
        node.rpc.call("asyncreceive-listoffers", {"status": "bogus"})
    with pytest.raises(RpcError, match="unknown client"):
        node.rpc.call("asyncserver-removeclient", {"client_id": "nobody"})
    st = node.rpc.call("asyncreceive-status")
    assert st["slot_status"]["empty"] == 4 and st["server_paths"] == []
    assert_operator_errors(node)


def assert_operator_errors(node):
    """An operator's mistake is one line, without a traceback (in the reply or the log at info);
    `lightning-cli help <command>` shows the command's own text."""
    node.daemon.logs_catchup()
    logged = len(node.daemon.logs)
    for method, params, text in (("asyncreceive-setserver", {"paths": "0001"}, "paths: "),
                                 ("asyncreceive-getoffer", {}, "no static invoice server is set"),
                                 ("asyncreceive-pay", {}, "bad parameters: missing a required argument: 'offer'"),
                                 ("asyncreceive-listoffers", {"bogus": 1}, "bad parameters: "),
                                 ("asyncserver-addclient", {"client_id": ""}, "client_id: "),
                                 ("asyncserver-listinvoices", {"client_id": "nobody"}, "unknown client nobody"),
                                 ("asyncserver-removeclient", {"client_id": "nobody"}, "unknown client nobody")):
        with pytest.raises(RpcError) as e:
            node.rpc.call(method, params)
        err = e.value.error
        assert set(err) == {"code", "message"}, err                  # no traceback
        assert err["message"].startswith(text) and "\n" not in err["message"], err
        assert err["message"].count("paths:") <= 1, err
    node.daemon.logs_catchup()
    assert not any("Traceback" in line for line in node.daemon.logs[logged:])
    r = subprocess.run(["lightning-cli", f"--lightning-dir={node.daemon.lightning_dir}", "--network=regtest",
                        "help", "asyncreceive-pay"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "Pay BOLT 12 {offer}" in r.stdout, (r.stdout, r.stderr)


def test_server_path_option_and_removed_client(node_factory, plugin_opts):
    """The recipient can be configured with asyncreceive-server-path at startup; a removed client's
    messages are ignored by the server."""
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=dict(plugin_opts, may_reconnect=True))
    r = server.rpc.call("asyncserver-addclient", {"client_id": "phone"})
    recipient.stop()
    recipient.daemon.opts["asyncreceive-server-path"] = r["paths"][0]
    t0 = time.time()
    recipient.start()  # lightningd reconnects to its channel peer by itself
    wait_for(lambda: len(ready(recipient)) == 10)
    print(f"10 slots ready {time.time() - t0:.1f}s after recipient start (server path from options)")
    assert recipient.rpc.call("asyncreceive-status")["server_paths"] == [r["paths"][0]]
    server.rpc.call("asyncserver-removeclient", {"client_id": "phone"})
    assert server.rpc.call("asyncserver-listinvoices")["invoices"] == []
    recipient.rpc.call("asyncreceive-refresh")
    server.daemon.wait_for_log(r"dropped onion message \(unknown_client\)")
    assert server.rpc.call("asyncserver-listinvoices")["invoices"] == []
