"""Send and receive onion messages of any type through a stock lightningd.

Internal API for the roles:

- ``send(path, msg_type, body, reply_context=None, reply_via=())`` sends a message over a blinded path,
  optionally with a reply path to us carrying ``reply_context``;
- ``make_path(context, via=())`` builds a blinded path ``via... -> us -> phantom`` to hand out;
- ``on_kind(kind, handler)`` takes every message arriving on paths of one context kind (asyncreceive/app.py's
  CONTEXT_ROUTES says which service takes which kind).

Handlers receive a :class:`Received` whose ``context`` has already been authenticated and checked for
expiry.  Everything else is dropped, counted per reason, and logged (info the first time a reason is
seen, debug after that).
"""

import functools
import hashlib
import os
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence

from coincurve import PrivateKey

from ..crypto.blinding import EncryptedData, build_blinded_path, pad_payloads
from ..crypto.context import ContextError, ContextKey, Kind, PathContext
from ..crypto.onion import OutgoingOnion, build_outgoing, build_reply_path, peel_phantom
from ..errors import DecodeError
from ..wire.messages import (HELD_ONION_MESSAGE, KNOWN_MESSAGE_TYPES, MailboxRegistration, canonical_type,
                             message_name)
from ..wire.paths import BlindedHop, BlindedPath, SciddirOrPubkey
from ..server.ratelimit import RateLimiter
from ..logs import short_id
from .graph import ChannelGraph
from .lightningd import Lightningd, NodeError
from .sender import Sender

#: a sciddir introduction we cannot resolve is tried through at most this many of our channel peers
GUESS_PEERS = 2
#: sends with such guesses, each a burst then one per refill seconds: replies (answers to others'
#: messages, forwards) per scid guessed and in all; our own sends in all (apart from replies)
GUESS_PER_SCID, GUESS_SCID_REFILL = 2, 5.0
REPLY_GUESS_BURST, REPLY_GUESS_REFILL = 128, 0.1
GUESS_BURST, GUESS_REFILL = 10, 1.0
#: a connect not over after this long counts as failed (lightningd's own attempt may take a minute)
CONNECT_TIMEOUT = 10.0
#: after a failed connect to a node, sends that would connect to it again fail at once for this long
CONNECT_RETRY = 30.0
MAX_CONNECT_FAILURES = 256
#: first hops at our node decrypted lately, kept (a client's forward path is used for every request)
OUR_HOPS_KEPT = 1024


@dataclass(frozen=True)
class Received:
    msg_type: int                    # canonical (LDK) number
    raw_type: int                    # as it arrived (may be a bLIP-66 draft number)
    body: bytes
    reply_path: Optional[BlindedPath]
    context: PathContext
    path_id: bytes
    #: the peer the onion came from (None when lightningd does not say, e.g. paths ending at our node);
    #: for a message our server's mailbox relayed, the peer it first came from is not known either
    source: Optional[bytes] = None

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
    last_sent_at: Optional[int] = None
    #: whether the last error still holds: no message got through since (one that did shows the problem
    #: went away)
    last_error_current: bool = False

    def as_json(self) -> dict:
        return {"sent": dict(self.sent), "received": dict(self.received), "dropped": dict(self.dropped),
                "relayed": dict(self.relayed), "last_error": self.last_error, "last_error_at": self.last_error_at,
                "last_error_current": self.last_error_current, "last_sent_at": self.last_sent_at}


@dataclass(frozen=True)
class _Attempt:
    """One onion to hand to lightningd, and the peer it goes to first (its queue and pacing)."""
    peer: bytes
    onion: Optional[OutgoingOnion]                          # None: ``reroute`` makes it once the graph is fresh
    connect: bool = False                                   # connect to ``peer`` first
    reroute: Optional[Callable[[], "_Attempt"]] = None      # if that connect fails


@dataclass
class _Outgoing:
    """One ``send``: its attempts left, whether one got through, the first error."""
    name: str
    size: int
    quiet: bool
    left: int
    reply_kind: Optional[str]   # None for our own send; a reply's message name
    sent: bool = False
    error: Optional[str] = None
    on_sent: Optional[Callable[[bool], None]] = None


#: routes looked up one node at a time (its gossip neighbours) when the cached graph has none: 20, then 2/s
LOOKUP_BURST, LOOKUP_REFILL = 20, 0.5


class _QueueFull(NodeError):
    pass


class Transport:
    def __init__(self, node: Lightningd, phantom_secret: bytes, context_secret: bytes,
                 log: Callable[[str, str], None], clock: Callable[[], float] = time.time,
                 sender: Optional[Sender] = None, graph: Optional[ChannelGraph] = None):
        self.node = node
        self._phantom = PrivateKey(phantom_secret)
        self.phantom_secret = phantom_secret
        self.phantom_id = self._phantom.public_key.format()
        self.ctx_key = ContextKey(context_secret)
        self._log = log
        self._clock = clock
        self.sender = sender or Sender(log)
        self.graph = graph or ChannelGraph(node, log)
        self._guess_own = RateLimiter(GUESS_BURST, GUESS_REFILL)
        #: lookups of one node's route in lightningd's graph when the cached one has none
        self._lookup_limit = RateLimiter(LOOKUP_BURST, LOOKUP_REFILL)
        self._guess_replies = RateLimiter(REPLY_GUESS_BURST, REPLY_GUESS_REFILL)
        self._guess_scid = RateLimiter(GUESS_PER_SCID, GUESS_SCID_REFILL, max_clients=4096)
        self._connect_failures: Dict[bytes, float] = {}
        #: (encrypted_recipient_data, path key) of a path's first hop at us -> its plaintext (``first_peer``)
        self._our_hops: Dict[tuple, bytes] = {}
        self.stats = Stats()
        self._kind_handlers: Dict[Kind, Callable[[Received], None]] = {Kind.MAILBOX: self._on_mailbox}
        #: (next node id, wire onion_message, the peer it came from or None) of onion messages lightningd
        #: could not forward
        self.on_undeliverable: Optional[Callable[[bytes, bytes, Optional[bytes]], None]] = None
        self._lock = threading.Lock()
        #: lightningd has finished starting.  Before that, RPCs that use the node key for ECDH
        #: (decryptencrypteddata) make lightningd abort, so they are not called until this is set.
        self.running = threading.Event()

    # ---- registration -------------------------------------------------------------------------
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
             reply_path: Optional[BlindedPath] = None, quiet: bool = False, may_connect: bool = False,
             on_sent: Optional[Callable[[bool], None]] = None) -> None:
        """Send ``body`` as message ``msg_type`` over ``dest``: build the onion now and queue it for the
        sender (see sender.py), which sends it after what is already queued for the same first peer.

        Raises TransportError (logged at info, or at debug with ``quiet`` when the caller expects it,
        e.g. a client that is offline) only for what is known at once: an introduction we cannot
        resolve or reach, a full send queue, too many connects pending.  A failure later (lightningd
        refusing the message, a connect that fails) is logged and counted as the last error.

        The reply path is either one we build now for ``reply_context`` (through ``reply_via``), or a
        given ``reply_path`` (e.g. a payer's, when forwarding its invoice_request).

        A send is *our own* when we expect an answer on our path (``reply_context``) or may connect
        (``may_connect``); any other is a *reply* (an answer over a path someone gave us, a forward,
        a relay), which a stranger can make us send at will.  Replies have their own, small, share of
        the send queues and of the guesses below, and use the cached channel graph only.

        Messages go to a connected peer: the introduction itself, or the first node of a route to it
        through the (cached) channel graph.  Only with ``may_connect`` (sends our own state or the
        operator starts, to a known party, never a reply to a stranger's message) do we connect to an
        introduction that is not our peer; the message is queued once the connect is over (or has
        taken ``CONNECT_TIMEOUT``), and no thread waits for it meanwhile.  An own send that finds no
        route starts a refresh of the graph if one is due, and is routed once when it is over.

        ``on_sent(ok)``, if given, is called once (on the sender thread) when a send that did not raise is
        over: True once lightningd took the message, False if every attempt failed.

        A compact (sciddir) introduction that our gossip does not know yet (e.g. LDK's reply paths name
        a channel of the payer's, announced only moments ago) is tried through each of our connected
        channel peers P (at most ``GUESS_PEERS``) in two ways: as P itself, and as the node at the other
        end of P's channel with that scid (P forwards by ``short_channel_id``).  The introduction is
        usually one of these (our server, or the payer behind it); a node that is not cannot open the
        layer and drops it.  Such guesses are rate-limited: replies per scid and in all, our own sends
        apart from them.
        """
        name = message_name(msg_type)
        reply_kind = None if reply_context is not None or may_connect else name
        try:
            reply = self.make_path(reply_context, reply_via) if reply_context is not None else reply_path
            attempts = self._attempts(dest, msg_type, body, reply, may_connect, reply_kind is None)
        except (NodeError, ValueError) as e:
            self._error(f"send {name} failed: {e}", "debug" if quiet else "info")
            raise TransportError(str(e)) from e
        outgoing = _Outgoing(name, len(body), quiet, len(attempts), reply_kind, on_sent=on_sent)
        errors = []
        for a in attempts:
            try:
                self._start(outgoing, a)
            except NodeError as e:
                errors.append(e)
                if len(errors) == len(attempts):
                    outgoing.on_sent = None   # the caller learns it from the exception
                self._finish(outgoing, None, str(e))
        if len(errors) == len(attempts):
            if isinstance(errors[0], _QueueFull):
                self.drop("send_queue_full", f"{name} to {attempts[0].peer.hex()} not sent: the send queue is full")
                raise TransportError("send queue full")
            raise TransportError(str(errors[0]))

    def _attempts(self, dest: BlindedPath, msg_type: int, body: bytes, reply: Optional[BlindedPath],
                  may_connect: bool, own: bool) -> List["_Attempt"]:
        """The onions to send for one message and the peer each goes to first (no RPC that waits on the
        network); raises NodeError or ValueError if there is none."""
        def build(intro: bytes, route: Sequence[bytes] = (), via_scid: Optional[int] = None) -> OutgoingOnion:
            return build_outgoing(self.node.node_id, dest, msg_type, body, reply, intro_node_id=intro,
                                  route=list(route), via_scid=via_scid)

        try:
            intro = self.introduction_node(dest)
        except NodeError as e:
            peers = self.node.connected_channel_peers()[:GUESS_PEERS] if dest.first_node_id is None else []
            if not peers:
                raise
            scid = dest.introduction.scid
            if not self._may_guess(scid, own):
                raise NodeError(f"{e}; too many sends to unknown channels just now, not guessing")
            self._log(f"{e}: trying the path's introduction among our peers and their channel "
                      f"{dest.introduction.scid_str()}: {', '.join(short_id(p) for p in peers)}", "debug")
            return ([_Attempt(p, build(p)) for p in peers]
                    + [_Attempt(p, build(p, [p], via_scid=scid)) for p in peers])
        if intro == self.node.node_id:   # the path's next node, named in our own hop, must be our peer
            peer = self.first_peer(dest, intro)
            connect = peer != intro and not self.node.is_connected(peer)
            if connect and (not may_connect or self._connect_failed_lately(peer)):
                raise NodeError(f"the path goes from us to {peer.hex()}, which is not our peer")
            return [_Attempt(peer, build(intro), connect=connect)]
        if self.node.is_connected(intro):
            return [_Attempt(intro, build(intro))]

        def routed() -> _Attempt:
            route = self._route(intro)
            return _Attempt(route[0], build(intro, route))

        def routed_or_later() -> _Attempt:   # own sends: once a fresher graph is here if no route yet
            try:
                return routed()
            except NodeError:
                return _Attempt(intro, None, reroute=routed)

        if may_connect and not self._connect_failed_lately(intro):
            return [_Attempt(intro, build(intro), connect=True, reroute=routed_or_later)]
        return [routed_or_later() if own else routed()]

    def _may_guess(self, scid: int, own: bool) -> bool:
        """Whether a send may guess the introduction of the unknown channel ``scid`` now (takes a token)."""
        now = self._clock()
        with self._lock:
            if own:
                return self._guess_own.allow(b"", now)
            return self._guess_scid.allow(scid.to_bytes(8, "big"), now) and self._guess_replies.allow(b"", now)

    def _route(self, intro: bytes) -> List[bytes]:
        """Nodes to cross before ``intro`` (not our peer): a shortest path through the cached public
        channel graph from a connected peer, as CLN's offers plugin does."""
        route = self.graph.route(intro)
        if not route and self._may_look_up():
            # not in the cached graph (fetched before the channels that lead there were announced?):
            # look up this one node's neighbours in the gossip, at a bounded rate
            route = self.node.gossip_route(intro)
        if not route or not self.node.is_connected(route[0]):
            raise NodeError(f"{intro.hex()} is not our peer and we know no route to it through our peers")
        return route

    def _may_look_up(self) -> bool:
        with self._lock:
            return self._lookup_limit.allow(b"", self._clock())

    def _connect_failed_lately(self, node_id: bytes) -> bool:
        with self._lock:
            at = self._connect_failures.get(node_id)
            return at is not None and self._clock() - at < CONNECT_RETRY

    def _start(self, outgoing: "_Outgoing", a: "_Attempt") -> None:
        """Set attempt ``a`` going without waiting: queue it for the sender, or start its connect (it is
        queued once that is over), or have it routed once the graph being fetched is here.  Raises
        NodeError if it cannot even start (a full queue, too many connects pending and no route, no
        route and no fresher graph coming)."""
        if a.connect:
            try:
                self.node.connect_then(a.peer, CONNECT_TIMEOUT, functools.partial(self._connected, outgoing, a))
                return
            except NodeError:   # too many connects pending: a route we know through our peers may do
                routed = a.reroute() if a.reroute is not None else None
                if routed is None or routed.onion is None:
                    raise
                a = routed
        if a.onion is None:
            if not self.graph.refresh_if_due(functools.partial(self._graph_fetched, outgoing, a)):
                raise NodeError(f"{a.peer.hex()} is not our peer and we know no route to it through our peers")
            return
        if not self.sender.submit(a.peer, functools.partial(self._deliver, outgoing, a), outgoing.reply_kind):
            raise _QueueFull(f"send queue for {a.peer.hex()} full")

    def _connected(self, outgoing: "_Outgoing", a: "_Attempt", error: Optional[str]) -> None:
        """The connect of attempt ``a`` is over (or timed out): queue it, or route it through our peers."""
        try:
            if error is None:
                return self._start(outgoing, replace(a, connect=False))
            with self._lock:
                outgoing.error = outgoing.error or error   # the send's error, should the reroute fail too
                self._connect_failures[a.peer] = self._clock()
                if len(self._connect_failures) > MAX_CONNECT_FAILURES:
                    self._connect_failures.pop(next(iter(self._connect_failures)))
            if a.reroute is None:
                raise NodeError(error)
            try:
                b = a.reroute()
            except NodeError as no_route:
                raise NodeError(f"{error}; {no_route}") from None
            self._log(f"{error}: sending through {'our peer ' + b.peer.hex() if b.onion else 'the graph'} "
                      f"instead", "debug")
            self._start(outgoing, b)
        except (NodeError, ValueError) as e:
            self._finish(outgoing, None, str(e))

    def _graph_fetched(self, outgoing: "_Outgoing", a: "_Attempt") -> None:
        """A fresher graph is here: route attempt ``a`` through it, once."""
        try:
            self._start(outgoing, a.reroute())
        except (NodeError, ValueError) as e:
            self._finish(outgoing, None, str(e))

    def _deliver(self, outgoing: "_Outgoing", a: "_Attempt") -> None:
        """On the sender thread: have lightningd build the onion and send it."""
        try:
            self.node.send_onion(a.onion)
        except (NodeError, ValueError) as e:
            self._finish(outgoing, None, str(e))
        else:
            self._finish(outgoing, a.peer, None)

    def _finish(self, outgoing: "_Outgoing", sent_to: Optional[bytes], error: Optional[str]) -> None:
        """One attempt of a send is over: the first success counts the message as sent; if every attempt
        failed, the first error is the send's error."""
        with self._lock:
            outgoing.left -= 1
            first_success = sent_to is not None and not outgoing.sent
            outgoing.sent = outgoing.sent or sent_to is not None
            if error is not None and outgoing.error is None:
                outgoing.error = error
            failed = outgoing.left == 0 and not outgoing.sent
        if first_success:
            self._count(self.stats.sent, outgoing.name)
            self.stats.last_sent_at = int(self._clock())
            self.stats.last_error_current = False
            self._log(f"sent {outgoing.name} ({outgoing.size} bytes) via {short_id(sent_to)}", "debug")
        if failed:
            self._error(f"send {outgoing.name} failed: {outgoing.error}", "debug" if outgoing.quiet else "info")
        if outgoing.on_sent is not None and (first_success or failed):
            outgoing.on_sent(first_success)

    def introduction_node(self, path: BlindedPath) -> bytes:
        if path.first_node_id is not None:
            return path.first_node_id
        return self.node.resolve_sciddir(path.introduction.scid_str(), path.introduction.direction)

    def reply_via(self, dest: BlindedPath, prefer_connected_intro: bool = False) -> List[bytes]:
        """The first node of our reply path for a message to ``dest``: one that the answer can reach and
        that reaches us.

        A channel peer of ours (connected for good, unlike a connection made just to send): ``dest``'s
        introduction node itself if it is one, else the first hop of our way to it through the cached
        channel graph; then any channel peer; with no channel peer, the introduction if we are connected to
        it, else none (the reply path is just us).  With ``prefer_connected_intro`` (the recipient and its
        server, a node it keeps a connection to) the introduction comes first whenever we are connected to
        it or have a channel with it, even one not reconnected yet (at start).
        Never waits on the network: the graph is the cached one.
        """
        try:
            intro = self.introduction_node(dest)
        except NodeError:
            intro = None
        if intro == self.node.node_id:
            return []
        try:
            peers = self.node.connected_channel_peers()
        except NodeError:
            peers = []
        if intro in peers:
            return [intro]
        if prefer_connected_intro and intro is not None and (self.node.is_connected(intro)
                                                             or self.node.has_channel_with(intro)):
            return [intro]   # our server: connected, or our channel peer that lightningd reconnects
        if intro is not None and peers:
            route = self.graph.route(intro)
            if route and route[0] in peers:
                return [route[0]]
        if peers:
            return [peers[0]]
        return [intro] if intro is not None and self.node.is_connected(intro) else []

    def first_peer(self, dest: BlindedPath, intro: bytes) -> bytes:
        """The peer the message first goes to: the introduction node, or, when the path starts at us,
        the next node named in our own (encrypted) hop.  Pacing is per that peer."""
        if intro != self.node.node_id or not self.running.is_set():
            return intro
        hop = (dest.hops[0].encrypted_recipient_data, dest.first_path_key)
        with self._lock:
            plain = self._our_hops.get(hop)
        try:
            if plain is None:   # lightningd decrypts (our node key); a path used again is decrypted once
                plain, _ = self.node.decrypt_encrypted_data(*hop)
                with self._lock:
                    self._our_hops[hop] = plain
                    if len(self._our_hops) > OUR_HOPS_KEPT:
                        self._our_hops.pop(next(iter(self._our_hops)))
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
        mailbox, which holds messages for its clients' phantoms) with the peer it came from."""
        self.running.set()  # onion messages flow: connectd is up, so lightningd has started
        if not isinstance(notification, dict):
            return self.drop("malformed", f"onionmessage_forward_fail is not an object: {notification!r:.80}")
        next_id = notification.get("next_node_id")
        outgoing = notification.get("outgoing")
        if next_id is None or outgoing is None:
            return  # a genuine forwarding failure (e.g. to an unknown scid), not ours
        try:
            next_id_b, outgoing_b = bytes.fromhex(next_id), bytes.fromhex(outgoing)
            source = notification.get("source")
            source_b = bytes.fromhex(source) if source is not None else None
        except (TypeError, ValueError) as e:
            return self.drop("malformed", f"onionmessage_forward_fail with a field that is not hex: {e}")
        if next_id_b != self.phantom_id:
            if self.on_undeliverable is not None:
                self.on_undeliverable(next_id_b, outgoing_b, source_b)
            return
        msg = self._open(outgoing_b, source=source_b)
        if msg is not None:
            self._dispatch(msg)

    def _open(self, onion_message: bytes, relayed: bool = False, source: Optional[bytes] = None) -> Optional[Received]:
        """Peel the phantom layer of a wire ``onion_message`` and authenticate its context; None (the
        drop counted and logged) if it is malformed or not ours."""
        try:
            peeled = peel_phantom(self.phantom_secret, onion_message)
        except (DecodeError, ValueError) as e:
            return self.drop("malformed", f"undecodable onion message to phantom: {e}")
        p = peeled.payload
        if p.message_type is None:
            return self.drop("no_message", "onion message to phantom carries no message")
        try:
            ctx = self.ctx_key.verify(peeled.context_bytes, peeled.hop_data.path_id, int(self._clock()))
        except ContextError as e:
            return self.drop(e.reason, f"{message_name(p.message_type)} dropped: {e}")
        if relayed and ctx.kind == Kind.MAILBOX:
            return self.drop("malformed", "a held onion message inside a held onion message")
        return Received(canonical_type(p.message_type), p.message_type, p.message, p.reply_path,
                        ctx, peeled.hop_data.path_id, source)

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
        None if it belongs to someone else (e.g. CLN's offers plugin), or if it is ours but malformed
        (dropped with a log line)."""
        try:
            pid = bytes.fromhex(onion_message.get("pathsecret", ""))
            ctx = self.ctx_key.verify_compact(pid, int(self._clock()))
        except (ContextError, ValueError, TypeError, AttributeError):
            return None
        try:
            msg_type, body = None, b""
            for name, t in (("invoice_request", 64), ("invoice", 66), ("invoice_error", 68)):
                if name in onion_message:
                    msg_type, body = t, bytes.fromhex(onion_message[name])
            for f in onion_message.get("unknown_fields", []):
                if f.get("number") in KNOWN_MESSAGE_TYPES and msg_type is None:
                    msg_type, body = f["number"], bytes.fromhex(f["value"])
            if msg_type is None:
                self.drop("no_message", "onion message on our path carries no message")
                return None
            reply = blinded_path_from_json(onion_message.get("reply_blindedpath"))
        except (KeyError, ValueError, TypeError, AttributeError, DecodeError) as e:
            self.drop("malformed", f"onion message on our path with a bad field: {type(e).__name__} {e}")
            return None
        return Received(canonical_type(msg_type), msg_type, body, reply, ctx, pid)

    def dispatch(self, msg: Received) -> None:
        self._dispatch(msg)

    def _dispatch(self, msg: Received) -> None:
        name = message_name(msg.raw_type)
        handler = self._kind_handlers.get(msg.context.kind)
        if handler is None:
            return self.drop("no_handler", f"no handler for {name} on a {msg.context.kind.name} path")
        self._count(self.stats.received, name)
        self._log(f"received {name} ({len(msg.body)} bytes, sha256 {hashlib.sha256(msg.body).hexdigest()[:16]}) "
                  f"on a {msg.context.kind.name} path", "debug")
        try:
            handler(msg)
        except ContextError as e:
            self.drop(e.reason, f"{name} not acted on: {e}")
        except (DecodeError, TransportError) as e:
            self.drop("rejected", f"{name} rejected: {e}")

    # ---- bookkeeping ----------------------------------------------------------------------------
    def _count(self, d: Dict[str, int], key: str) -> None:
        with self._lock:
            d[key] = d.get(key, 0) + 1

    def _error(self, text: str, level: str = "info") -> None:
        self.stats.last_error = text
        self.stats.last_error_at = int(self._clock())
        self.stats.last_error_current = True
        self._log(text, level)

    def drop(self, reason: str, text: str) -> None:
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
