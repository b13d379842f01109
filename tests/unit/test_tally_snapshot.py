"""The tally's snapshot: a clean shutdown leaves the tally's clients and invoices in a few records
(``Tally.snapshot``, ``ServerService.close``) and the next start reads and deletes them instead of
counting client by client (``ServerService.load``); a start after a crash, or with a snapshot that is
damaged or incomplete, counts as before.

The pure part: any tally round-trips through its snapshot to an equal tally (counts, bytes, pages), and
the records refuse any damage with DecodeError only.  The service, on the in-memory fakes: written at
close, read and deleted before any write at start, writes made while it is read replayed on it, a
crash (no close) counted, a damaged one counted and logged."""

import threading

import pytest
from hypothesis import given, settings, strategies as st

from asyncreceive.app import route
from asyncreceive.errors import DecodeError
from asyncreceive.server.service import ServerService, ShuttingDown
from asyncreceive.server.store import (SERVER_PREFIX, SNAPSHOT_PART_BYTES, TALLY_HEAD_KEY, TALLY_PREFIX,
                                       TALLY_SNAPSHOT, ClientRecord, Tally, TallySnapshotHead, TallySnapshotPart,
                                       client_key, invoice_key)
from asyncreceive.shell.lightningd import NodeError

from .test_datastore_records import any_bytes
from .test_protocol import mailbox_world
from .test_server_paging import full_count
from .test_server_scale import clients_with_invoices, listings

# ---- pure: the snapshot of a tally ----------------------------------------------------------------------

IDS = st.sampled_from([b"a", b"ab", b"b", b"\x00", b"\xff\xfe", b"phone", "é".encode(), b"Z" * 40])
SLOTS = st.sampled_from([0, 1, 2, 9, 10, 65535, 99999])
SIZES = st.integers(0, 2**40 - 1) | st.integers(0, 5000)
OPS = st.lists(st.one_of(
    st.tuples(st.just("client"), IDS, SIZES),
    st.tuples(st.just("invoice"), IDS, SLOTS, SIZES),
    st.tuples(st.just("delete client"), IDS),
    st.tuples(st.just("delete invoice"), IDS, SLOTS),
), max_size=40)
#: what the snapshot leaves out (listed at every start): mailbox registrations and held messages
OTHERS = [(SERVER_PREFIX + ["mailbox", b"a".hex()], 300), (SERVER_PREFIX + ["held", b"a".hex(), "5-x"], 1400)]


def tally_of(ops, others=()) -> Tally:
    t = Tally()
    for key, size in others:
        t.stored(key, size)
    for op in ops:
        if op[0] == "client":
            t.stored(client_key(op[1]), op[2])
        elif op[0] == "invoice":
            t.stored(invoice_key(op[1], op[2]), op[3])
        elif op[0] == "delete client":
            t.deleted(client_key(op[1]))
        else:
            t.deleted(invoice_key(op[1], op[2]))
    return t


def same(a: Tally, b: Tally) -> None:
    assert (a.count, a.bytes) == (b.count, b.bytes)
    for kind in ("clients", "invoices"):
        assert a.page(kind) == b.page(kind)
        for cid in {t[0] for t in a.page("clients")[0] + a.page("invoices")[0]}:
            assert a.of_client(kind, cid) == b.of_client(kind, cid)
    # pages with a limit and a start, as the RPCs ask for them
    assert a.page("invoices", (b"a".hex(), "00001"), 3) == b.page("invoices", (b"a".hex(), "00001"), 3)


def restored(records, others=()) -> Tally:
    t = tally_of([], others)
    t.restore(records)
    return t


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 300))
def test_a_tally_round_trips_through_its_snapshot(ops, part_bytes):
    t = tally_of(ops, OTHERS)
    records = t.snapshot(part_bytes)
    assert records[-1][0] == TALLY_HEAD_KEY                             # written last
    assert all(len(TallySnapshotPart.decode(v).data) <= part_bytes for _, v in records[:-1])
    same(t, restored(records, OTHERS))
    same(t, restored(list(reversed(records)), OTHERS))                   # listed in any order
    # and the restored tally goes on counting as the original does
    a, b = t, restored(records, OTHERS)
    for x in (a, b):
        x.stored(invoice_key(b"ab", 3), 7)
        x.deleted(client_key(b"a"))
    same(a, b)


def test_ten_thousand_clients_of_ten_invoices_fit_in_about_a_megabyte_of_bounded_parts():
    t = Tally()
    for i in range(10_000):
        cid = b"filler-%06d" % i
        t.stored(client_key(cid), 60)
        for slot in range(10):
            t.stored(invoice_key(cid, slot), 2900 + i % 50)
    records = t.snapshot()
    assert 0.8e6 < sum(len(v) for _, v in records) < 1.2e6
    assert all(len(v) <= SNAPSHOT_PART_BYTES + 8 for _, v in records)
    same(t, restored(records))


@pytest.mark.parametrize("foreign", [
    SERVER_PREFIX + ["clients", "AB"],                   # hex, not as we write it
    SERVER_PREFIX + ["clients", "not hex"],
    SERVER_PREFIX + ["invoices", "ab", "1"],             # a slot not of 5 digits
    SERVER_PREFIX + ["clients", "ab", "deeper"],
])
def test_a_tally_holding_keys_the_server_never_writes_has_no_snapshot(foreign):
    """Someone else's record under our prefix: only a count takes it as it is."""
    t = tally_of([("client", b"a", 5)])
    assert t.snapshot() is not None
    t.stored(foreign, 3)
    assert t.snapshot() is None


heads = st.builds(TallySnapshotHead, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1),
                  st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32))


@given(heads)
def test_head_round_trip(head):
    assert TallySnapshotHead.decode(head.encode()) == head


@given(st.binary(min_size=1, max_size=100))
def test_part_round_trip(data):
    assert TallySnapshotPart.decode(TallySnapshotPart(data).encode()) == TallySnapshotPart(data)


def body_of(ops):
    records = tally_of(ops).snapshot()
    return b"".join(TallySnapshotPart.decode(v).data for _, v in records[:-1])


@settings(max_examples=300)
@given(st.binary(max_size=200) | heads.map(lambda h: h.encode()[:-1] + b"\x01"))
def test_head_any_bytes(data):
    any_bytes(TallySnapshotHead.decode, TallySnapshotHead.encode, data)
    any_bytes(TallySnapshotPart.decode, TallySnapshotPart.encode, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.tuples(OPS, st.integers(0, 500), st.binary(min_size=1, max_size=3)).map(
    lambda a: (lambda b: b[:a[1] % (len(b) + 1)] + a[2] + b[a[1] % (len(b) + 1):])(body_of(a[0]))))
def test_snapshot_body_any_bytes(data):
    """Any bytes decode to client tallies in order (ids increasing, slots increasing) that encode back to
    the same value, or raise DecodeError."""
    any_bytes(TALLY_SNAPSHOT.decode, TALLY_SNAPSHOT.encode, data)
    try:
        entries = TALLY_SNAPSHOT.decode(data)["clients"]
    except DecodeError:
        return
    ids = [e[0] for e in entries]
    assert ids == sorted(set(ids))
    for _, record, invoices in entries:
        slots = [p >> 40 for p in invoices]
        assert slots == sorted(set(slots)) and (record is not None or slots)


@pytest.mark.parametrize("entries, why", [
    ([(b"b", 1, []), (b"a", 1, [])], "not after the one before"),
    ([(b"a", 1, []), (b"a", 2, [])], "not after the one before"),
    ([(b"a", None, [2 << 40, 1 << 40])], "slots not increasing"),
    ([(b"a", None, [1 << 40 | 5, 1 << 40 | 6])], "slots not increasing"),
    ([(b"a", None, [100_000 << 40])], "over 99999"),
    ([(b"a", None, [])], "neither a record nor invoices"),
    ([(b"a", 2**40, [])], "too large"),
])
def test_a_snapshot_body_out_of_order_or_out_of_range_is_refused(entries, why):
    with pytest.raises(DecodeError, match=why):
        TALLY_SNAPSHOT.decode(TALLY_SNAPSHOT.encode({"clients": entries}))


@settings(max_examples=300, deadline=None)
@given(OPS.filter(lambda ops: any(op[0] in ("client", "invoice") for op in ops)), st.integers(1, 60),
       st.data())
def test_any_damage_to_a_snapshot_is_refused_and_leaves_the_tally_as_it_was(ops, part_bytes, data):
    records = tally_of(ops).snapshot(part_bytes)
    how = data.draw(st.sampled_from(["byte", "drop", "extra", "foreign", "swap", "truncate", "any"]))
    i = data.draw(st.integers(0, len(records) - 1))
    key, value = records[i]
    damaged = list(records)
    if how == "byte":
        j = data.draw(st.integers(0, len(value) - 1))
        damaged[i] = (key, value[:j] + bytes([value[j] ^ data.draw(st.integers(1, 255))]) + value[j + 1:])
    elif how == "drop":
        del damaged[i]
    elif how == "extra":
        damaged.append((TALLY_PREFIX + [f"{len(records) - 1:05d}"], value))
    elif how == "foreign":
        damaged.append((SERVER_PREFIX + ["clients", "ab"], value))
    elif how == "swap":
        if len(records) < 3 or records[0][1] == records[1][1]:
            return
        damaged[0], damaged[1] = (records[0][0], records[1][1]), (records[1][0], records[0][1])
    elif how == "truncate":
        damaged[i] = (key, value[:data.draw(st.integers(0, len(value) - 1))])
    else:
        damaged[i] = (key, data.draw(st.binary(max_size=80)))
        if damaged[i][1] == value:
            return
    t = tally_of([], OTHERS)
    before = (dict(t.count), t.bytes)
    with pytest.raises(DecodeError):
        t.restore(damaged)
    assert (t.count, t.bytes, t.page("clients"), t.page("invoices")) == (before[0], before[1], ([], None), ([], None))


# ---- the service: written at close, read and deleted at start ---------------------------------------

class Logged:
    def __init__(self):
        self.lines = []

    def __call__(self, msg, level="info"):
        self.lines.append((level, msg))

    def has(self, level, text):
        return any(lv == level and text in msg for lv, msg in self.lines)


def restart(w, database="sqlite3"):
    """A new server over the same datastore (not loaded yet); its log lines in ``w.log``."""
    w.snode.database = database
    w.log = Logged()
    w.server = ServerService(w.st, w.server.config, w.log, clock=lambda: w.now)
    route(w.st, server=w.server)
    return w.server


def snapshot_keys(w):
    return [k for k in w.snode.ds if list(k[:len(TALLY_PREFIX)]) == TALLY_PREFIX]


def server_world():
    """phone (a real client, its invoice and mailbox registration, a held message) and alice, bob, carol
    with two invoices each; several parts (a small part size)."""
    w = mailbox_world()
    clients_with_invoices(w, [b"bob", b"alice", b"carol"])
    w.rnode.online = False
    w.server.on_undeliverable(w.rt.phantom_id, b"\x02\x01held" + bytes(1300), w.pnode.node_id)
    w.rnode.online = True
    return w


def everything(server):
    return (server.totals(), server.list_clients(), server.list_invoices(),
            server.tally.page("clients"), server.tally.page("invoices"))


@pytest.mark.parametrize("database", ["sqlite3", "postgres"])
def test_a_clean_shutdown_leaves_the_tally_and_the_next_start_reads_and_deletes_it(database, monkeypatch):
    w = server_world()
    monkeypatch.setattr("asyncreceive.server.store.SNAPSHOT_PART_BYTES", 64)   # several parts
    before = everything(w.server)
    assert before[0]["held_messages"] == 1 and before[0]["mailboxes"] == 1
    writes = len(w.snode.events)
    w.server.close()
    written = [e[1] for e in w.snode.events[writes:]]
    assert len(written) > 2 and written[-1] == tuple(TALLY_HEAD_KEY)     # parts, then the head
    assert sorted(written) == sorted(snapshot_keys(w))
    server = restart(w, database)
    listed = listings(w)
    server.load()
    assert listed == []                                                  # nothing counted
    assert snapshot_keys(w) == []                                        # and the snapshot is gone
    assert everything(server) == before
    assert server.totals() == full_count(w.snode)
    assert w.log.has("info", "read from the snapshot the last shutdown left")
    # the next clean shutdown leaves it again
    server.close()
    assert len(snapshot_keys(w)) == len(written)


def test_the_snapshot_is_deleted_before_the_first_write_and_writes_while_it_is_read_are_replayed(monkeypatch):
    w = server_world()
    rec = w.snode.ds_get(invoice_key(b"bob", 0))[0]
    w.server.close()
    server = restart(w)
    gate, reading, seen = threading.Event(), threading.Event(), []
    real_restore = Tally.restore

    def slow_restore(tally, records):
        seen.append(snapshot_keys(w))
        reading.set()
        gate.wait(10)
        return real_restore(tally, records)
    monkeypatch.setattr(Tally, "restore", slow_restore)
    server.load(background=True)
    assert reading.wait(5) and seen == [[]]                   # deleted before the tally is even read
    server.remove_client(b"alice")                            # writes meanwhile: replayed on it
    server._put(invoice_key(b"bob", 5), rec)
    server._delete(invoice_key(b"carol", 1))
    server._set(client_key(b"dave"), ClientRecord(b"dave", w.now).encode())
    w.recipient.refresh()                                     # phone's invoice stored again
    totals = []
    reader = threading.Thread(target=lambda: totals.append(server.totals()))
    reader.start()
    reader.join(0.2)
    assert totals == []                                       # the totals wait for it
    gate.set()
    reader.join(5)
    assert totals == [full_count(w.snode)] and totals[0]["clients"] == 4
    assert w.log.has("info", "read from the snapshot")
    counted = restart(w)
    counted.load()
    assert everything(server)[1:] == everything(counted)[1:]


def test_after_a_crash_the_start_counts():
    """A snapshot is read once: the start after it deleted it; a crash (no close) after writes leaves
    none, and the next start counts what is stored, not what the last clean shutdown saw."""
    w = server_world()
    w.server.close()
    restart(w).load()
    assert w.log.has("info", "read from the snapshot")
    w.server.remove_client(b"bob")
    w.server.add_client(b"erin")
    expected = full_count(w.snode)
    server = restart(w)                                       # crashed: no close
    listed = listings(w)
    server.load()
    assert listed[0] == ["clients"] and len(listed) == 5      # counted client by client
    assert w.log.has("info", "counted client by client")
    assert server.totals() == expected


@pytest.mark.parametrize("damage", ["byte", "no head", "part missing", "head only"])
def test_a_damaged_or_incomplete_snapshot_is_logged_deleted_and_counted(damage, monkeypatch):
    w = server_world()
    monkeypatch.setattr("asyncreceive.server.store.SNAPSHOT_PART_BYTES", 64)
    w.server.close()
    keys = sorted(snapshot_keys(w))
    assert len(keys) > 2
    part = keys[1]
    if damage == "byte":
        value, gen = w.snode.ds[part]
        w.snode.ds[part] = (value[:-1] + bytes([value[-1] ^ 4]), gen)
    elif damage == "no head":                                 # the shutdown did not finish writing it
        del w.snode.ds[tuple(TALLY_HEAD_KEY)]
    elif damage == "part missing":
        del w.snode.ds[part]
    else:
        for k in keys[:-1]:
            del w.snode.ds[k]
    server = restart(w)
    listed = listings(w)
    server.load()
    assert listed and listed[0] == ["clients"]
    assert w.log.has("unusual", "snapshot is damaged or incomplete")
    assert w.log.has("info", "counted client by client")
    assert snapshot_keys(w) == []
    assert server.totals() == full_count(w.snode)


def test_a_closed_server_writes_nothing():
    w = server_world()
    w.server.close()
    writes = dict(w.snode.ds)
    with pytest.raises(ShuttingDown):
        w.server.add_client(b"late")
    with pytest.raises(OSError):
        w.server.remove_client(b"bob")
    assert w.snode.ds == writes
    restart(w).load()
    assert w.server.totals() == full_count(w.snode)


@pytest.mark.parametrize("why", ["count failed", "write failed", "still counting"])
def test_no_snapshot_when_the_tally_is_not_sure(why, monkeypatch):
    w = server_world()
    server = restart(w)
    if why == "count failed":
        real = w.snode.ds_sizes
        w.snode.ds_sizes = lambda prefix: (_ for _ in ()).throw(OSError("lightningd gone"))
        server.load()
        w.snode.ds_sizes = real
    elif why == "still counting":
        gate = threading.Event()
        real = w.snode.ds_sizes
        w.snode.ds_sizes = lambda prefix: (gate.wait(10), real(prefix))[1]
        server.load(background=True)
    else:
        server.load()
        real_put = w.snode.ds_put

        def lost(key, value, generation=None):     # lightningd may have written it: nobody knows
            real_put(key, value, generation)
            raise OSError("connection lost during the answer")
        w.snode.ds_put = lost
        with pytest.raises(OSError):
            server._put(invoice_key(b"bob", 7), b"x")
        w.snode.ds_put = real_put
    server.close()
    assert snapshot_keys(w) == []
    assert w.log.has("info", "no snapshot of the tally")
    if why == "still counting":
        gate.set()


def test_a_refused_write_keeps_the_tally_sure():
    w = server_world()
    server = restart(w)
    server.load()
    real = w.snode.ds_put
    w.snode.ds_put = lambda *a: (_ for _ in ()).throw(NodeError("generation mismatch"))
    with pytest.raises(NodeError):
        server._put(invoice_key(b"bob", 7), b"x")
    w.snode.ds_put = real
    server.close()
    assert snapshot_keys(w) != []


def test_a_server_with_nothing_stored_leaves_nothing():
    w = server_world()
    server = restart(w)
    server.load()
    for c in (b"phone", b"alice", b"bob", b"carol"):
        server.remove_client(c)
    server.close()
    assert snapshot_keys(w) == []
