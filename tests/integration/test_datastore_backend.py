"""What the plugin assumes of lightningd's datastore, on the database the run uses (SQLite, or
PostgreSQL under ``make test-postgres``): listdatastore's order is the byte order of the keys (the
tally's pages follow it), generations count from 0 and compare-and-swap refuses a stale one, and
values of any bytes and size come back unchanged."""

import pytest

from asyncreceive.shell.lightningd import Lightningd, NodeError
from asyncreceive.server.store import SERVER_PREFIX, Tally, client_key

#: client ids whose hex orders differently from their text order in most collations
IDS = [b"B", b"a", b"a/b", b"ab", b"a b", b"\x00", b"\xff\xfe", "é".encode(), "z".encode(), b"Z" * 200]


@pytest.fixture
def store(node_factory):
    node = node_factory.get_node()
    return Lightningd(node.rpc)


def test_listdatastore_order_is_the_tallys_order(store):
    tally = Tally()
    for cid in reversed(IDS):
        store.ds_put(client_key(cid), cid)
        tally.stored(client_key(cid), len(cid))
    listed = [e["key"] for e in store.rpc.listdatastore(key=SERVER_PREFIX + ["clients"])["datastore"]]
    assert listed == [client_key(bytes.fromhex(t[0])) for t in tally.page("clients")[0]]
    assert [k for k, _, _ in store.ds_list(SERVER_PREFIX + ["clients"])] == listed
    # a record's key does not list its neighbours: one client read is one record
    assert [e["key"] for e in store.rpc.listdatastore(key=client_key(b"a"))["datastore"]] == [client_key(b"a")]


def test_generations_and_compare_and_swap(store):
    key = SERVER_PREFIX + ["test", "cas"]
    assert store.ds_put(key, b"one") == 0
    assert store.ds_put(key, b"two", 0) == 1
    with pytest.raises(NodeError):
        store.ds_put(key, b"stale", 0)
    with pytest.raises(NodeError):
        store.ds_put(key, b"exists")
    assert store.ds_get(key) == (b"two", 1)
    store.ds_delete(key)
    assert store.ds_get(key) is None
    assert store.ds_put(key, b"again") == 0


def test_values_of_any_bytes_and_size_come_back_unchanged(store):
    stored = []
    for size in (0, 1, 5120, 65_536, 1_000_000):
        value = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
        key = SERVER_PREFIX + ["test", f"v{size:07d}"]
        store.ds_put(key, value)
        assert store.ds_get(key) == (value, 0)
        stored.append((key, value, 0))
    assert store.ds_list(SERVER_PREFIX + ["test"]) == stored


def test_the_database_backend_is_read_from_lightningd(store):
    """The server counts its invoices client by client on SQLite, in one listing on PostgreSQL
    (ServerService._count): lightningd's ``wallet`` option says which."""
    import os
    if os.environ.get("TEST_DB_PROVIDER") == "postgres":
        assert store.database_backend() == "postgres"
    else:
        assert store.database_backend() in ("sqlite3", None)   # None: not set, lightningd's default (SQLite)
