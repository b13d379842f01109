"""The recipient's static invoice servers: who they are and whether they answer (pure).

A recipient may be enrolled at several independent servers.  Each is known by an id (see
:func:`server_id`) and its blinded paths (those its ``asyncserver-addclient``, or LDK's server, handed
out).  Health is kept in memory only (a restart starts every server as *unknown*):

- *answering*: it answered (``offer_paths`` or ``static_invoice_persisted``) since we last sent to it;
- *waiting*: we sent to it and it has not answered yet, for less than ``SERVER_TIMEOUT``;
- *down*: it has not answered for ``SERVER_TIMEOUT`` since then.  Messages to a down server (requests and
  invoice refreshes) are sent in rounds at most every ``down_backoff(tries)`` seconds, so a dead server costs
  little; the first answer makes it *answering* again.
"""

import hashlib
from dataclasses import dataclass, replace
from typing import Optional

#: a server that has not answered anything for this long after we sent to it is down
SERVER_TIMEOUT = 20
DOWN_RETRY_BASE = 30
DOWN_RETRY_CAP = 3600
ID_LEN = 8


def server_id(encoded_paths: bytes) -> bytes:
    """A server's id: the first 8 bytes of SHA-256 of its path list as configured (LDK's u16-counted
    list).  New paths (a new enrolment) make a new server."""
    return hashlib.sha256(encoded_paths).digest()[:ID_LEN]


@dataclass(frozen=True)
class Health:
    last_answer_at: Optional[int] = None
    waiting_since: Optional[int] = None     # first message sent since the last answer
    unanswered: int = 0                     # messages sent since the last answer
    tries: int = 0                          # rounds sent while down
    next_try_at: Optional[int] = None       # while down: the next round


def down_backoff(tries: int) -> int:
    return min(DOWN_RETRY_CAP, DOWN_RETRY_BASE * (2 ** max(0, tries - 1)))


def is_down(h: Health, now: int) -> bool:
    return h.waiting_since is not None and now - h.waiting_since >= SERVER_TIMEOUT


def may_send(h: Health, now: int) -> bool:
    """Send to this server now?  Always, unless it is down and its next round is not due."""
    return not is_down(h, now) or h.next_try_at is None or now >= h.next_try_at


def sent(h: Health, now: int) -> Health:
    """We sent it a message.  While down, the first message of a due round starts the next backoff
    (more messages in the same round change nothing)."""
    h = replace(h, waiting_since=now if h.waiting_since is None else h.waiting_since, unanswered=h.unanswered + 1)
    if is_down(h, now) and (h.next_try_at is None or now >= h.next_try_at):
        h = replace(h, tries=h.tries + 1, next_try_at=now + down_backoff(h.tries + 1))
    return h


def answered(h: Health, now: int) -> Health:
    return Health(last_answer_at=now)


def state(h: Health, now: int) -> str:
    if is_down(h, now):
        return "down"
    if h.waiting_since is not None:
        return "waiting"
    return "answering" if h.last_answer_at is not None else "unknown"
