"""The server's operator RPCs at scale (issue 11): pages of clients and invoices, and totals kept as
counters that always match a full count of the datastore."""

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.paying.payer import build_invoice_request
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.server.service import ServerError
from asyncreceive.server.store import SERVER_PREFIX, Tally, client_key, invoice_key
from asyncreceive.wire import messages as m

from .test_protocol import World, mailbox_world, stored_invoice

CLIENTS = [b"alice", b"bob", b"carol", b"dave", b"erin"]


def names(entries):
    return [e["client_id"] for e in entries]


def test_clients_pages_first_next_end():
    w = World()
    for c in reversed(CLIENTS):
        w.server.add_client(c)
    first = w.server.clients_page(limit=2)
    assert names(first["clients"]) == ["alice", "bob"] and first["next_start"] == "carol"
    second = w.server.clients_page(first["next_start"].encode(), 2)
    assert names(second["clients"]) == ["carol", "dave"] and second["next_start"] == "erin"
    last = w.server.clients_page(second["next_start"].encode(), 2)
    assert names(last["clients"]) == ["erin"] and "next_start" not in last
    # the pages together are the whole list, entries and all
    assert first["clients"] + second["clients"] + last["clients"] == w.server.list_clients()
    assert "next_start" not in w.server.clients_page()
    # start need not be enrolled: the page starts at the next client in order
    assert names(w.server.clients_page(b"c", 1)["clients"]) == ["carol"]
    assert w.server.clients_page(b"zzz", 5) == {"clients": []}
    assert names(w.server.clients_page(b"carol")["clients"]) == ["carol", "dave", "erin"]   # no limit: to the end
    # a client added or removed between pages shows up (or not) where its id puts it
    w.server.remove_client(b"dave")
    w.server.add_client(b"dan")
    assert names(w.server.clients_page(b"carol", 2)["clients"]) == ["carol", "dan"]


def test_a_page_reads_only_its_own_clients():
    """One page costs one datastore read per client on it not read before, not a listing of every
    client."""
    w = World()
    for c in CLIENTS:
        w.server.add_client(c)
    reads = []
    get, lst = w.snode.ds_get, w.snode.ds_list
    w.snode.ds_get = lambda k: (reads.append(k), get(k))[1]
    w.snode.ds_list = lambda k: (reads.append(k), lst(k))[1]
    w.server.clients_page(b"bob", 2)
    assert reads == [client_key(b"bob"), client_key(b"carol")]
    # read once: the same page again reads nothing, the next one only its own new clients
    before = w.server.clients_page(b"bob", 2)
    assert reads == [client_key(b"bob"), client_key(b"carol")]
    w.server.clients_page(b"carol", 2)
    assert reads == [client_key(b"bob"), client_key(b"carol"), client_key(b"dave")]
    # a client written again is read again, and shows as written
    w.server.remove_client(b"carol")
    w.server.add_client(b"carol")
    reads.clear()
    after = w.server.clients_page(b"bob", 2)
    assert reads == [client_key(b"carol")]
    assert before["clients"][1]["created_at"] <= after["clients"][1]["created_at"]
    assert after == {"clients": w.server.list_clients()[1:3], "next_start": "dave"}


def test_on_postgresql_a_page_reads_its_missing_clients_with_one_listing():
    """On PostgreSQL a read costs the rows after its key (every invoice sorts after every client): a
    page with more than one client not kept yet lists the clients' key once instead; then as on SQLite."""
    w = World()
    for c in CLIENTS:
        w.server.add_client(c)
    w.server._database = "postgres"
    w.server._clients.clear()
    reads = []
    get, lst = w.snode.ds_get, w.snode.ds_list
    w.snode.ds_get = lambda k: (reads.append(("get", k)), get(k))[1]
    w.snode.ds_list = lambda k: (reads.append(("list", k)), lst(k))[1]
    page = w.server.clients_page(b"bob", 2)
    assert reads == [("list", SERVER_PREFIX + ["clients"])]
    assert page == {"clients": w.server.list_clients()[1:3], "next_start": "dave"}
    reads.clear()
    assert w.server.clients_page(b"bob", 2) == page and reads == []         # kept
    w.server.clients_page(b"carol", 2)                                       # one missing: one read
    assert reads == [("get", client_key(b"dave"))]
    # what the listing kept is the record as stored: a client written since shows as written
    w.server.remove_client(b"carol")
    w.server.add_client(b"carol", expiry=3600)
    w.server._clients.clear()
    reads.clear()
    carol = w.server.clients_page(b"bob", 2)["clients"][1]
    assert reads == [("list", SERVER_PREFIX + ["clients"])] and carol["expires_at"] is not None


def invoices_world():
    """phone's real invoices (3 slots), and a copy of slot 0's record for alice and bob (slots 0, 1)."""
    w = World(slots=3)
    w.enrol()
    w.recipient.tick(start=True)
    assert w.statuses()["ready"] == 3
    rec = w.snode.ds_get(invoice_key(b"phone", 0))[0]
    for c in (b"alice", b"bob"):
        w.server.add_client(c)
        for slot in (0, 1):
            w.server._put(invoice_key(c, slot), rec)
    return w


def keys(entries):
    return [f"{e['client_id']}/{e['slot']}" for e in entries]


def test_invoice_pages_first_next_end_and_one_client():
    w = invoices_world()
    everything = w.server.list_invoices()
    assert keys(everything) == ["alice/0", "alice/1", "bob/0", "bob/1", "phone/0", "phone/1", "phone/2"]
    got, start = [], None
    while True:
        page = w.server.invoices_page(start=start, limit=3)
        assert len(page["invoices"]) <= 3
        got += page["invoices"]
        start = page.get("next_start")
        if start is None:
            break
    assert got == everything
    assert w.server.invoices_page(limit=3)["next_start"] == "bob/1"
    # one client's invoices, paged, and a cursor inside them
    assert keys(w.server.invoices_page(b"phone", limit=2)["invoices"]) == ["phone/0", "phone/1"]
    assert w.server.invoices_page(b"phone", limit=2)["next_start"] == "phone/2"
    assert w.server.invoices_page(b"phone", "phone/2", 2) == {"invoices": everything[-1:]}
    assert keys(w.server.invoices_page(b"bob", "alice/1", 5)["invoices"]) == ["bob/0", "bob/1"]
    assert w.server.invoices_page(b"alice", "bob/0", 5) == {"invoices": []}
    # a client id with '/' in it: the slot is after the last one
    w.server.add_client(b"a/b")
    w.server._put(invoice_key(b"a/b", 7), w.snode.ds_get(invoice_key(b"phone", 0))[0])
    page = w.server.invoices_page(start="a/b/7", limit=1)
    assert keys(page["invoices"]) == ["a/b/7"] and page["next_start"] == "alice/0"


@pytest.mark.parametrize("bad", ["phone", "phone/", "/3", "phone/x", "phone/-1", "phone/70000", "phone/٣"])
def test_a_bad_invoice_cursor_is_a_clear_error(bad):
    w = World()
    with pytest.raises(ServerError, match="start: '<client_id>/<slot>'"):
        w.server.invoices_page(start=bad, limit=2)
    with pytest.raises(ServerError, match="not valid UTF-8"):     # a lone surrogate, which JSON carries
        w.server.invoices_page(start="\ud800/0", limit=2)


def test_the_client_limit_is_checked_on_the_counter():
    w = World()
    w.server.config.max_clients = 2
    w.server.add_client(b"a")
    w.server.add_client(b"b")
    with pytest.raises(ServerError, match="client limit"):
        w.server.add_client(b"c")
    w.server.remove_client(b"a")
    w.server.add_client(b"c")
    assert names(w.server.list_clients()) == ["b", "c"]


def full_count(node):
    """What a listing of everything would say: records per kind under the server's prefix, and bytes."""
    count, size = {"clients": 0, "invoices": 0, "mailboxes": 0, "held_messages": 0}, 0
    name = {"clients": "clients", "invoices": "invoices", "mailbox": "mailboxes", "held": "held_messages"}
    for key, (value, _) in node.ds.items():
        if list(key[:len(SERVER_PREFIX)]) == SERVER_PREFIX:
            count[name[key[len(SERVER_PREFIX)]]] += 1
            size += len(value)
    return {**count, "bytes_stored": size}


def request_invoice(w):
    inv = stored_invoice(w, 0)
    invreq = build_invoice_request(inv.offer, 50_000, b"\x05" * 32, chain=CHAINS["regtest"])
    w.pt.send(inv.offer_paths[0], m.INVOICE_REQUEST, invreq.encode(), reply_context=PathContext(Kind.PAYER_REPLY))


def hold(w, n):
    w.rnode.online = False
    for i in range(n):
        w.server.on_undeliverable(w.rt.phantom_id, b"\x02\x01held" + w.now.to_bytes(8, "big") + bytes([i]) * 1300,
                                  w.pnode.node_id)


def reconnect(w):
    w.rnode.online = True
    w.server.on_peer_connected(w.rnode.node_id)


def re_enrol(w):
    if w.snode.ds_get(client_key(b"phone")) is None:
        w.enrol()
    w.recipient.refresh()


def remove(w, c):
    try:
        w.server.remove_client(c)
    except ServerError:
        pass   # not enrolled


OPS = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(CLIENTS[:3] + [b"phone"]), st.booleans()),
    st.tuples(st.just("remove"), st.sampled_from(CLIENTS[:3] + [b"phone"])),
    st.tuples(st.just("re_enrol")),
    st.tuples(st.just("request_invoice")),
    st.tuples(st.just("hold"), st.integers(1, 4)),
    st.tuples(st.just("reconnect")),
    st.tuples(st.just("time"), st.integers(1, 100_000)),
    st.tuples(st.just("restart")),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPS, max_size=12), st.sampled_from(["sqlite3", "postgres"]))
def test_totals_match_a_full_count_after_any_operations(ops, database):
    from .test_server_scale import restart
    w = mailbox_world()
    restart(w, database).load()     # counted as on that database (client by client on SQLite)
    for op in ops:
        if op[0] == "add":
            w.server.add_client(op[1], rotate=op[2])
        elif op[0] == "remove":
            remove(w, op[1])
        elif op[0] == "time":
            w.now += op[1]
            w.server.tick()
        elif op[0] == "restart":
            w.server.load()
        elif op[0] == "request_invoice":
            if w.snode.ds_get(invoice_key(b"phone", 0)) is not None:
                request_invoice(w)
        else:
            {"re_enrol": re_enrol, "hold": hold, "reconnect": reconnect}[op[0]](w, *op[1:])
        assert w.server.totals() == full_count(w.snode), op
    # and pages of one still add up to the whole lists
    pages, start = [], None
    while True:
        page = w.server.clients_page(start, 1)
        pages += page["clients"]
        if "next_start" not in page:
            break
        start = page["next_start"].encode()
    assert pages == w.server.list_clients()


def test_tally_counts_replacements_by_their_new_size_and_ignores_other_keys():
    t = Tally()
    t.stored(client_key(b"a"), 10)
    t.stored(client_key(b"a"), 4)
    t.stored(["asyncreceive", "v1", "recipient", "slot", "00000"], 99)
    t.deleted(client_key(b"zz"))
    assert (t.count["clients"], t.bytes) == (1, 4)
    t.deleted(client_key(b"a"))
    assert (t.count["clients"], t.bytes, t.page("clients")) == (0, 0, ([], None))


def test_keys_we_never_write_are_counted_but_not_paged():
    t = Tally()
    for key in (SERVER_PREFIX + ["clients", "zz"], SERVER_PREFIX + ["invoices", "61", "x"],
                SERVER_PREFIX + ["invoices", "61"], client_key(b"a"), invoice_key(b"a", 2)):
        t.stored(key, 1)
    assert t.count["clients"] == 2 and t.count["invoices"] == 3
    assert t.page("clients") == ([("61",)], None) and t.page("invoices") == ([("61", "00002")], None)
    t.deleted(SERVER_PREFIX + ["clients", "zz"])
    t.deleted(SERVER_PREFIX + ["invoices", "61", "x"])
    assert t.count["clients"] == 1 and t.page("clients") == ([("61",)], None)


class ListTally:
    """The tally as a plain sorted list of every key (how it was kept before it was made compact): what
    Tally answers must not differ from it."""

    def __init__(self):
        self.sizes = {}

    def stored(self, key, size):
        self.sizes[tuple(key)] = size

    def deleted(self, key):
        self.sizes.pop(tuple(key), None)

    def page(self, kind, start=(), limit=None, within=()):
        import bisect
        from asyncreceive.server.store import _ordered
        n = len(SERVER_PREFIX)
        order = sorted(k[n + 1:] for k in self.sizes if k[n] == kind and _ordered(kind, k[n + 1:]))
        lo = max(bisect.bisect_left(order, start), bisect.bisect_left(order, within))
        hi = bisect.bisect_left(order, within + ("\uffff",)) if within else len(order)
        end = hi if limit is None else min(hi, lo + limit)
        return order[lo:end], (order[end] if end < hi else None)


HEXES = st.sampled_from(["", "61", "6162", "62", "7a", "ff", "zz", "6"])
TAILS = st.one_of(st.tuples(st.just("clients"), HEXES),
                  st.tuples(st.just("invoices"), HEXES, st.sampled_from(["00000", "00001", "00009", "00010", "65535",
                                                                        "99999", "1", "000001", "x"])),
                  st.tuples(st.just("invoices"), HEXES),
                  st.tuples(st.sampled_from(["mailbox", "held"]), HEXES))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), TAILS, st.integers(0, 5000)), max_size=40),
       st.just(()) | st.tuples(HEXES) | st.tuples(HEXES, st.sampled_from(["00001", "0", "00009", "~"])),
       st.sampled_from([(), ("61",), ("6162",), ("ff",)]), st.sampled_from([None, 0, 1, 2, 5]))
def test_the_compact_tally_answers_as_a_sorted_list_of_keys(ops, start, within, limit):
    t, ref = Tally(), ListTally()
    for store, tail, size in ops:
        key = SERVER_PREFIX + list(tail)
        for x in (t, ref):
            x.stored(key, size) if store else x.deleted(key)
    n = len(SERVER_PREFIX)
    for kind in ("clients", "invoices", "mailbox", "held"):
        assert t.count[kind] == sum(1 for k in ref.sizes if k[n] == kind)
    assert t.bytes == sum(ref.sizes.values())
    for kind in ("clients", "invoices"):
        assert t.page(kind, start, limit, within) == ref.page(kind, start, limit, within)
        assert t.page(kind, start, limit) == ref.page(kind, start, limit)
        for cid in ("61", "6162", "zz"):
            assert t.of_client(kind, cid) == len(ref.page(kind, within=(cid,))[0])
