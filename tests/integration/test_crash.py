"""Hard crashes (payer l1 -> server l2 -> recipient l3): lightningd is killed with SIGKILL at each step that
writes state, right after the write and before its effect goes out (the ``asyncreceive-dev-crash-at``
option, :mod:`asyncreceive.shell.crashpoint`).  The datastore as the crash left it is read from the
node's database file; the node is restarted on the same lightning-dir without the crash point, and then
nothing may be lost, duplicated, paid twice or stuck.
"""

import hashlib
import os
import sqlite3
import time

import pytest
from pyln.testing.db import PostgresDb
from pyln.testing.utils import wait_for

from asyncreceive.paying.service import PAYER_PREFIX, Payment
from asyncreceive.paying.payer import build_invoice_request, build_payment_onion
from asyncreceive.receiving.service import PAYMENT_PREFIX, decode_payment
from asyncreceive.recipient import cache as c
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.recipient.store import decode_slot
from asyncreceive.server.store import InvoiceRecord, invoice_key, invoices_prefix
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
from asyncreceive.wire.tlv import bigsize
from tests.integration.test_payments import pays

SLOTS = 3
CRASH = "asyncreceive-dev-crash-at"
#: how long a payment may take to end after the restart
SETTLE_BOUND = 60


def nodes(node_factory, plugin_opts, crash_at=None, crashing=None):
    """The line payer - server - recipient, the recipient enrolled; ``crashing`` (0, 1 or 2) starts with
    the crash point ``crash_at`` armed."""
    opts = [dict(plugin_opts, may_reconnect=True, **{"asyncreceive-slots": SLOTS, "asyncreceive-tick-seconds": 2})
            for _ in range(3)]
    if crash_at is not None:
        opts[crashing][CRASH] = crash_at
    payer, server, recipient = node_factory.line_graph(3, fundchannel=True, wait_for_announce=True, opts=opts)
    r = server.rpc.call("asyncserver-addclient", {"client_id": "phone"})
    recipient.rpc.call("asyncreceive-setserver", {"paths": r["paths_hex"]})
    return payer, server, recipient


def crashed(node, point):
    """Wait for the crash point to kill ``node``; returns its datastore as the crash left it."""
    t0 = time.time()
    rc = node.daemon.proc.wait(timeout=120)
    assert rc == -9, f"lightningd ended with {rc}, not SIGKILL"
    assert node.daemon.is_in_log(f"crashpoint {point}: killing lightningd")
    print(f"{point}: lightningd killed {time.time() - t0:.1f} s into the wait")
    return {tuple(k.decode() for k in bytes(key).split(b"\0")): bytes(data)
            for key, data in db_rows(node, "SELECT key, data FROM datastore")}


def db_rows(node, sql, *args):
    """Rows of the node's database (the node is not running): its SQLite file, or its PostgreSQL database
    under ``make test-postgres`` (BYTEA comes back as bytes, like SQLite's BLOB)."""
    if isinstance(node.db, PostgresDb):
        with node.db.conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), args)
            rows = cur.fetchall()
        node.db.conn.rollback()   # end the read's transaction
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]
    db = sqlite3.connect(os.path.join(node.daemon.lightning_dir, "regtest", "lightningd.sqlite3"))
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def restart(node):
    """Start ``node`` again on its lightning-dir, without the crash point."""
    del node.daemon.opts[CRASH]
    node.start()
    assert not any(CRASH in a for a in node.daemon.cmd_line)


def under(store, prefix):
    return {k: v for k, v in store.items() if list(k[:len(prefix)]) == list(prefix)}


def offers_consistent(server, recipient):
    """Every slot payable, each with its own offer, and the server holds exactly that offer's static
    invoice for the slot (one per slot): nothing lost, nothing duplicated."""
    offers = recipient.rpc.call("asyncreceive-listoffers")["offers"]
    if len(offers) != SLOTS or any(o["status"] not in ("ready", "used") for o in offers):
        return False
    invs = server.rpc.call("asyncserver-listinvoices", {"client_id": "phone"})["invoices"]
    at_server = {i["slot"]: i["offer_id"] for i in invs}
    assert len(invs) == len(at_server) == SLOTS, invs
    assert at_server == {o["slot"]: o["offer_id"] for o in offers}
    assert len(set(at_server.values())) == SLOTS
    return True


def no_htlcs(*nodes):
    return all(not ch["htlcs"] for n in nodes for ch in n.rpc.listpeerchannels()["channels"])


def to_us(node, peer):
    return node.rpc.listpeerchannels(peer.info["id"])["channels"][0]["to_us_msat"]


def test_crash_recipient_after_offer_built(node_factory, plugin_opts):
    """(1) The recipient dies after writing a slot with its new offer, before serving its static invoice:
    after the restart that very offer is served and ready; every slot ends ready with its own offer,
    stored once at the server."""
    payer, server, recipient = nodes(node_factory, plugin_opts, "recipient-offer-built", 2)
    store = crashed(recipient, "recipient-offer-built")
    slots = [decode_slot(v) for v in under(store, ["asyncreceive", "v1", "recipient", "slot"]).values()]
    built = [s for s in slots if s.offer is not None]
    assert len(built) == 1 and built[0].status == c.PENDING, slots
    assert server.rpc.call("asyncserver-listinvoices")["invoices"] == []  # it never reached the server
    t0 = time.time()
    restart(recipient)
    wait_for(lambda: offers_consistent(server, recipient), timeout=60)
    print(f"all {SLOTS} slots ready {time.time() - t0:.1f} s after the restart")
    kept = {o["slot"]: o["offer_id"] for o in recipient.rpc.call("asyncreceive-listoffers")["offers"]}
    assert kept[built[0].index] == built[0].offer.offer_id.hex()  # the offer written before the crash


def test_crash_server_after_invoice_stored(node_factory, plugin_opts):
    """(2) The server dies after storing a static invoice, before acknowledging it: after the restart the
    recipient serves it again, the server replaces it in the same slot (not a second record), and the
    recipient keeps that offer (no new offer for the slot)."""
    payer, server, recipient = nodes(node_factory, plugin_opts, "server-invoice-stored", 1)
    store = crashed(server, "server-invoice-stored")
    stored = under(store, invoices_prefix(b"phone"))
    assert len(stored) == 1
    (key, val), = stored.items()
    slot, offer_id = int(key[-1]), StaticInvoice.decode(InvoiceRecord.decode(val).invoice).offer_id.hex()
    assert key == tuple(invoice_key(b"phone", slot))
    # the acknowledgement never went out
    assert all(o["status"] == "pending" for o in recipient.rpc.call("asyncreceive-listoffers")["offers"])
    t0 = time.time()
    restart(server)
    wait_for(lambda: offers_consistent(server, recipient), timeout=60)
    print(f"all {SLOTS} slots ready {time.time() - t0:.1f} s after the restart")
    kept = {o["slot"]: o["offer_id"] for o in recipient.rpc.call("asyncreceive-listoffers")["offers"]}
    assert kept[slot] == offer_id


def ready_offer(server, recipient):
    wait_for(lambda: len(recipient.rpc.call("asyncreceive-listoffers", {"status": "ready"})["offers"]) == SLOTS)
    offer = recipient.rpc.call("asyncreceive-getoffer")
    rec = server.rpc.listdatastore(key=invoice_key(b"phone", offer["slot"]))["datastore"][0]
    return Offer.from_string(offer["offer"]), StaticInvoice.decode(InvoiceRecord.decode(bytes.fromhex(rec["hex"])).invoice)


def test_crash_recipient_after_payment_recorded(node_factory, plugin_opts):
    """(3) The recipient dies after recording an async payment, before resolving its HTLC: after the
    restart lightningd replays the HTLC, it is resolved from the record; the payer's one part completes
    with the preimage, the recipient has one record and its balance moved once; no HTLC is left."""
    payer, server, recipient = nodes(node_factory, plugin_opts, "recipient-payment-recorded", 2)
    offer, invoice = ready_offer(server, recipient)
    before = to_us(recipient, server)
    preimage = os.urandom(32)
    payment_hash = hashlib.sha256(preimage).digest()
    invreq = build_invoice_request(offer, 50_000, os.urandom(32), chain=CHAINS["regtest"])
    height = payer.rpc.getinfo()["blockheight"]
    po = build_payment_onion(invoice, invreq, preimage, 50_000, height)
    onion = payer.rpc.createonion(hops=[{"pubkey": k.hex(), "payload": (bigsize(len(p)) + p).hex()}
                                        for k, p in po.hops], assocdata=payment_hash.hex())
    payer.rpc.sendonion(onion=onion["onion"], payment_hash=payment_hash.hex(), shared_secrets=onion["shared_secrets"],
                        first_hop={"id": po.first_node_id.hex(), "amount_msat": po.first_amount_msat,
                                   "delay": po.first_cltv - height})
    store = crashed(recipient, "recipient-payment-recorded")
    recorded = under(store, PAYMENT_PREFIX)
    assert list(recorded) == [tuple(PAYMENT_PREFIX + [payment_hash.hex()])]
    amount = decode_payment(recorded[tuple(PAYMENT_PREFIX + [payment_hash.hex()])])["amount_msat"]
    assert payer.rpc.listsendpays(payment_hash=payment_hash.hex())["payments"][0]["status"] == "pending"
    t0 = time.time()
    restart(recipient)
    res = payer.rpc.waitsendpay(payment_hash.hex(), timeout=SETTLE_BOUND)
    print(f"payment complete {time.time() - t0:.1f} s after the restart")
    assert res["status"] == "complete" and res["payment_preimage"] == preimage.hex()
    sent = payer.rpc.listsendpays(payment_hash=payment_hash.hex())["payments"]
    assert [s["status"] for s in sent] == ["complete"]
    got = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    assert [(g["payment_hash"], g["preimage"], g["amount_msat"]) for g in got] == \
        [(payment_hash.hex(), preimage.hex(), amount)]
    assert not recipient.daemon.is_in_log("received async payment")  # resolved from the record, not again
    wait_for(lambda: no_htlcs(payer, server, recipient))
    assert to_us(recipient, server) == before + amount


def pay_released_after_crash(node_factory, plugin_opts, point):
    """asyncreceive-pay with the recipient offline; the recipient comes back and releases; the payer dies
    at ``point``.  Returns the nodes, the payment record and lightningd's parts for its hash as the crash
    left them, the restart time and the recipient's balance before the payment."""
    payer, server, recipient = nodes(node_factory, plugin_opts, point, 0)
    offer, _ = ready_offer(server, recipient)
    before = to_us(recipient, server)
    recipient.stop()
    r = payer.rpc.call("asyncreceive-pay", {"offer": offer.to_string(), "amount_msat": 40_000})
    wait_for(lambda: "asking it to release" in pays(payer)[0]["step"], timeout=60)
    recipient.start()
    store = crashed(payer, point)
    (key, val), = under(store, PAYER_PREFIX).items()
    p = Payment.decode(bytes.fromhex(key[-1]), val)
    assert p.payment_id.hex() == r["payment_id"] and p.status == "sending" and p.route == "static"
    parts = db_rows(payer, "SELECT status FROM payments WHERE payment_hash = ?", p.payment_hash)
    print(f"{point}: lightningd's parts at the crash (0 pending, 1 complete, 2 failed): {parts}")
    t0 = time.time()
    restart(payer)
    return payer, server, recipient, p, parts, t0, before


def paid_once(payer, server, recipient, p, t0, before):
    """The payment ends (within SETTLE_BOUND) complete, with one complete part, one record at the
    recipient (with the preimage of the payment's hash), its balance moved once, and no HTLC left."""
    wait_for(lambda: pays(payer)[0]["status"] in ("complete", "failed"), timeout=SETTLE_BOUND)
    done = pays(payer)[0]
    print(f"payment {done['status']} {time.time() - t0:.1f} s after the restart: {done['step']}")
    h = p.payment_hash.hex()
    sent = payer.rpc.listsendpays(payment_hash=h)["payments"]
    got = recipient.rpc.call("asyncreceive-listpayments")["payments"]
    print(f"payer's parts {[s['status'] for s in sent]}; recipient's records {len(got)}")
    assert [s["status"] for s in sent].count("complete") <= 1 and len(got) <= 1  # never paid twice
    assert done["status"] == "complete", done
    assert [s["status"] for s in sent] == ["complete"]
    assert [(g["payment_hash"], g["preimage"]) for g in got] == [(h, done["payment_preimage"])]
    assert hashlib.sha256(bytes.fromhex(done["payment_preimage"])).hexdigest() == h
    assert p.route == "normal" or done["payment_preimage"] == p.preimage.hex()
    wait_for(lambda: no_htlcs(payer, server, recipient))
    assert to_us(recipient, server) == before + got[0]["amount_msat"]


def test_crash_payer_after_sending_written(node_factory, plugin_opts):
    """(4a) The payer dies after moving the payment to *sending* (release received), before its HTLC
    goes out: after the restart the payment is paid exactly once, or fails; never twice, never stuck."""
    payer, server, recipient, p, parts, t0, before = pay_released_after_crash(node_factory, plugin_opts,
                                                                              "payer-sending")
    assert parts == []  # nothing went out before the crash
    paid_once(payer, server, recipient, p, t0, before)


def test_crash_payer_after_onion_sent(node_factory, plugin_opts):
    """(4b) The payer dies after sendonion was accepted, before waitsendpay returns: after the restart
    the payment takes its result from lightningd's records: complete, once."""
    payer, server, recipient, p, parts, t0, before = pay_released_after_crash(node_factory, plugin_opts,
                                                                              "payer-onion-sent")
    assert len(parts) == 1  # it went out before the crash (pending, or already complete)
    paid_once(payer, server, recipient, p, t0, before)


class StuckPayment(AssertionError):
    pass


def test_crash_payer_after_sending_written_normal_route(node_factory, plugin_opts):
    """(4c) The recipient is online, so the payer pays its own invoice with lightningd's pay; the payer
    dies after moving the payment to *sending*, before pay runs: after the restart it should be paid
    once, or fail; never twice, never stuck."""
    payer, server, recipient = nodes(node_factory, plugin_opts, "payer-sending", 0)
    offer, _ = ready_offer(server, recipient)
    before = to_us(recipient, server)
    r = payer.rpc.call("asyncreceive-pay", {"offer": offer.to_string(), "amount_msat": 30_000})
    store = crashed(payer, "payer-sending")
    (key, val), = under(store, PAYER_PREFIX).items()
    p = Payment.decode(bytes.fromhex(key[-1]), val)
    assert p.payment_id.hex() == r["payment_id"] and p.status == "sending" and p.route == "normal"
    assert db_rows(payer, "SELECT status FROM payments WHERE payment_hash = ?", p.payment_hash) == []
    t0 = time.time()
    restart(payer)
    try:
        wait_for(lambda: pays(payer)[0]["status"] in ("complete", "failed"), timeout=SETTLE_BOUND)
    except ValueError:
        raise StuckPayment(f"still {pays(payer)[0]['status']} {SETTLE_BOUND} s after the restart: "
                             f"{pays(payer)[0]['step']}")
    paid_once(payer, server, recipient, p, t0, before)
