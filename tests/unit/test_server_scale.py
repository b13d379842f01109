"""The served-request path at scale (issue 11): serving an invoice_request writes nothing to the
datastore (counts are kept in memory and written on the tick: a crash loses counts, never an
invoice), and a client's record is read once, not once per request."""

from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.node.lightningd import NodeError
from asyncreceive.payments.payer import build_invoice_request
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.server.service import ServerConfig, ServerService
from asyncreceive.server.store import InvoiceRecord, client_key, invoice_key
from asyncreceive.wire import messages as m

from .test_protocol import mailbox_world, stored_invoice


def request(w, inv):
    """A payer's invoice_request on the offer of ``inv``; the static_invoice comes back to w.released."""
    invreq = build_invoice_request(inv.offer, 50_000, b"\x05" * 32, chain=CHAINS["regtest"])
    w.pt.send(inv.offer_paths[0], m.INVOICE_REQUEST, invreq.encode(), reply_context=PathContext(Kind.PAYER_REPLY))
    w.now += 1


def answers(w):
    return [x for x in w.released if x.msg_type == m.STATIC_INVOICE]


def stored(w, slot=0):
    return InvoiceRecord.decode(w.snode.ds_get(invoice_key(b"phone", slot))[0])


def test_serving_writes_nothing_and_the_tick_writes_the_counts():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    writes = len(w.snode.events)
    for _ in range(3):
        request(w, inv)
    assert len(answers(w)) == 3
    assert [e for e in w.snode.events[writes:] if e[0] == "write"] == []     # no datastore write per request
    served = w.server.list_invoices()[0]
    assert (served["times_served"], served["last_served_at"]) == (3, w.now - 1)   # the counts not yet written
    # a crash now (a new server over the same datastore) loses the counts, not the invoice
    restarted = ServerService(w.st, ServerConfig(), lambda *a: None, clock=lambda: w.now)
    restarted.load()
    assert restarted.list_invoices()[0]["times_served"] == 0 and stored(w).invoice == inv.encode()
    w.server.tick()
    assert (stored(w).times_served, stored(w).last_served_at) == (3, w.now - 1)
    assert restarted.list_invoices()[0]["times_served"] == 3 == w.server.list_invoices()[0]["times_served"]
    w.server.tick()                                                          # nothing new: counted once
    assert stored(w).times_served == 3


def test_counts_survive_a_new_invoice_and_a_conflicting_write():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    request(w, inv)
    request(w, inv)
    real_put, conflicts = w.snode.ds_put, []

    def put_once_conflicting(key, value, generation=None):
        if key == invoice_key(b"phone", 0) and not conflicts:
            conflicts.append(key)
            raise NodeError("generation mismatch")
        return real_put(key, value, generation)
    w.snode.ds_put = put_once_conflicting
    w.server.tick()                               # the write conflicts: the counts wait for the next tick
    assert conflicts and stored(w).times_served == 0 and w.server.list_invoices()[0]["times_served"] == 2
    w.recipient.tick()                            # whatever the recipient re-serves keeps the counts
    request(w, inv)
    w.server.tick()
    assert stored(w).times_served == 3


def test_a_clients_record_is_read_once_and_forgotten_on_removal():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    reads = []
    real_get = w.snode.ds_get
    w.snode.ds_get = lambda key: (reads.append(tuple(key)), real_get(key))[1]
    for _ in range(3):
        request(w, inv)
    assert len(answers(w)) == 3
    assert reads.count(tuple(client_key(b"phone"))) <= 1
    w.server.remove_client(b"phone")
    request(w, inv)                               # the removed client's offer is not served any more
    assert len(answers(w)) == 3 and w.st.stats.dropped.get("unknown_client") == 1
    w.server.add_client(b"phone")                 # a new enrolment: the old offer paths stay dead
    request(w, inv)
    assert len(answers(w)) == 3 and w.st.stats.dropped.get("old_enrolment") == 1
