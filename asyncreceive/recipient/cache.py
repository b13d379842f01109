"""The recipient's offer cache: N slots, one offer each, and the pure policy that drives them.

Lifecycle of a slot (bLIP-66, with LDK's constants)::

    empty --(request sent)--> requested --(offer_paths accepted, offer + invoice built)--> pending
    pending --(static_invoice_persisted)--> ready --(handed out by getoffer)--> used
    ready --(getoffer with an amount, description or issuer: a *dedicated* offer on its paths)--> pending
    pending, dedicated --(static_invoice_persisted)--> used
    any state with an offer --(offer expired)--> empty

- *requested* carries the number of attempts and when to try again: exponential backoff from
  ``OFFER_PATHS_RETRY_BASE`` doubling up to ``OFFER_PATHS_RETRY_CAP``.  At start, every slot that needs an offer
  is requested at once (LDK asks for one slot per tick; we want all slots ready within seconds).
- *pending* offers re-send their static invoice on every tick until the server acknowledges it.
- *ready* offers are unused; one older than ``OFFER_REFRESH`` may be replaced, but never the last
  payable one, and a replacement keeps serving the old offer until the new one is built.
- *used* offers were handed to a payer: they are kept until they expire, and their invoice is re-sent
  once it is older than ``INVOICE_REFRESH`` (so its payment paths stay fresh).
- *dedicated* offers carry an amount, description or issuer: the server keeps one static invoice per
  slot, so such an offer takes a ready slot (its unused amount-less offer is dropped) and keeps it; it
  is never handed out by a plain getoffer.

Several servers (see :mod:`.servers`): a slot is requested from every server, and its offer carries the
offer paths of each server that answered (its *holders*); the same static invoice is served to each.  An
offer not handed out yet is rebuilt (a new offer_id, back to *pending*) when another server's paths
arrive, so a slot ends up held by every server that answers; it is *ready* once one holder persisted its
invoice.  A pending or ready slot missing a server's paths asks that server again (with the slot's
backoff, and a down server's).  So when a server is down its slots fill from the others, and getoffer
prefers offers that more answering servers hold.  Used and dedicated offers never change: their paths
are out in the world.

Everything here is pure: ``(cache, event, now) -> (cache, actions)``.  The shell persists the new
cache *before* it carries out the actions (sending a message, building an invoice).
"""

from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

OFFER_REFRESH = 2 * 3600            # LDK OFFER_REFRESH_THRESHOLD
INVOICE_REFRESH = 2 * 3600          # LDK INVOICE_REFRESH_THRESHOLD
MIN_PATHS_LIFETIME = 90 * 24 * 3600  # LDK MIN_OFFER_PATHS_RELATIVE_EXPIRY_SECS
REPLY_PATH_LIFETIME = 2 * 3600      # expiry of the offer_paths_request reply path
OFFER_PATHS_RETRY_BASE = 5
OFFER_PATHS_RETRY_CAP = 3600
#: a server's offer_paths may add at most this many paths to an offer, of at most this many bytes all
#: together with the other servers' (our server refuses invoices whose offer has more than 8 paths, and
#: invoices over 5120 bytes: the offer is part of the invoice, with payment and message paths)
MAX_PATHS_PER_SERVER = 2
MAX_OFFER_PATHS_BYTES = 2000

EMPTY, REQUESTED, PENDING, READY, USED = "empty", "requested", "pending", "ready", "used"


@dataclass(frozen=True)
class Holder:
    """One server's part of an offer: the offer paths it issued for the slot, and where its static
    invoice goes."""

    server: bytes                   # the server's id (servers.server_id)
    paths: bytes                    # its offer paths, as received (for duplicate detection)
    reply_path: bytes               # offer_paths' reply path: every serve_static_invoice to it goes there
    mailbox_node: bytes = b""       # it holds messages for our phantom (its node id), or b""
    persisted_at: Optional[int] = None  # created_at of the newest invoice of this offer it confirmed
    paths_expiry: Optional[int] = None  # offer_paths' paths_absolute_expiry


@dataclass(frozen=True)
class CachedOffer:
    """A cached offer and what we need to keep its invoice fresh at its servers."""

    offer: bytes                    # the offer's TLV stream
    offer_id: bytes
    holders: Tuple[Holder, ...]     # the servers whose offer paths the offer carries, in that order
    expires_at: Optional[int]       # offer_absolute_expiry
    created_at: int                 # when offer_paths was accepted
    invoice_created_at: int         # latest invoice sent (pending) or acknowledged (ready/used)
    invoice_expires_at: Optional[int] = None
    key_nonce: bytes = b""          # derives this offer's signing key (offer_issuer_id)
    amount_msat: Optional[int] = None   # offer_amount of a dedicated offer
    description: Optional[str] = None   # offer_description of a dedicated offer
    issuer: Optional[str] = None        # offer_issuer of a dedicated offer

    @property
    def dedicated(self) -> bool:
        """Made by getoffer for one use (amount, description or issuer): never handed out again."""
        return self.amount_msat is not None or self.description is not None or self.issuer is not None

    def holder(self, server: bytes) -> Optional[Holder]:
        return next((h for h in self.holders if h.server == server), None)


@dataclass(frozen=True)
class Slot:
    index: int
    status: str = EMPTY
    offer: Optional["CachedOffer"] = None
    attempts: int = 0               # offer_paths_request rounds sent since the slot last got an offer
    next_request_at: Optional[int] = None
    last_request_at: Optional[int] = None   # when a new or replacement offer was last requested
    #: created_at of the newest invoice served for this slot, whatever its offer: a server keeps the newer
    #: of two invoices for a slot, so every invoice we serve must be newer than this
    invoice_floor: int = 0

    @property
    def payable(self) -> bool:
        return self.status in (READY, USED)


# ---- actions (what the shell must do, after persisting) ---------------------------------------
@dataclass(frozen=True)
class SendRequest:
    """offer_paths_request for the slot, to one server."""

    slot: int
    server: bytes = b""


@dataclass(frozen=True)
class SendInvoice:
    """Build a fresh static invoice for the slot's offer and serve it to these of its holders (None: all)."""

    slot: int
    servers: Optional[Tuple[bytes, ...]] = None


Action = object


def offer_paths_backoff(attempts: int) -> int:
    return min(OFFER_PATHS_RETRY_CAP, OFFER_PATHS_RETRY_BASE * (2 ** max(0, attempts - 1)))


def new_cache(n: int) -> Tuple[Slot, ...]:
    return tuple(Slot(i) for i in range(n))


def resize(cache: Tuple[Slot, ...], n: int) -> Tuple[Slot, ...]:
    """Slots ``0 .. n-1``: missing ones are added empty; slots at or above ``n`` stay only while they hold a
    payable or dedicated offer (an offer handed out keeps working until it expires). Indices stay unique:
    after a shrink that kept slot 3 and dropped slot 2, a grow adds 2 back, never a second 3."""
    have = {s.index for s in cache}
    keep = [s for s in cache if s.index < n or s.payable or (s.offer is not None and s.offer.dedicated)]
    keep += [Slot(i) for i in range(n) if i not in have]
    return tuple(sorted(keep, key=lambda s: s.index))


def _set(cache, slot: Slot):
    return tuple(slot if s.index == slot.index else s for s in cache)


def prune(cache, now: int):
    """Expired offers free their slot."""
    out = []
    for s in cache:
        if s.offer is not None and s.offer.expires_at is not None and now > s.offer.expires_at:
            s = Slot(s.index, invoice_floor=s.invoice_floor)
        out.append(s)
    return tuple(out)


def _replaceable(cache, now: int) -> Optional[int]:
    """A ready offer older than OFFER_REFRESH, oldest first, if at least two offers are payable."""
    if sum(1 for s in cache if s.payable) <= 1:
        return None
    old = [s for s in cache if s.status == READY and s.offer.created_at < now - OFFER_REFRESH]
    if not old:
        return None
    return min(old, key=lambda s: (s.offer.created_at, s.index)).index


def _request(slot: Slot, now: int, replacing: bool = True) -> Slot:
    """The slot asks for offer paths: for a new or replacement offer (``last_request_at`` marks that),
    or, with ``replacing`` False, only for a missing server's paths to add to its offer."""
    attempts = slot.attempts + 1
    status = REQUESTED if slot.status in (EMPTY, REQUESTED) else slot.status
    return replace(slot, status=status, attempts=attempts, next_request_at=now + offer_paths_backoff(attempts),
                   last_request_at=now if replacing else slot.last_request_at)


def _extendable(s: Slot) -> bool:
    """May another server's paths still be added to this slot's offer (rebuilding it)?"""
    return s.status in (PENDING, READY) and not s.offer.dedicated


def tick(cache, now: int, start: bool = False, servers: Tuple[bytes, ...] = (b"",), may_send=None):
    """The periodic step (and, with ``start``, the first one after loading the cache).

    ``servers``: the ids of the servers we are enrolled at; ``may_send(server)``: whether a message to it
    may go now (a down server's round is not due: see :mod:`.servers`; default: always).  Returns
    (cache, actions).  At start every slot that needs an offer is requested immediately, even if an
    earlier run had backed off.
    """
    ok = [x for x in servers if may_send is None or may_send(x)]
    cache = prune(cache, now)
    actions: List[Action] = []
    for s in cache:
        due = start or s.next_request_at is None or now >= s.next_request_at
        if s.status == EMPTY or (s.status == REQUESTED and due):
            if not ok:
                continue
            if start:
                s = replace(s, attempts=0)
            s = _request(s, now)
            cache = _set(cache, s)
            actions += [SendRequest(s.index, x) for x in ok]
            continue
        if s.offer is None:
            continue
        missing = [x for x in ok if s.offer.holder(x) is None]
        if _extendable(s) and missing and due:
            s = _request(s, now, replacing=False)
            cache = _set(cache, s)
            actions += [SendRequest(s.index, x) for x in missing]
        if s.status == PENDING:
            to = tuple(h.server for h in s.offer.holders if may_send is None or may_send(h.server))
            if to:
                actions.append(SendInvoice(s.index, None if len(to) == len(s.offer.holders) else to))
        elif s.status in (READY, USED):
            # holders that have not confirmed the offer yet; for a used offer also those whose invoice
            # is old (its payment paths must stay fresh; a ready offer is replaced instead)
            to = tuple(h.server for h in s.offer.holders if (h.persisted_at is None or (
                s.status == USED and h.persisted_at + INVOICE_REFRESH < now))
                and (may_send is None or may_send(h.server)))
            if to:
                actions.append(SendInvoice(s.index, None if len(to) == len(s.offer.holders) else to))
    victim = _replaceable(cache, now)
    if victim is not None and ok:
        s = cache[_pos(cache, victim)]
        if s.next_request_at is None or start or now >= s.next_request_at:
            cache = _set(cache, _request(s, now))
            actions += [SendRequest(victim, x) for x in ok if SendRequest(victim, x) not in actions]
    return cache, actions


def servers_removed(cache, removed) -> Tuple[Slot, ...]:
    """Servers we are no longer enrolled at: a slot whose offer is not out in the world yet and that one
    of them held starts again (empty: the next tick asks the others).  Used and dedicated offers keep
    their holders: their paths are out, and the removed server may still serve them."""
    out = []
    for s in cache:
        if s.offer is not None and _extendable(s) and any(h.server in removed for h in s.offer.holders):
            s = Slot(s.index, invoice_floor=s.invoice_floor)
        out.append(s)
    return tuple(out)


def _pos(cache, index: int) -> int:
    for i, s in enumerate(cache):
        if s.index == index:
            return i
    raise KeyError(index)


def _replacing(s: Slot, now: int) -> bool:
    return s.status == READY and s.offer.created_at < now - OFFER_REFRESH and s.last_request_at is not None


def slot_wants_offer(cache, index: int, now: int, server: bytes = b"") -> bool:
    """Does ``index`` still want offer paths from ``server``: empty, a ready offer old enough to replace
    (LDK), or an offer not handed out yet that this server does not hold?"""
    try:
        s = cache[_pos(cache, index)]
    except KeyError:
        return False
    if s.status in (EMPTY, REQUESTED):
        return True
    return _replacing(s, now) or (_extendable(s) and s.offer.holder(server) is None)


def check_offer_paths(cache, index: int, paths: bytes, paths_expiry: Optional[int], now: int,
                      server: bytes = b"") -> Optional[str]:
    """Why an ``offer_paths`` from ``server`` for ``index`` (its paths as the offer would carry them: at
    most ``MAX_PATHS_PER_SERVER``) must be ignored, or None to accept it."""
    if not slot_wants_offer(cache, index, now, server):
        return "slot_not_wanting"
    kept = _joined(cache[_pos(cache, index)], now, server)
    if len(paths) + sum(len(h.paths) for h in kept) > MAX_OFFER_PATHS_BYTES:
        return "offer_too_large"
    if paths_expiry is not None and paths_expiry < now + MIN_PATHS_LIFETIME:
        return "paths_expire_too_soon"
    if not paths:
        return "no_paths"
    if any(s.offer is not None and any(h.paths == paths for h in s.offer.holders) for s in cache):
        return "duplicate_paths"
    return None


def _joined(s: Slot, now: int, server: bytes) -> Tuple[Holder, ...]:
    """The holders an answer from ``server`` joins: the slot's current ones when its offer is extended, none
    for a new or replacement offer."""
    if s.offer is not None and _extendable(s) and not _replacing(s, now) and s.offer.holder(server) is None:
        return s.offer.holders
    return ()


def offer_holders(cache, index: int, holder: Holder, now: int) -> Tuple[Holder, ...]:
    """The holders of the offer to build for ``index`` now that ``holder``'s paths were accepted: the
    slot's current ones plus it (the offer is rebuilt, so none has persisted it yet), or it alone for a
    new or replaced offer."""
    joined = _joined(cache[_pos(cache, index)], now, holder.server)
    return tuple(replace(h, persisted_at=None) for h in joined) + (holder,)


def ordered(holders: Tuple[Holder, ...], index: int, servers: Tuple[bytes, ...]) -> Tuple[Holder, ...]:
    """The order of an offer's holders (so of its paths): the servers' order, turned by the slot index, so
    that each server comes first in some offers.  Payers such as stock CLN try only the first path they can
    route to; when its server is down, getoffer hands out an offer whose first path is another's."""
    pos = {x: i for i, x in enumerate(servers)}
    hs = sorted(holders, key=lambda h: pos.get(h.server, len(pos)))
    k = index % len(hs) if hs else 0
    return tuple(hs[k:] + hs[:k])


def offer_built(cache, index: int, offer: CachedOffer):
    """The shell accepted offer_paths and built ``offer``: the slot goes pending.  Its request backoff
    stays (servers still asked are not asked again before their time); no replacement is wanted."""
    s = cache[_pos(cache, index)]
    cache = _set(cache, replace(s, status=PENDING, offer=offer, last_request_at=None))
    return cache, [SendInvoice(index)]


def invoice_time(slot: Slot, now: int) -> int:
    """created_at of the invoice to serve for ``slot`` now.  A server keeps the newer of two invoices for
    a slot, so each must be newer than any served for the slot before (a new, dedicated or rebuilt
    offer's may follow its predecessor's in the same second)."""
    return max(now, slot.invoice_floor + 1)


def invoice_sent(cache, index: int, invoice_created_at: int, invoice_expires_at: Optional[int]):
    """Record the invoice we are about to serve: the slot's floor moves up; a *pending* offer also
    records it (ready/used keep their acked time)."""
    s = cache[_pos(cache, index)]
    s = replace(s, invoice_floor=max(s.invoice_floor, invoice_created_at))
    if s.status == PENDING:
        s = replace(s, offer=replace(s.offer, invoice_created_at=invoice_created_at,
                                     invoice_expires_at=invoice_expires_at))
    return _set(cache, s)


def persisted(cache, offer_id: bytes, invoice_created_at: int, invoice_expires_at: Optional[int] = None,
              server: bytes = b""):
    """``static_invoice_persisted`` from ``server`` for (offer_id, invoice created_at): pending -> ready
    (a dedicated offer -> used) at the first holder's confirmation.

    Duplicates and late acks are harmless: confirmations only move a holder's invoice time forward.
    Returns (cache, changed).
    """
    for s in cache:
        if s.offer is None or s.offer.offer_id != offer_id:
            continue
        o = s.offer
        h = o.holder(server)
        if h is None or (h.persisted_at is not None and invoice_created_at <= h.persisted_at):
            return cache, False
        holders = tuple(replace(x, persisted_at=invoice_created_at) if x is h else x for x in o.holders)
        o = replace(o, holders=holders)
        if invoice_created_at > o.invoice_created_at or s.status == PENDING:
            o = replace(o, invoice_created_at=max(invoice_created_at, o.invoice_created_at),
                        invoice_expires_at=invoice_expires_at or o.invoice_expires_at)
        if s.status == PENDING:
            status = USED if o.dedicated else READY
            return _set(cache, replace(s, status=status, offer=o, attempts=0, next_request_at=None)), True
        return _set(cache, replace(s, offer=o)), True
    return cache, False


def held_by(s: Slot, down=frozenset()) -> int:
    """How many servers that are not down confirmed this slot's offer."""
    return sum(1 for h in s.offer.holders if h.persisted_at is not None and h.server not in down)


def _first_up(s: Slot, down) -> bool:
    """Is the server of the offer's first path (the one stock CLN payers use) not down?"""
    return s.offer.holders[0].server not in down


def newest_ready(cache, down=frozenset()) -> Optional[Slot]:
    """The ready slot getoffer takes: the one that most servers not ``down`` hold, then one whose first
    path's server is not down, then the newest (a dedicated offer is built on its paths, then
    :func:`offer_built` makes it pending)."""
    ready = [s for s in cache if s.status == READY]
    return max(ready, key=lambda s: (held_by(s, down), _first_up(s, down), s.offer.created_at, s.index)) \
        if ready else None


def get_offer(cache, now: int, down=frozenset()):
    """Hand out an offer: the best ready one (:func:`newest_ready`; now used), else the used one that
    most servers not ``down`` hold, expiring last (never a dedicated one).

    Returns (cache, slot or None).
    """
    cache = prune(cache, now)
    s = newest_ready(cache, down)
    if s is not None:
        s = replace(s, status=USED, attempts=0, next_request_at=None)
        return _set(cache, s), s
    used = [s for s in cache if s.status == USED and not s.offer.dedicated]
    if used:
        far = 2 ** 64
        return cache, max(used, key=lambda s: (held_by(s, down) > 0, s.offer.expires_at or far, s.offer.created_at))
    return cache, None


def channels_changed(cache):
    """Our channels or their fees changed: every offer's invoice must be rebuilt and served."""
    return cache, [SendInvoice(s.index) for s in cache if s.offer is not None]


def counts(cache) -> dict:
    out = {k: 0 for k in (EMPTY, REQUESTED, PENDING, READY, USED)}
    for s in cache:
        out[s.status] += 1
    return out
