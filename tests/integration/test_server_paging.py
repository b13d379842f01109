"""The server's operator RPCs page and count (issue 11), on a real lightningd: pages of clients and
invoices through JSON-RPC, bad paging arguments as JSON-RPC errors, and asyncreceive-status's totals
matching what the datastore holds, before and after a restart."""

import pytest
from pyln.client import RpcError
from pyln.testing.utils import wait_for

from asyncreceive.server.store import SERVER_PREFIX

from .test_recipient_server import enrol, ready

INVALID_PARAMS = -32602


def datastore_under(node, key):
    """(count per kind, bytes of values) of every record below ``key``, listed key by key."""
    count, size, todo = {}, 0, [key]
    while todo:
        k = todo.pop()
        for e in node.rpc.listdatastore(key=k)["datastore"]:
            if "hex" in e:
                kind = e["key"][len(SERVER_PREFIX)]
                count[kind] = count.get(kind, 0) + 1
                size += len(e["hex"]) // 2
            elif e["key"] != k:
                todo.append(e["key"])
    return count, size


def totals_match_datastore(server):
    """asyncreceive-status's totals, once they equal a full listing of the datastore (the recipient may
    re-serve an invoice between the two calls)."""
    def matches():
        t = server.rpc.call("asyncreceive-status")["static_invoice_server"]
        count, size = datastore_under(server, SERVER_PREFIX)
        got.append(t)
        return (t["clients"], t["invoices"], t["mailboxes"], t["held_messages"], t["bytes_stored"]) == \
            (count.get("clients", 0), count.get("invoices", 0), count.get("mailbox", 0), count.get("held", 0), size)
    got = []
    wait_for(matches, timeout=30)
    return got[-1]


def all_pages(server, cmd, what, limit, **args):
    pages, start = [], None
    while True:
        page = server.rpc.call(cmd, dict(args, limit=limit, **({"start": start} if start else {})))
        assert 1 <= len(page[what]) <= limit or (page[what] == [] and not pages)
        pages.append(page[what])
        start = page.get("next_start")
        if start is None:
            return pages


def test_pages_of_clients_and_invoices_and_totals(node_factory, plugin_opts):
    server, recipient = node_factory.line_graph(2, fundchannel=True, opts=plugin_opts)
    enrol(server, recipient, "phone")
    for c in ("dave", "alice", "erin", "bob"):
        server.rpc.call("asyncserver-addclient", {"client_id": c})
    wait_for(lambda: len(ready(recipient)) == 10)

    # five clients, two a page: first, next, end
    first = server.rpc.call("asyncserver-listclients", {"limit": 2})
    assert [c["client_id"] for c in first["clients"]] == ["alice", "bob"] and first["next_start"] == "dave"
    second = server.rpc.call("asyncserver-listclients", {"start": first["next_start"], "limit": 2})
    assert [c["client_id"] for c in second["clients"]] == ["dave", "erin"] and second["next_start"] == "phone"
    last = server.rpc.call("asyncserver-listclients", {"start": second["next_start"], "limit": 2})
    assert [c["client_id"] for c in last["clients"]] == ["phone"] and "next_start" not in last
    assert last["clients"][0]["invoices"] == 10 and last["clients"][0]["mailbox"] is True
    whole = server.rpc.call("asyncserver-listclients")
    assert "next_start" not in whole and whole["clients"] == first["clients"] + second["clients"] + last["clients"]

    # phone's ten invoices, four a page, in slot order
    pages = all_pages(server, "asyncserver-listinvoices", "invoices", 4, client_id="phone")
    assert [len(p) for p in pages] == [4, 4, 2]
    assert [i["slot"] for p in pages for i in p] == list(range(10))
    assert sum(pages, []) == server.rpc.call("asyncserver-listinvoices")["invoices"]
    assert server.rpc.call("asyncserver-listinvoices", {"limit": 4})["next_start"] == "phone/4"

    # bad paging arguments: JSON-RPC errors that say what is wanted
    for args, msg in (({"limit": 0}, "limit: a whole number"), ({"limit": "2"}, "limit: a whole number"),
                      ({"limit": True}, "limit: a whole number"), ({"start": ""}, "start: a client_id")):
        with pytest.raises(RpcError, match=msg) as e:
            server.rpc.call("asyncserver-listclients", args)
        assert e.value.error["code"] == INVALID_PARAMS
    for start in ("phone", "phone/x", 3):
        with pytest.raises(RpcError, match="start: '<client_id>/<slot>'") as e:
            server.rpc.call("asyncserver-listinvoices", {"start": start, "limit": 2})
        assert e.value.error["code"] == INVALID_PARAMS

    # totals are counters, and they match what the datastore holds, also after a restart
    counts = ("clients", "invoices", "mailboxes", "held_messages")
    assert [totals_match_datastore(server)[k] for k in counts] == [5, 10, 1, 0]
    server.rpc.call("asyncserver-removeclient", {"client_id": "dave"})
    assert [totals_match_datastore(server)[k] for k in counts] == [4, 10, 1, 0]
    server.restart()
    assert [totals_match_datastore(server)[k] for k in counts] == [4, 10, 1, 0]
