"""The server's tally across restarts, on a real lightningd (SQLite, or PostgreSQL under
``TEST_DB_PROVIDER=postgres``): a clean stop (lightningd's ``shutdown`` notification) leaves the tally in a
few records that sort after the server's others, the next start reads them instead of counting client by
client and deletes them before anything else; a start after SIGKILL finds none and counts."""

import time

from pyln.testing.utils import wait_for

from asyncreceive.server.store import TALLY_PREFIX, ClientRecord, client_key, invoice_key
from asyncreceive.shell.lightningd import Lightningd
from asyncreceive.shell.rpc import KeptConnectionRpc

from .test_server_paging import all_pages, totals_match_datastore

CLIENTS = 200
INVOICES = 3
#: long client ids (they may be up to 256 bytes), so that the snapshot takes more than one part
ID_BYTES = 200


def client_id(i: int) -> bytes:
    return (b"client-%04d-" % i).ljust(ID_BYTES, b"x")


def fill(node) -> None:
    """CLIENTS clients with INVOICES invoice records each, written straight into the datastore in key
    order (the tally counts their sizes; nothing here reads an invoice record)."""
    store = Lightningd(KeptConnectionRpc(node.rpc.socket_path))
    now = int(time.time())
    for i in range(CLIENTS):
        store.ds_put(client_key(client_id(i)), ClientRecord(client_id(i), now, None, i.to_bytes(8, "big")).encode())
    for i in range(CLIENTS):
        for slot in range(INVOICES):
            store.ds_put(invoice_key(client_id(i), slot), bytes([slot]) * (100 + 37 * (i % 11)))


def snapshot_keys(node):
    return [e["key"] for e in node.rpc.listdatastore(key=TALLY_PREFIX)["datastore"]]


def state(node):
    """asyncreceive-status's totals (once they match the datastore) and every page of clients."""
    return totals_match_datastore(node), all_pages(node, "asyncserver-listclients", "clients", 50)


def started(node, how: str, mark: int) -> str:
    """The start-up's tally line since log line ``mark``, which must say ``how`` it was obtained."""
    wait_for(lambda: node.daemon.is_in_log(r"static invoice server: \d+ clients", start=mark))
    line = node.daemon.is_in_log(r"static invoice server: \d+ clients", start=mark)
    assert how in line, line
    return line


def test_a_clean_restart_reads_the_tally_and_a_kill_counts_it(node_factory, plugin_opts):
    node = node_factory.get_node(options=dict(plugin_opts, **{"asyncserver-max-clients": CLIENTS + 10}))
    fill(node)
    mark = len(node.daemon.logs)
    node.daemon.kill()                     # SIGKILL: the tally did not see the writes above; counted now
    node.start()
    started(node, "counted client by client", mark)
    before = state(node)
    assert before[0]["clients"] == CLIENTS and before[0]["invoices"] == CLIENTS * INVOICES
    assert [c["invoices"] for page in before[1] for c in page] == [INVOICES] * CLIENTS

    # a clean restart: the snapshot is written at shutdown, read and deleted at start
    mark = len(node.daemon.logs)
    node.restart()
    left = node.daemon.is_in_log(r"left for the next start \((\d+) part", start=mark)
    assert left is not None and "(1 part" not in left, left
    started(node, "read from the snapshot the last shutdown left", mark)
    assert snapshot_keys(node) == []
    assert state(node) == before

    # changes, then SIGKILL: no snapshot is left, the start counts what is stored
    node.rpc.call("asyncserver-removeclient", {"client_id": client_id(7).decode()})
    node.rpc.call("asyncserver-addclient", {"client_id": "late"})
    changed = state(node)
    assert changed[0]["clients"] == CLIENTS and changed[0]["invoices"] == (CLIENTS - 1) * INVOICES
    mark = len(node.daemon.logs)
    node.daemon.kill()
    node.start()
    started(node, "counted client by client", mark)
    assert snapshot_keys(node) == []
    assert state(node) == changed


def test_status_answers_while_a_start_counts(node_factory, plugin_opts):
    """After a crash the start counts client by client (seconds at thousands of clients); meanwhile
    asyncreceive-status answers at once (counting, totals not known yet) and a page of clients waits
    for the count on the operator's thread, not on the thread that reads lightningd's hooks."""
    import threading
    many = 3000
    node = node_factory.get_node(options=dict(plugin_opts, **{"asyncserver-max-clients": many + 10}))
    store = Lightningd(KeptConnectionRpc(node.rpc.socket_path))
    now = int(time.time())
    for i in range(many):     # written behind the plugin's back: the start after the kill counts them
        store.ds_put(client_key(b"c-%05d" % i), ClientRecord(b"c-%05d" % i, now, None, i.to_bytes(8, "big")).encode())
    node.daemon.kill()
    node.start()
    pages = []
    page = threading.Thread(target=lambda: pages.append(node.rpc.call("asyncserver-listclients", {"limit": 3})))
    page.start()
    time.sleep(0.5)           # the page is asked for first (the count takes seconds)
    st = node.rpc.call("asyncreceive-status")["static_invoice_server"]
    assert st["counting"] is True and st["clients"] is None and st["invoices"] is None, st
    assert page.is_alive(), "the page waits for the count"
    page.join(300)
    assert [c["client_id"] for c in pages[0]["clients"]] == ["c-00000", "c-00001", "c-00002"]
    st = node.rpc.call("asyncreceive-status")["static_invoice_server"]
    assert st["counting"] is False and st["clients"] == many, st
