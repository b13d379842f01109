"""Served invoices kept in memory (issue 11: no datastore read per served request): an invoice served
once is served again without a read; any write of its key (a new invoice for the slot,
a removal) drops it, so what is served is always what is stored (the tick's write of the serve counts
changes neither the invoice nor its path: it keeps it); at most SERVABLE_KEPT are kept."""

from asyncreceive.crypto.context import Kind
from asyncreceive.server import service as service_module
from asyncreceive.server.store import InvoiceRecord, invoice_key
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice

from .test_protocol import World, mailbox_world, stored_invoice
from .test_server_scale import answers, request


def counting_reads(w):
    reads = []
    real_get = w.snode.ds_get
    w.snode.ds_get = lambda key: (reads.append(tuple(key)), real_get(key))[1]
    return reads


def served(w):
    return [StaticInvoice.decode(a.body) for a in answers(w)]


def test_an_invoice_is_read_once_then_served_from_memory():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    reads = counting_reads(w)
    for _ in range(4):
        request(w, inv)
    assert [x.encode() for x in served(w)] == [inv.encode()] * 4
    assert reads.count(tuple(invoice_key(b"phone", 0))) == 1


def test_a_new_invoice_for_the_slot_is_served_at_once():
    w = mailbox_world()
    old = stored_invoice(w, 0)
    request(w, old)
    w.now += 10
    w.recipient.refresh()                 # the recipient stores a new invoice for its slot
    new = stored_invoice(w, 0)
    assert new.encode() != old.encode()
    request(w, old)                       # the same offer: the new invoice answers
    assert [x.encode() for x in served(w)] == [old.encode(), new.encode()]


def test_the_ticks_count_write_keeps_it_and_a_removal_drops_it():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    reads = counting_reads(w)
    request(w, inv)
    key = tuple(invoice_key(b"phone", 0))
    assert key in w.server._servable
    w.server.tick()                       # writes the counts into the record (reading it first)
    assert key in w.server._servable and reads.count(key) == 2   # counts only: still servable
    assert InvoiceRecord.decode(w.snode.ds[key][0]).times_served == 1   # (not through ds_get: not a read)
    request(w, inv)                       # not read again
    assert reads.count(key) == 2 and len(answers(w)) == 2
    w.server.remove_client(b"phone")
    assert key not in w.server._servable
    request(w, inv)
    assert len(answers(w)) == 2 and w.st.stats.dropped.get("unknown_client") == 1


def test_an_expired_kept_invoice_is_not_served():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    request(w, inv)
    key = tuple(invoice_key(b"phone", 0))
    kept = w.server._servable[key]
    w.server._servable[key] = kept._replace(expires_at=w.now - 1)        # expired while kept
    request(w, inv)
    w.server._servable[key] = kept._replace(offer_expires_at=w.now - 1)  # its offer expired
    request(w, inv)
    assert len(answers(w)) == 1 and w.st.stats.dropped.get("invoice_expired") == 2


def test_at_most_servable_kept_the_least_recently_served_dropped_first(monkeypatch):
    monkeypatch.setattr(service_module, "SERVABLE_KEPT", 2)
    w = World(slots=3)                          # mailbox_world's server, recipient and payer, 3 slots
    w.server.load()
    w.enrol()
    w.recipient.tick(start=True)
    w.pnode, w.pt = w.net.add("payer")
    w.released = []
    w.pt.on_kind(Kind.PAYER_REPLY, w.released.append)
    invs = [stored_invoice(w, slot) for slot in range(3)]
    for slot in (0, 1, 0, 2):                   # 1 is the least recently served when 2 comes
        request(w, invs[slot])
    assert len(answers(w)) == 4
    assert set(w.server._servable) == {tuple(invoice_key(b"phone", 0)), tuple(invoice_key(b"phone", 2))}


def test_a_large_record_is_served_but_not_kept(monkeypatch):
    """Memory stays about SERVABLE_KEPT x 3 kB: a record above SERVABLE_MAX_BYTES (a long forward path)
    is read for each request instead."""
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    size = len(w.snode.ds_get(invoice_key(b"phone", 0))[0])
    monkeypatch.setattr(service_module, "SERVABLE_MAX_BYTES", size - 1)
    reads = counting_reads(w)
    request(w, inv)
    request(w, inv)
    assert len(answers(w)) == 2 and w.server._servable == {}
    assert reads.count(tuple(invoice_key(b"phone", 0))) == 2
    monkeypatch.setattr(service_module, "SERVABLE_MAX_BYTES", size)
    request(w, inv)
    assert len(w.server._servable) == 1
