"""Send and receive onion messages of any type through a stock lightningd.

Internal API for the roles:

- ``send(path, msg_type, body, reply_context=None, reply_via=())`` sends a message over a blinded path,
  optionally with a reply path to us carrying ``reply_context``;
- ``make_path(context, via=())`` builds a blinded path ``via... -> us -> phantom`` to hand out;
- ``on(msg_type, handler)`` registers a handler for an (LDK-numbered) message type;
  ``on_kind(kind, handler)`` takes every message arriving on paths of one context kind.

Handlers receive a :class:`Received` whose ``context`` has already been authenticated and checked for
expiry.  Everything else is dropped, counted per reason, and logged (info the first time a reason is
seen, debug after that).
"""

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from coincurve import PrivateKey

from ..crypto.blinding import EncryptedData, build_blinded_path, pad_payloads
from ..crypto.context import ContextError, ContextKey, Kind, PathContext
from ..crypto.onion import build_outgoing, build_reply_path, peel_phantom
from ..errors import DecodeError
from ..wire.messages import (HELD_ONION_MESSAGE, KNOWN_MESSAGE_TYPES, MailboxRegistration, canonical_type,
                             message_name)
from ..wire.paths import BlindedHop, BlindedPath, SciddirOrPubkey
from .lightningd import Lightningd, NodeError

#: CLN accepts at most one onion message per 250 ms from a peer (burst 4); we pace ourselves to that.
PEER_INTERVAL = 0.25
#: a sciddir introduction we cannot resolve is tried through at most this many of our channel peers
GUESS_PEERS = 2


@dataclass(frozen=True)
class Received:
    msg_type: int                    # canonical (LDK) number
    raw_type: int                    # as it arrived (may be a bLIP-66 draft number)
    body: bytes
    reply_path: Optional[BlindedPath]
    context: PathContext
    path_id: bytes

    def expect(self, msg_type: int, where: str, needs_reply: bool = True) -> None:
        """Refuse (DecodeError) a message of another type on this path, or one missing its reply path."""
        if self.msg_type != msg_type:
            raise DecodeError(message_name(self.raw_type), f"unexpected on {where}")
        if needs_reply and self.reply_path is None:
            raise DecodeError(f"{message_name(msg_type)}.reply_path", "missing")


class TransportError(Exception):
    pass


@dataclass
class Stats:
    sent: Dict[str, int] = field(default_factory=dict)
    received: Dict[str, int] = field(default_factory=dict)
    dropped: Dict[str, int] = field(default_factory=dict)
    relayed: Dict[str, int] = field(default_factory=dict)   # received through our server's mailbox
    last_error: Optional[str] = None
    last_error_at: Optional[int] = None

    def as_json(self) -> dict:
        return {"sent": dict(self.sent), "received": dict(self.received), "dropped": dict(self.dropped),
                "relayed": dict(self.relayed), "last_error": self.last_error, "last_error_at": self.last_error_at}


class Pacer:
    """Spaces sends to one peer by ``interval`` seconds (thread-safe, blocking)."""

    def __init__(self, interval: float = PEER_INTERVAL, clock=time.monotonic, sleep=time.sleep):
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._next: Dict[bytes, float] = {}
        self._lock = threading.Lock()

    def wait(self, peer: bytes) -> float:
        with self._lock:
            now = self._clock()
            at = max(now, self._next.get(peer, now))
            self._next[peer] = at + self.interval
        delay = at - now
        if delay > 0:
            self._sleep(delay)
        return delay


class Transport:
    def __init__(self, node: Lightningd, phantom_secret: bytes, context_secret: bytes,
                 log: Callable[[str, str], None], clock: Callable[[], float] = time.time,
                 pacer: Optional[Pacer] = None):
        self.node = node
        self._phantom = PrivateKey(phantom_secret)
        self.phantom_secret = phantom_secret
        self.phantom_id = self._phantom.public_key.format()
        self.ctx_key = ContextKey(context_secret)
        self._log = log
        self._clock = clock
        self.pacer = pacer or Pacer()
        self.stats = Stats()
        self._handlers: Dict[int, Callable[[Received], None]] = {}
        self._kind_handlers: Dict[Kind, Callable[[Received], None]] = {Kind.MAILBOX: self._on_mailbox}
        #: (next node id, wire onion_message) of onion messages lightningd could not forward
        self.on_undeliverable: Optional[Callable[[bytes, bytes], None]] = None
        self._lock = threading.Lock()
        #: lightningd has finished starting.  Before that, RPCs that use the node key for ECDH
        #: (decryptencrypteddata) make lightningd abort, so they are not called until this is set.
        self.running = threading.Event()

    # ---- registration -------------------------------------------------------------------------
    def on(self, msg_type: int, handler: Callable[[Received], None]) -> None:
        self._handlers[canonical_type(msg_type)] = handler

    def on_kind(self, kind: Kind, handler: Callable[[Received], None]) -> None:
        self._kind_handlers[kind] = handler

    # ---- paths ----------------------------------------------------------------------------------
    def make_path(self, context: PathContext, via: Sequence[bytes] = ()) -> BlindedPath:
        """A blinded path ``via... -> our node -> phantom`` whose final hop carries ``context``."""
        ctx = context.encode()
        return build_reply_path(list(via) + [self.node.node_id], self.phantom_id, self.ctx_key.path_id(ctx), ctx)

    def make_mailbox_path(self, context: PathContext, mailbox_node: bytes) -> BlindedPath:
        """A blinded path ``mailbox_node -> phantom`` that skips our node: our server holds what arrives
        on it while we are offline (see asyncreceive/server/mailbox.py)."""
        ctx = context.encode()
        return build_reply_path([mailbox_node], self.phantom_id, self.ctx_key.path_id(ctx), ctx)

    def mailbox_registration(self, server_node_id: bytes) -> MailboxRegistration:
        """What we register with a mailbox server: our phantom id and a path for it to relay on, signed
        with the phantom key for that server."""
        return MailboxRegistration.sign(self.phantom_secret, server_node_id, self.make_path(PathContext(Kind.MAILBOX)))

    def make_compact_path(self, context: PathContext, via: Sequence[bytes] = ()) -> BlindedPath:
        """A blinded path ``via... -> our node`` (no phantom) whose path_id carries ``context`` itself.

        For messages lightningd understands (invoice_request, invoice, invoice_error): they reach the
        ``onion_message_recv_secret`` hook, which shows us only the 32-byte path_id.
        """
        route = list(via) + [self.node.node_id]
        datas = [EncryptedData(next_node_id=route[i + 1]) for i in range(len(route) - 1)]
        datas.append(EncryptedData(path_id=self.ctx_key.compact_path_id(context)))
        return build_blinded_path(os.urandom(32), [(n, d.encode()) for n, d in zip(route, pad_payloads(datas))])

    # ---- sending --------------------------------------------------------------------------------
    def send(self, dest: BlindedPath, msg_type: int, body: bytes,
             reply_context: Optional[PathContext] = None, reply_via: Sequence[bytes] = (),
             reply_path: Optional[BlindedPath] = None, quiet: bool = False) -> None:
        """Send ``body`` as message ``msg_type`` over ``dest``; raise TransportError on failure (logged
        at info, or at debug with ``quiet`` when the caller expects it, e.g. a client that is offline).

        The reply path is either one we build now for ``reply_context`` (through ``reply_via``), or a
        given ``reply_path`` (e.g. a payer's, when forwarding its invoice_request).

        A compact (sciddir) introduction that our gossip does not know yet (e.g. LDK's reply paths name
        a channel of the payer's, announced only moments ago) is tried through each of our connected
        channel peers P (at most ``GUESS_PEERS``) in two ways: as P itself, and as the node at the other
        end of P's channel with that scid (P forwards by ``short_channel_id``).  The introduction is
        usually one of these (our server, or the payer behind it); a node that is not cannot open the
        layer and drops it.
        """
        name = message_name(msg_type)
        try:
            reply = self.make_path(reply_context, reply_via) if reply_context is not None else reply_path
            try:
                tries = [(self.introduction_node(dest), None)]
            except NodeError as e:
                peers = self.node.connected_channel_peers()[:GUESS_PEERS] if dest.first_node_id is None else []
                if not peers:
                    raise
                scid = dest.introduction.scid
                tries = [(p, None) for p in peers] + [(p, scid) for p in peers]
                self._log(f"{e}: trying the path's introduction among our peers and their channel "
                          f"{dest.introduction.scid_str()}: {', '.join(p.hex()[:16] for p in peers)}", "debug")
            errors = []
            for intro, via_scid in tries:
                try:
                    self._send_to(dest, intro, msg_type, body, reply, via_scid)
                except (NodeError, ValueError) as e:
                    errors.append(e)
            if len(errors) == len(tries):
                raise errors[0]
        except (NodeError, ValueError) as e:
            self._error(f"send {name} failed: {e}", "debug" if quiet else "info")
            raise TransportError(str(e)) from e
        self._count(self.stats.sent, name)
        self._log(f"sent {name} ({len(body)} bytes) via {', '.join(i.hex() for i, _ in tries)}", "debug")

    def _send_to(self, dest: BlindedPath, intro: bytes, msg_type: int, body: bytes,
                 reply: Optional[BlindedPath], via_scid: Optional[int] = None) -> None:
        """One send; with ``via_scid``, ``intro`` is the peer that forwards over its channel ``via_scid``."""
        if via_scid is not None:
            out = build_outgoing(self.node.node_id, dest, msg_type, body, reply, route=[intro], via_scid=via_scid)
            peer = intro
        else:
            route = self._route(intro)
            out = build_outgoing(self.node.node_id, dest, msg_type, body, reply, intro_node_id=intro, route=route)
            peer = route[0] if route else self.first_peer(dest, intro)
        self.node.ensure_connected(peer)
        self.pacer.wait(peer)
        self.node.send_onion(out)

    def introduction_node(self, path: BlindedPath) -> bytes:
        if path.first_node_id is not None:
            return path.first_node_id
        return self.node.resolve_sciddir(path.introduction.scid_str(), path.introduction.direction)

    def _route(self, intro: bytes) -> List[bytes]:
        """Nodes to cross before ``intro``: none if it is us or a peer (or we can connect to it), else a
        shortest path through the public channel graph, as CLN's offers plugin does."""
        if intro == self.node.node_id or self.node.is_connected(intro):
            return []
        try:
            self.node.ensure_connected(intro)
            return []
        except NodeError:
            route = self.node.route_to(intro)
            if route is None:
                raise
            return route

    def first_peer(self, dest: BlindedPath, intro: bytes) -> bytes:
        """The peer the message first goes to: the introduction node, or, when the path starts at us,
        the next node named in our own (encrypted) hop.  Pacing is per that peer."""
        if intro != self.node.node_id or not self.running.is_set():
            return intro
        try:
            plain, _ = self.node.decrypt_encrypted_data(dest.hops[0].encrypted_recipient_data, dest.first_path_key)
            data = EncryptedData.decode(plain)
        except (NodeError, DecodeError):
            return intro
        if data.next_node_id is not None:
            return data.next_node_id
        if data.short_channel_id is not None:
            s = data.short_channel_id
            return self.node.channel_peer(f"{s >> 40}x{(s >> 16) & 0xFFFFFF}x{s & 0xFFFF}") or intro
        return intro

    # ---- receiving ------------------------------------------------------------------------------
    def handle_forward_fail(self, notification: dict) -> None:
        """``onionmessage_forward_fail``: if it was heading to our phantom, peel and dispatch it; if it
        was heading to another node id, offer it to the ``on_undeliverable`` handler (the server's
        mailbox, which holds messages for its clients' phantoms)."""
        self.running.set()  # onion messages flow: connectd is up, so lightningd has started
        next_id = notification.get("next_node_id")
        outgoing = notification.get("outgoing")
        if next_id is None or outgoing is None:
            return  # a genuine forwarding failure (e.g. to an unknown scid), not ours
        try:
            next_id_b, outgoing_b = bytes.fromhex(next_id), bytes.fromhex(outgoing)
        except ValueError:
            return
        if next_id_b != self.phantom_id:
            if self.on_undeliverable is not None:
                self.on_undeliverable(next_id_b, outgoing_b)
            return
        msg = self._open(outgoing_b)
        if msg is not None:
            self._dispatch(msg)

    def _open(self, onion_message: bytes, relayed: bool = False) -> Optional[Received]:
        """Peel the phantom layer of a wire ``onion_message`` and authenticate its context; None (the
        drop counted and logged) if it is malformed or not ours."""
        try:
            peeled = peel_phantom(self.phantom_secret, onion_message)
        except (DecodeError, ValueError) as e:
            return self._drop("malformed", f"undecodable onion message to phantom: {e}")
        p = peeled.payload
        if p.message_type is None:
            return self._drop("no_message", "onion message to phantom carries no message")
        try:
            ctx = self.ctx_key.verify(peeled.context_bytes, peeled.hop_data.path_id, int(self._clock()))
        except ContextError as e:
            return self._drop(e.reason, f"{message_name(p.message_type)} dropped: {e}")
        if relayed and ctx.kind == Kind.MAILBOX:
            return self._drop("malformed", "a held onion message inside a held onion message")
        return Received(canonical_type(p.message_type), p.message_type, p.message, p.reply_path,
                        ctx, peeled.hop_data.path_id)

    def _on_mailbox(self, msg: Received) -> None:
        """A message our server held for us while we were offline, relayed whole: open it as if it had
        just arrived at our phantom."""
        msg.expect(HELD_ONION_MESSAGE, "a mailbox delivery path", needs_reply=False)
        inner = self._open(msg.body, relayed=True)
        if inner is not None:
            self._count(self.stats.relayed, message_name(inner.raw_type))
            self._dispatch(inner)

    def check_recv_secret(self, onion_message: dict) -> Optional[Received]:
        """``onion_message_recv_secret`` (a path ending at our real node): authenticate its compact
        path_id.  Returns the message if it is ours (the caller dispatches it and stops the hook chain),
        None if it belongs to someone else (e.g. CLN's offers plugin)."""
        try:
            pid = bytes.fromhex(onion_message.get("pathsecret", ""))
            ctx = self.ctx_key.verify_compact(pid, int(self._clock()))
        except (ContextError, ValueError):
            return None
        msg_type, body = None, b""
        for name, t in (("invoice_request", 64), ("invoice", 66), ("invoice_error", 68)):
            if name in onion_message:
                msg_type, body = t, bytes.fromhex(onion_message[name])
        for f in onion_message.get("unknown_fields", []):
            if f.get("number") in KNOWN_MESSAGE_TYPES and msg_type is None:
                msg_type, body = f["number"], bytes.fromhex(f["value"])
        if msg_type is None:
            self._drop("no_message", "onion message on our path carries no message")
            return None
        try:
            reply = blinded_path_from_json(onion_message.get("reply_blindedpath"))
        except (KeyError, ValueError, DecodeError) as e:
            self._drop("malformed", f"bad reply path: {e}")
            return None
        return Received(canonical_type(msg_type), msg_type, body, reply, ctx, pid)

    def dispatch(self, msg: Received) -> None:
        self._dispatch(msg)

    def _dispatch(self, msg: Received) -> None:
        name = message_name(msg.raw_type)
        handler = self._kind_handlers.get(msg.context.kind) or self._handlers.get(msg.msg_type)
        if handler is None:
            return self._drop("no_handler", f"no handler for {name} on a {msg.context.kind.name} path")
        self._count(self.stats.received, name)
        self._log(f"received {name} ({len(msg.body)} bytes, sha256 {hashlib.sha256(msg.body).hexdigest()[:16]}) "
                  f"on a {msg.context.kind.name} path", "debug")
        try:
            handler(msg)
        except ContextError as e:
            self._drop(e.reason, f"{name} not acted on: {e}")
        except (DecodeError, TransportError) as e:
            self._drop("rejected", f"{name} rejected: {e}")

    # ---- bookkeeping ----------------------------------------------------------------------------
    def _count(self, d: Dict[str, int], key: str) -> None:
        with self._lock:
            d[key] = d.get(key, 0) + 1

    def _error(self, text: str, level: str = "info") -> None:
        self.stats.last_error = text
        self.stats.last_error_at = int(self._clock())
        self._log(text, level)

    def _drop(self, reason: str, text: str) -> None:
        first = reason not in self.stats.dropped
        self._count(self.stats.dropped, reason)
        self._log(f"dropped onion message ({reason}): {text}", "info" if first else "debug")


def blinded_path_from_json(j: Optional[dict]) -> Optional[BlindedPath]:
    """lightningd's JSON form of a blinded path (hook payloads) to a BlindedPath."""
    if not j:
        return None
    if "first_node_id" in j:
        intro = SciddirOrPubkey(node_id=bytes.fromhex(j["first_node_id"]))
    else:
        block, tx, out = (int(x) for x in j["first_scid"].split("x"))
        intro = SciddirOrPubkey(scid=(block << 40) | (tx << 16) | out, direction=int(j["first_scid_dir"]))
    hops = tuple(BlindedHop(bytes.fromhex(h["blinded_node_id"]), bytes.fromhex(h["encrypted_recipient_data"]))
                 for h in j["hops"])
    return BlindedPath.decode(BlindedPath(intro, bytes.fromhex(j["first_path_key"]), hops).encode())
