"""The recipient's imperative shell: runs the cache policy's actions against lightningd.

Every state change is written to the datastore *before* its effect goes out (a message sent, an offer
handed to a payer), so a restart at any step resumes from what was promised.

Invoice_requests our server forwards while we are online are the online fallback's
(:mod:`..fallback.service`): this service hands them over, and runs its expiry on each tick.
"""

import functools
import hashlib
import os
import threading
import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Tuple

from ..crypto.context import Kind, PathContext
from ..errors import DecodeError
from ..shell.crashpoint import crashpoint
from ..shell.lightningd import NodeError
from ..shell.transport import CONNECT_TIMEOUT as SERVER_CONNECT_TIMEOUT
from ..shell.transport import Received, Transport, TransportError
from ..wire import messages as m
from ..wire.bolt12.offer import Offer
from ..wire.paths import BlindedPath, decode_path_list, decode_paths, decode_server_paths, encode_path_list
from ..wire.tlv import decode_fixed, decode_tu, tu64, u16
from ..logs import short_id
from ..fallback.service import FallbackService
from . import cache as c
from . import servers as sv
from .invoice import (IncomingChannel, build_offer, build_static_invoice, check_offer_fields, offer_signing_key,
                      payment_paths, relative_expiry, scid_int)
from .store import (MAX_SERVERS, SERVER_PATHS_KEY, SERVERS_KEY, decode_servers, decode_slot, encode_servers,
                    encode_slot, slot_key)

F_REPLY_SLOT = 4
F_OFFER_ID = 4
F_CREATED_AT = 6
F_SERVER = 8
HELD_HTLC_GRACE = 2 * 3600
FORWARD_PATH_LIFETIME = 365 * 24 * 3600
#: a connect from our server or a channel peer retries waiting requests at once, but not more often than
#: this: a peer reconnecting in a loop must not make us send a round of requests each time
PEER_RETRY_INTERVAL = 30


class RecipientError(Exception):
    """An RPC request the recipient refuses; the message is for the operator."""


class RecipientService:
    def __init__(self, transport: Transport, slots: int, log: Callable[[str, str], None], network: str,
                 offer_key_base: bytes, final_cltv: int, clock: Callable[[], float] = time.time,
                 preimage_key: Optional[bytes] = None):
        self.t = transport
        self.node = transport.node
        self.n_slots = slots
        self._log = log
        self.network = network
        self.offer_key_base = offer_key_base
        self.final_cltv = final_cltv
        self._clock = clock
        self.lock = threading.RLock()
        #: notified when a static_invoice_persisted changed a slot (getoffer of a dedicated offer waits)
        self.persisted_changed = threading.Condition(self.lock)
        self.cache = c.new_cache(slots)
        self._gens: Dict[int, int] = {}
        #: the servers we are enrolled at, in order: (id, paths)
        self.servers: List[Tuple[bytes, List[BlindedPath]]] = []
        self.health: Dict[bytes, sv.Health] = {}
        self._channels_fp: Optional[bytes] = None
        self.ignored: Dict[str, int] = {}
        #: the online fallback: answers the invoice_requests our server forwards while we are online
        self.fallback = FallbackService(transport, network, offer_key_base, final_cltv, log, self._signing_key,
                                        self._incoming, self._ignore, clock, preimage_key)
        self._last_peer_retry: Optional[int] = None

    def now(self) -> int:
        return int(self._clock())

    # ---- persistence ----------------------------------------------------------------------------
    @staticmethod
    def _server(paths: List[BlindedPath]) -> Tuple[bytes, List[BlindedPath]]:
        return sv.server_id(encode_path_list(paths)), list(paths)

    @property
    def server_ids(self) -> Tuple[bytes, ...]:
        return tuple(i for i, _ in self.servers)

    @property
    def server_paths(self) -> List[BlindedPath]:
        """Every server's paths, server by server."""
        return [p for _, paths in self.servers for p in paths]

    def load(self, option_servers: List[List[BlindedPath]]) -> None:
        """The servers (setserver's record, else an older version's one-server record, else the options),
        then the slots and the online-fallback records."""
        self.servers = [self._server(p) for p in option_servers if p]
        stored = self.node.ds_get(SERVERS_KEY)
        legacy = self.node.ds_get(SERVER_PATHS_KEY) if stored is None else None
        try:
            if stored:
                self.servers = [self._server(decode_path_list(x, "servers")) for x in decode_servers(stored[0])]
            elif legacy:
                self.servers = [self._server(decode_server_paths(legacy[0], "server_paths"))]
        except DecodeError as e:
            self._log(f"ignoring unreadable servers record (using the options'): {e}", "unusual")
        # slots written by a version with one server are that server's: the first
        first = self.servers[0][0] if self.servers else b""
        slots = []
        for key, val, gen in self.node.ds_list(["asyncreceive", "v1", "recipient", "slot"]):
            try:
                s = decode_slot(val, first)
            except DecodeError as e:
                # the slot starts empty; its next write replaces the damaged record (compare-and-swap on
                # its generation), else every write of that slot would fail as a must-create
                self._log(f"ignoring unreadable slot record {'/'.join(key)}: {e}", "unusual")
                if key[-1].isdigit() and int(key[-1]) < 0x10000:
                    self._gens[int(key[-1])] = gen
                else:
                    self.node.ds_delete(key)
                continue
            self._gens[s.index] = gen
            slots.append(s)
        by_index = {s.index: s for s in slots}
        base = tuple(by_index.get(i, c.Slot(i)) for i in range(max([self.n_slots] + [i + 1 for i in by_index])))
        self.cache = c.resize(base, self.n_slots)
        # servers removed while we were down (options changed, or a kill after setserver wrote the servers
        # record and before it reset their slots): the same as setserver without them
        gone = {h.server for s in self.cache if s.offer is not None for h in s.offer.holders} - set(self.server_ids)
        if gone:
            self._commit(c.servers_removed(self.cache, gone))
        self.fallback.load()

    def _commit(self, new) -> None:
        """Write every slot that changed (compare-and-swap on its generation), then adopt ``new``."""
        old = {s.index: s for s in self.cache}
        for s in new:
            if old.get(s.index) != s:
                gen = self._gens.get(s.index)
                self._gens[s.index] = self.node.ds_put(slot_key(s.index), encode_slot(s), gen)
        self.cache = new

    def set_slots(self, n: int) -> None:
        """asyncreceive-slots changed at run time: as at a restart with ``n``, more slots start empty (the
        next tick requests them) and fewer drop only trailing slots that hold no payable offer."""
        with self.lock:
            self.n_slots = n
            self.cache = c.resize(self.cache, n)

    def set_servers(self, servers: List[List[BlindedPath]]) -> List[bytes]:
        """asyncreceive-setserver: the servers we are enrolled at from now on (persisted).  A removed
        server's slots whose offers are not out yet start again (the next tick asks the others).
        Returns the servers' ids."""
        if not servers or not all(servers):
            raise RecipientError("at least one server, each with at least one path, is needed")
        if len(servers) > MAX_SERVERS:
            raise RecipientError(f"at most {MAX_SERVERS} servers")
        new = [self._server(p) for p in servers]
        if len({i for i, _ in new}) < len(new):
            raise RecipientError("the same server (the same paths) is given twice")
        with self.lock:
            self.node.ds_set(SERVERS_KEY, encode_servers([encode_path_list(p) for _, p in new]))
            removed = set(self.server_ids) - {i for i, _ in new}
            self.servers = new
            if removed:
                self._commit(c.servers_removed(self.cache, removed))
                self._log(f"{len(removed)} server(s) removed: their slots not handed out yet are asked of "
                          "the others", "info")
        return list(self.server_ids)

    # ---- the clock --------------------------------------------------------------------------------
    def tick(self, start: bool = False) -> None:
        self.fallback.expire()
        if not self.servers:
            return
        if start:
            self.connect_to_server()
        with self.lock:
            fp = self._channels_fingerprint()
            now = self.now()
            new, actions = c.tick(self.cache, now, start=start, servers=self.server_ids,
                                  may_send=lambda x: sv.may_send(self.health.get(x, sv.Health()), now))
            if self._channels_fp is not None and fp != self._channels_fp:
                _, more = c.channels_changed(new)
                actions += [a for a in more if a not in actions]
                self._log("channels or fees changed: refreshing static invoices", "info")
            self._channels_fp = fp
            self._commit(new)
        self._run(actions)

    def connect_to_server(self) -> None:
        """Connect to our server, without waiting: its mailbox relays what it held for
        us only once we are connected, and nothing else may connect us (all slots ready: nothing to send;
        no channel with it). Done at start, on refresh and when a peer's connect retries the slots."""
        with self.lock:   # each server's node, as its offer_paths named it (its mailbox), else its first path's
            nodes = self._server_nodes()
            servers = list(self.servers)
        targets = set(nodes.values()) | {self._introduction(paths[0]) for i, paths in servers if i not in nodes}
        for intro in targets - {None, self.node.node_id}:
            try:
                self.node.connect_then(intro, SERVER_CONNECT_TIMEOUT, functools.partial(self._server_connected, intro))
            except NodeError as e:  # too many connects pending: the next start or refresh tries again
                self._log(f"connect to our server {short_id(intro)} not started: {e}", "debug")

    def _introduction(self, path: BlindedPath) -> Optional[bytes]:
        try:
            intro = self.t.introduction_node(path)
        except NodeError as e:
            self._log(f"our server's introduction node is unknown: {e}", "debug")
            return None
        return None if intro == self.node.node_id else intro

    def _server_connected(self, intro: bytes, error: Optional[str]) -> None:
        if error is not None:
            self._log(f"could not connect to our server {short_id(intro)}: {error}", "info")

    def on_peer_connected(self, node_id: bytes) -> None:
        """Our server's introduction node or a channel peer connected: unanswered requests are retried at
        once (the peer we could not reach may be this one), at most every ``PEER_RETRY_INTERVAL``.  Any
        other peer (anyone may connect to us) changes nothing."""
        with self.lock:
            waiting = any(s.status in (c.EMPTY, c.REQUESTED, c.PENDING) for s in self.cache)
            recent = self._last_peer_retry is not None and self.now() < self._last_peer_retry + PEER_RETRY_INTERVAL
        if not waiting or recent or not self._is_our_peer(node_id):
            return
        with self.lock:
            self._last_peer_retry = self.now()
        self.tick(start=True)

    def _is_our_peer(self, node_id: bytes) -> bool:
        for p in list(self.server_paths):
            try:
                if self.t.introduction_node(p) == node_id:
                    return True
            except NodeError:
                continue
        try:
            return node_id in self.node.channel_peer_ids()
        except Exception as e:  # lightningd's answer, not remote input: a failed call means "not known"
            self._log(f"listpeerchannels failed: {e}", "debug")
            return False

    def check_channels(self) -> None:
        """After a channel event: rebuild and re-serve every invoice if our incoming channels changed."""
        with self.lock:
            fp = self._channels_fingerprint()
            if fp == self._channels_fp:
                return
            self._channels_fp = fp
            _, actions = c.channels_changed(self.cache)
        self._log("channels or fees changed: refreshing static invoices", "info")
        self._run(actions)

    def refresh(self) -> None:
        """asyncreceive-refresh: request every slot that needs an offer now, and re-serve every invoice."""
        self.tick(start=True)  # also re-serves pending invoices
        with self.lock:
            actions = [c.SendInvoice(s.index) for s in self.cache if s.status in (c.READY, c.USED)]
        self._run(actions)

    def _run(self, actions) -> None:
        for a in actions:
            try:
                if isinstance(a, c.SendRequest):
                    self._send_request(a.slot, a.server)
                elif isinstance(a, c.SendInvoice):
                    self._send_invoice(a.slot, a.servers)
            except (TransportError, NodeError, ValueError) as e:
                self._log(f"{type(a).__name__} for slot {a.slot} failed: {e}", "unusual")

    def _sent_to(self, server: bytes) -> None:
        with self.lock:
            self.health[server] = sv.sent(self.health.get(server, sv.Health()), self.now())

    def _answered_by(self, server: bytes) -> None:
        with self.lock:
            was = sv.state(self.health.get(server, sv.Health()), self.now())
            self.health[server] = sv.answered(self.health.get(server, sv.Health()), self.now())
        if was == "down":
            self._log(f"server {short_id(server)} answers again", "info")

    # ---- outgoing -----------------------------------------------------------------------------------
    def _reply_via(self, server_path: BlindedPath) -> List[bytes]:
        """Through our server itself when it is our channel peer (or we are connected to it and it is not
        one), else through the channel peer on our way to it: the server's answers, and the invoice_requests
        it forwards, never connect, so they must reach us over a connection that stays."""
        return self.t.reply_via(server_path, prefer_connected_intro=True)

    def _send_request(self, slot: int, server: bytes) -> None:
        """offer_paths_request to ``server`` over the first of its paths that takes it (the others are
        fallbacks).

        Every copy would be answered, and CLN paces onion messages to 4/s per peer, so one copy per
        round fills the slots twice as fast as LDK's one copy per server path.
        """
        paths = next((p for i, p in self.servers if i == server), None)
        if paths is None:
            return  # removed meanwhile
        ctx = PathContext(Kind.OFFER_PATHS_REPLY, self.now() + c.REPLY_PATH_LIFETIME,
                          {F_REPLY_SLOT: u16(slot), F_SERVER: server})
        body = m.OfferPathsRequest(slot).encode()
        self._sent_to(server)
        for p in paths:
            try:
                self.t.send(p, m.OFFER_PATHS_REQUEST, body, reply_context=ctx, reply_via=self._reply_via(p))
                return
            except TransportError as e:
                self._log(f"offer_paths_request for slot {slot} not sent on one path of server {short_id(server)}: {e}",
                          "debug")
        raise TransportError(f"no path of server {server.hex()} accepted the request")

    def _incoming(self) -> List[IncomingChannel]:
        out = []
        for ch in self.node.incoming_channels():
            if ch.get("peer_can_forward") is False:
                continue
            out.append(IncomingChannel(bytes.fromhex(ch["id"]), scid_int(ch["short_channel_id"]),
                                       int(ch["fee_base_msat"]), int(ch["fee_proportional_millionths"]),
                                       int(ch["cltv_expiry_delta"]), int(ch["htlc_min_msat"]),
                                       int(ch.get("incoming_capacity_msat", 0)), int(ch.get("htlc_max_msat", 0))))
        return out

    def _channels_fingerprint(self) -> bytes:
        try:
            return hashlib.sha256(repr(sorted(self._incoming(), key=lambda x: x.short_channel_id)).encode()).digest()
        except Exception:
            return b""

    def _message_paths(self, ctx: PathContext, channels: List[IncomingChannel],
                       mailbox_nodes: Tuple[bytes, ...] = ()) -> List[BlindedPath]:
        """Paths for held_htlc_available: first ``server -> phantom`` for each of our servers (up to two)
        that holds messages for us (it keeps them while we are offline), then at least two through up to
        two channel peers and direct (for when we are online; payers such as LDK send on up to four)."""
        mailbox_nodes = tuple(dict.fromkeys(x for x in mailbox_nodes if x))[:2]
        paths = [self.t.make_mailbox_path(ctx, x) for x in mailbox_nodes]
        # message paths need no channel_update: a channel peer that listincoming does not show yet
        # (gossip still on its way) will do, and it is what reaches us while we are offline
        try:
            normal = self.node.connected_channel_peers()
        except NodeError:
            normal = []
        peers = list(dict.fromkeys([ch.peer_id for ch in channels] + normal))[:2]
        paths += [self.t.make_path(ctx, via=[p]) for p in peers]
        while len(paths) < 2 + len(mailbox_nodes):
            paths.append(self.t.make_path(ctx))
        return paths

    def build_invoice(self, offer_rec: c.CachedOffer, now: int):
        offer = Offer.decode(offer_rec.offer)
        key = offer_signing_key(self.offer_key_base, offer_rec.key_nonce)
        rel = relative_expiry(offer, now)
        pay_path_id = self.t.ctx_key.path_id(b"payment" + offer_rec.offer_id)
        channels = self._incoming()  # one listincoming serves both kinds of path
        pay_paths, infos = payment_paths(self.node.node_id, channels, pay_path_id,
                                         self.node.block_height(), rel, self.final_cltv, random_bytes=os.urandom)
        held_ctx = PathContext(Kind.HELD_HTLC, now + rel + HELD_HTLC_GRACE, {F_OFFER_ID: offer_rec.offer_id})
        return build_static_invoice(offer, key, now, pay_paths, infos,
                                    self._message_paths(held_ctx, channels,
                                                        tuple(h.mailbox_node for h in offer_rec.holders)))

    def _send_invoice(self, slot: int, servers: Optional[Tuple[bytes, ...]] = None) -> None:
        """Build a fresh static invoice for the slot's offer and serve it to its holders (or ``servers``
        of them): each over its own reply path, with its own forward path and mailbox registration."""
        with self.lock:
            s = next((x for x in self.cache if x.index == slot), None)
            if s is None or s.offer is None:
                return
            now = c.invoice_time(s, self.now())
            inv = self.build_invoice(s.offer, now)
            self._commit(c.invoice_sent(self.cache, slot, now, inv.expires_at))
            offer_rec = s.offer
        errors = []
        for h in offer_rec.holders:
            if servers is not None and h.server not in servers:
                continue
            try:
                self._serve(offer_rec, h, inv.encode(), now)
            except (TransportError, NodeError, ValueError) as e:
                errors.append(f"server {h.server.hex()}: {e}")
        if errors:
            raise TransportError("; ".join(errors))

    def _serve(self, offer_rec: c.CachedOffer, h: c.Holder, invoice: bytes, now: int) -> None:
        server_reply = BlindedPath.decode(h.reply_path, "server_reply_path")
        fwd_ctx = PathContext(Kind.FORWARD_INVREQ, now + FORWARD_PATH_LIFETIME, {F_OFFER_ID: offer_rec.offer_id})
        via = self._reply_via(server_reply)
        forward = self.t.make_path(fwd_ctx, via=via)
        reply_ctx = PathContext(Kind.PERSISTED_REPLY, None, {F_OFFER_ID: offer_rec.offer_id, F_CREATED_AT: tu64(now),
                                                             F_SERVER: h.server})
        mailbox = self.t.mailbox_registration(h.mailbox_node) if h.mailbox_node else None
        self._sent_to(h.server)
        self.t.send(server_reply, m.SERVE_STATIC_INVOICE, m.ServeStaticInvoice(invoice, forward, mailbox).encode(),
                    reply_context=reply_ctx, reply_via=via)

    # ---- incoming -------------------------------------------------------------------------------
    def _ignore(self, reason: str, text: str) -> None:
        self.ignored[reason] = self.ignored.get(reason, 0) + 1
        self._log(f"ignored: {text} ({reason})", "debug")

    def _context_server(self, msg: Received) -> bytes:
        """The server a reply comes from, as our reply path's context says (older versions' contexts name
        none: our first server's)."""
        got = msg.context.get(F_SERVER)
        if got is not None:
            return got
        return self.servers[0][0] if self.servers else b""

    def on_offer_paths(self, msg: Received) -> None:
        msg.expect(m.OFFER_PATHS, "an offer_paths reply path")
        slot = decode_fixed(msg.context.get(F_REPLY_SLOT) or b"", 2, "context.slot")
        server = self._context_server(msg)
        op = m.OfferPaths.decode(msg.body)
        now = self.now()
        paths_bytes = b"".join(p.encode() for p in op.paths[:c.MAX_PATHS_PER_SERVER])
        with self.lock:
            if server not in self.server_ids:
                return self._ignore("removed_server", f"offer_paths for slot {slot} from server {short_id(server)}")
            why = c.check_offer_paths(self.cache, slot, paths_bytes, op.paths_absolute_expiry, now, server)
            if why is not None:
                return self._ignore(why, f"offer_paths for slot {slot} from server {short_id(server)}")
            holders = c.ordered(c.offer_holders(self.cache, slot, c.Holder(
                server, paths_bytes, msg.reply_path.encode(), op.mailbox_node_id or b"", None,
                op.paths_absolute_expiry), now), slot, self.server_ids)
            offer_paths = [p for h in holders for p in decode_paths(h.paths, "holder.paths")]
            # the offer expires with its shortest-lived server paths
            expiries = [h.paths_expiry for h in holders if h.paths_expiry is not None]
            expiry = min(expiries) if expiries else None
            nonce = os.urandom(16)
            offer = build_offer(offer_signing_key(self.offer_key_base, nonce), offer_paths, expiry, self.network)
            # no invoice yet (offer_built keeps a rebuilt offer's invoices newer than its predecessor's)
            rec = c.CachedOffer(offer.encode(), offer.offer_id, holders, offer.absolute_expiry, now, 0, None, nonce)
            new, actions = c.offer_built(self.cache, slot, rec)
            self._commit(new)
            crashpoint("recipient-offer-built")
        self._answered_by(server)  # only answers we take count: a replayed one does not keep it "answering"
        self._log(f"slot {slot}: offer {short_id(offer.offer_id)} built on {len(holders)} server(s)' paths, "
                  "serving its static invoice", "info")
        self._run(actions)

    def on_persisted(self, msg: Received) -> None:
        msg.expect(m.STATIC_INVOICE_PERSISTED, "a serve reply path", needs_reply=False)
        m.StaticInvoicePersisted.decode(msg.body)
        offer_id = msg.context.get(F_OFFER_ID)
        created = decode_tu(msg.context.get(F_CREATED_AT) or b"", 8, "context.created_at")
        server = self._context_server(msg)
        with self.lock:
            s = next((x for x in self.cache if x.offer is not None and x.offer.offer_id == offer_id), None)
            inv_exp = None
            if s is not None and s.offer.invoice_created_at == created:
                inv_exp = s.offer.invoice_expires_at
            new, changed = c.persisted(self.cache, offer_id, created, inv_exp, server)
            if not changed:
                return self._ignore("stale_persisted", f"static_invoice_persisted for {short_id(offer_id)}")
            self._commit(new)
            self.persisted_changed.notify_all()
            status = next(x.status for x in new if x.offer is not None and x.offer.offer_id == offer_id)
        self._answered_by(server)
        self._log(f"offer {short_id(offer_id)} {status}: server persisted its static invoice (server "
                  f"{server.hex()})", "info")

    def on_forwarded_invoice_request(self, msg: Received) -> None:
        """An invoice_request our server forwarded (we are online): the online fallback answers it."""
        self.fallback.on_invoice_request(msg, msg.context.get(F_OFFER_ID) or b"")

    def _signing_key(self, offer_id: bytes) -> Optional[bytes]:
        """The key of our offer ``offer_id`` (its ``offer_issuer_id``'s), None if no slot holds it now."""
        with self.lock:
            s = next((x for x in self.cache if x.offer is not None and x.offer.offer_id == offer_id), None)
        return None if s is None else offer_signing_key(self.offer_key_base, s.offer.key_nonce)

    # ---- RPC ------------------------------------------------------------------------------------------
    def offer_json(self, s: c.Slot) -> dict:
        o = s.offer
        out = {"slot": s.index, "status": s.status, "offer": Offer.decode(o.offer).to_string(),
               "offer_id": o.offer_id.hex(), "created_at": o.created_at, "offer_expires_at": o.expires_at,
               "invoice_created_at": o.invoice_created_at, "invoice_expires_at": o.invoice_expires_at}
        for k in ("amount_msat", "description", "issuer"):
            if getattr(o, k) is not None:
                out[k] = getattr(o, k)
        out["servers"] = [{"id": h.server.hex(), "confirmed": h.persisted_at is not None} for h in o.holders]
        return out

    def list_offers(self, status: Optional[str] = None) -> List[dict]:
        if status is not None and status not in (c.PENDING, c.READY, c.USED):
            raise RecipientError("status must be one of pending, ready, used")
        with self.lock:
            return [self.offer_json(s) for s in self.cache
                    if s.offer is not None and (status is None or s.status == status)]

    def get_offer(self) -> dict:
        with self.lock:
            new, s = c.get_offer(self.cache, self.now(), self._down())
            if s is None:
                self._none_ready()
            self._commit(new)  # persisted as used before it is handed out
            s = next(x for x in self.cache if x.index == s.index)
            return self.offer_json(s)

    def _none_ready(self) -> None:
        if not self.servers:
            raise RecipientError("no static invoice server is set: enrol at a server (asyncserver-addclient "
                                 "there) and give its paths to asyncreceive-setserver")
        n = c.counts(self.cache)
        waiting = n[c.EMPTY] + n[c.REQUESTED] + n[c.PENDING]
        raise RecipientError(f"no async offer is ready yet ({waiting} of {len(self.cache)} slots waiting "
                             "for the server); asyncreceive-status shows progress and the last error")

    def make_offer(self, amount_msat: Optional[int], description: Optional[str], issuer: Optional[str],
                   timeout: float) -> dict:
        """getoffer with an amount, description or issuer: a dedicated offer on the newest ready slot's
        offer paths (a new per-offer key), its static invoice served, returned once the server confirms
        it stored the invoice (up to ``timeout`` seconds; waits without holding the lock, so the worker
        handles the reply meanwhile).  The slot is the offer's from then on (see :mod:`.cache`)."""
        why = check_offer_fields(amount_msat, description, issuer)
        if amount_msat is None and description is None and issuer is None:
            why = "nothing to put in the offer: give amount_msat, description or issuer"
        if why is not None:
            raise RecipientError(why)
        with self.lock:
            now = self.now()
            base = c.prune(self.cache, now)
            s = c.newest_ready(base, self._down())
            if s is None:
                self._none_ready()
            nonce = os.urandom(16)
            old = Offer.decode(s.offer.offer)
            offer = build_offer(offer_signing_key(self.offer_key_base, nonce), old.offer_paths, old.absolute_expiry,
                                self.network, amount_msat, description, issuer)
            # a new offer: no holder has confirmed it yet
            rec = replace(s.offer, offer=offer.encode(), offer_id=offer.offer_id, created_at=now, key_nonce=nonce,
                          amount_msat=amount_msat, description=description, issuer=issuer,
                          holders=tuple(replace(h, persisted_at=None) for h in s.offer.holders))
            new, actions = c.offer_built(base, s.index, rec)
            self._commit(new)  # persisted before its invoice goes out: a restart re-serves it
        self._log(f"slot {s.index}: dedicated offer {short_id(offer.offer_id)} built (amount {amount_msat}), "
                  "serving its static invoice", "info")
        self._run(actions)
        with self.persisted_changed:
            done = self.persisted_changed.wait_for(lambda: self._slot_status(s.index, offer.offer_id) == c.USED,
                                                   timeout)
            if not done:
                raise RecipientError(
                    f"the server did not confirm it stored the static invoice within {timeout:g}s: offer "
                    f"{offer.offer_id.hex()} is built in slot {s.index} (pending) and its invoice is re-served on "
                    "every tick; asyncreceive-listoffers shows it as used once the server confirms")
            return self.offer_json(next(x for x in self.cache if x.index == s.index))

    def _server_nodes(self) -> Dict[bytes, bytes]:
        """Each server's node, as its offer_paths named it (servers with a mailbox: ours do, LDK's do not)."""
        return {h.server: h.mailbox_node for s in self.cache if s.offer is not None for h in s.offer.holders
                if h.mailbox_node}

    def _disconnected(self, nodes: Dict[bytes, bytes]) -> set:
        """Servers of ``nodes`` (:meth:`_server_nodes`) we are not connected to now (we connect to each at
        start)."""
        if not nodes:
            return set()
        try:
            peers = self.node.connected_peers()
        except NodeError:
            return set()
        return {i for i, n in nodes.items() if n not in peers}

    def _down(self) -> frozenset:
        """Servers getoffer avoids: down by their answers (see :mod:`.servers`), or not connected now."""
        now = self.now()
        return frozenset({i for i, h in self.health.items() if sv.is_down(h, now)} |
                         self._disconnected(self._server_nodes()))

    def _slot_status(self, index: int, offer_id: bytes) -> Optional[str]:
        s = next((x for x in self.cache if x.index == index), None)
        return s.status if s is not None and s.offer is not None and s.offer.offer_id == offer_id else None

    def servers_json(self) -> List[dict]:
        """Each server: id, paths, health (see :mod:`.servers`) and how many offers it holds."""
        now = self.now()
        out = []
        nodes = self._server_nodes()
        disconnected = self._disconnected(nodes)
        for i, paths in self.servers:
            h = self.health.get(i, sv.Health())
            held = [s for s in self.cache if s.offer is not None and s.offer.holder(i) is not None]
            out.append({"id": i.hex(), "paths_hex": encode_path_list(paths).hex(), "state": sv.state(h, now),
                        "last_answer_at": h.last_answer_at, "waiting_since": h.waiting_since,
                        "unanswered": h.unanswered, "next_try_at": h.next_try_at if sv.is_down(h, now) else None,
                        "connected": (i not in disconnected) if i in nodes else None,
                        "offers": len(held), "payable_offers": sum(1 for s in held if s.payable and
                                                                 s.offer.holder(i).persisted_at is not None)})
        return out

    def status(self) -> dict:
        with self.lock:
            return {"server_paths": [p.encode().hex() for p in self.server_paths], "servers": self.servers_json(),
                    "slots": len(self.cache),
                    "slot_status": c.counts(self.cache), "ignored": dict(self.ignored),
                    "forwarded_invoice_requests": self.fallback.forwarded_invreqs,
                    "fallback_invoices": self.fallback.count()}
