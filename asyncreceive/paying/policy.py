"""The payer's record and its policy, pure: ``step(state, event, now) -> (state, actions)``.

Lifecycle of a payment (``asyncreceive-pay``)::

    requested --(static invoice)--> waiting_release --(release, after held_htlc_available)--> sending
    requested, waiting_release --(the payee's own invoice)--> sending
    sending --(the result: of our send, or from lightningd's records)--> complete | failed
    requested, waiting_release --(deadline)--> failed
    requested, waiting_release --(cancel)--> cancelled

- *requested* sends an invoice_request now and again: backoff from ``PAYER_RETRY_BASE`` doubling up to
  ``PAYER_RETRY_CAP``; each try starts at the next offer path (the shell: :func:`.payer.path_order`).
- *waiting_release* first waits ``grace`` seconds for the payee's own invoice, then sends
  held_htlc_available with the same backoff until the release comes.
- *sending* is handed to lightningd by a send of the shell's own (a thread), which first asks the policy
  (``HandOver``): the record says so before anything goes out, and a payment handed over is never
  handed over again, also across a restart.  A payment in *sending* that no send of ours is running for
  is settled from lightningd's records on the periodic tick.

Retries and the deadline are data (``PayState.due``), not timers: the shell runs ``Tick`` when the
earliest due time comes (the worker's wake-up) and on every periodic tick.  The record is persisted;
the rest of ``PayState`` (the backoff round, the due time, whether a send of ours runs) lives only in
memory and starts again after a restart (``Resume``).  The shell persists the new record *before* it
carries out the actions.
"""

import hashlib
from dataclasses import dataclass, replace
from enum import Enum
from typing import List, Optional, Sequence, Tuple

from ..errors import DecodeError
from ..wire.bolt12.invoice import Invoice
from ..wire.bolt12.offer import Offer
from ..wire.bolt12.static_invoice import StaticInvoice
from ..wire.records import BYTES, FLAG, TU64, UTF8_REPLACE, Field, Table, fixed_bytes, one_of

PAYER_RETRY_BASE = 5
PAYER_RETRY_CAP = 300
#: a normal-invoice payment in sending that lightningd has no record of after this long was never
#: handed to lightningd's pay (we stopped in between): it is paid then
PAY_RESTART_AFTER = 30
#: a normal-invoice payment whose attempts all failed is failed only once that has stood this long
#: (lightningd's pay may start another attempt; its retry_for is 60 s)
FAILURE_STANDS = 90
#: the longest error text kept in a record
MAX_ERROR = 300


class Status(str, Enum):
    """A payment's status; its value is what asyncreceive-listpays and the notification show."""

    REQUESTED = "requested"
    WAITING_RELEASE = "waiting_release"
    SENDING = "sending"
    COMPLETE = "complete"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


#: the order is stored (the index): append only
STATUSES = tuple(Status)
OPEN = (Status.REQUESTED, Status.WAITING_RELEASE)
ENDED = (Status.COMPLETE, Status.FAILED, Status.CANCELLED)
ROUTES = ["static", "normal"]


def _is_static(invoice: bytes) -> bool:
    try:
        StaticInvoice.decode(invoice, check_signature=False)
        return True
    except DecodeError:
        return False


# ---- the payment record ---------------------------------------------------------------------------
#: TLV in the datastore; odd fields may be absent.  Even types up to 33 that are not declared are read
#: and ignored, as every version did.
PAYMENT_RECORD = Table("payment", [
    Field(0, "offer", BYTES, required=True),
    Field(2, "amount_msat", TU64, required=True),
    Field(4, "invreq", BYTES, required=True),
    Field(6, "preimage", fixed_bytes(32), required=True),
    Field(8, "status", one_of("status", STATUSES), required=True),
    Field(10, "invoice", BYTES, default=b""),
    Field(12, "created_at", TU64, required=True),
    Field(14, "deadline", TU64, required=True),
    Field(16, "error", UTF8_REPLACE, default=""),
    Field(18, "max_fee_msat", TU64, default=0),
    Field(20, "max_delay", TU64, default=2016),
    Field(21, "attempts", TU64, default=0),
    Field(23, "error_at", TU64),
    Field(25, "next_try_at", TU64),
    Field(27, "held_at", TU64),
    Field(29, "route", one_of("route", ROUTES)),
    Field(31, "sending_at", TU64),
    Field(33, "handed_over", FLAG, default=False),
], also_known=lambda t: t <= 33)


@dataclass
class Payment:
    """A payment record: TLV in the datastore.  The policy never changes one in place (``replace``)."""

    payment_id: bytes
    offer: bytes
    amount_msat: int
    invreq: bytes
    preimage: bytes
    status: Status = Status.REQUESTED
    invoice: bytes = b""
    created_at: int = 0
    deadline: int = 0
    error: str = ""
    max_fee_msat: int = 0
    max_delay: int = 2016
    attempts: int = 0
    error_at: Optional[int] = None
    next_try_at: Optional[int] = None
    held_at: Optional[int] = None
    route: Optional[str] = None
    sending_at: Optional[int] = None
    #: set before the HTLC (or lightningd's pay) may have gone out: never sent again from a restart
    handed_over: bool = False

    def __post_init__(self):
        self.status = Status(self.status)

    def encode(self) -> bytes:
        values = {f.name: getattr(self, f.name) for f in PAYMENT_RECORD.fields}
        values.update(invoice=self.invoice or None, error=self.error[:MAX_ERROR] or None,
                      handed_over=self.handed_over or None)
        return PAYMENT_RECORD.encode(values)

    @staticmethod
    def decode(payment_id: bytes, data: bytes) -> "Payment":
        """Raises only DecodeError, naming the field, on a damaged record."""
        r = PAYMENT_RECORD.decode(data)
        if r["route"] is None and r["invoice"] and r["status"] not in OPEN:  # a record from before route
            r["route"] = "static" if _is_static(r["invoice"]) else "normal"
        return Payment(payment_id, **r)

    @property
    def normal_invoice(self) -> bool:
        """The payee answered itself with a normal invoice (type 66), not a static invoice."""
        return bool(self.invoice) and self.route == "normal"

    @property
    def payment_hash(self) -> bytes:
        """The normal invoice's payment hash, else that of the preimage we send with the async HTLC."""
        if self.normal_invoice:
            try:   # checked when it came (check_invoice): a damaged record falls back, as one without a hash did
                return Invoice.decode(self.invoice, check_signature=False).payment_hash
            except DecodeError:
                pass
        return hashlib.sha256(self.preimage).digest()

    def step(self, grace: float) -> str:
        """Where the payment stands and what comes next, in words."""
        if self.status is Status.REQUESTED:
            return (f"asking the offer's issuer for an invoice (try {self.attempts}); no answer yet"
                    if self.attempts > 1 else "asking the offer's issuer for an invoice")
        if self.status is Status.WAITING_RELEASE:
            if self.held_at is None:
                return f"static invoice received; waiting up to {grace:g} s for the payee's own invoice"
            return (f"the recipient may be offline: asking it to release the payment (try {self.attempts}); "
                    "it is paid when the recipient comes back")
        if self.status is Status.SENDING:
            return ("paying the payee's invoice with lightningd's pay" if self.route == "normal"
                    else "HTLC sent over the static invoice's payment path; waiting for the result")
        return {Status.COMPLETE: "paid", Status.FAILED: f"failed: {self.error}",
                Status.CANCELLED: "cancelled"}[self.status]

    def json(self, grace: float = 0) -> dict:
        out = {"payment_id": self.payment_id.hex(), "status": self.status.value, "step": self.step(grace),
               "amount_msat": self.amount_msat, "offer": Offer.decode(self.offer).to_string(),
               "created_at": self.created_at, "deadline": self.deadline, "attempts": self.attempts,
               "payment_hash": self.payment_hash.hex(), "route": self.route,
               "invoice": None if not self.invoice else ("normal" if self.normal_invoice else "static"),
               "max_fee_msat": self.max_fee_msat, "max_delay": self.max_delay}
        if self.status in OPEN and self.next_try_at is not None:
            out["next_try_at"] = self.next_try_at
        if self.status is Status.COMPLETE:
            out["payment_preimage"] = self.preimage.hex()
        if self.error:
            out["last_error"] = self.error
            out["last_error_at"] = self.error_at
        if self.status is Status.FAILED:
            out["error"] = self.error
        return out


# ---- the policy's state ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PayState:
    """A payment as the policy sees it: its record, and what lives only in memory."""

    rec: Payment
    tries: int = 0                  # tries of this round (since start, the static invoice or a restart)
    due: Optional[float] = None     # when the next try (or the expiry) is due; None: nothing to try
    busy: bool = False              # a send of ours runs: its result comes from it, not from a tick
    failure_seen: Optional[int] = None  # when lightningd's records first showed every attempt failed


# ---- events ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resume:
    """The payment starts: a new one, or an unfinished one after a restart (tries now, backoff anew)."""


@dataclass(frozen=True)
class Tick:
    """Time passed; ``settle``: the periodic tick, which also settles payments from lightningd's records."""

    settle: bool = False


@dataclass(frozen=True)
class GotStaticInvoice:
    """A static invoice, checked by the shell; ``grace``: how long to wait for the payee's own invoice."""

    body: bytes
    grace: float


@dataclass(frozen=True)
class GotInvoice:
    """The payee's own invoice (type 66), checked by the shell."""

    body: bytes


@dataclass(frozen=True)
class GotRelease:
    """release_held_htlc on the reply path of our held_htlc_available."""


@dataclass(frozen=True)
class Cancel:
    """asyncreceive-cancelpay."""


@dataclass(frozen=True)
class Problem:
    """Something went wrong that the payment should show (a send failed, an answer was refused)."""

    error: str


@dataclass(frozen=True)
class HandOver:
    """A send of ours is about to give the payment to lightningd: allowed once (answered by Proceed)."""


@dataclass(frozen=True)
class Result:
    """A send of ours has the result."""

    status: Status
    error: str = ""
    preimage: Optional[bytes] = None
    how: str = ""


@dataclass(frozen=True)
class Stopped:
    """A send of ours is over (with a result or without: then lightningd's records settle it)."""


@dataclass(frozen=True)
class Records:
    """What lightningd's records say of the payment's hash (:func:`records_result`); ``peers``: a channel
    peer is connected (an HTLC could go out)."""

    result: str                     # "complete", "failed", "pending" or "none"
    preimage: Optional[bytes] = None
    peers: bool = True


Event = object


# ---- actions (what the shell must do, after persisting) ------------------------------------------
@dataclass(frozen=True)
class SendInvoiceRequest:
    """The invoice_request on the offer's paths, starting at the one for try ``rec.attempts``."""


@dataclass(frozen=True)
class SendHeld:
    """held_htlc_available over the static invoice's message paths."""


@dataclass(frozen=True)
class StartSend:
    """Run a send of ours: pay the normal invoice with lightningd's pay, or send the HTLC over the static
    invoice's payment paths (``route``).  ``crashpoint``: a reply moved the payment to sending."""

    route: str
    crashpoint: bool = False


@dataclass(frozen=True)
class Proceed:
    """The answer to HandOver: the record says handed over; the send may go to lightningd."""


@dataclass(frozen=True)
class CheckRecords:
    """Look up lightningd's records of the payment's hash and tell the policy (Records)."""


@dataclass(frozen=True)
class Finished:
    """The payment ended (complete, failed or cancelled): notify."""


@dataclass(frozen=True)
class Log:
    text: str
    level: str = "info"


Action = object


def backoff(tries: int) -> int:
    """Seconds from try ``tries`` of a round (0 for the first) to the next."""
    return min(PAYER_RETRY_CAP, PAYER_RETRY_BASE * 2 ** min(tries, 32))


def answer_wanted(rec: Payment, kind: str) -> bool:
    """Does the payment take this answer now (``static_invoice``, ``invoice`` or ``release``)?  A release
    counts only once we asked for it (held_htlc_available went out)."""
    if kind == "static_invoice":
        return rec.status is Status.REQUESTED
    if kind == "invoice":
        return rec.status in OPEN
    return rec.status is Status.WAITING_RELEASE and rec.held_at is not None


def records_result(entries: Sequence[dict]) -> Tuple[str, Optional[str]]:
    """lightningd's pays or sendpays of one hash, in one word (and a complete one's preimage, hex)."""
    done = next((x for x in entries if x.get("status") == "complete"), None)
    if done is not None:
        return "complete", done.get("preimage")
    if not entries:
        return "none", None
    if all(x.get("status") == "failed" for x in entries):
        return "failed", None
    return "pending", None


def _name(rec: Payment) -> str:
    return f"pay {rec.payment_id.hex()[:8]}"


def _try(st: PayState, now: float) -> Tuple[PayState, List[Action]]:
    """Count a try of an open payment and say when the next is due (the deadline at the latest)."""
    r, t = st.rec, int(now)
    delay = backoff(st.tries)
    held_at = t if r.status is Status.WAITING_RELEASE and r.held_at is None else r.held_at
    rec = replace(r, attempts=r.attempts + 1, next_try_at=min(t + delay, r.deadline), held_at=held_at)
    new = replace(st, rec=rec, tries=st.tries + 1, due=min(now + delay, float(r.deadline)))
    if r.status is Status.WAITING_RELEASE:
        return new, [SendHeld()]
    actions: List[Action] = [SendInvoiceRequest()]
    if st.tries == 2:
        actions.append(Log(f"{_name(r)}: no answer to the invoice_request yet; trying again "
                           f"(next at {rec.next_try_at})"))
    return new, actions


def _expire(st: PayState, now: float) -> Tuple[PayState, List[Action]]:
    r = st.rec
    error = "timed out waiting for the recipient" + (f" (last error: {r.error})" if r.error else "")
    rec = replace(r, status=Status.FAILED, next_try_at=None, error=error, error_at=int(now))
    return replace(st, rec=rec, due=None), [Log(f"{_name(r)}: {error}"), Finished()]


def _to_sending(st: PayState, now: float, route: str, **changes) -> PayState:
    rec = replace(st.rec, status=Status.SENDING, route=route, next_try_at=None, sending_at=int(now), **changes)
    return replace(st, rec=rec, due=None, busy=True)


def _end(st: PayState, now: float, status: Status, error: str, preimage: Optional[bytes],
         how: str) -> Tuple[PayState, List[Action]]:
    r = st.rec
    rec = replace(r, status=status)
    if error:
        rec = replace(rec, error=error, error_at=int(now))
    if preimage:
        rec = replace(rec, preimage=preimage)
    log = Log(f"{_name(r)}: {status} ({how})" + (f": {error}" if error else ""))
    return replace(st, rec=rec, due=None, failure_seen=None), [log, Finished()]


def _nothing_at_lightningd(st: PayState, now: float, peers: bool) -> Tuple[PayState, List[Action]]:
    """A payment in *sending* that lightningd has no record of.  Not handed over yet (we stopped between
    the step to sending and giving it to lightningd): send it now; lightningd refuses a second HTLC for a
    hash and part, and a second payment group while one is pending.  Handed over (lightningd's records
    deleted since, by autoclean or delpay): never again, whatever happened."""
    r = st.rec
    if r.handed_over:
        note = "lightningd has no record of this payment, which was handed to it: not sent again"
        if r.error == note:
            return st, []
        return replace(st, rec=replace(r, error=note, error_at=int(now))), [Log(f"{_name(r)}: {note}", "unusual")]
    if r.normal_invoice and int(now) - (r.sending_at or 0) <= PAY_RESTART_AFTER:
        return st, []
    if not r.normal_invoice and not peers:
        return st, []
    return replace(st, busy=True), [
        Log(f"{_name(r)}: sending, but nothing went to lightningd yet: sending it now"),
        StartSend("normal" if r.normal_invoice else "static")]


def _records(st: PayState, ev: Records, now: float) -> Tuple[PayState, List[Action]]:
    """Settle a payment in *sending* that no send of ours runs for, from lightningd's records.  A normal
    invoice's failure counts once it has stood ``FAILURE_STANDS`` seconds (lightningd's pay may still
    retry); our own async HTLCs' failure at once."""
    how = "from lightningd's records"
    if ev.result == "complete":
        return _end(st, now, Status.COMPLETE, "", ev.preimage, how)
    if ev.result == "failed":
        if st.rec.normal_invoice:
            first = st.failure_seen if st.failure_seen is not None else int(now)
            if int(now) - first < FAILURE_STANDS:
                return replace(st, failure_seen=first), []
        return _end(st, now, Status.FAILED, "failed (from lightningd's records)", None, how)
    st = replace(st, failure_seen=None)
    if ev.result == "none":
        return _nothing_at_lightningd(st, now, ev.peers)
    return st, []


def step(st: PayState, ev: Event, now: float) -> Tuple[PayState, List[Action]]:
    """The policy: the payment's new state and what the shell must do (after persisting the record)."""
    r = st.rec
    if isinstance(ev, Resume):
        if r.status not in OPEN:
            return st, []
        st = PayState(r)
        return _expire(st, now) if now >= r.deadline else _try(st, now)
    if isinstance(ev, Tick):
        if r.status in OPEN:
            if now >= r.deadline:
                return _expire(st, now)
            if st.due is not None and now >= st.due:
                return _try(st, now)
        elif r.status is Status.SENDING and ev.settle and not st.busy:
            return st, [CheckRecords()]
        return st, []
    if isinstance(ev, GotStaticInvoice):
        if not answer_wanted(r, "static_invoice"):
            return st, []
        rec = replace(r, status=Status.WAITING_RELEASE, invoice=ev.body, attempts=0, held_at=None,
                      next_try_at=int(now) + int(ev.grace + 0.999))
        return replace(st, rec=rec, tries=0, due=min(now + ev.grace, float(r.deadline))), [
            Log(f"{_name(r)}: static invoice received; waiting {ev.grace:g} s for the payee's own invoice, "
                "then asking the recipient to release")]
    if isinstance(ev, GotInvoice):
        if not answer_wanted(r, "invoice"):
            return st, []     # the static route (or a cancel) got there first
        return _to_sending(st, now, "normal", invoice=ev.body), [
            Log(f"{_name(r)}: the payee answered with an invoice; paying it"), StartSend("normal", crashpoint=True)]
    if isinstance(ev, GotRelease):
        if not answer_wanted(r, "release"):
            return st, []     # a normal invoice, a cancel or another release got there first
        return _to_sending(st, now, "static"), [StartSend("static", crashpoint=True)]
    if isinstance(ev, Cancel):
        if r.status not in OPEN:
            return st, []
        return replace(st, rec=replace(r, status=Status.CANCELLED, next_try_at=None), due=None), [
            Log(f"{_name(r)}: cancelled"), Finished()]
    if isinstance(ev, Problem):
        if r.status not in OPEN:
            return st, []
        return replace(st, rec=replace(r, error=ev.error, error_at=int(now))), []
    if isinstance(ev, HandOver):
        if r.status is not Status.SENDING or r.handed_over:
            return st, []
        return replace(st, rec=replace(r, handed_over=True)), [Proceed()]
    if isinstance(ev, Result):
        if r.status is not Status.SENDING or ev.status not in (Status.COMPLETE, Status.FAILED):
            return st, []
        return _end(st, now, ev.status, ev.error, ev.preimage, ev.how)
    if isinstance(ev, Stopped):
        return replace(st, busy=False), []
    if isinstance(ev, Records):
        if r.status is not Status.SENDING or st.busy:
            return st, []
        return _records(st, ev, now)
    raise TypeError(f"not a payer event: {ev!r}")
