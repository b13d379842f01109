"""The static invoice server under attack, with real nodes (security review items 5 and 8).

5: junk sent by another node on a client's public ``server -> phantom`` mailbox path (it is in the
   static invoice) neither evicts nor blocks a real payer's held_htlc_available;
8: after ``removeclient`` + ``addclient`` of the same id, the old device's paths are refused.
"""

import re
import threading
import time

import pytest
from pyln.client import RpcError
from pyln.testing.utils import wait_for

from asyncreceive.wire import messages as m

from .test_payments import setup

#: one line per message the server's mailbox handled (held, or refused by a limit)
HANDLED = r"holding an onion message for client|not held"


def log_count(node, pattern):
    r = re.compile(pattern)
    node.daemon.logs_catchup()
    return sum(1 for line in node.daemon.logs if r.search(line))


def send_junk(node, path, n):
    """n junk held_htlc_available on ``path``. The attacker's own plugin paces its sends (4/s per peer)
    and has a bounded queue: wait for room when it is full, as a flooding attacker's own code would."""
    sent = 0
    deadline = time.time() + 30 + n
    while sent < n:
        try:
            node.rpc.call("asyncreceive-dev-send", {"path": path.encode().hex(),
                                                    "msgtype": m.HELD_HTLC_AVAILABLE, "body": "00"})
            sent += 1
        except RpcError as e:
            if "send queue full" not in str(e) or time.time() > deadline:
                raise
            time.sleep(0.2)


def send_real(payer, server, path):
    payer.rpc.call("asyncreceive-dev-send", {"path": path.encode().hex(), "msgtype": m.HELD_HTLC_AVAILABLE,
                                             "body": "00", "reply": True, "reply_via": [server.info["id"]]})


def mailbox_setup(node_factory, plugin_opts):
    """payer - server - recipient (a channel each), and an attacker connected to the server only."""
    payer, server, recipient, offer, invoice = setup(node_factory, dict(plugin_opts, may_reconnect=True))
    attacker = node_factory.get_node(options=plugin_opts)
    attacker.connect(server)
    path = invoice.message_paths[0]
    assert path.first_node_id == bytes.fromhex(server.info["id"]) and len(path.hops) == 2
    return payer, server, recipient, attacker, path


def released(payer):
    return [r for r in payer.rpc.call("asyncreceive-dev-received")["received"] if r["type"] == m.RELEASE_HELD_HTLC]


def test_junk_flood_after_a_held_message_does_not_evict_it(node_factory, plugin_opts):
    payer, server, recipient, attacker, path = mailbox_setup(node_factory, plugin_opts)
    recipient.stop()
    send_real(payer, server, path)
    wait_for(lambda: log_count(server, HANDLED) == 1)
    assert server.rpc.call("asyncreceive-status")["held_messages"] == 1
    t0 = time.time()
    send_junk(attacker, path, 30)                  # more than the mailbox holds
    wait_for(lambda: log_count(server, HANDLED) == 31)
    held = server.rpc.call("asyncreceive-status")["held_messages"]
    print(f"30 junk messages sent in {time.time() - t0:.1f}s; the server holds {held}")
    assert held > 1
    recipient.start()
    wait_for(lambda: len(released(payer)) == 1, timeout=90)   # the real one was still held and relayed
    server.daemon.wait_for_log(r"client 'phone': relayed \d+ held onion message\(s\)")


def test_junk_flood_before_a_real_message_does_not_block_it(node_factory, plugin_opts):
    """Needs the incoming peer (``source`` of onionmessage_forward_fail) passed to the server's mailbox:
    without it all messages share one bucket, which the flood keeps empty."""
    payer, server, recipient, attacker, path = mailbox_setup(node_factory, plugin_opts)
    recipient.stop()
    flood = threading.Thread(target=send_junk, args=(attacker, path, 80))   # 20 s at 4/s, over 1/s refill
    flood.start()
    try:
        wait_for(lambda: log_count(server, HANDLED) >= 30)
        if server.daemon.is_in_log("from unknown peer"):
            pytest.skip("the transport does not pass onionmessage_forward_fail's source to the mailbox yet")
        assert server.daemon.is_in_log(f"from {attacker.info['id'][:16]}")
        send_real(payer, server, path)               # while the flood goes on
        server.daemon.wait_for_log(f"holding an onion message for client 'phone' from {payer.info['id'][:16]}")
    finally:
        flood.join()
    recipient.start()
    wait_for(lambda: len(released(payer)) == 1, timeout=120)


def test_removed_then_added_client_refuses_the_old_device(node_factory, plugin_opts):
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=plugin_opts)
    r = server.rpc.call("asyncserver-addclient", {"client_id": "phone"})
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    wait_for(lambda: len(recipient.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]) == 10)
    server.rpc.call("asyncserver-removeclient", {"client_id": "phone"})
    server.rpc.call("asyncserver-addclient", {"client_id": "phone"})     # for a new device
    recipient.rpc.call("asyncreceive-refresh")                          # the old device re-serves its 10 invoices

    def refused():
        return server.rpc.call("asyncreceive-status")["messages"]["dropped"].get("old_enrolment", 0)
    wait_for(lambda: refused() >= 10, timeout=60)
    assert server.rpc.call("asyncserver-listinvoices", {"client_id": "phone"})["invoices"] == []
    assert server.rpc.call("asyncserver-listclients")["clients"][0]["invoices"] == 0
