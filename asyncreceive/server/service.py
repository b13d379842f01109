"""The static invoice server (bLIP-66 server side, compatible with LDK clients).

- ``add_client`` hands out blinded paths (ending at our phantom hop) whose context names the client, its
  enrolment and an expiry: no per-path state, valid across restarts.  Every context the server issues
  carries the enrolment id; ``remove_client`` then ``add_client`` makes a new one, so the old device's
  paths stop working.  ``add_client`` on an enrolled id keeps its enrolment (idempotent) unless asked to
  ``rotate`` it.
- ``offer_paths_request`` on such a path gets ``offer_paths``: fresh offer paths (context: client, slot,
  now + 365 d) and a reply path (same context) that the client reuses for every invoice refresh.
- ``serve_static_invoice`` on that reply path is validated (parses, signature, not expired, size, at
  least one of its offer paths is ours for that client and slot: the others may be another server's,
  so that the offer outlives one server being down), persisted, and only then acknowledged.  An invoice
  older than the stored one for that slot (a replayed serve: lightningd keeps no replay cache for onion
  messages) is acknowledged but not stored; so is another invoice with the same ``created_at``.
  Checking the client and writing are done under one lock that ``remove_client`` takes too, and removal
  deletes the client record first: a serve racing a removal stores nothing.
- ``invoice_request`` on an offer path is forwarded to the client's ``forward_invoice_request_path``
  (with the payer's reply path), then answered with the stored ``static_invoice``.  Serving writes
  nothing: ``times_served``/``last_served_at`` are counted in memory and written on the tick (a
  crash or kill loses at most one tick's counts, never an invoice); the stored invoice is not
  re-verified (its signature was checked when it was stored).  Enrolled clients' records are kept
  in memory once read (every write of one goes through ``_put``/``_set``/``_delete``).
- the mailbox (``mailbox.py``): onion messages for a registered client phantom are held while the
  client is offline and relayed when it connects.

A damaged datastore record (decoders raise DecodeError) is skipped with an "unusual" log line.
"""

import functools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from ..crypto.blinding import decrypt_hop
from ..crypto.context import CONTEXT_TLV_TYPE, ContextError, Kind, PathContext
from ..errors import DecodeError
from ..logs import client_name, short_id
from ..shell.crashpoint import crashpoint
from ..shell.lightningd import NodeError
from ..shell.transport import Received, Transport, TransportError
from ..wire import messages as m
from ..wire.bolt12.invoice_request import InvoiceRequest
from ..wire.bolt12.static_invoice import StaticInvoice
from ..wire.paths import BlindedPath
from ..wire.tlv import decode_fixed, u16
from . import mailbox as mb
from .ratelimit import RateLimiter
from .store import (ENROLMENT_BYTES, TALLY_HEAD_KEY, TALLY_PREFIX, ClientRecord, InvoiceRecord, Tally, client_key,
                    invoice_key, invoices_prefix, SERVER_PREFIX)

F_CLIENT = 4
F_SLOT = 6
F_ENROLMENT = 8
OFFER_LIFETIME = 365 * 24 * 3600
#: a served invoice's offer may carry at most this many offer paths (each of ours costs one
#: decryptencrypteddata call to recognise)
MAX_OFFER_PATHS_CHECKED = 8
#: invoices kept ready to serve (about 3 kB each): the ones requested most lately; a record larger than
#: SERVABLE_MAX_BYTES (a client's forward path can be as long as an onion allows) is served, not kept
SERVABLE_KEPT = 1000
SERVABLE_MAX_BYTES = 8192


class Servable(NamedTuple):
    """What serving a stored static invoice needs: its bytes, the path to forward the request to the
    client on, and when the invoice and its offer expire (from the invoice, read once)."""
    invoice: bytes
    forward_path: BlindedPath
    expires_at: int
    offer_expires_at: Optional[int]

    def expired(self, now: int) -> bool:
        return self.expires_at < now or (self.offer_expires_at is not None and now > self.offer_expires_at)


@dataclass
class ServerConfig:
    max_clients: int = 1000
    max_slots: int = 10
    max_invoice_bytes: int = 5120
    max_held: int = mb.MAX_HELD          # messages per client; 0 turns the mailbox off
    hold_seconds: int = mb.HOLD_SECONDS
    max_held_bytes: int = mb.MAX_HELD_BYTES   # bytes per client


#: what ``add_client`` did, in its reply
ENROLMENT_NOTES = {
    "new": "enrolled: give paths_hex to the client (asyncreceive-setserver, or LDK's set_paths_to_static_invoice_server)",
    "kept": "already enrolled: same enrolment, its paths and stored invoices keep working (expiry updated); "
            "rotate=true starts a new one for a new device",
    "rotated": "new enrolment: the old device's paths stopped working and its invoices were deleted",
}


class ServerError(Exception):
    """An RPC request the server refuses; the message is for the operator."""


class ShuttingDown(OSError):
    """A write after ``close`` (lightningd is stopping): not made.  An OSError, as lightningd's RPC socket
    gone is: whoever runs the work logs it as the end of the run."""


class ServerService:
    def __init__(self, transport: Transport, config: ServerConfig, log: Callable[[str, str], None],
                 clock: Callable[[], float] = time.time):
        self.t = transport
        self.node = transport.node
        self.config = config
        self._log = log
        self._clock = clock
        self.persist_limit = RateLimiter()
        self.lookup_limit = RateLimiter()
        self.hold_limit = RateLimiter(capacity=mb.HOLD_BURST, refill_seconds=mb.HOLD_REFILL_SECONDS)
        self.peer_hold_limit = RateLimiter(capacity=mb.PEER_HOLD_BURST, refill_seconds=mb.PEER_HOLD_REFILL_SECONDS)
        #: held around every check-the-client-then-write (serves, registrations, holds, removal)
        self._lock = threading.RLock()
        self._mailboxes: Dict[bytes, Tuple[bytes, mb.MailboxRecord]] = {}   # phantom id -> (client, record)
        self._box_of: Dict[bytes, mb.MailboxRecord] = {}                     # client -> record
        #: client -> {held message key: received_at}: who has messages waiting, without reading them
        self._held_keys: Dict[bytes, Dict[Tuple[str, ...], int]] = {}
        #: client -> {held message key: when it was handed to the sender}, until lightningd took it
        self._in_flight: Dict[bytes, Dict[Tuple[str, ...], float]] = {}
        self._delivering: Set[bytes] = set()
        self._deliver_again: Set[bytes] = set()
        #: counts and key order of what is stored (``load``, then every ``_put``/``_delete``); while
        #: ``load`` counts it, the writes made meanwhile wait in ``_journal``
        self.tally = Tally()
        self._loaded = threading.Event()
        self._loaded.set()
        self._journal: Optional[List[Tuple[str, tuple]]] = None
        #: lightningd's database ("sqlite3", "postgres"), read at the first ``load`` (for the count's log)
        self._database: Optional[str] = None
        #: False once the tally may differ from what is stored (a count that failed, a write that failed
        #: after lightningd may have made it): then ``close`` leaves no snapshot, and the next start counts
        self._tally_exact = True
        #: set by ``close`` (a clean shutdown): the server writes nothing more
        self._closed = False
        #: client -> its record as stored (None: damaged), once read; dropped on every write of it
        self._clients: Dict[bytes, Optional[ClientRecord]] = {}
        #: invoice key -> what serving it needs, for the invoices served lately (at most SERVABLE_KEPT,
        #: the least recently served dropped first; dropped on every write of the key, see ``_forget``)
        self._servable: "OrderedDict[Tuple[str, ...], Servable]" = OrderedDict()
        #: (client, slot) -> (times served, last served at) not yet written (``flush_served``)
        self._served: Dict[Tuple[bytes, int], Tuple[int, int]] = {}
        transport.on_undeliverable = self.on_undeliverable   # holds only while config.max_held > 0 (dynamic)

    def now(self) -> int:
        return int(self._clock())

    # ---- operator RPCs ---------------------------------------------------------------------------
    def add_client(self, client_id: bytes, expiry: Optional[int] = None, rotate: bool = False) -> dict:
        """Enrol ``client_id``.  On an enrolled id this keeps its enrolment (its paths keep working) and
        sets the new expiry; with ``rotate`` it is a removal then a new enrolment."""
        if not client_id or len(client_id) > 256:
            raise ServerError("client_id must be 1 to 256 bytes")
        now = self.now()
        expires_at = now + expiry if expiry else None
        key = client_key(client_id)
        self.wait_tally()
        with self._lock:
            got = self.node.ds_get(key)
            old = self._decode_client(got[0], key) if got is not None else None
            if got is None and self.tally.count["clients"] >= self.config.max_clients:
                raise ServerError(f"client limit reached ({self.config.max_clients}, option asyncserver-max-clients)")
            enrolment = "new" if got is None else "rotated" if (rotate or old is None) else "kept"
            if enrolment == "rotated":
                self._remove(client_id)
                old = None
            rec = (ClientRecord(client_id, old.created_at, expires_at, old.enrolment) if old is not None
                   else ClientRecord(client_id, now, expires_at, os.urandom(ENROLMENT_BYTES)))
            self._set(key, rec.encode())
        ctx = PathContext(Kind.CLIENT, expires_at, self._fields(client_id, rec.enrolment))
        paths = self.client_paths(ctx)
        return {"client_id": _text(client_id), "enrolment": enrolment, "note": ENROLMENT_NOTES[enrolment],
                "expires_at": expires_at,
                "paths": [p.encode().hex() for p in paths],
                "paths_hex": (u16(len(paths)) + b"".join(p.encode() for p in paths)).hex()}

    @staticmethod
    def _fields(client_id: bytes, enrolment: Optional[bytes], slot: Optional[int] = None) -> Dict[int, bytes]:
        fields = {F_CLIENT: client_id}
        if enrolment is not None:
            fields[F_ENROLMENT] = enrolment
        if slot is not None:
            fields[F_SLOT] = u16(slot)
        return fields

    def client_paths(self, ctx: PathContext) -> List[BlindedPath]:
        """Up to 3 paths: through us, then through up to two connected channel peers."""
        paths = [self.t.make_path(ctx)]
        try:
            peers = self.node.connected_channel_peers()
        except Exception:
            peers = []
        for p in peers[:2]:
            paths.append(self.t.make_path(ctx, via=[p]))
        return paths

    def _damaged(self, key: List[str], e: Exception) -> None:
        self._log(f"skipping damaged datastore record {'/'.join(key)}: {e}", "unusual")

    def _decode_client(self, data: bytes, key: List[str]) -> Optional[ClientRecord]:
        try:
            return ClientRecord.decode(data)
        except DecodeError as e:
            return self._damaged(key, e)

    def _client(self, client_id: bytes) -> Optional[ClientRecord]:
        """The enrolled client, if it has not expired (None if damaged); read once, then from memory."""
        rec = self._client_record(client_id)
        if rec is None or (rec.expires_at is not None and self.now() > rec.expires_at):
            return None
        return rec

    def _client_record(self, client_id: bytes) -> Optional[ClientRecord]:
        """The client's record as stored, expired or not (None if there is none or it is damaged); read
        once, then from memory (dropped on every write of it)."""
        with self._lock:
            if client_id in self._clients:
                return self._clients[client_id]
            key = client_key(client_id)
            got = self.node.ds_get(key)
            rec = self._decode_client(got[0], key) if got is not None else None
            if got is not None:
                self._clients[client_id] = rec
            return rec

    def _read_clients(self, client_ids: List[bytes]) -> None:
        """On PostgreSQL, keep the records of those of ``client_ids`` not kept yet with one listing of the
        clients' key, if more than one is missing: lightningd's lookup (``key >= ?``) fetches every row
        after the key it reads, and every invoice sorts after every client, so one read costs as much
        as the listing (at 10 000 clients x 10 invoices, 100 reads would fetch 11 million rows, the
        listing 110 000).  On SQLite a read is an indexed lookup: ``_client_record`` reads them one by
        one.  Under ``_lock``, as ``_client_record``: a write meanwhile waits, so nothing kept is stale."""
        if self._database != "postgres":
            return
        with self._lock:
            missing = {cid.hex() for cid in client_ids if cid not in self._clients}
            if len(missing) <= 1:
                return
            n = len(SERVER_PREFIX) + 1
            for key, value, _ in self.node.ds_list(SERVER_PREFIX + ["clients"]):
                if len(key) == n + 1 and key[n] in missing:
                    self._clients[bytes.fromhex(key[n])] = self._decode_client(value, key)

    def list_clients(self) -> List[dict]:
        return self.clients_page()["clients"]

    def clients_page(self, start: Optional[bytes] = None, limit: Optional[int] = None) -> dict:
        """Enrolled clients in client id order (byte order), from ``start`` (a client id, need not be
        enrolled) on, at most ``limit`` of them; ``next_start`` names the first client of the next page
        (absent at the end).  Counts come from the tally; a page reads the record of each client not
        read before (lightningd's listdatastore has no paging: listing the clients' key returns every
        client; on PostgreSQL each read costs the rows after its key), the whole list one listing."""
        first = (start.hex(),) if start is not None else ()
        self.wait_tally()
        with self._lock:
            tails, nxt = self.tally.page("clients", first, limit)
        if limit is None:
            recs = [self._decode_client(v, k) for k, v, _ in self.node.ds_list(SERVER_PREFIX + ["clients"])
                    if (k[-1],) >= first]
        else:
            self._read_clients([bytes.fromhex(t[0]) for t in tails])
            recs = [self._client_record(bytes.fromhex(t[0])) for t in tails]
        out = []
        for rec in recs:
            if rec is None:
                continue
            with self._lock:
                box = self._box_of.get(rec.client_id)
                held = len(self._held_keys.get(rec.client_id, {}))
                invoices = self.tally.of_client("invoices", rec.client_id.hex())
            out.append({"client_id": _text(rec.client_id), "created_at": rec.created_at,
                        "expires_at": rec.expires_at, "invoices": invoices,
                        "mailbox": box is not None,
                        "node_id": box.client_node_id.hex() if box is not None else None,
                        "held_messages": held})
        return _paged("clients", out, _text(bytes.fromhex(nxt[0])) if nxt is not None else None)

    def _require_client(self, client_id: bytes) -> None:
        """ServerError unless ``client_id`` is enrolled (its record is stored)."""
        if self.node.ds_get(client_key(client_id)) is None:
            raise ServerError(f"unknown client {client_id.decode('utf-8', 'replace')}")

    def remove_client(self, client_id: bytes) -> dict:
        with self._lock:
            self._require_client(client_id)
            removed = self._remove(client_id)
        return {"client_id": _text(client_id), "invoices_removed": removed}

    def _remove(self, client_id: bytes) -> int:
        """Delete what a client left, then the client (under ``_lock``: a serve or hold waiting for the
        lock finds no client, so nothing is stored for it after this).  The client's record goes last:
        a crash half-way leaves an enrolled client with fewer records, seen in the lists and removed
        again, never records without a client (which nothing would list or remove).  Returns the
        invoices deleted."""
        with self._lock:
            removed = 0
            for key, _, _ in self.node.ds_list(invoices_prefix(client_id)):
                self._delete(key)
                removed += 1
            for key, _, _ in self.node.ds_list(mb.held_prefix(client_id)):
                self._delete(key)
            self._delete(mb.mailbox_key(client_id))
            self._delete(client_key(client_id))
            self._set_box(client_id, None)
            self._held_keys.pop(client_id, None)
            self._in_flight.pop(client_id, None)
            for k in [k for k in self._served if k[0] == client_id]:
                del self._served[k]
        return removed

    def list_invoices(self, client_id: Optional[bytes] = None) -> List[dict]:
        return self.invoices_page(client_id)["invoices"]

    def invoices_page(self, client_id: Optional[bytes] = None, start: Optional[str] = None,
                      limit: Optional[int] = None) -> dict:
        """Stored invoices (of ``client_id`` only, if given: an unknown one is an error, as for
        ``remove_client``) in (client id, slot) order, from ``start`` (``"<client_id>/<slot>"``, as
        ``next_start`` gives it) on, at most ``limit`` of them.  Reads one listing per client on the page
        (a client's invoices are one key's children)."""
        if client_id is not None:
            self._require_client(client_id)
        self.wait_tally()
        with self._lock:
            tails, nxt = self.tally.page("invoices", invoice_cursor(start) if start is not None else (), limit,
                                         (client_id.hex(),) if client_id is not None else ())
        out = []
        for chex in dict.fromkeys(t[0] for t in tails):
            slots = {t[1] for t in tails if t[0] == chex}
            for key, val, _ in self.node.ds_list(invoices_prefix(bytes.fromhex(chex))):
                if key[-1] not in slots:
                    continue
                rec, inv = self._stored(val, key)
                if rec is None:
                    continue
                with self._lock:
                    times_served, last_served = self._served_now(bytes.fromhex(key[-2]), int(key[-1]), rec)
                out.append({"client_id": _text(bytes.fromhex(key[-2])), "slot": int(key[-1]),
                            "offer_id": inv.offer_id.hex(), "offer": inv.offer.to_string(),
                            "created_at": inv.created_at, "expires_at": inv.expires_at, "size": len(rec.invoice),
                            "stored_at": rec.stored_at, "last_served_at": last_served,
                            "times_served": times_served})
        return _paged("invoices", out, f"{_text(bytes.fromhex(nxt[0]))}/{int(nxt[1])}" if nxt is not None else None)

    def totals(self, wait: bool = True) -> dict:
        """What the server stores, from the tally (no listing).  With ``wait`` False it does not wait
        for the count a start may still be making (``load``): it then says ``counting`` (True while
        counting), and while counting gives None for clients, invoices and bytes_stored; the mailboxes
        and held messages are then those indexed (a damaged record, which the tally counts, is not)."""
        if not wait:     # without _lock, which a write holds across its datastore calls (seconds on
            #              PostgreSQL): the counts are read as they stand (each read is atomic)
            if not self.tally_ready():
                return {"clients": None, "invoices": None, "mailboxes": len(self._box_of),
                        "held_messages": sum(map(len, list(self._held_keys.values()))), "bytes_stored": None,
                        "counting": True}
            tally = self.tally
            c = dict(tally.count)
            return {"clients": c["clients"], "invoices": c["invoices"], "mailboxes": c["mailbox"],
                    "held_messages": c["held"], "bytes_stored": tally.bytes, "counting": False}
        self.wait_tally()
        with self._lock:
            c = dict(self.tally.count)
            return {"clients": c["clients"], "invoices": c["invoices"], "mailboxes": c["mailbox"],
                    "held_messages": c["held"], "bytes_stored": self.tally.bytes}

    # ---- datastore writes: every one the server makes goes through these, which keep the tally ----
    def _put(self, key: List[str], value: bytes, generation: Optional[int] = None, counts_only: bool = False) -> int:
        """``counts_only``: the write changes only an invoice record's serve counts (``flush_served``, at
        the generation it read): what serving it needs stays as kept."""
        with self._lock:
            if not counts_only:
                self._forget(key)
            gen = self._write(self.node.ds_put, key, value, generation)
            self._tally_op("stored", key, len(value))
        return gen

    def _set(self, key: List[str], value: bytes) -> int:
        with self._lock:
            self._forget(key)
            gen = self._write(self.node.ds_set, key, value)
            self._tally_op("stored", key, len(value))
        return gen

    def _delete(self, key: List[str]) -> None:
        with self._lock:
            self._forget(key)
            self._write(self.node.ds_delete, key)
            self._tally_op("deleted", key)

    def _write(self, write: Callable, key: List[str], *args):
        """lightningd's ``write(key, *args)`` (under ``_lock``), unless the server is closed.  A write that
        lightningd refused (NodeError) was not made; one that failed otherwise (the connection lost) may
        have been: the tally is no longer sure."""
        if self._closed:
            raise ShuttingDown(f"not writing {'/'.join(key)}: the server is shutting down")
        try:
            return write(key, *args)
        except NodeError:
            raise
        except BaseException:
            self._tally_exact = False
            raise

    def _forget(self, key: List[str]) -> None:
        """A write of ``key`` is about to be made: drop what memory holds of it."""
        self._servable.pop(tuple(key), None)
        n = len(SERVER_PREFIX)
        if len(key) == n + 2 and key[:n + 1] == SERVER_PREFIX + ["clients"]:
            try:
                self._clients.pop(bytes.fromhex(key[-1]), None)
            except ValueError:
                pass

    # ---- protocol ---------------------------------------------------------------------------------
    def _ids(self, msg: Received) -> Tuple[bytes, Optional[int], ClientRecord]:
        """(client, slot, its record) named by an authenticated context, if that client is enrolled and
        the context is of its current enrolment."""
        cid = msg.context.get(F_CLIENT)
        slot_b = msg.context.get(F_SLOT)
        slot = decode_fixed(slot_b, 2, "context.slot") if slot_b is not None else None
        rec = self._client(cid) if cid is not None else None
        if rec is None:
            raise ContextError("unknown_client", f"no enrolled client {client_name(cid)}")
        if rec.enrolment != msg.context.get(F_ENROLMENT):
            raise ContextError("old_enrolment", f"a path of an earlier enrolment of client {client_name(cid)}")
        return cid, slot, rec

    def on_offer_paths_request(self, msg: Received) -> None:
        msg.expect(m.OFFER_PATHS_REQUEST, "a client path")
        cid, _, rec = self._ids(msg)
        req = m.OfferPathsRequest.decode(msg.body)
        if req.invoice_slot >= self.config.max_slots:
            raise DecodeError("offer_paths_request.invoice_slot",
                              f"slot {req.invoice_slot} over the limit {self.config.max_slots}")
        exp = self.now() + OFFER_LIFETIME
        fields = self._fields(cid, rec.enrolment, req.invoice_slot)
        offer_path = self.t.make_path(PathContext(Kind.OFFER, exp, fields))  # fresh blinding every time
        mailbox = self.node.node_id if self.config.max_held > 0 else None
        self.t.send(msg.reply_path, m.OFFER_PATHS, m.OfferPaths([offer_path], exp, mailbox).encode(),
                    reply_context=PathContext(Kind.SERVE_REPLY, exp, fields))
        self._log(f"offer_paths for client {client_name(cid)} slot {req.invoice_slot}", "debug")

    def issued_offer_path(self, path: BlindedPath, rec: ClientRecord, slot: int) -> bool:
        """Is ``path`` an offer path we made for (client enrolment, slot)?  Checked statelessly by
        decrypting it."""
        if path.first_node_id != self.node.node_id or len(path.hops) != 2:
            return False
        try:
            _, next_key = self.node.decrypt_encrypted_data(path.hops[0].encrypted_recipient_data, path.first_path_key)
            data, _ = decrypt_hop(self.t.phantom_secret, next_key, path.hops[1].encrypted_recipient_data)
            ctx_bytes = dict(data.unknown).get(CONTEXT_TLV_TYPE)
            ctx = self.t.ctx_key.verify(ctx_bytes, data.path_id, self.now(), Kind.OFFER)
        except (NodeError, DecodeError, ContextError):
            return False
        return ctx.fields == self._fields(rec.client_id, rec.enrolment, slot)

    def on_serve_static_invoice(self, msg: Received) -> None:
        msg.expect(m.SERVE_STATIC_INVOICE, "a serve reply path")
        cid, slot, rec = self._ids(msg)
        if slot is None or slot >= self.config.max_slots:
            raise DecodeError("context.slot", f"slot {slot} over the limit {self.config.max_slots}")
        if not self.persist_limit.allow(cid, self._clock()):
            raise ContextError("rate_limited", f"client {client_name(cid)} persisting too fast")
        serve = m.ServeStaticInvoice.decode(msg.body)
        if len(serve.invoice) > self.config.max_invoice_bytes:
            raise DecodeError("serve_static_invoice.invoice",
                              f"{len(serve.invoice)} bytes over the limit {self.config.max_invoice_bytes}")
        inv = StaticInvoice.decode(serve.invoice)
        now = self.now()
        if inv.is_expired(now):
            raise DecodeError("serve_static_invoice.invoice", "expired")
        paths = inv.offer_paths
        if len(paths) > MAX_OFFER_PATHS_CHECKED:
            raise DecodeError("serve_static_invoice.invoice.offer_paths",
                              f"{len(paths)} offer paths: more than the {MAX_OFFER_PATHS_CHECKED} we check")
        if not any(self.issued_offer_path(p, rec, slot) for p in paths):  # stops at the first of ours
            raise DecodeError("serve_static_invoice.invoice.offer_paths",
                              f"none of them is an offer path we issued for this client and slot {slot}")
        key = invoice_key(cid, slot)
        with self._lock:  # remove_client cannot run between this check and the write
            self._ids(msg)
            old = self.node.ds_get(key)
            prev, prev_inv = self._stored(old[0], key) if old is not None else (None, None)
            stale = prev_inv is not None and (inv.created_at < prev_inv.created_at or
                                              (inv.created_at == prev_inv.created_at and prev.invoice != serve.invoice))
            if not stale:
                if serve.mailbox is not None and self.config.max_held > 0:
                    self._register(cid, serve.mailbox, now)
                served, last = (prev.times_served, prev.last_served_at) if prev is not None else (0, None)
                new = InvoiceRecord(serve.invoice, serve.forward_invoice_request_path, now, served, last)
                self._put(key, new.encode(), None if old is None else old[1])  # persist, then acknowledge
                crashpoint("server-invoice-stored")
        self.t.send(msg.reply_path, m.STATIC_INVOICE_PERSISTED, m.StaticInvoicePersisted().encode())
        if stale:
            self._log(f"client {client_name(cid)} slot {slot}: kept the stored static invoice (created at "
                      f"{prev_inv.created_at}) over one created at {inv.created_at} (a replay?); acknowledged", "debug")
        else:
            self._log(f"stored static invoice for client {client_name(cid)} slot {slot} ({len(serve.invoice)} bytes)", "debug")

    def _stored(self, data: bytes, key: List[str], check_signature: bool = True
                ) -> Tuple[Optional[InvoiceRecord], Optional[StaticInvoice]]:
        """A stored invoice record and its invoice; (None, None) if damaged (logged)."""
        try:
            rec = InvoiceRecord.decode(data)
            return rec, StaticInvoice.decode(rec.invoice, check_signature)
        except DecodeError as e:
            self._damaged(key, e)
            return None, None

    def on_invoice_request(self, msg: Received) -> None:
        msg.expect(m.INVOICE_REQUEST, "an offer path")
        cid, slot, _ = self._ids(msg)
        if not self.lookup_limit.allow(cid, self._clock()):
            raise ContextError("rate_limited", f"invoice requests for client {client_name(cid)} too fast")
        # well-formed, or dropped; its signature proves nothing to us (anyone can sign one with a key
        # of their own): the recipient checks it when it answers online, and serving needs no check
        InvoiceRequest.decode(msg.body, check_signature=False)
        s = self._servable_of(cid, slot)
        if s is None:
            return
        now = self.now()
        if s.expired(now):
            raise ContextError("invoice_expired", f"static invoice for client {client_name(cid)} slot {slot} expired")
        try:
            self.t.send(s.forward_path, m.INVOICE_REQUEST, msg.body, reply_path=msg.reply_path, quiet=True)
        except TransportError as e:
            self._log(f"could not forward invoice_request to client {client_name(cid)} (offline?): {e}", "debug")
        self.t.send(msg.reply_path, m.STATIC_INVOICE, s.invoice)
        with self._lock:
            n, _ = self._served.get((cid, slot), (0, now))
            self._served[(cid, slot)] = (n + 1, now)
        self._log(f"served static invoice of client {client_name(cid)} slot {slot}", "debug")

    def _servable_of(self, cid: bytes, slot: int) -> Optional[Servable]:
        """What serving ``cid``'s invoice in ``slot`` needs: kept from an earlier request, or read from the
        datastore (and kept).  None if the record is damaged (logged); ContextError if there is none.
        Under ``_lock``: a write of the key (which drops it from memory) cannot come between the read
        and keeping it."""
        key = invoice_key(cid, slot)
        k = tuple(key)
        with self._lock:
            s = self._servable.get(k)
            if s is not None:
                self._servable.move_to_end(k)
                return s
            got = self.node.ds_get(key)
            if got is None:
                raise ContextError("no_invoice", f"no static invoice for client {client_name(cid)} slot {slot}")
            rec, inv = self._stored(got[0], key, check_signature=False)   # checked when it was stored
            if rec is None:
                return None
            s = Servable(rec.invoice, rec.forward_path, inv.expires_at, inv.absolute_expiry)
            if len(got[0]) <= SERVABLE_MAX_BYTES:
                self._servable[k] = s
                if len(self._servable) > SERVABLE_KEPT:
                    self._servable.popitem(last=False)
            return s

    def flush_served(self) -> None:
        """Write the counts of serves made since the last flush into the invoice records (on the tick).
        A record changed meanwhile keeps its counts for the next flush; one removed loses them."""
        with self._lock:
            todo, self._served = self._served, {}
        for (cid, slot), (n, last) in todo.items():
            key = invoice_key(cid, slot)
            with self._lock:
                got = self.node.ds_get(key)
                rec, _ = self._stored(got[0], key, check_signature=False) if got is not None else (None, None)
                if rec is None:
                    continue
                try:
                    self._put(key, replace(rec, times_served=rec.times_served + n, last_served_at=last).encode(),
                              got[1], counts_only=True)
                except NodeError:   # written meanwhile (a new invoice for the slot): the next flush
                    more, later = self._served.get((cid, slot), (0, last))
                    self._served[(cid, slot)] = (n + more, max(last, later))

    def _served_now(self, cid: bytes, slot: int, rec: InvoiceRecord) -> Tuple[int, Optional[int]]:
        """(times served, last served at) of a stored record with the serves not yet written."""
        n, last = self._served.get((cid, slot), (0, None))
        return rec.times_served + n, last if last is not None else rec.last_served_at

    # ---- start-up, and the tally ------------------------------------------------------------------
    def load(self, background: bool = False) -> None:
        """At startup: read the clients' mailbox registrations and index the held messages, then take
        the clients and invoices into the tally: from the snapshot the last clean shutdown left
        (``close``), which is deleted here, before the server writes anything (after a crash the next
        start must find none); or, without a whole snapshot, counted (``_count``: values not kept).
        With ``background`` that is done on a thread of its own: requests are served meanwhile (they
        need no tally); the operator's RPCs that show counts or pages wait for it (``wait_tally``),
        and the writes made meanwhile are replayed on it once it is complete."""
        t0 = time.monotonic()
        n = len(SERVER_PREFIX)
        tally, boxes = Tally(), {}
        held: Dict[bytes, Dict[Tuple[str, ...], int]] = {}
        listed = self.node.ds_list(SERVER_PREFIX + ["mailbox"]) + self.node.ds_list(SERVER_PREFIX + ["held"])
        for key, val, _ in listed:
            tally.stored(key, len(val))
            try:
                if key[n] == "mailbox":
                    rec = mb.MailboxRecord.decode(val)
                    boxes[rec.registration.phantom_id] = (bytes.fromhex(key[-1]), rec)
                else:
                    held.setdefault(bytes.fromhex(key[-2]), {})[tuple(key)] = mb.received_at_of(key)
            except (DecodeError, ValueError) as e:
                self._damaged(key, e)
        snapshot = self._take_snapshot()
        with self._lock:
            self._mailboxes = boxes
            self._box_of = {cid: rec for cid, rec in boxes.values()}
            self._held_keys = held
            self._clients = {}
            self._journal = []
            self._tally_exact = True
            self._loaded.clear()
        if self._database is None:
            self._database = self.node.database_backend() or "sqlite3"
        if background:
            threading.Thread(target=self._count, args=(tally, snapshot, t0), name="asyncreceive-tally",
                             daemon=True).start()
        else:
            self._count(tally, snapshot, t0)

    def _take_snapshot(self) -> Optional[List[Tuple[List[str], bytes]]]:
        """The records of the tally's snapshot, if any, deleted from the datastore (the head first: a
        crash half-way leaves parts without a head, which no start takes).  None if there is none, or
        if it stayed (then the start counts).  Not server records: the tally does not count them."""
        listed = [(key, value) for key, value, _ in self.node.ds_list(TALLY_PREFIX)]
        if not listed:
            return None
        for key, _ in sorted(listed, key=lambda kv: kv[0] != TALLY_HEAD_KEY):
            self.node.ds_delete(key)
        if self.node.ds_get(TALLY_HEAD_KEY) is not None:
            self._log("the tally's snapshot could not be deleted: counting what is stored instead", "unusual")
            return None
        return listed

    def _count(self, tally: Tally, snapshot: Optional[List[Tuple[List[str], bytes]]] = None,
               t0: Optional[float] = None) -> None:
        """Take the clients and invoices into ``tally`` (which holds the rest) from ``snapshot`` (the
        records ``close`` wrote at the last clean shutdown), or else count them; replay the writes made
        meanwhile, and make it the tally.  A damaged or incomplete snapshot is logged, then counted.

        lightningd is single-threaded: while it answers one listdatastore, the requests we serve wait.
        lightningd lists one level of a key (its children; a child with children of its own as a parent,
        without a value), so the invoices are listed client by client whatever we do: the clients are
        listed, then each client's invoices (its key's children).  Never the invoices' key itself: that
        listing would read every invoice below it to name the clients (100 000 rows at 10 000 clients,
        about 5 s on SQLite during which nothing is answered), then need the per-client listings anyway.

        - SQLite: a listing is an indexed range scan that stops at the end of the key's prefix: a few ms
          per client, with requests answered in between.
        - PostgreSQL: lightningd selects ``key >= ?`` and libpq fetches the whole result, the rest of the
          table, of which lightningd reads the prefix's rows: each listing costs the rows after its key,
          so counting is O(N^2) there (measured in docs/benchmarks.md); requests are still answered in
          between.

        Invoices left without their client's record are not counted, nor paged: ``_remove`` deletes the
        client's record last, so only an older version's crash in the middle of a removal left any.

        The writes made meanwhile are in ``_journal`` (whatever a listing saw of them) and
        replayed in order: the last write of a key decides it, and a key nobody wrote meanwhile is as
        listed (or as the snapshot has it: the server wrote nothing between the snapshot and its
        deletion)."""
        t0 = time.monotonic() if t0 is None else t0
        how = None
        if snapshot is not None:
            try:
                tally.restore(snapshot)
                how = "read from the snapshot the last shutdown left"
            except DecodeError as e:
                self._log(f"the tally's snapshot is damaged or incomplete ({e}): counting what is stored instead",
                          "unusual")
        if how is None:
            how = f"counted client by client (database {self._database})"
            try:
                clients = {}    # the clients' ids as their keys name them, in order
                for key, size in self.node.ds_sizes(SERVER_PREFIX + ["clients"]):
                    tally.stored(key, size)
                    clients[key[len(SERVER_PREFIX) + 1]] = None
                for cid in clients:
                    for key, size in self.node.ds_sizes(SERVER_PREFIX + ["invoices", cid]):
                        tally.stored(key, size)
            except Exception as e:   # lightningd gone: the counts stay incomplete rather than never ready
                self._log(f"counting the stored clients and invoices failed: {e}", "unusual")
                self._tally_exact = False
        with self._lock:
            for op, args in self._journal:
                getattr(tally, op)(*args)
            self.tally, self._journal = tally, None
            self._loaded.set()
        self._log(f"static invoice server: {tally.count['clients']} clients, {tally.count['invoices']} invoices "
                  f"({tally.bytes} bytes) {how}, in {time.monotonic() - t0:.2f} s", "info")

    def close(self) -> None:
        """A clean shutdown (lightningd's ``shutdown``): write nothing more, and leave the tally's
        clients and invoices for the next start (``Tally.snapshot``; ``load`` reads and deletes it).
        None is left if the tally is not sure (still being counted, a count or a write that failed)
        or holds nothing; one not written whole (lightningd gone meanwhile) has no head, and the next
        start counts."""
        records, why = None, None
        with self._lock:    # a write under way ends first; none starts after
            if self._closed:
                return
            self._closed = True
            if self._journal is not None or not self._tally_exact:
                why = "the tally is not sure (still counting, or a count or a write failed)"
            elif self.tally.count["clients"] or self.tally.count["invoices"]:   # else nothing to count
                records = self.tally.snapshot()
                why = "the tally holds records the server never writes" if records is None else None
        if why is not None:
            self._log(f"static invoice server: no snapshot of the tally ({why}): the next start counts", "info")
        if records is None:
            return
        t0 = time.monotonic()
        try:
            for key, value in records:
                self.node.ds_put(key, value)
        except (NodeError, OSError) as e:
            self._log(f"static invoice server: the tally's snapshot was not written ({e}): the next start "
                      "counts", "unusual")
            return
        self._log(f"static invoice server: tally of {self.tally.count['clients']} clients and "
                  f"{self.tally.count['invoices']} invoices left for the next start ({len(records) - 1} part(s), "
                  f"{sum(len(v) for _, v in records)} bytes) in {time.monotonic() - t0:.2f} s", "info")

    def tally_ready(self) -> bool:
        """Whether the counts are complete (False while a start counts what is stored)."""
        return self._loaded.is_set()

    def wait_tally(self) -> None:
        """Wait until the counts are complete."""
        self._loaded.wait()

    def _tally_op(self, op: str, *args) -> None:
        """A write is reflected in the tally (under ``_lock``), or kept to be replayed on the one being
        counted."""
        if self._journal is not None:
            self._journal.append((op, args))
        else:
            getattr(self.tally, op)(*args)

    # ---- mailbox: onion messages held for offline clients (see mailbox.py) ------------------------

    def _mailbox_of(self, cid: bytes) -> Optional[mb.MailboxRecord]:
        with self._lock:
            return self._box_of.get(cid)

    def _set_box(self, cid: bytes, rec: Optional[mb.MailboxRecord]) -> None:
        """Replace ``cid``'s registration in both indexes (under ``_lock``)."""
        old = self._box_of.pop(cid, None)
        if old is not None:
            self._mailboxes.pop(old.registration.phantom_id, None)
        if rec is not None:
            self._box_of[cid] = rec
            self._mailboxes[rec.registration.phantom_id] = (cid, rec)

    def _register(self, cid: bytes, reg: m.MailboxRegistration, now: int) -> None:
        """A client asks us to hold messages for its phantom.  The registration must be signed by that
        phantom key for us; a phantom already registered by another client stays with that client.  A
        refused or failed registration is logged; the invoice is still stored."""
        if not reg.verify(self.node.node_id):
            self._log(f"client {client_name(cid)}: mailbox registration not signed by its phantom key: ignored", "unusual")
            return
        if reg.phantom_id in (self.node.node_id, self.t.phantom_id):
            self._log(f"client {client_name(cid)}: mailbox registration names this node: ignored", "unusual")
            return
        with self._lock:
            if self._client(cid) is None:
                return  # removed meanwhile
            owner = self._mailboxes.get(reg.phantom_id)
            if owner is not None and owner[0] != cid:
                self._log(f"client {client_name(cid)} registered a phantom id that client {client_name(owner[0])} uses: ignored",
                          "unusual")
                return
            old = self._mailbox_of(cid)
            if old is not None and old.registration == reg:
                return
            rec = mb.MailboxRecord(reg, now)
            try:
                self._set(mb.mailbox_key(cid), rec.encode())
            except NodeError as e:
                self._log(f"client {client_name(cid)}: mailbox registration not stored: {e}", "unusual")
                return
            self._set_box(cid, rec)
        if old is None or old.registration.phantom_id != reg.phantom_id:
            self._log(f"client {client_name(cid)}: holding onion messages for it while it is offline "
                      f"(node {short_id(rec.client_node_id)})", "debug")

    def _held(self, cid: bytes) -> List[mb.Entry]:
        """What is held for ``cid``, oldest first; a damaged record is logged and expires at once.  The
        index and the tally are brought in step with what is listed."""
        out, sizes = [], {}
        for key, val, _ in self.node.ds_list(mb.held_prefix(cid)):
            sizes[tuple(key)] = len(val)
            try:
                h = mb.HeldMessage.decode(val)
                out.append(mb.Entry(key, h.source, len(h.onion_message), h.received_at))
            except DecodeError as e:
                self._damaged(key, e)
                out.append(mb.Entry(key, None, 0, 0))
        with self._lock:
            for gone in set(self._held_keys.get(cid, {})) - set(sizes):
                self._tally_op("deleted", list(gone))
            for key, size in sizes.items():
                self._tally_op("stored", list(key), size)
            self._set_held(cid, {tuple(e.key): e.received_at for e in out})
        return out

    def _set_held(self, cid: bytes, keys: Dict[Tuple[str, ...], int]) -> None:
        if keys:
            self._held_keys[cid] = keys
        else:
            self._held_keys.pop(cid, None)

    def _delete_held(self, cid: bytes, keys) -> None:
        """Delete held messages of ``cid`` (under ``_lock``), in the datastore and the index."""
        left = self._held_keys.get(cid, {})
        for key in keys:
            self._delete(list(key))
            left.pop(tuple(key), None)
        self._set_held(cid, left)

    def on_undeliverable(self, next_node_id: bytes, onion_message: bytes, source: Optional[bytes] = None) -> None:
        """lightningd could not forward an onion message to ``next_node_id`` (it came from peer
        ``source``, if known): if that is a client's phantom, store the message, then relay it at once if
        the client is connected.

        Only small (1300-byte) onions are held: a larger one could not be wrapped in a relay.  Admissions
        are rate-limited per incoming peer and per (client, peer), and a full mailbox makes room only at
        the expense of the source holding the most (``mailbox.admit``).
        """
        if self.config.max_held <= 0:
            return   # holding is off (asyncserver-max-held=0)
        with self._lock:
            entry = self._mailboxes.get(next_node_id)
        if entry is None:
            return
        cid, rec = entry
        peer = short_id(source) if source is not None else "unknown peer"
        if len(onion_message) > mb.MAX_ONION_MESSAGE:
            return self._log(f"client {client_name(cid)}: not holding a {len(onion_message)}-byte onion message "
                             f"(at most {mb.MAX_ONION_MESSAGE})", "debug")
        clock = self._clock()
        if source is not None and not self.peer_hold_limit.allow(source, clock):
            return self._log(f"onion messages to hold from {peer} arrive too fast: not held", "debug")
        if not self.hold_limit.allow((cid, source), clock):
            return self._log(f"client {client_name(cid)}: onion messages for it from {peer} arrive too fast: not held", "debug")
        now = self.now()
        new = mb.Entry(mb.held_key(cid, now, onion_message), source, len(onion_message), now)
        limits = mb.Limits(self.config.max_held, self.config.max_held_bytes, self.config.hold_seconds)
        with self._lock:
            if self._client(cid) is None or self.node.ds_get(new.key) is not None:
                return  # removed or expired client; or the very same message is already held
            ok, delete = mb.admit(self._held(cid), new, now, limits)
            self._delete_held(cid, delete)
            if ok:
                self._put(new.key, mb.HeldMessage(now, onion_message, source).encode())
                self._held_keys.setdefault(cid, {})[tuple(new.key)] = now
        if not ok:
            return self._log(f"client {client_name(cid)}: mailbox full, {peer} holds its share: not held", "debug")
        self._log(f"holding an onion message for client {client_name(cid)} from {peer} ({len(onion_message)} bytes)", "debug")
        if self.node.is_connected(rec.client_node_id, fresh=True):
            self.deliver(cid)

    def deliver(self, cid: bytes) -> int:
        """Relay what we hold for ``cid`` over its delivery path, oldest first, at most
        ``mb.DELIVER_BATCH`` in flight at a time (well within the sender's queue for one peer); each
        message is deleted once lightningd took it (``_relayed``), and when a batch is through the next
        one goes.  On a send that fails (the client gone again, a full queue) the rest is kept for the
        next connect or tick.  A record that can never be relayed (damaged, too big) is dropped.
        Returns how many were handed to the sender."""
        with self._lock:
            if cid in self._delivering:      # a call is running (e.g. we are in its send): it goes on
                self._deliver_again.add(cid)
                return 0
            self._delivering.add(cid)
        sent = 0
        try:
            while True:
                sent += self._deliver_batch(cid)
                with self._lock:
                    if cid not in self._deliver_again:
                        self._delivering.discard(cid)
                        return sent
                    self._deliver_again.discard(cid)
        except BaseException:
            with self._lock:
                self._delivering.discard(cid)
                self._deliver_again.discard(cid)
            raise

    def _deliver_batch(self, cid: bytes) -> int:
        clock = self._clock()
        with self._lock:
            rec = self._mailbox_of(cid)
            if rec is None or self._client(cid) is None:
                return 0
            keys, gone = mb.due(self._held(cid), self.now(), self.config.hold_seconds)
            self._delete_held(cid, gone)
            flying = self._in_flight.setdefault(cid, {})
            for k in [k for k, at in flying.items() if clock - at > mb.IN_FLIGHT_SECONDS]:
                del flying[k]            # the sender lost it (lightningd gone?): it may go again
            todo = [k for k in keys if tuple(k) not in flying][:max(0, mb.DELIVER_BATCH - len(flying))]
        sent = dropped = 0
        # asked of lightningd, not of the peers kept from notifications (which the main thread may tell
        # late): a message relayed to a client already gone is deleted as delivered
        if todo and self.node.is_connected(rec.client_node_id, fresh=True):
            for key in todo:
                got = self.node.ds_get(key)
                if got is None:
                    continue  # removed meanwhile
                try:
                    held = mb.HeldMessage.decode(got[0])
                    if len(held.onion_message) > mb.MAX_ONION_MESSAGE:
                        raise DecodeError("held_message.onion_message", f"{len(held.onion_message)} bytes: too big "
                                          "to relay")
                except DecodeError as e:
                    self._log(f"client {client_name(cid)}: dropping a held onion message that cannot be relayed: {e}", "unusual")
                    with self._lock:
                        self._delete_held(cid, [key])
                    dropped += 1
                    continue
                with self._lock:
                    flying[tuple(key)] = clock
                try:
                    self.t.send(rec.registration.delivery_path, m.HELD_ONION_MESSAGE, held.onion_message, quiet=True,
                                on_sent=functools.partial(self._relayed, cid, tuple(key)))
                except TransportError as e:
                    with self._lock:
                        flying.pop(tuple(key), None)
                    self._log(f"relaying held onion messages to client {client_name(cid)} stopped (kept for later): {e}", "debug")
                    break
                sent += 1
        if sent or gone or dropped:
            self._log(f"client {client_name(cid)}: relayed {sent} held onion message(s), {len(gone)} expired"
                      + (f", {dropped} dropped" if dropped else ""), "info")
        return sent

    def _relayed(self, cid: bytes, key: Tuple[str, ...], ok: bool) -> None:
        """The sender is done with a held message: delete it if lightningd took it; when a batch is
        through, send the next one."""
        with self._lock:
            flying = self._in_flight.get(cid, {})
            flying.pop(key, None)
            if ok:
                self._delete_held(cid, [key])
            more = ok and not flying and bool(self._held_keys.get(cid))
        if more:
            self.deliver(cid)

    def on_peer_connected(self, node_id: bytes) -> None:
        with self._lock:
            clients = [c for c, rec in self._box_of.items() if rec.client_node_id == node_id]
        for cid in clients:
            self.deliver(cid)  # lists what is held once; nothing held, nothing sent

    def tick(self) -> None:
        """Relay to connected clients what is still held (a missed connect), expire the rest.  Who has
        messages waiting, and since when, comes from the in-memory index: nothing held for a client that
        is not connected is read.  First the serves counted since the last tick are written."""
        self.flush_served()
        with self._lock:
            waiting = [(cid, self._box_of.get(cid)) for cid in self._held_keys]
        for cid, rec in waiting:
            if rec is not None and self.node.is_connected(rec.client_node_id):
                self.deliver(cid)
                continue
            with self._lock:
                held = [mb.Entry(k, None, 0, at) for k, at in self._held_keys.get(cid, {}).items()]
                self._delete_held(cid, mb.expired(held, self.now(), self.config.hold_seconds))

    def held_count(self) -> int:
        return self.totals()["held_messages"]


def _text(client_id: bytes) -> str:
    return client_id.decode("utf-8", "replace")


def _paged(name: str, entries: List[dict], next_start: Optional[str]) -> dict:
    return {name: entries, **({"next_start": next_start} if next_start is not None else {})}


def invoice_cursor(start: str) -> Tuple[str, str]:
    """``"<client_id>/<slot>"`` (what ``next_start`` gives) as a key tail; ServerError if it is not."""
    cid, sep, slot = start.rpartition("/")
    if not sep or not cid or not slot.isdigit() or not slot.isascii() or int(slot) > 0xFFFF:
        raise ServerError(f"start: '<client_id>/<slot>' as next_start gives it (e.g. 'phone/0'), not {start!r}")
    try:
        return cid.encode().hex(), f"{int(slot):05d}"
    except UnicodeEncodeError:      # a lone surrogate: JSON can carry one, UTF-8 cannot
        raise ServerError(f"start: the client_id in {start!r} is not valid UTF-8")
