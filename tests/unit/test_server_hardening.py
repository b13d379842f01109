"""The static invoice server under attack, on the in-memory network (real crypto, fake lightningd).

5: junk on a client's public ``server -> phantom`` path neither evicts nor blocks a real payer's message;
7: a replayed older ``serve_static_invoice`` does not replace the stored invoice;
8: a client's paths are bound to its enrolment, and removal is atomic with serves;
11: a damaged datastore record is skipped, never crashes an RPC or a handler.
"""

import threading
from dataclasses import replace

import pytest
from hypothesis import given, strategies as st

from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.errors import DecodeError
from asyncreceive.paying.payer import build_invoice_request
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.server import mailbox as mb
from asyncreceive.server.service import F_CLIENT, ServerConfig
from asyncreceive.server.store import ClientRecord, InvoiceRecord, client_key, invoice_key, invoices_prefix
from asyncreceive.wire import messages as m
from asyncreceive.wire.paths import decode_path_list

from .test_protocol import NOW, World, mailbox_world, send_held_htlc_available, stored_invoice


# ---- 5: the mailbox against a flood from one peer -------------------------------------------------

def from_peer(w, peer):
    """Onion messages the server's lightningd cannot forward now come from ``peer`` (the ``source`` of
    onionmessage_forward_fail)."""
    w.st.on_undeliverable = lambda nid, onion, source=None: w.server.on_undeliverable(nid, onion, peer.node_id)


def flood(w, peer, n, start=0):
    """``n`` junk messages (distinct, relayable size) on the client's phantom from ``peer``, one a second."""
    for i in range(start, start + n):
        w.server.on_undeliverable(w.rt.phantom_id, b"\x02\x01junk" + i.to_bytes(4, "big") + b"\x00" * 1300,
                                  peer.node_id)
        w.now += 1


def reconnect(w):
    w.rnode.online = True
    w.server.on_peer_connected(w.rnode.node_id)


def test_a_flood_after_a_real_message_does_not_evict_it():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    attacker, _ = w.net.add("attacker")
    w.rnode.online = False
    from_peer(w, w.pnode)
    send_held_htlc_available(w, inv, inv.message_paths[:1])
    assert w.server.held_count() == 1
    flood(w, attacker, 200)
    assert w.server.held_count() == w.server.config.max_held     # the mailbox is full of junk ...
    reconnect(w)
    assert len(w.released) == 1                                   # ... and the real one is still there


def test_a_flood_before_a_real_message_does_not_block_it():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    attacker, _ = w.net.add("attacker")
    w.rnode.online = False
    flood(w, attacker, 200)                                       # the mailbox is full of junk first
    assert w.server.held_count() == w.server.config.max_held
    w.now -= 1
    flood(w, attacker, 30, start=200)                             # and the flood goes on, same instant
    from_peer(w, w.pnode)
    send_held_htlc_available(w, inv, inv.message_paths[:1])       # room is made from the flooder's
    assert w.server.held_count() == w.server.config.max_held
    reconnect(w)
    assert len(w.released) == 1
    assert any("holds its share: not held" in e[2] for e in w.net.log)


def test_an_incoming_peer_is_rate_limited_over_all_clients():
    w = mailbox_world(ServerConfig(max_held=1000, max_held_bytes=10**7))
    attacker, _ = w.net.add("attacker")
    w.rnode.online = False
    for i in range(100):                                           # all at one instant
        w.server.on_undeliverable(w.rt.phantom_id, b"junk%d" % i, attacker.node_id)
    assert w.server.held_count() == mb.HOLD_BURST                  # per (client, peer)
    w.now += 1000
    for i in range(200):
        w.server.on_undeliverable(w.rt.phantom_id, b"more%d" % i, attacker.node_id if i % 2 else w.pnode.node_id)
    assert w.server.held_count() == mb.HOLD_BURST * 3              # each peer has its own bucket
    held = [mb.HeldMessage.decode(v) for _, v, _ in w.snode.ds_list(mb.held_prefix())]
    assert {h.source for h in held} == {attacker.node_id, w.pnode.node_id}   # the source is kept
    w.now += 1000
    big = ServerConfig(max_held=1000, max_held_bytes=10**7)
    w.server.config = big
    w.server.hold_limit = type(w.server.hold_limit)(capacity=10**6)  # only the per-peer bucket left
    n = w.server.held_count()
    for i in range(200):
        w.server.on_undeliverable(w.rt.phantom_id, b"x%d" % i, attacker.node_id)
    assert w.server.held_count() - n == mb.PEER_HOLD_BURST


def test_byte_budget_per_client():
    w = mailbox_world(ServerConfig(max_held=64, max_held_bytes=3000))
    w.rnode.online = False
    for i in range(5):
        w.server.on_undeliverable(w.rt.phantom_id, bytes([i]) * 1400, w.pnode.node_id)
    assert w.server.held_count() == 2


# ---- 7: replayed serve_static_invoice ------------------------------------------------------------

def test_a_replayed_older_serve_does_not_replace_the_stored_invoice():
    w = World(slots=1)
    w.enrol()
    w.recipient.tick(start=True)
    handshake = list(w.sent)
    w.now += 100
    w.recipient.refresh()                                         # a newer invoice for the slot
    newer = w.snode.ds_get(invoice_key(b"phone", 0))[0]
    assert stored_invoice(w, 0).created_at == NOW + 100
    acks = w.st.stats.sent.get("static_invoice_persisted", 0)
    for out in handshake:                                         # the old serve, replayed
        w.net.deliver(out)
    assert stored_invoice(w, 0).created_at == NOW + 100
    assert InvoiceRecord.decode(w.snode.ds_get(invoice_key(b"phone", 0))[0]).invoice == \
        InvoiceRecord.decode(newer).invoice
    assert w.st.stats.sent["static_invoice_persisted"] == acks + 1   # still acknowledged
    assert any("kept the stored static invoice" in e[2] for e in w.net.log)


def test_same_created_at_another_invoice_keeps_the_stored_one():
    w = World(slots=1)
    w.enrol()
    w.recipient.tick(start=True)
    first = InvoiceRecord.decode(w.snode.ds_get(invoice_key(b"phone", 0))[0]).invoice
    acks = w.st.stats.sent.get("static_invoice_persisted", 0)
    # same second, another invoice with the same created_at (our recipient keeps its invoices newer than the
    # last one it served for the slot: forget that, as a client that does not would)
    w.recipient.cache = tuple(replace(x, invoice_floor=0) for x in w.recipient.cache)
    w.recipient.refresh()
    assert w.st.stats.sent["static_invoice_persisted"] == acks + 1
    assert InvoiceRecord.decode(w.snode.ds_get(invoice_key(b"phone", 0))[0]).invoice == first
    w.now += 1
    w.recipient.refresh()                                          # a newer one is taken
    assert stored_invoice(w, 0).created_at == NOW + 1


# ---- 8: enrolments -------------------------------------------------------------------------------

def test_remove_then_add_makes_a_new_enrolment_and_the_old_paths_stop_working():
    w = World(slots=1)
    w.enrol()
    w.recipient.tick(start=True)
    w.server.remove_client(b"phone")
    w.server.add_client(b"phone")                                  # a new device
    w.now += 10
    w.recipient.refresh()                                          # the old device re-serves on its paths
    w.recipient.tick(start=True)
    assert w.server.list_invoices(b"phone") == []
    assert w.drops(w.st).get("old_enrolment", 0) >= 1


def test_add_on_an_enrolled_client_is_idempotent_unless_rotated():
    w = World(slots=1)
    r1 = w.enrol()
    w.recipient.tick(start=True)
    enrolment = w.server._client(b"phone").enrolment
    created = w.server._client(b"phone").created_at
    w.now += 10
    w.server.add_client(b"phone")                                  # again: same enrolment, old paths work
    assert w.server._client(b"phone").enrolment == enrolment and w.server._client(b"phone").created_at == created
    w.recipient.refresh()
    assert stored_invoice(w, 0).created_at == NOW + 10
    w.now += 10
    w.server.add_client(b"phone", rotate=True)                     # asked to rotate: a new enrolment
    assert w.server._client(b"phone").enrolment != enrolment
    assert w.server.list_invoices(b"phone") == []
    w.recipient.refresh()
    assert w.server.list_invoices(b"phone") == [] and w.drops(w.st).get("old_enrolment", 0) >= 1
    assert r1["paths_hex"]


def test_a_client_enrolled_before_enrolment_ids_keeps_working():
    w = World(slots=1)
    w.snode.ds_set(client_key(b"phone"), ClientRecord(b"phone", NOW).encode())     # an old record
    paths = w.server.client_paths(PathContext(Kind.CLIENT, None, {F_CLIENT: b"phone"}))  # old paths
    w.recipient.set_servers([paths])
    w.recipient.load([])
    w.recipient.tick(start=True)
    w.now += 1
    w.recipient.tick()
    assert len(w.server.list_invoices(b"phone")) == 1
    w.server.add_client(b"phone")                                  # re-adding keeps it as it was
    assert w.server._client(b"phone").enrolment is None
    assert decode_path_list(bytes.fromhex(w.server.add_client(b"phone")["paths_hex"]))


def test_a_serve_racing_removeclient_leaves_no_orphan_invoice():
    w = World(slots=2)
    w.enrol()
    w.recipient.tick(start=True)
    w.now += 1
    w.recipient.tick()
    assert len(w.server.list_invoices(b"phone")) == 2
    handshake = list(w.sent)
    w.snode.ds_delete(invoice_key(b"phone", 1))                    # slot 1's serve is still on its way
    removing, served = threading.Event(), threading.Event()
    real_list = w.snode.ds_list

    def ds_list(prefix):
        got = real_list(prefix)
        if list(prefix) == invoices_prefix(b"phone") and threading.current_thread().name == "remove":
            removing.set()
            served.wait(0.5)                                       # let the serve run here, if it can
        return got

    def serve():
        removing.wait(5)
        for out in handshake:
            w.net.deliver(out)
        served.set()

    w.snode.ds_list = ds_list
    t1 = threading.Thread(target=w.server.remove_client, args=(b"phone",), name="remove")
    t2 = threading.Thread(target=serve, name="serve")
    t1.start(), t2.start()
    t1.join(10), t2.join(10)
    w.snode.ds_list = real_list
    assert w.snode.ds_get(client_key(b"phone")) is None
    assert w.snode.ds_list(invoices_prefix(b"phone")) == []        # nothing stored after the removal


# ---- 11: damaged records -------------------------------------------------------------------------

def _valid_records():
    w = mailbox_world()
    out = {}
    for name, prefix in (("client", ["clients"]), ("invoice", ["invoices"]), ("mailbox", ["mailbox"])):
        out[name] = w.snode.ds_list(["asyncreceive", "v1", "server"] + prefix)[0][1]
    out["held"] = mb.HeldMessage(NOW, b"\x02\x01" + b"\x00" * 50, w.pnode.node_id).encode()
    return out


VALID = _valid_records()
DECODERS = {"client": ClientRecord.decode, "invoice": InvoiceRecord.decode,
            "mailbox": mb.MailboxRecord.decode, "held": mb.HeldMessage.decode}


def _damage(data, how, at, byte):
    at %= max(1, len(data))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([data[at] ^ (byte or 1)]) + data[at + 1:]
    if how == "insert":
        return data[:at] + bytes([byte]) + data[at:]
    return data[:at] + data[at + 1:]                                # drop a byte


@given(st.sampled_from(sorted(DECODERS)), st.sampled_from(["truncate", "flip", "insert", "drop"]),
       st.integers(0, 10_000), st.integers(0, 255))
def test_record_decoders_raise_only_decode_error(name, how, at, byte):
    data = _damage(VALID[name], how, at, byte)
    try:
        DECODERS[name](data)
    except DecodeError:
        pass


@given(st.sampled_from(sorted(DECODERS)), st.binary(max_size=300))
def test_record_decoders_on_random_bytes(name, data):
    try:
        DECODERS[name](data)
    except DecodeError:
        pass


def test_wrong_lengths_in_records_are_decode_errors():
    from asyncreceive.wire.tlv import encode_tlv
    for bad in (encode_tlv([(0, b"c"), (2, b"\x01"), (5, b"short")]),          # enrolment not 8 bytes
                encode_tlv([(0, b"c"), (2, b"\x00\x01")]),                      # non-minimal created_at
                encode_tlv([(0, b"c"), (2, b"\x01" * 9)])):                     # over 8 bytes
        with pytest.raises(DecodeError):
            ClientRecord.decode(bad)
    with pytest.raises(DecodeError):
        mb.HeldMessage.decode(encode_tlv([(0, b"\x01"), (2, b"x"), (3, b"\x02" * 32)]))  # source not 33 bytes
    with pytest.raises(DecodeError):
        InvoiceRecord.decode(VALID["invoice"][:-3])


def test_damaged_records_are_skipped_by_every_caller():
    w = mailbox_world()
    inv = stored_invoice(w, 0)
    w.server.add_client(b"other")
    w.rnode.online = False
    send_held_htlc_available(w, inv, inv.message_paths[:1])
    # damage the other client's record, phone's invoice, phone's mailbox registration, and add a damaged
    # held message
    w.snode.ds_set(client_key(b"other"), b"\xff")
    w.snode.ds_set(invoice_key(b"phone", 0), VALID["invoice"][:40])
    w.snode.ds_set(mb.mailbox_key(b"zzz"), b"\x00\x05ab")
    w.snode.ds_put(mb.held_key(b"phone", w.now, b"bad"), b"\x02\x01")
    assert [c["client_id"] for c in w.server.list_clients()] == ["phone"]
    assert w.server.list_invoices() == []
    w.server.load()
    assert w.server._mailbox_of(b"phone") is not None
    w.rnode.online = True
    w.server.on_peer_connected(w.rnode.node_id)                    # the damaged held message is skipped
    assert len(w.released) == 1
    unusual = [e[2] for e in w.net.log if e[1] == "unusual" and "damaged datastore record" in e[2]]
    assert len(unusual) >= 4
    # an invoice_request on phone's offer path finds a damaged invoice: dropped, nothing sent
    sent, n = dict(w.st.stats.sent), len(w.net.log)
    invreq = build_invoice_request(inv.offer, 50_000, b"\x05" * 32, chain=CHAINS["regtest"])
    w.pt.send(inv.offer_paths[0], m.INVOICE_REQUEST, invreq.encode(), reply_context=PathContext(Kind.PAYER_REPLY))
    assert w.st.stats.received.get("invoice_request") == 1 and w.st.stats.sent == sent
    assert any(e[1] == "unusual" and "damaged datastore record" in e[2] for e in w.net.log[n:])


def test_mailbox_of_is_an_index_kept_in_step():
    w = mailbox_world()
    assert w.server._mailbox_of(b"phone").registration.phantom_id == w.rt.phantom_id
    w.server.load()
    assert w.server._box_of == {c: rec for c, rec in w.server._mailboxes.values()}
    w.server.remove_client(b"phone")
    assert w.server._box_of == {} and w.server._mailboxes == {}
