"""The served-request path at scale (issue 11): serving an invoice_request writes nothing to the
datastore (counts are kept in memory and written on the tick: a crash loses counts, never an
invoice), and a client's record is read once, not once per request."""

import pytest

from asyncreceive.app import route
from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.shell.lightningd import NodeError
from asyncreceive.paying.payer import build_invoice_request
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.server.service import ServerConfig, ServerService
from asyncreceive.server.store import SERVER_PREFIX, ClientRecord, InvoiceRecord, client_key, invoice_key
from asyncreceive.wire import messages as m
from asyncreceive.wire.bolt12.invoice_request import InvoiceRequest

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
    route(w.st, server=restarted)
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


def restart(w, database):
    """A new server over the same datastore, on lightningd with ``database`` (not loaded yet)."""
    w.snode.database = database
    w.server = ServerService(w.st, w.server.config, lambda *a: None, clock=lambda: w.now)
    route(w.st, server=w.server)
    return w.server


@pytest.mark.parametrize("database", ["sqlite3", "postgres"])
def test_requests_are_served_while_the_tally_is_counted_and_writes_meanwhile_are_kept(database):
    """Start-up (load in the background): the clients and invoices are still being counted, yet an
    invoice_request is answered; a serve and a removal made meanwhile are in the counts once ready;
    the operator's totals wait for the count."""
    import threading

    from .test_server_paging import full_count
    w = mailbox_world()
    restart(w, database)
    w.server.add_client(b"other")
    inv = stored_invoice(w, 0)
    gate, counting = threading.Event(), threading.Event()
    real_sizes = w.snode.ds_sizes

    def slow_sizes(prefix):
        counting.set()
        gate.wait(10)
        return real_sizes(prefix)
    w.snode.ds_sizes = slow_sizes
    w.server.load(background=True)
    assert counting.wait(5)
    request(w, inv)
    assert len(answers(w)) == 1                       # served while counting
    w.server.remove_client(b"other")                  # writes meanwhile: replayed on the count
    w.recipient.refresh()
    totals = []
    reader = threading.Thread(target=lambda: totals.append(w.server.totals()))
    reader.start()
    reader.join(0.2)
    assert totals == []                               # the totals wait for the count
    now = w.server.totals(wait=False)                 # asyncreceive-status's: answered while counting
    exact = full_count(w.snode)
    assert now == {"clients": None, "invoices": None, "bytes_stored": None, "counting": True,
                   "mailboxes": exact["mailboxes"], "held_messages": exact["held_messages"]}
    assert now["mailboxes"] == 1                      # read before the count
    gate.set()
    reader.join(5)
    assert totals == [exact] and totals[0]["clients"] == 1
    assert w.server.totals(wait=False) == dict(exact, counting=False)


def test_log_lines_lightningd_would_drop_are_not_sent():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("asyncreceive_plugin", Path(__file__).parents[2] / "plugin.py")
    p = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(p)
    level = p._lightningd_log_level
    assert level({"log-level": {"values_str": ["info"]}}) == 1
    assert level({"log-level": {"value_str": "unusual"}}) == 2
    assert level({"log-level": {"values_str": ["trace"]}}) == 0
    assert level({"log-level": {"values_str": ["info", "debug:plugin-plugin.py"]}}) == 0   # a subsystem's
    assert level({}) == 0 and level({"log-level": {"values_str": ["loud"]}}) == 0
    sent = []
    p.plugin.log = lambda msg, level: sent.append((level, msg))
    p.app = p.App(None, None, None, None, None, None, log_level=1)
    p.log("a debug line", "debug")
    p.log("an info line")
    p.log("unusual", "unusual")
    assert sent == [("info", "an info line"), ("unusual", "unusual")]


def test_a_path_starting_at_us_is_decrypted_once():
    """The forward path of a client (first hop: the server) is used for every invoice_request: lightningd
    decrypts that hop once, not per request."""
    from asyncreceive.shell import transport as tr
    w = mailbox_world()
    w.st.running.set()
    inv = stored_invoice(w, 0)
    calls = []
    real = w.snode.decrypt_encrypted_data
    w.snode.decrypt_encrypted_data = lambda enc, pk: (calls.append(enc), real(enc, pk))[1]
    forward = InvoiceRecord.decode(w.snode.ds_get(invoice_key(b"phone", 0))[0]).forward_path
    for _ in range(3):
        request(w, inv)
    assert len(answers(w)) == 3
    assert forward.first_node_id == w.snode.node_id
    assert calls.count(forward.hops[0].encrypted_recipient_data) == 1
    assert len(w.st._our_hops) <= tr.OUR_HOPS_KEPT


def clients_with_invoices(w, clients, slots=(0, 1)):
    """``clients`` enrolled, each with a copy of phone's slot 0 record in ``slots``."""
    rec = w.snode.ds_get(invoice_key(b"phone", 0))[0]
    for c in clients:
        w.server.add_client(c)
        for slot in slots:
            w.server._put(invoice_key(c, slot), rec)
    return rec


def listings(w):
    """The prefixes the server lists with ds_sizes, from now on."""
    listed, real = [], w.snode.ds_sizes
    w.snode.ds_sizes = lambda prefix: (listed.append(prefix[len(SERVER_PREFIX):]), real(prefix))[1]
    return listed


@pytest.mark.parametrize("database", ["sqlite3", "postgres"])
def test_start_up_counts_client_by_client(database):
    """The clients are listed, then each client's invoices (lightningd lists one level of a key: a
    listing of the invoices' key would read every invoice to name the clients, then need these
    anyway); never the invoices' key itself, on either database.  The backend is asked once."""
    from .test_server_paging import full_count
    w = mailbox_world()
    rec = clients_with_invoices(w, [b"bob", b"alice"])
    orphan = invoice_key(b"gone", 3)               # an older version's crash in a removal left it
    w.snode.ds_put(orphan, rec)
    server = restart(w, database)
    asked, real_backend = [], w.snode.database_backend
    w.snode.database_backend = lambda: (asked.append(1), real_backend())[1]
    listed = listings(w)
    server.load()
    assert listed == [["clients"]] + [["invoices", c.hex()] for c in (b"alice", b"bob", b"phone")]
    everything = full_count(w.snode)
    assert server.totals() == dict(everything, invoices=everything["invoices"] - 1,
                                   bytes_stored=everything["bytes_stored"] - len(rec))   # not the orphan
    assert [e["client_id"] for e in server.list_clients()] == ["alice", "bob", "phone"]
    assert [(e["client_id"], e["slot"]) for e in server.list_invoices()][:4] == [
        ("alice", 0), ("alice", 1), ("bob", 0), ("bob", 1)]
    server.load()                                 # loaded again: the backend is not asked again
    assert asked == [1]


@pytest.mark.parametrize("database", ["sqlite3", "postgres"])
def test_writes_between_the_listings_of_a_count_are_replayed_on_it(database):
    """Writes made while the clients' invoices are being listed, to clients listed before, being
    listed, or not yet listed, and to a client enrolled meanwhile (written directly: add_client waits
    for the count): once counted, the tally is what the datastore holds, and pages are those of a
    count made with no writes meanwhile."""
    from .test_server_paging import full_count
    w = mailbox_world()
    rec = clients_with_invoices(w, [b"alice", b"bob", b"carol"])
    server = restart(w, database)
    real = w.snode.ds_sizes
    done = []

    def writes_meanwhile(prefix):
        got = list(real(prefix))        # listed, then written: this listing does not see the writes
        if prefix[len(SERVER_PREFIX):] == ["invoices", b"bob".hex()] and not done:
            done.append(prefix)
            server.remove_client(b"alice")                       # listed before
            server._delete(invoice_key(b"bob", 0))               # being listed
            server._put(invoice_key(b"bob", 5), rec)
            server._delete(invoice_key(b"carol", 1))             # not yet listed
            server._put(invoice_key(b"carol", 7), rec)
            server._set(client_key(b"dave"), ClientRecord(b"dave", w.now).encode())   # enrolled meanwhile
            server._put(invoice_key(b"dave", 2), rec)
            w.recipient.refresh()                                # phone's invoice stored again
        return got
    w.snode.ds_sizes = writes_meanwhile
    server.load()
    assert done and server.totals() == full_count(w.snode)
    w.snode.ds_sizes = real
    fresh = restart(w, database)
    fresh.load()
    for kind in ("clients", "invoices"):
        assert server.tally.page(kind) == fresh.tally.page(kind)
    assert [(e["client_id"], e["slot"]) for e in server.list_invoices()][:5] == [
        ("bob", 1), ("bob", 5), ("carol", 0), ("carol", 7), ("dave", 2)]


def test_a_removal_cut_short_leaves_the_client_enrolled_and_removable():
    """The client's record is deleted last: a removal cut short (a crash, lightningd gone) leaves an
    enrolled client with fewer invoices, which the lists show and a second removal finishes; never
    invoices without a client, which nothing would list or remove."""
    w = mailbox_world()
    before = len(w.snode.ds_list(["asyncreceive"]))
    real_delete, deleted = w.snode.ds_delete, []

    def delete_then_fail(key):
        if "mailbox" in key:             # after the invoices: cut short here
            raise OSError("lightningd gone")
        deleted.append(tuple(key))
        real_delete(key)
    w.snode.ds_delete = delete_then_fail
    try:
        w.server.remove_client(b"phone")
    except OSError:
        pass
    assert deleted and all("invoices" in k for k in deleted)   # the invoice went, the client did not
    w.snode.ds_delete = real_delete
    assert w.snode.ds_get(client_key(b"phone")) is not None
    assert [c["client_id"] for c in w.server.list_clients()] == ["phone"]
    w.server.remove_client(b"phone")
    assert w.server.list_clients() == [] and w.server.list_invoices() == []
    assert [k for k, _, _ in w.snode.ds_list(["asyncreceive", "v1", "server"])] == []
    assert len(w.snode.ds_list(["asyncreceive"])) < before


def test_a_well_formed_invoice_request_is_served_whatever_its_signature_and_a_malformed_one_is_not():
    """The server checks that an invoice_request is well formed, not its signature (anyone can sign
    one with a key of their own; the recipient checks it when it answers online)."""
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    invreq = build_invoice_request(inv.offer, 50_000, b"\x05" * 32, chain=CHAINS["regtest"]).encode()
    forged = invreq[:-1] + bytes([invreq[-1] ^ 1])      # the signature is the last record
    assert not InvoiceRequest.decode(forged, check_signature=False).verify_signature()
    w.pt.send(inv.offer_paths[0], m.INVOICE_REQUEST, forged, reply_context=PathContext(Kind.PAYER_REPLY))
    w.now += 1
    assert len(answers(w)) == 1
    w.pt.send(inv.offer_paths[0], m.INVOICE_REQUEST, invreq[:-5], reply_context=PathContext(Kind.PAYER_REPLY))
    w.now += 1
    assert len(answers(w)) == 1


def test_operator_commands_run_on_their_thread_and_a_wait_for_the_count_holds_up_no_other():
    """plugin.py's operator thread: a page asked for while a start counts waits for the count without
    holding up a removal asked for after it; an answer that fails leaves the thread running; past the
    bound, a clear error."""
    import importlib.util
    import threading
    from pathlib import Path
    from types import SimpleNamespace

    from pyln.client import RpcException
    from pyln.testing.utils import wait_for
    spec = importlib.util.spec_from_file_location("asyncreceive_plugin_ops", Path(__file__).parents[2] / "plugin.py")
    p = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(p)
    counted = threading.Event()
    p.app = SimpleNamespace(server=SimpleNamespace(tally_ready=counted.is_set, wait_tally=lambda: counted.wait(10)),
                            log_level=0)
    p.plugin.log = lambda msg, level="info": None
    answers, threads = [], set()

    def answer(request, work):
        threads.add(threading.current_thread().name)
        if request == "fails":
            raise BrokenPipeError("pyln's pipe is gone")
        answers.append((request, work()))
    p.plugin.answer = answer
    p._on_operator_thread("page", lambda: "a page", needs_tally=True)
    p._on_operator_thread("fails", lambda: None)
    p._on_operator_thread("remove", lambda: "removed")
    wait_for(lambda: answers == [("remove", "removed")], timeout=5)
    counted.set()
    wait_for(lambda: answers == [("remove", "removed"), ("page", "a page")], timeout=5)
    assert threads == {"asyncreceive-operator"}
    # the bound on commands waiting for a count
    counted.clear()
    for i in range(p.OPERATOR_QUEUE):
        p._on_operator_thread(f"wait {i}", lambda: "late", needs_tally=True)
    with pytest.raises(RpcException, match="already waiting"):
        p._on_operator_thread("one more", lambda: "late", needs_tally=True)
    counted.set()
    wait_for(lambda: len(answers) == 2 + p.OPERATOR_QUEUE, timeout=10)
