"""The recipient's offer cache: N slots, one offer each, and the pure policy that drives them.

Lifecycle of a slot (bLIP-66, with LDK's constants)::

    empty --(request sent)--> requested --(offer_paths accepted, offer + invoice built)--> pending
    pending --(static_invoice_persisted)--> ready --(handed out by getoffer)--> used
    ready --(getoffer with an amount, description or issuer: a *dedicated* offer on its paths)--> pending
    pending, dedicated --(static_invoice_persisted)--> used
    any state with an offer --(offer expired)--> empty

- *requested* carries the number of attempts and when to try again: exponential backoff from
  ``RETRY_BASE`` doubling up to ``RETRY_CAP``.  At start, every slot that needs an offer is requested at
  once (LDK asks for one slot per tick; we want all slots ready within seconds).
- *pending* offers re-send their static invoice on every tick until the server acknowledges it.
- *ready* offers are unused; one older than ``OFFER_REFRESH`` may be replaced, but never the last
  payable one, and a replacement keeps serving the old offer until the new one is built.
- *used* offers were handed to a payer: they are kept until they expire, and their invoice is re-sent
  once it is older than ``INVOICE_REFRESH`` (so its payment paths stay fresh).
- *dedicated* offers carry an amount, description or issuer: the server keeps one static invoice per
  slot, so such an offer takes a ready slot (its unused amount-less offer is dropped) and keeps it; it
  is never handed out by a plain getoffer.

Everything here is pure: ``(cache, event, now) -> (cache, actions)``.  The shell persists the new
cache *before* it carries out the actions (sending a message, building an invoice).
"""

from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

OFFER_REFRESH = 2 * 3600            # LDK OFFER_REFRESH_THRESHOLD
INVOICE_REFRESH = 2 * 3600          # LDK INVOICE_REFRESH_THRESHOLD
MIN_PATHS_LIFETIME = 90 * 24 * 3600  # LDK MIN_OFFER_PATHS_RELATIVE_EXPIRY_SECS
REPLY_PATH_LIFETIME = 2 * 3600      # expiry of the offer_paths_request reply path
RETRY_BASE = 5
RETRY_CAP = 3600

EMPTY, REQUESTED, PENDING, READY, USED = "empty", "requested", "pending", "ready", "used"


@dataclass(frozen=True)
class CachedOffer:
    """A cached offer and what we need to keep its invoice fresh at the server."""

    offer: bytes                    # the offer's TLV stream
    offer_id: bytes
    paths: bytes                    # the server's offer paths, as received (for duplicate detection)
    expires_at: Optional[int]       # offer_absolute_expiry
    created_at: int                 # when offer_paths was accepted
    server_reply_path: bytes        # offer_paths' reply path: every serve_static_invoice goes there
    invoice_created_at: int         # latest invoice sent (pending) or acknowledged (ready/used)
    invoice_expires_at: Optional[int] = None
    key_nonce: bytes = b""          # derives this offer's signing key (offer_issuer_id)
    mailbox_node: bytes = b""       # the server holds messages for our phantom (its node id), or b""
    amount_msat: Optional[int] = None   # offer_amount of a dedicated offer
    description: Optional[str] = None   # offer_description of a dedicated offer
    issuer: Optional[str] = None        # offer_issuer of a dedicated offer

    @property
    def dedicated(self) -> bool:
        """Made by getoffer for one use (amount, description or issuer): never handed out again."""
        return self.amount_msat is not None or self.description is not None or self.issuer is not None


@dataclass(frozen=True)
class Slot:
    index: int
    status: str = EMPTY
    offer: Optional["CachedOffer"] = None
    attempts: int = 0               # offer_paths_request rounds sent since the slot last got an offer
    next_request_at: Optional[int] = None
    last_request_at: Optional[int] = None

    @property
    def payable(self) -> bool:
        return self.status in (READY, USED)


# ---- actions (what the shell must do, after persisting) ---------------------------------------
@dataclass(frozen=True)
class SendRequest:
    slot: int


@dataclass(frozen=True)
class SendInvoice:
    """Build a fresh static invoice for the slot's offer and serve it to the server."""

    slot: int


Action = object


def backoff(attempts: int) -> int:
    return min(RETRY_CAP, RETRY_BASE * (2 ** max(0, attempts - 1)))


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
            s = Slot(s.index)
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


def _request(slot: Slot, now: int) -> Slot:
    attempts = slot.attempts + 1
    status = REQUESTED if slot.status in (EMPTY, REQUESTED) else slot.status
    return replace(slot, status=status, attempts=attempts, last_request_at=now,
                   next_request_at=now + backoff(attempts))


def tick(cache, now: int, start: bool = False):
    """The periodic step (and, with ``start``, the first one after loading the cache).

    Returns (cache, actions).  At start every slot that needs an offer is requested immediately, even if
    an earlier run had backed off.
    """
    cache = prune(cache, now)
    actions: List[Action] = []
    for s in cache:
        if s.status == EMPTY or (s.status == REQUESTED and (start or s.next_request_at is None
                                                            or now >= s.next_request_at)):
            if start:
                s = replace(s, attempts=0)
            s = _request(s, now)
            cache = _set(cache, s)
            actions.append(SendRequest(s.index))
        elif s.status == PENDING:
            actions.append(SendInvoice(s.index))
        elif s.status == USED and s.offer.invoice_created_at + INVOICE_REFRESH < now:
            actions.append(SendInvoice(s.index))
    victim = _replaceable(cache, now)
    if victim is not None:
        s = cache[_pos(cache, victim)]
        if s.next_request_at is None or start or now >= s.next_request_at:
            cache = _set(cache, _request(s, now))
            actions.append(SendRequest(victim))
    return cache, actions


def _pos(cache, index: int) -> int:
    for i, s in enumerate(cache):
        if s.index == index:
            return i
    raise KeyError(index)


def slot_wants_offer(cache, index: int, now: int) -> bool:
    """Does ``index`` still need an offer (LDK: empty, or a ready offer old enough to replace)?"""
    try:
        s = cache[_pos(cache, index)]
    except KeyError:
        return False
    if s.status in (EMPTY, REQUESTED):
        return True
    return s.status == READY and s.offer.created_at < now - OFFER_REFRESH and s.last_request_at is not None


def check_offer_paths(cache, index: int, paths: bytes, paths_expiry: Optional[int], now: int) -> Optional[str]:
    """Why an ``offer_paths`` for ``index`` must be ignored, or None to accept it."""
    if not slot_wants_offer(cache, index, now):
        return "slot_not_wanting"
    if paths_expiry is not None and paths_expiry < now + MIN_PATHS_LIFETIME:
        return "paths_expire_too_soon"
    if not paths:
        return "no_paths"
    if any(s.offer is not None and s.offer.paths == paths for s in cache):
        return "duplicate_paths"
    return None


def offer_built(cache, index: int, offer: CachedOffer):
    """The shell accepted offer_paths and built ``offer`` and its first invoice: the slot goes pending."""
    s = cache[_pos(cache, index)]
    cache = _set(cache, Slot(s.index, PENDING, offer))
    return cache, [SendInvoice(index)]


def invoice_time(slot: Slot, now: int) -> int:
    """created_at of the invoice to serve for ``slot`` now.  The server keeps the newer of two invoices
    for a slot, so a dedicated offer's first invoice must be newer than the one it replaces (which may
    have been made in this same second)."""
    if slot.status == PENDING and slot.offer.dedicated:
        return max(now, slot.offer.invoice_created_at + 1)
    return now


def invoice_sent(cache, index: int, invoice_created_at: int, invoice_expires_at: Optional[int]):
    """Record the invoice we are about to serve for a *pending* offer (ready/used keep their acked time)."""
    s = cache[_pos(cache, index)]
    if s.status != PENDING:
        return cache
    return _set(cache, replace(s, offer=replace(s.offer, invoice_created_at=invoice_created_at,
                                                invoice_expires_at=invoice_expires_at)))


def persisted(cache, offer_id: bytes, invoice_created_at: int, invoice_expires_at: Optional[int] = None):
    """``static_invoice_persisted`` for (offer_id, invoice created_at): pending -> ready (a dedicated
    offer -> used).

    Duplicates and late acks are harmless: ready/used offers only move their invoice time forward.
    Returns (cache, changed).
    """
    for s in cache:
        if s.offer is None or s.offer.offer_id != offer_id:
            continue
        o = s.offer
        if s.status == PENDING:
            o = replace(o, invoice_created_at=invoice_created_at,
                        invoice_expires_at=invoice_expires_at or o.invoice_expires_at)
            status = USED if o.dedicated else READY
            return _set(cache, replace(s, status=status, offer=o, attempts=0, next_request_at=None)), True
        if invoice_created_at > o.invoice_created_at:
            o = replace(o, invoice_created_at=invoice_created_at,
                        invoice_expires_at=invoice_expires_at or o.invoice_expires_at)
            return _set(cache, replace(s, offer=o)), True
        return cache, False
    return cache, False


def newest_ready(cache) -> Optional[Slot]:
    """The ready slot getoffer takes: the newest (a dedicated offer is built on its paths, then
    :func:`offer_built` makes it pending)."""
    ready = [s for s in cache if s.status == READY]
    return max(ready, key=lambda s: (s.offer.created_at, s.index)) if ready else None


def get_offer(cache, now: int):
    """Hand out an offer: the newest ready one (now used), else the used one expiring last (never a
    dedicated one).

    Returns (cache, slot or None).
    """
    cache = prune(cache, now)
    s = newest_ready(cache)
    if s is not None:
        s = replace(s, status=USED, attempts=0, next_request_at=None)
        return _set(cache, s), s
    used = [s for s in cache if s.status == USED and not s.offer.dedicated]
    if used:
        far = 2 ** 64
        return cache, max(used, key=lambda s: (s.offer.expires_at or far, s.offer.created_at))
    return cache, None


def channels_changed(cache):
    """Our channels or their fees changed: every offer's invoice must be rebuilt and served."""
    return cache, [SendInvoice(s.index) for s in cache if s.offer is not None]


def counts(cache) -> dict:
    out = {k: 0 for k in (EMPTY, REQUESTED, PENDING, READY, USED)}
    for s in cache:
        out[s.status] += 1
    return out
