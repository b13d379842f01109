"""``asyncreceive-pay``: pay a BOLT 12 offer whose recipient may be offline (CLN has no payer for this).

1. Send an invoice_request on one of the offer's paths, with a reply path (context: the payment, step
   *invoice*) that starts at one of our channel peers, so that the answer can follow it back.  Retried
   with backoff (5 s doubling to 5 min) until an answer arrives; each try is counted and shown, and
   starts at the next offer path (:func:`.payer.path_order`: an offer may name several servers, and a
   send to one that is down does not fail here).
2. A ``static_invoice`` reply is checked (:func:`.payer.check_static_invoice`: this offer's records byte
   for byte, unexpired, signed by the offer's issuer).  A normal ``invoice`` (type 66) from the payee
   itself is checked as BOLT 12 asks of a payer (:func:`.payer.check_invoice`: signed by the offer's
   issuer, our invoice_request's records byte for byte, amount and expiry) and paid with lightningd's
   ``pay`` (proof of payment).  The server answers first (it holds the static invoice); an online payee
   answers a moment later: so after a static invoice we wait ``invoice_grace`` seconds for the payee's
   own invoice before asking for a release, and a normal invoice that arrives while we wait for the
   release is still preferred.
3. ``held_htlc_available`` goes over the static invoice's TLV-236 paths with a reply path of its own
   (step *release*: a release on the invoice_request's reply path is refused), with backoff, until
   ``release_held_htlc`` arrives or the deadline passes.
4. On release: pay over the cheapest blinded payment path within the fee and delay caps
   (:class:`.payer.PayLimits`) with a fresh preimage (TLV 5482373484) and the invoice_request (TLV
   77777): ``createonion`` + ``sendonion``, then ``waitsendpay``.  Only a definite failure moves on to
   the next path; anything else leaves the payment *sending*, settled later from lightningd's records.

Each payment's state is in the datastore, and every step to *sending* (or *cancelled*) is a
compare-and-swap on its record, so two answers, a replayed release or a cancel racing a release can
never pay twice, also across a restart.
"""

import hashlib
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from pyln.client import RpcError

from ..crypto.context import Kind, PathContext
from ..errors import DecodeError
from ..node.crashpoint import crashpoint
from ..node.lightningd import NodeError
from ..node.transport import Received, Transport, TransportError
from ..recipient.invoice import CHAINS
from ..wire import messages as m
from ..wire.bolt12.fields import TLV_INVOICE_PAYMENT_HASH
from ..wire.bolt12.invoice import Invoice
from ..wire.bolt12.invoice_request import InvoiceRequest
from ..wire.bolt12.offer import Offer
from ..wire.bolt12.static_invoice import StaticInvoice
from ..wire.tlv import decode_fixed, decode_tlv, decode_tu, encode_tlv, tu64
from .payer import PayLimits, build_invoice_request, build_payment_onion, check_invoice, check_static_invoice, \
    path_order, usable_paths

PAYER_PREFIX = ["asyncreceive", "v1", "payer"]
#: reply-path context fields: the payment, and which answer the path is for
F_PAYMENT_ID = 4
F_STEP = 6
STEP_INVOICE = b"\x01"      # static_invoice or invoice, answering our invoice_request
STEP_RELEASE = b"\x02"      # release_held_htlc, answering our held_htlc_available
PAYER_RETRY_BASE = 5
PAYER_RETRY_CAP = 300
#: the order is stored (index): append only
STATUSES = ["requested", "waiting_release", "sending", "complete", "failed", "cancelled"]
OPEN = ("requested", "waiting_release")
#: waitsendpay errors that say the HTLC is gone (failed along the route or at the destination, or the
#: onion was refused): only then may the next path be tried with the same payment hash
DEFINITE_FAILURES = {202, 203, 204, 209}
#: lightningd's pay: "payment already in progress" (not a failure)
PAY_IN_PROGRESS = 200
#: a normal-invoice payment in sending that lightningd has no record of after this long was never
#: handed to lightningd's pay (we stopped in between): it is paid then
PAY_RESTART_AFTER = 30
#: a normal-invoice payment whose attempts all failed is failed only once that has stood this long
#: (lightningd's pay may start another attempt; its retry_for is 60 s)
FAILURE_STANDS = 90
#: held_htlc_available goes over at most this many of a static invoice's message paths (an offer's
#: author could list many paths to nodes that hang our connects)
MAX_MESSAGE_PATHS = 4
#: the longest error text kept in a record
MAX_ERROR = 300


def key(payment_id: bytes) -> List[str]:
    return PAYER_PREFIX + [payment_id.hex()]


class PayError(Exception):
    pass


def _is_static(invoice: bytes) -> bool:
    try:
        StaticInvoice.decode(invoice, check_signature=False)
        return True
    except DecodeError:
        return False


# ---- the payment record ---------------------------------------------------------------------------
# TLV types of the record (odd ones may be absent); values are tu64 unless said otherwise.
R_OFFER, R_AMOUNT, R_INVREQ, R_PREIMAGE, R_STATUS, R_INVOICE = 0, 2, 4, 6, 8, 10
R_CREATED, R_DEADLINE, R_ERROR, R_MAX_FEE, R_MAX_DELAY = 12, 14, 16, 18, 20
R_ATTEMPTS, R_ERROR_AT, R_NEXT_TRY, R_HELD_AT, R_ROUTE, R_SENDING_AT, R_HANDED_OVER = 21, 23, 25, 27, 29, 31, 33
ROUTES = ["static", "normal"]


class Payment:
    """A payment record: TLV in the datastore."""

    def __init__(self, payment_id, offer, amount_msat, invreq, preimage, status="requested", invoice=b"",
                 created_at=0, deadline=0, error="", max_fee_msat=0, max_delay=2016, attempts=0,
                 error_at=None, next_try_at=None, held_at=None, route=None, sending_at=None, handed_over=False):
        self.payment_id, self.offer, self.amount_msat = payment_id, offer, amount_msat
        self.invreq, self.preimage, self.status, self.invoice = invreq, preimage, status, invoice
        self.created_at, self.deadline, self.error = created_at, deadline, error
        self.max_fee_msat, self.max_delay, self.attempts = max_fee_msat, max_delay, attempts
        self.error_at, self.next_try_at, self.held_at, self.route = error_at, next_try_at, held_at, route
        self.sending_at = sending_at
        #: set before the HTLC (or lightningd's pay) may have gone out: never sent again from a restart
        self.handed_over = handed_over

    def encode(self) -> bytes:
        recs = [(R_OFFER, self.offer), (R_AMOUNT, tu64(self.amount_msat)), (R_INVREQ, self.invreq),
                (R_PREIMAGE, self.preimage), (R_STATUS, bytes([STATUSES.index(self.status)])),
                (R_CREATED, tu64(self.created_at)), (R_DEADLINE, tu64(self.deadline)),
                (R_MAX_FEE, tu64(self.max_fee_msat)), (R_MAX_DELAY, tu64(self.max_delay)),
                (R_ATTEMPTS, tu64(self.attempts))]
        if self.invoice:
            recs.append((R_INVOICE, self.invoice))
        if self.error:
            recs.append((R_ERROR, self.error[:MAX_ERROR].encode()))
        for t, v in ((R_ERROR_AT, self.error_at), (R_NEXT_TRY, self.next_try_at), (R_HELD_AT, self.held_at),
                     (R_SENDING_AT, self.sending_at)):
            if v is not None:
                recs.append((t, tu64(v)))
        if self.route is not None:
            recs.append((R_ROUTE, bytes([ROUTES.index(self.route)])))
        if self.handed_over:
            recs.append((R_HANDED_OVER, b""))
        return encode_tlv(sorted(recs))

    @staticmethod
    def decode(payment_id: bytes, data: bytes) -> "Payment":
        """Raises only DecodeError, naming the field, on a damaged record."""
        r = dict(decode_tlv(data, "payment", known=lambda t: t <= R_HANDED_OVER).records)
        for t in (R_OFFER, R_AMOUNT, R_INVREQ, R_PREIMAGE, R_STATUS, R_CREATED, R_DEADLINE):
            if t not in r:
                raise DecodeError(f"payment[{t}]", "missing")

        def tu(t, name, default=None):
            return decode_tu(r[t], 8, f"payment.{name}") if t in r else default

        status = decode_fixed(r[R_STATUS], 1, "payment.status")
        if status >= len(STATUSES):
            raise DecodeError("payment.status", f"unknown status {status}")
        route = decode_fixed(r[R_ROUTE], 1, "payment.route") if R_ROUTE in r else None
        if route is not None and route >= len(ROUTES):
            raise DecodeError("payment.route", f"unknown route {route}")
        if len(r[R_PREIMAGE]) != 32:
            raise DecodeError("payment.preimage", "expected 32 bytes")
        invoice = r.get(R_INVOICE, b"")
        if route is None and invoice and STATUSES[status] not in OPEN:  # a record from before R_ROUTE
            route = ROUTES.index("static" if _is_static(invoice) else "normal")
        return Payment(payment_id, r[R_OFFER], tu(R_AMOUNT, "amount"), r[R_INVREQ], r[R_PREIMAGE], STATUSES[status], invoice, tu(R_CREATED, "created_at"), tu(R_DEADLINE, "deadline"),
                       r.get(R_ERROR, b"").decode("utf-8", "replace"), tu(R_MAX_FEE, "max_fee_msat", 0),
                       tu(R_MAX_DELAY, "max_delay", 2016), tu(R_ATTEMPTS, "attempts", 0),
                       tu(R_ERROR_AT, "error_at"), tu(R_NEXT_TRY, "next_try_at"), tu(R_HELD_AT, "held_at"),
                       ROUTES[route] if route is not None else None, tu(R_SENDING_AT, "sending_at"),
                       R_HANDED_OVER in r)

    @property
    def normal_invoice(self) -> bool:
        """The payee answered itself with a normal invoice (type 66), not a static invoice."""
        return bool(self.invoice) and self.route == "normal"

    @property
    def payment_hash(self) -> bytes:
        """The normal invoice's payment hash, else that of the preimage we send with the async HTLC."""
        if self.normal_invoice:
            h = dict(decode_tlv(self.invoice, "invoice", known=lambda t: True).records).get(TLV_INVOICE_PAYMENT_HASH)
            if h is not None and len(h) == 32:
                return h
        return hashlib.sha256(self.preimage).digest()

    def step(self, grace: float) -> str:
        """Where the payment stands and what comes next, in words."""
        if self.status == "requested":
            return (f"asking the offer's issuer for an invoice (try {self.attempts}); no answer yet"
                    if self.attempts > 1 else "asking the offer's issuer for an invoice")
        if self.status == "waiting_release":
            if self.held_at is None:
                return f"static invoice received; waiting up to {grace:g} s for the payee's own invoice"
            return (f"the recipient may be offline: asking it to release the payment (try {self.attempts}); "
                    "it is paid when the recipient comes back")
        if self.status == "sending":
            return ("paying the payee's invoice with lightningd's pay" if self.route == "normal"
                    else "HTLC sent over the static invoice's payment path; waiting for the result")
        return {"complete": "paid", "failed": f"failed: {self.error}", "cancelled": "cancelled"}[self.status]

    def json(self, grace: float = 0) -> dict:
        out = {"payment_id": self.payment_id.hex(), "status": self.status, "step": self.step(grace),
               "amount_msat": self.amount_msat, "offer": Offer.decode(self.offer).to_string(),
               "created_at": self.created_at, "deadline": self.deadline, "attempts": self.attempts,
               "payment_hash": self.payment_hash.hex(), "route": self.route,
               "invoice": None if not self.invoice else ("normal" if self.normal_invoice else "static"),
               "max_fee_msat": self.max_fee_msat, "max_delay": self.max_delay}
        if self.status in OPEN and self.next_try_at is not None:
            out["next_try_at"] = self.next_try_at
        if self.status == "complete":
            out["payment_preimage"] = self.preimage.hex()
        if self.error:
            out["last_error"] = self.error
            out["last_error_at"] = self.error_at
        if self.status == "failed":
            out["error"] = self.error
        return out


def _timer(delay: float, fn, args):
    t = threading.Timer(delay, fn, args=args)
    t.daemon = True
    t.start()
    return t


class PayService:
    def __init__(self, transport: Transport, network: str, log: Callable[[str, str], None], timeout: int,
                 clock: Callable[[], float] = time.time, invoice_grace: float = 1.5,
                 notify: Optional[Callable[[dict], None]] = None, schedule=None, spawn=None):
        self.t = transport
        self.node = transport.node
        self.network = network
        self._log = log
        self.timeout = timeout
        self.invoice_grace = invoice_grace
        self._notify = notify
        self._clock = clock
        #: ``schedule(delay, fn, args)`` -> a handle with ``cancel()``; ``spawn(fn)`` runs fn on its own
        #: thread.  Tests pass synchronous ones.
        self._schedule = schedule or _timer
        self._spawn = spawn or (lambda fn: threading.Thread(target=fn, daemon=True).start())
        self._timers: Dict[bytes, object] = {}
        self._active: set = set()   # payments whose result a thread of ours is waiting for
        self._failure_seen: Dict[bytes, int] = {}   # when _settle first saw every attempt failed
        self._timers_lock = threading.Lock()

    def now(self) -> int:
        return int(self._clock())

    def _load(self, payment_id: bytes) -> Tuple[Optional[Payment], Optional[int]]:
        got = self.node.ds_get(key(payment_id))
        return (Payment.decode(payment_id, got[0]), got[1]) if got else (None, None)

    def _save(self, p: Payment, gen: Optional[int]) -> int:
        return self.node.ds_put(key(p.payment_id), p.encode(), gen)

    def _all(self) -> List[Payment]:
        out = []
        for k, v, _ in self.node.ds_list(PAYER_PREFIX):
            try:
                out.append(Payment.decode(bytes.fromhex(k[-1]), v))
            except (DecodeError, ValueError) as e:
                self._log(f"ignoring unreadable payment record {'/'.join(k)}: {e}", "unusual")
        return out

    def _update(self, payment_id: bytes, change: Callable[[Payment], bool]) -> Optional[Payment]:
        """Apply ``change`` to the stored record (compare-and-swap, retried a few times); ``change``
        returns False to leave it alone.  Returns the record as written, or None."""
        for _ in range(5):
            p, gen = self._load(payment_id)
            if p is None or not change(p):
                return None
            try:
                self._save(p, gen)
                return p
            except NodeError:
                continue
        return None

    def _ctx(self, p: Payment, step: bytes) -> PathContext:
        return PathContext(Kind.PAYER_REPLY, p.deadline, {F_PAYMENT_ID: p.payment_id, F_STEP: step})

    def _reply_via(self, dest) -> List[bytes]:
        return self.t.reply_via(dest)

    # ---- RPC --------------------------------------------------------------------------------------
    def pay(self, offer_str: str, amount_msat: Optional[int], payer_note: Optional[str],
            limits: PayLimits = PayLimits()) -> dict:
        try:
            offer = Offer.from_string(offer_str)
        except DecodeError as e:
            raise PayError(f"offer: {e}")
        if offer.currency is not None:
            raise PayError(f"offer: priced in {offer.currency!r}: only offers in bitcoin (msat) can be paid")
        chain = CHAINS.get(self.network)
        if offer.chains and chain not in offer.chains:
            raise PayError(f"offer: not for this node's network ({self.network})")
        amount = amount_msat if amount_msat is not None else offer.amount
        if not amount:
            raise PayError("amount_msat is needed: the offer has no amount")
        if offer.amount is not None and amount < offer.amount:
            raise PayError(f"amount_msat: {amount} is below the offer's amount {offer.amount}")
        if offer.is_expired(self.now()):
            raise PayError("offer has expired")
        if not offer.paths:
            raise PayError("offer has no blinded paths (not an async offer)")
        invreq = build_invoice_request(offer, amount, os.urandom(32), chain, payer_note)
        now = self.now()
        p = Payment(os.urandom(16), offer.encode(), amount, invreq.encode(), os.urandom(32), "requested",
                    created_at=now, deadline=now + self.timeout, max_fee_msat=limits.max_fee(amount),
                    max_delay=limits.maxdelay)
        self._save(p, None)  # persisted before anything goes out
        self._send_invreq(p.payment_id, 0)
        return self._load(p.payment_id)[0].json(self.invoice_grace)

    def list_pays(self) -> List[dict]:
        return sorted((p.json(self.invoice_grace) for p in self._all()), key=lambda x: x["created_at"])

    def cancel(self, payment_id: bytes) -> dict:
        """Cancel a payment that has not started sending; one that may have an HTLC in flight cannot be.
        The step to *cancelled* is a compare-and-swap, so a release that races it pays nothing."""
        p, _ = self._load(payment_id)
        if p is None:
            raise PayError(f"unknown payment_id {payment_id.hex()}")
        if p.status not in OPEN:
            raise PayError(f"payment is {p.status}: only a payment still requested or waiting for its release "
                           "can be cancelled")

        def to_cancelled(x: Payment) -> bool:
            if x.status not in OPEN:
                return False
            x.status, x.next_try_at = "cancelled", None
            return True

        done = self._update(payment_id, to_cancelled)
        if done is None:
            p, _ = self._load(payment_id)
            raise PayError(f"payment is {p.status if p else 'gone'}: not cancelled")
        self._log(f"pay {payment_id.hex()[:8]}: cancelled", "info")
        self._finished(done)
        return done.json(self.invoice_grace)

    def resume(self) -> None:
        """After a restart: keep asking for what each unfinished payment waits for; those we stopped
        between sending and the result are settled by :meth:`check_sending`, which every tick runs."""
        for p in self._all():
            if p.status == "requested":
                self._send_invreq(p.payment_id, 0)
            elif p.status == "waiting_release":
                self._send_held(p.payment_id, 0)

    def check_sending(self) -> None:
        """On every tick: settle payments still *sending* that nothing of ours is waiting on (their
        result came while we were not watching, e.g. lightningd's ``pay`` outlived a plugin restart);
        fail open payments past their deadline (a timer lost to a restart)."""
        for p in self._all():
            if p.status == "sending" and p.payment_id not in self._active:
                self._settle(p)
            elif p.status in OPEN and self.now() > p.deadline:
                self._expire(p.payment_id)

    def _settle(self, p: Payment) -> None:
        """Take the result lightningd has for the payment's hash; still in flight: leave it.  A normal
        invoice is judged by ``listpays`` (lightningd's ``pay`` may still retry after failed attempts: a
        failure counts once it has stood ``FAILURE_STANDS`` seconds); our own async HTLCs by
        ``listsendpays``.  Nothing at lightningd: see :meth:`_nothing_at_lightningd`."""
        preimage = None
        if p.normal_invoice:
            pays = self.node.listpays(p.payment_hash)
            done = next((x for x in pays if x["status"] == "complete"), None)
            if done is not None:
                status, preimage = "complete", done.get("preimage")
            elif pays and all(x["status"] == "failed" for x in pays):
                first = self._failure_seen.setdefault(p.payment_id, self.now())
                if self.now() - first < FAILURE_STANDS:
                    return
                status = "failed"
            else:
                self._failure_seen.pop(p.payment_id, None)
                if not pays:
                    self._nothing_at_lightningd(p, self._pay_invoice)
                return
        else:
            parts = self.node.listsendpays(p.payment_hash)
            if not parts:
                self._nothing_at_lightningd(p, self._send_htlc)
                return
            if any(x["status"] == "complete" for x in parts):
                status = "complete"
            elif all(x["status"] == "failed" for x in parts):
                status = "failed"
            else:
                return
        self._failure_seen.pop(p.payment_id, None)
        self._finish(p.payment_id, status, "" if status == "complete" else "failed (from lightningd's records)",
                     bytes.fromhex(preimage) if preimage else None, "from lightningd's records")

    def _nothing_at_lightningd(self, p: Payment, send) -> None:
        """A payment in *sending* that lightningd has no record of.  Not handed over yet (we stopped
        between the step to sending and giving it to lightningd): send it now; lightningd refuses a
        second HTLC for a hash and part, and a second payment group while one is pending.  Handed over
        (lightningd's records deleted since, by autoclean or delpay): never again, whatever happened."""
        if p.handed_over:
            note = "lightningd has no record of this payment, which was handed to it: not sent again"
            if p.error != note:
                def mark(x: Payment) -> bool:
                    if x.status != "sending":
                        return False
                    x.error, x.error_at = note, self.now()
                    return True
                self._update(p.payment_id, mark)
                self._log(f"pay {p.payment_id.hex()[:8]}: {note}", "unusual")
            return
        if p.normal_invoice and self.now() - (p.sending_at or 0) <= PAY_RESTART_AFTER:
            return
        if not p.normal_invoice and not self.node.connected_channel_peers():
            return
        self._log(f"pay {p.payment_id.hex()[:8]}: sending, but nothing went to lightningd yet: sending it now", "info")
        self._start(p.payment_id, send, p)

    def _finish(self, payment_id: bytes, status: str, error: str, preimage: Optional[bytes], how: str) -> None:
        """A payment in *sending* ends (complete or failed); emits the notification once."""
        def end(x: Payment) -> bool:
            if x.status != "sending":
                return False
            x.status = status
            if error:
                x.error, x.error_at = error, self.now()
            if preimage:
                x.preimage = preimage
            return True

        done = self._update(payment_id, end)
        if done is not None:
            self._log(f"pay {payment_id.hex()[:8]}: {status} ({how})" + (f": {error}" if error else ""), "info")
            self._finished(done)

    def _finished(self, p: Payment) -> None:
        """A payment ended (complete, failed or cancelled): no timer of it is left; notify."""
        with self._timers_lock:
            self._cancel_timer(p.payment_id)
        self._failure_seen.pop(p.payment_id, None)
        if self._notify is None:
            return
        out = {"payment_id": p.payment_id.hex(), "status": p.status, "payment_hash": p.payment_hash.hex(),
               "amount_msat": p.amount_msat, "route": p.route, "offer_id": Offer.decode(p.offer).offer_id.hex()}
        if p.status == "complete":
            out["payment_preimage"] = p.preimage.hex()
        else:
            out["error"] = p.error or p.status
        try:
            self._notify(out)
        except Exception as e:  # a notification must never break the payment
            self._log(f"pay {p.payment_id.hex()[:8]}: notification not sent: {e}", "debug")

    def _note_error(self, payment_id: bytes, error: str) -> None:
        """Remember the last problem of an open payment (shown by asyncreceive-listpays)."""
        def note(x: Payment) -> bool:
            if x.status not in OPEN:
                return False
            x.error, x.error_at = error, self.now()
            return True
        self._update(payment_id, note)

    # ---- retries ------------------------------------------------------------------------------------
    def _later(self, payment_id: bytes, attempt: int, fn, delay: Optional[float] = None) -> None:
        if delay is None:
            delay = min(PAYER_RETRY_CAP, PAYER_RETRY_BASE * 2 ** attempt)
        p, _ = self._load(payment_id)
        if p is None or p.status not in OPEN:
            return
        with self._timers_lock:
            self._cancel_timer(payment_id)
            if self.now() + delay > p.deadline:
                self._timers[payment_id] = self._schedule(max(0, p.deadline - self.now()), self._expire, (payment_id,))
            else:
                self._timers[payment_id] = self._schedule(delay, fn, (payment_id, attempt + 1))

    def _cancel_timer(self, payment_id: bytes) -> None:
        timer = self._timers.pop(payment_id, None)
        if timer is not None:
            timer.cancel()

    def _tried(self, payment_id: bytes, status: str, attempt: int, held: bool = False) -> Optional[Payment]:
        """Count one try (and when the next one is due) on the record; None if the payment moved on."""
        nxt = self.now() + min(PAYER_RETRY_CAP, PAYER_RETRY_BASE * 2 ** attempt)

        def count(x: Payment) -> bool:
            if x.status != status:
                return False
            x.attempts += 1
            x.next_try_at = min(nxt, x.deadline)
            if held and x.held_at is None:
                x.held_at = self.now()
            return True
        return self._update(payment_id, count)

    def _send_invreq(self, payment_id: bytes, attempt: int) -> None:
        p = self._tried(payment_id, "requested", attempt)
        if p is None:
            return
        if attempt == 2:
            self._log(f"pay {payment_id.hex()[:8]}: no answer to the invoice_request yet; trying again "
                      f"(next at {p.next_try_at})", "info")
        sent, errors = False, []
        paths = Offer.decode(p.offer).paths
        for path in (paths[i] for i in path_order(len(paths), p.attempts)):  # p.attempts counts this try
            try:
                self.t.send(path, m.INVOICE_REQUEST, p.invreq, reply_context=self._ctx(p, STEP_INVOICE),
                            reply_via=self._reply_via(path), may_connect=True)  # the user asked for it
                sent = True
                break
            except TransportError as e:
                errors.append(str(e))
        if not sent:
            self._note_error(payment_id, f"invoice_request not sent: {'; '.join(errors)}")
            self._log(f"pay {payment_id.hex()[:8]}: invoice_request not sent on any path: {'; '.join(errors)}",
                      "info")
        self._later(payment_id, attempt, self._retry_invreq)

    def _retry_invreq(self, payment_id: bytes, attempt: int) -> None:
        self._send_invreq(payment_id, attempt)

    def _send_held(self, payment_id: bytes, attempt: int) -> None:
        p = self._tried(payment_id, "waiting_release", attempt, held=True)
        if p is None:
            return
        errors = []
        paths = StaticInvoice.decode(p.invoice).message_paths[:MAX_MESSAGE_PATHS]
        for path in paths:
            try:
                self.t.send(path, m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode(),
                            reply_context=self._ctx(p, STEP_RELEASE), reply_via=self._reply_via(path),
                            may_connect=True)
            except TransportError as e:
                errors.append(str(e))
        if len(errors) == len(paths):
            self._note_error(payment_id, f"held_htlc_available not sent: {'; '.join(errors)}")
        self._later(payment_id, attempt, self._retry_held)

    def _retry_held(self, payment_id: bytes, attempt: int) -> None:
        self._send_held(payment_id, attempt)

    def _after_grace(self, payment_id: bytes, _attempt: int) -> None:
        """The grace time for the payee's own invoice is over: ask the recipient to release."""
        self._send_held(payment_id, 0)

    def _expire(self, payment_id: bytes) -> None:
        def fail(x: Payment) -> bool:
            if x.status not in OPEN:
                return False
            x.status, x.next_try_at = "failed", None
            x.error, x.error_at = "timed out waiting for the recipient" + (
                f" (last error: {x.error})" if x.error else ""), self.now()
            return True
        done = self._update(payment_id, fail)
        if done is not None:
            self._log(f"pay {payment_id.hex()[:8]}: {done.error}", "info")
            self._finished(done)

    # ---- replies ------------------------------------------------------------------------------------
    def on_reply(self, msg: Received) -> None:
        payment_id = msg.context.get(F_PAYMENT_ID)
        step = msg.context.get(F_STEP)
        p, _ = self._load(payment_id) if payment_id is not None else (None, None)
        if p is None:
            raise DecodeError("payer_reply", "unknown payment")
        want = STEP_RELEASE if msg.msg_type == m.RELEASE_HELD_HTLC else STEP_INVOICE
        if step != want:
            raise DecodeError(m.message_name(msg.raw_type), "not on the reply path made for it")
        try:
            if msg.msg_type == m.STATIC_INVOICE and p.status == "requested":
                self._on_static_invoice(p, msg.body)
            elif msg.msg_type == m.INVOICE and p.status in OPEN:
                self._on_invoice(p, msg.body)
            elif msg.msg_type == m.RELEASE_HELD_HTLC and p.status == "waiting_release" and p.held_at is not None:
                m.ReleaseHeldHtlc.decode(msg.body)
                self._on_release(p)
            else:
                self._log(f"pay {payment_id.hex()[:8]}: ignored {m.message_name(msg.raw_type)} in state "
                          f"{p.status}", "debug")
        except DecodeError as e:
            self._note_error(payment_id, f"{m.message_name(msg.raw_type)} refused: {e}")
            raise

    # Each step below is a compare-and-swap that re-reads the record (``_update``): a concurrent write of
    # ours (a retry counting its try) never makes us drop an answer, and only one answer gets past.

    def _on_static_invoice(self, p: Payment, body: bytes) -> None:
        inv = check_static_invoice(body, Offer.decode(p.offer), self.now())
        if not inv.message_paths:
            raise DecodeError("static_invoice.held_htlc_available_paths", "none: the recipient cannot be asked")

        def take(x: Payment) -> bool:
            if x.status != "requested":
                return False
            x.status, x.invoice, x.attempts, x.held_at = "waiting_release", body, 0, None
            x.next_try_at = self.now() + int(self.invoice_grace + 0.999)
            return True

        if self._update(p.payment_id, take) is None:
            return
        self._log(f"pay {p.payment_id.hex()[:8]}: static invoice received; waiting {self.invoice_grace:g} s for the "
                  "payee's own invoice, then asking the recipient to release", "info")
        self._later(p.payment_id, -1, self._after_grace, delay=self.invoice_grace)

    def _on_invoice(self, p: Payment, body: bytes) -> None:
        """The payee answered itself (it is online): pay its invoice with lightningd's ``pay``, which
        checks it against the payment hash and gives proof of payment."""
        check_invoice(body, Offer.decode(p.offer), InvoiceRequest.decode(p.invreq), p.amount_msat, self.now())

        def take(x: Payment) -> bool:
            if x.status not in OPEN:
                return False  # the static route (or a cancel) got there first
            x.status, x.invoice, x.route, x.next_try_at, x.sending_at = "sending", body, "normal", None, self.now()
            return True

        done = self._update(p.payment_id, take)
        if done is None:
            return
        crashpoint("payer-sending")
        self._log(f"pay {p.payment_id.hex()[:8]}: the payee answered with an invoice; paying it", "info")
        self._start(p.payment_id, self._pay_invoice, done)

    def _on_release(self, p: Payment) -> None:
        def take(x: Payment) -> bool:
            if x.status != "waiting_release" or x.held_at is None:
                return False  # a normal invoice, a cancel or another release got there first
            x.status, x.route, x.next_try_at, x.sending_at = "sending", "static", None, self.now()
            return True

        done = self._update(p.payment_id, take)
        if done is None:
            return
        crashpoint("payer-sending")
        self._start(p.payment_id, self._send_htlc, done)

    def _mark_sent(self, payment_id: bytes) -> bool:
        """Record, before anything goes to lightningd, that it may: a payment marked so is never sent again
        from a restart, even if lightningd's records of it are gone (autoclean, delpay).  False if the
        payment is no longer ours to send."""
        def mark(x: Payment) -> bool:
            if x.status != "sending":
                return False
            x.handed_over = True
            return True
        return self._update(payment_id, mark) is not None

    def _start(self, payment_id: bytes, fn, *args) -> None:
        """Run ``fn`` in its own thread; while it runs, ticks leave the payment to it."""
        self._active.add(payment_id)
        with self._timers_lock:
            self._cancel_timer(payment_id)

        def run():
            try:
                fn(*args)
            except Exception as e:  # left in sending: check_sending settles it from lightningd's records
                self._log(f"pay {payment_id.hex()[:8]}: {fn.__name__} stopped: {e}", "unusual")
            finally:
                self._active.discard(payment_id)

        self._spawn(run)

    def _pay_invoice(self, p: Payment) -> None:
        if not self._mark_sent(p.payment_id):
            return
        try:
            res = self.node.pay(Invoice.decode(p.invoice, check_signature=False).to_string(), p.max_fee_msat,
                                p.max_delay)
        except RpcError as e:
            if e.error.get("code") == PAY_IN_PROGRESS:  # another pay of this invoice runs: its result counts
                return self._log(f"pay {p.payment_id.hex()[:8]}: {e.error.get('message')}; left in sending", "info")
            return self._finish(p.payment_id, "failed", str(e.error.get("message", e.error)), None, "normal invoice")
        if res.get("status") == "complete":
            self._finish(p.payment_id, "complete", "", bytes.fromhex(res["payment_preimage"]), "normal invoice")
        else:
            self._finish(p.payment_id, "failed", f"pay ended {res.get('status')}", None, "normal invoice")

    def _send_htlc(self, p: Payment) -> None:
        inv = StaticInvoice.decode(p.invoice)
        invreq = InvoiceRequest.decode(p.invreq)
        payment_hash = hashlib.sha256(p.preimage).digest()
        order, refused = usable_paths(inv, p.amount_msat, p.max_fee_msat, p.max_delay)
        if not order:
            return self._finish(p.payment_id, "failed", f"no payment path within the limits: {refused}", None,
                                "static invoice")
        if not self._mark_sent(p.payment_id):
            return
        error = ""
        for i in order:
            height = self.node.block_height()
            try:
                po = build_payment_onion(inv, invreq, p.preimage, p.amount_msat, height, path_index=i)
            except ValueError as e:
                error = f"path {i}: {e}"
                continue
            try:
                onion, secrets = self.node.createonion(po.hops, payment_hash)
                self.node.sendonion(onion, secrets, payment_hash, po.first_node_id, po.first_amount_msat,
                                    po.first_cltv - height, partid=i, groupid=1)
                crashpoint("payer-onion-sent")
            except RpcError as e:  # refused before anything went out: the next path may do
                error = f"path {i}: {e.error.get('message', e.error)}"
                self._log(f"pay {p.payment_id.hex()[:8]}: {error}", "info")
                continue
            try:
                self.node.waitsendpay(payment_hash, partid=i, groupid=1)
                return self._finish(p.payment_id, "complete", "", None, "static invoice")
            except RpcError as e:
                if e.error.get("code") not in DEFINITE_FAILURES:
                    # the HTLC may still be out there: never another one for this hash; a tick settles it
                    return self._log(f"pay {p.payment_id.hex()[:8]}: path {i}: result not known yet "
                                     f"({e.error.get('message', e.error)}); left in sending", "info")
                error = f"path {i}: {e.error.get('message', e.error)}"
                self._log(f"pay {p.payment_id.hex()[:8]}: {error}", "info")
        self._finish(p.payment_id, "failed", error + (f"; {refused}" if refused else ""), None, "static invoice")
