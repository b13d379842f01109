"""The static invoice server (bLIP-66 server side, compatible with LDK clients).

- ``add_client`` hands out blinded paths (ending at our phantom hop) whose context names the client and
  an expiry: no per-path state, valid across restarts.
- ``offer_paths_request`` on such a path gets ``offer_paths``: fresh offer paths (context: client, slot,
  now + 365 d) and a reply path (same context) that the client reuses for every invoice refresh.
- ``serve_static_invoice`` on that reply path is validated (parses, signature, not expired, size, its
  offer paths are ours for that client and slot), persisted, and only then acknowledged.
- ``invoice_request`` on an offer path is forwarded to the client's ``forward_invoice_request_path``
  (with the payer's reply path), then answered with the stored ``static_invoice``.
- the mailbox (``mailbox.py``): onion messages for a registered client phantom are held while the
  client is offline and relayed when it connects.
"""

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from ..crypto.blinding import decrypt_hop
from ..crypto.context import CONTEXT_TLV_TYPE, ContextError, Kind, PathContext
from ..errors import DecodeError
from ..node.crashpoint import crashpoint
from ..node.lightningd import NodeError
from ..node.transport import Received, Transport, TransportError
from ..wire import messages as m
from ..wire.bolt12 import InvoiceRequest, StaticInvoice
from ..wire.paths import BlindedPath
from ..wire.tlv import decode_fixed, u16
from . import mailbox as mb
from .ratelimit import RateLimiter
from .store import ClientRecord, InvoiceRecord, client_key, invoice_key, invoices_prefix, PREFIX

F_CLIENT = 4
F_SLOT = 6
OFFER_LIFETIME = 365 * 24 * 3600


@dataclass
class ServerConfig:
    max_clients: int = 1000
    max_slots: int = 10
    max_invoice_bytes: int = 5120
    max_held: int = mb.MAX_HELD          # per client; 0 turns the mailbox off
    hold_seconds: int = mb.HOLD_SECONDS


class ServerError(Exception):
    """An RPC request the server refuses; the message is for the operator."""


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
        transport.on_kind(Kind.CLIENT, self.on_offer_paths_request)
        transport.on_kind(Kind.SERVE_REPLY, self.on_serve_static_invoice)
        transport.on_kind(Kind.OFFER, self.on_invoice_request)
        self._mailbox_lock = threading.RLock()
        self._mailboxes: Dict[bytes, Tuple[bytes, mb.MailboxRecord]] = {}   # phantom id -> (client, record)
        if config.max_held > 0:
            transport.on_undeliverable = self.on_undeliverable

    def now(self) -> int:
        return int(self._clock())

    # ---- operator RPCs ---------------------------------------------------------------------------
    def add_client(self, client_id: bytes, expiry: Optional[int] = None) -> dict:
        if not client_id or len(client_id) > 256:
            raise ServerError("client_id must be 1 to 256 bytes")
        now = self.now()
        expires_at = now + expiry if expiry else None
        if self.node.ds_get(client_key(client_id)) is None:
            if len(self.list_clients()) >= self.config.max_clients:
                raise ServerError(f"client limit reached ({self.config.max_clients}, option asyncserver-max-clients)")
            self.node.ds_set(client_key(client_id), ClientRecord(client_id, now, expires_at).encode())
        else:
            self.node.ds_set(client_key(client_id), ClientRecord(client_id, now, expires_at).encode())
        ctx = PathContext(Kind.CLIENT, expires_at, {F_CLIENT: client_id})
        paths = self.client_paths(ctx)
        return {"client_id": client_id.decode("utf-8", "replace"), "expires_at": expires_at,
                "paths": [p.encode().hex() for p in paths],
                "paths_hex": (u16(len(paths)) + b"".join(p.encode() for p in paths)).hex()}

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

    def _client(self, client_id: bytes) -> Optional[ClientRecord]:
        got = self.node.ds_get(client_key(client_id))
        if got is None:
            return None
        rec = ClientRecord.decode(got[0])
        if rec.expires_at is not None and self.now() > rec.expires_at:
            return None
        return rec

    def list_clients(self) -> List[dict]:
        out = []
        for key, val, _ in self.node.ds_list(PREFIX + ["clients"]):
            rec = ClientRecord.decode(val)
            box = self._mailbox_of(rec.client_id)
            out.append({"client_id": rec.client_id.decode("utf-8", "replace"), "created_at": rec.created_at,
                        "expires_at": rec.expires_at,
                        "invoices": len(self.node.ds_list(invoices_prefix(rec.client_id))),
                        "mailbox": box is not None,
                        "node_id": box.client_node_id.hex() if box is not None else None,
                        "held_messages": len(self.node.ds_list(mb.held_prefix(rec.client_id)))})
        return out

    def remove_client(self, client_id: bytes) -> dict:
        if self.node.ds_get(client_key(client_id)) is None:
            raise ServerError(f"unknown client {client_id.decode('utf-8', 'replace')}")
        removed = 0
        for key, _, _ in self.node.ds_list(invoices_prefix(client_id)):
            self.node.ds_delete(key)
            removed += 1
        with self._mailbox_lock:  # the client goes first: nothing registers or holds for it after this
            self.node.ds_delete(client_key(client_id))
            for key, _, _ in self.node.ds_list(mb.held_prefix(client_id)):
                self.node.ds_delete(key)
            self.node.ds_delete(mb.mailbox_key(client_id))
            self._mailboxes = {k: v for k, v in self._mailboxes.items() if v[0] != client_id}
        return {"client_id": client_id.decode("utf-8", "replace"), "invoices_removed": removed}

    def list_invoices(self, client_id: Optional[bytes] = None) -> List[dict]:
        out = []
        for key, val, _ in self.node.ds_list(invoices_prefix(client_id)):
            rec = InvoiceRecord.decode(val)
            inv = StaticInvoice.decode(rec.invoice)
            out.append({"client_id": bytes.fromhex(key[-2]).decode("utf-8", "replace"), "slot": int(key[-1]),
                        "offer_id": inv.offer_id.hex(), "offer": inv.offer.to_string(),
                        "created_at": inv.created_at, "expires_at": inv.expires_at, "size": len(rec.invoice),
                        "stored_at": rec.stored_at, "last_served_at": rec.last_served_at,
                        "times_served": rec.times_served})
        return out

    # ---- protocol ---------------------------------------------------------------------------------
    def _ids(self, msg: Received):
        cid = msg.context.get(F_CLIENT)
        slot_b = msg.context.get(F_SLOT)
        slot = decode_fixed(slot_b, 2, "context.slot") if slot_b is not None else None
        if cid is None or self._client(cid) is None:
            raise ContextError("unknown_client", f"no enrolled client {cid!r}")
        return cid, slot

    def on_offer_paths_request(self, msg: Received) -> None:
        msg.expect(m.OFFER_PATHS_REQUEST, "a client path")
        cid, _ = self._ids(msg)
        req = m.OfferPathsRequest.decode(msg.body)
        if req.invoice_slot >= self.config.max_slots:
            raise DecodeError("offer_paths_request.invoice_slot",
                              f"slot {req.invoice_slot} over the limit {self.config.max_slots}")
        exp = self.now() + OFFER_LIFETIME
        fields = {F_CLIENT: cid, F_SLOT: u16(req.invoice_slot)}
        offer_path = self.t.make_path(PathContext(Kind.OFFER, exp, fields))  # fresh blinding every time
        mailbox = self.node.node_id if self.config.max_held > 0 else None
        self.t.send(msg.reply_path, m.OFFER_PATHS, m.OfferPaths([offer_path], exp, mailbox).encode(),
                    reply_context=PathContext(Kind.SERVE_REPLY, exp, fields))
        self._log(f"offer_paths for client {cid!r} slot {req.invoice_slot}", "debug")

    def issued_offer_path(self, path: BlindedPath, cid: bytes, slot: int) -> bool:
        """Is ``path`` an offer path we made for (client, slot)?  Checked statelessly by decrypting it."""
        if path.first_node_id != self.node.node_id or len(path.hops) != 2:
            return False
        try:
            _, next_key = self.node.decrypt_encrypted_data(path.hops[0].encrypted_recipient_data, path.first_path_key)
            data, _ = decrypt_hop(self.t.phantom_secret, next_key, path.hops[1].encrypted_recipient_data)
            ctx_bytes = dict(data.unknown).get(CONTEXT_TLV_TYPE)
            ctx = self.t.ctx_key.verify(ctx_bytes, data.path_id, self.now(), Kind.OFFER)
        except (NodeError, DecodeError, ContextError):
            return False
        return ctx.get(F_CLIENT) == cid and ctx.get(F_SLOT) == u16(slot)

    def on_serve_static_invoice(self, msg: Received) -> None:
        msg.expect(m.SERVE_STATIC_INVOICE, "a serve reply path")
        cid, slot = self._ids(msg)
        if slot is None or slot >= self.config.max_slots:
            raise DecodeError("context.slot", f"slot {slot} over the limit {self.config.max_slots}")
        if not self.persist_limit.allow(cid, self._clock()):
            raise ContextError("rate_limited", f"client {cid!r} persisting too fast")
        serve = m.ServeStaticInvoice.decode(msg.body)
        if len(serve.invoice) > self.config.max_invoice_bytes:
            raise DecodeError("serve_static_invoice.invoice",
                              f"{len(serve.invoice)} bytes over the limit {self.config.max_invoice_bytes}")
        inv = StaticInvoice.decode(serve.invoice)
        now = self.now()
        if inv.is_expired(now):
            raise DecodeError("serve_static_invoice.invoice", "expired")
        if not all(self.issued_offer_path(p, cid, slot) for p in inv.offer_paths):
            raise DecodeError("serve_static_invoice.invoice.offer_paths",
                              f"not the offer paths we issued for this client and slot {slot}")
        if serve.mailbox is not None and self.config.max_held > 0:
            self._register(cid, serve.mailbox, now)
        key = invoice_key(cid, slot)
        old = self.node.ds_get(key)
        served, last = 0, None
        if old is not None:
            prev = InvoiceRecord.decode(old[0])
            served, last = prev.times_served, prev.last_served_at
        rec = InvoiceRecord(serve.invoice, serve.forward_invoice_request_path, now, served, last)
        self.node.ds_put(key, rec.encode(), None if old is None else old[1])  # persist, then acknowledge
        crashpoint("server-invoice-stored")
        self.t.send(msg.reply_path, m.STATIC_INVOICE_PERSISTED, m.StaticInvoicePersisted().encode())
        self._log(f"stored static invoice for client {cid!r} slot {slot} ({len(serve.invoice)} bytes)", "info")

    def on_invoice_request(self, msg: Received) -> None:
        msg.expect(m.INVOICE_REQUEST, "an offer path")
        cid, slot = self._ids(msg)
        if not self.lookup_limit.allow(cid, self._clock()):
            raise ContextError("rate_limited", f"invoice requests for client {cid!r} too fast")
        InvoiceRequest.decode(msg.body)
        key = invoice_key(cid, slot)
        got = self.node.ds_get(key)
        if got is None:
            raise ContextError("no_invoice", f"no static invoice for client {cid!r} slot {slot}")
        rec = InvoiceRecord.decode(got[0])
        inv = StaticInvoice.decode(rec.invoice)
        now = self.now()
        if inv.is_expired(now) or inv.offer_is_expired(now):
            raise ContextError("invoice_expired", f"static invoice for client {cid!r} slot {slot} expired")
        try:
            self.t.send(rec.forward_path, m.INVOICE_REQUEST, msg.body, reply_path=msg.reply_path, quiet=True)
        except TransportError as e:
            self._log(f"could not forward invoice_request to client {cid!r} (offline?): {e}", "debug")
        self.t.send(msg.reply_path, m.STATIC_INVOICE, rec.invoice)
        try:
            self.node.ds_put(key, rec.served(now).encode(), got[1])
        except NodeError:
            pass  # the invoice was replaced meanwhile; the count of the old one is lost, nothing else
        self._log(f"served static invoice of client {cid!r} slot {slot}", "info")

    # ---- mailbox: onion messages held for offline clients (see mailbox.py) ------------------------
    def load(self) -> None:
        """Read the clients' mailbox registrations (at startup)."""
        boxes = {}
        for key, val, _ in self.node.ds_list(PREFIX + ["mailbox"]):
            try:
                rec = mb.MailboxRecord.decode(val)
            except DecodeError as e:
                self._log(f"ignoring unreadable mailbox record {'/'.join(key)}: {e}", "unusual")
                continue
            boxes[rec.registration.phantom_id] = (bytes.fromhex(key[-1]), rec)
        with self._mailbox_lock:
            self._mailboxes = boxes

    def _mailbox_of(self, cid: bytes) -> Optional[mb.MailboxRecord]:
        with self._mailbox_lock:
            return next((rec for c, rec in self._mailboxes.values() if c == cid), None)

    def _register(self, cid: bytes, reg: m.MailboxRegistration, now: int) -> None:
        """A client asks us to hold messages for its phantom.  The registration must be signed by that
        phantom key for us; a phantom already registered by another client stays with that client.  A
        refused or failed registration is logged; the invoice is still stored."""
        if not reg.verify(self.node.node_id):
            self._log(f"client {cid!r}: mailbox registration not signed by its phantom key: ignored", "unusual")
            return
        if reg.phantom_id in (self.node.node_id, self.t.phantom_id):
            self._log(f"client {cid!r}: mailbox registration names this node: ignored", "unusual")
            return
        with self._mailbox_lock:
            if self._client(cid) is None:
                return  # removed meanwhile
            owner = self._mailboxes.get(reg.phantom_id)
            if owner is not None and owner[0] != cid:
                self._log(f"client {cid!r} registered a phantom id that client {owner[0]!r} uses: ignored",
                          "unusual")
                return
            old = self._mailbox_of(cid)
            if old is not None and old.registration == reg:
                return
            rec = mb.MailboxRecord(reg, now)
            try:
                self.node.ds_set(mb.mailbox_key(cid), rec.encode())
            except NodeError as e:
                self._log(f"client {cid!r}: mailbox registration not stored: {e}", "unusual")
                return
            self._mailboxes = {k: v for k, v in self._mailboxes.items() if v[0] != cid}
            self._mailboxes[reg.phantom_id] = (cid, rec)
        if old is None or old.registration.phantom_id != reg.phantom_id:
            self._log(f"client {cid!r}: holding onion messages for it while it is offline "
                      f"(node {rec.client_node_id.hex()})", "info")

    def _held(self, cid: bytes) -> List[Tuple[List[str], int]]:
        out = []
        for key, val, _ in self.node.ds_list(mb.held_prefix(cid)):
            try:
                out.append((key, mb.HeldMessage.decode(val).received_at))
            except DecodeError:
                out.append((key, 0))  # unreadable: expires at once
        return out

    def on_undeliverable(self, next_node_id: bytes, onion_message: bytes) -> None:
        """lightningd could not forward an onion message to ``next_node_id``: if that is a client's
        phantom, store the message, then relay it at once if the client is connected.

        Only small (1300-byte) onions are held: a larger one could not be wrapped in a relay.  Each
        client's admissions are rate-limited, so a payer flooding its mailbox path cannot churn it fast.
        """
        with self._mailbox_lock:
            entry = self._mailboxes.get(next_node_id)
        if entry is None:
            return
        cid, rec = entry
        if len(onion_message) > mb.MAX_ONION_MESSAGE:
            return self._log(f"client {cid!r}: not holding a {len(onion_message)}-byte onion message "
                             f"(at most {mb.MAX_ONION_MESSAGE})", "debug")
        if not self.hold_limit.allow(cid, self._clock()):
            return self._log(f"client {cid!r}: onion messages for it arrive too fast: not held", "debug")
        now = self.now()
        key = mb.held_key(cid, now, onion_message)
        with self._mailbox_lock:
            if self._client(cid) is None or self.node.ds_get(key) is not None:
                return  # removed or expired client; or the very same message is already held
            for old in mb.admit(self._held(cid), now, self.config.max_held, self.config.hold_seconds):
                self.node.ds_delete(old)
            self.node.ds_put(key, mb.HeldMessage(now, onion_message).encode())
        self._log(f"holding an onion message for client {cid!r} ({len(onion_message)} bytes)", "debug")
        if self.node.is_connected(rec.client_node_id):
            self.deliver(cid)

    def deliver(self, cid: bytes) -> int:
        """Relay what we hold for ``cid`` over its delivery path, oldest first; each message is deleted
        once lightningd took it.  Stops when the client is gone again; a message that cannot be sent
        while the client is connected is dropped (it would block the others)."""
        with self._mailbox_lock:
            rec = self._mailbox_of(cid)
            if rec is None or self._client(cid) is None:
                return 0
            keys, gone = mb.due(self._held(cid), self.now(), self.config.hold_seconds)
            for key in gone:
                self.node.ds_delete(key)
        sent = dropped = 0
        for key in keys:
            got = self.node.ds_get(key)
            if got is None:
                continue  # delivered by another call, or removed
            try:
                held = mb.HeldMessage.decode(got[0])
                self.t.send(rec.registration.delivery_path, m.HELD_ONION_MESSAGE, held.onion_message, quiet=True)
            except (DecodeError, TransportError) as e:
                if not self.node.is_connected(rec.client_node_id):
                    self._log(f"relaying held onion messages to client {cid!r} stopped: {e}", "debug")
                    break
                self._log(f"client {cid!r}: dropping a held onion message that cannot be relayed: {e}", "unusual")
                dropped += 1
            else:
                sent += 1
            self.node.ds_delete(key)
        if sent or gone or dropped:
            self._log(f"client {cid!r}: relayed {sent} held onion message(s), {len(gone)} expired"
                      + (f", {dropped} dropped" if dropped else ""), "info")
        return sent

    def on_peer_connected(self, node_id: bytes) -> None:
        with self._mailbox_lock:
            clients = [c for c, rec in self._mailboxes.values() if rec.client_node_id == node_id]
        for cid in clients:
            self.deliver(cid)  # lists what is held once; nothing held, nothing sent

    def tick(self) -> None:
        """Relay to connected clients what is still held (a missed connect), expire the rest."""
        waiting = {bytes.fromhex(k[-2]) for k, _, _ in self.node.ds_list(mb.held_prefix())}
        with self._mailbox_lock:
            boxes = [(c, rec) for c, rec in self._mailboxes.values() if c in waiting]
        for cid, rec in boxes:
            if self.node.is_connected(rec.client_node_id):
                self.deliver(cid)
            else:
                with self._mailbox_lock:
                    for key in mb.expired(self._held(cid), self.now(), self.config.hold_seconds):
                        self.node.ds_delete(key)

    def held_count(self) -> int:
        return len(self.node.ds_list(PREFIX + ["held"]))
