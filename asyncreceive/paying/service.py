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

The policy (what each answer, tick and result does; backoff and deadline as data) is pure, in
:mod:`.policy`; this module is its shell.  No timers: tries and expiries are due times, which the
worker's wake-up (:meth:`PayService.run_due`) and its periodic tick (:meth:`PayService.check_sending`) run.
"""

import hashlib
import os
import threading
import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Tuple

from pyln.client import RpcError

from ..crypto.context import Kind, PathContext
from ..errors import DecodeError
from ..shell.crashpoint import crashpoint
from ..shell.lightningd import NodeError
from ..shell.transport import Received, Transport, TransportError
from ..recipient.invoice import CHAINS
from ..wire import messages as m
from ..wire.bolt12.invoice import Invoice
from ..wire.bolt12.invoice_request import InvoiceRequest
from ..wire.bolt12.offer import Offer
from ..wire.bolt12.static_invoice import StaticInvoice
from . import policy as pol
from .policy import ENDED, OPEN, PayState, Payment, Status
from .payer import PayLimits, build_invoice_request, build_payment_onion, check_invoice, check_static_invoice, \
    path_order, usable_paths

PAYER_PREFIX = ["asyncreceive", "v1", "payer"]
#: reply-path context fields: the payment, and which answer the path is for
F_PAYMENT_ID = 4
F_STEP = 6
STEP_INVOICE = b"\x01"      # static_invoice or invoice, answering our invoice_request
STEP_RELEASE = b"\x02"      # release_held_htlc, answering our held_htlc_available
#: waitsendpay errors that say the HTLC is gone (failed along the route or at the destination, or the
#: onion was refused): only then may the next path be tried with the same payment hash
DEFINITE_FAILURES = {202, 203, 204, 209}
#: lightningd's pay: "payment already in progress" (not a failure)
PAY_IN_PROGRESS = 200
#: held_htlc_available goes over at most this many of a static invoice's message paths (an offer's
#: author could list many paths to nodes that hang our connects)
MAX_MESSAGE_PATHS = 4


def key(payment_id: bytes) -> List[str]:
    return PAYER_PREFIX + [payment_id.hex()]


class PayError(Exception):
    pass


class PayService:
    """The payer's shell: loads and persists the records, runs :mod:`.policy` on each event and
    carries out its actions (sends over the transport, lightningd calls, notifications)."""

    def __init__(self, transport: Transport, network: str, log: Callable[[str, str], None], timeout: int,
                 clock: Callable[[], float] = time.time, invoice_grace: float = 1.5,
                 notify: Optional[Callable[[dict], None]] = None, wake: Optional[Callable[[float], None]] = None,
                 spawn=None):
        self.t = transport
        self.node = transport.node
        self.network = network
        self._log = log
        self.timeout = timeout
        self.invoice_grace = invoice_grace
        self._notify = notify
        self._clock = clock
        #: ``wake(delay)``: have :meth:`run_due` called in ``delay`` seconds (the worker's wake-up; tests
        #: call it themselves); ``spawn(fn)`` runs a send of ours on its own thread (tests: synchronously)
        self._wake = wake
        self._spawn = spawn or (lambda fn: threading.Thread(target=fn, daemon=True).start())
        #: the policy's state of each unfinished payment we run (the record's in-memory companion)
        self._states: Dict[bytes, PayState] = {}
        self._lock = threading.RLock()

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

    def _event(self, payment_id: bytes, event) -> Tuple[Optional[PayState], list]:
        """Run the policy on ``event`` for the stored payment: the new record is written with a
        compare-and-swap (a write of ours in between: read again and step again), then the actions are
        carried out.  Returns the new state and the actions (None, [] if there is no such payment)."""
        with self._lock:
            for _ in range(5):
                rec, gen = self._load(payment_id)
                if rec is None:
                    return None, []
                old = self._states.get(payment_id)
                new, actions = pol.step(PayState(rec) if old is None else replace(old, rec=rec), event,
                                        self._clock())
                if new.rec != rec:
                    try:
                        self._save(new.rec, gen)
                    except NodeError:
                        continue
                if new.rec.status in ENDED:
                    self._states.pop(payment_id, None)
                else:
                    self._states[payment_id] = new
                break
            else:
                return None, []
        for a in actions:
            self._do(new.rec, a)
        self._arm()
        return new, actions

    def _do(self, p: Payment, a) -> None:
        if isinstance(a, pol.Log):
            self._log(a.text, a.level)
        elif isinstance(a, pol.SendInvoiceRequest):
            self._send_invreq(p)
        elif isinstance(a, pol.SendHeld):
            self._send_held(p)
        elif isinstance(a, pol.StartSend):
            if a.crashpoint:
                crashpoint("payer-sending")
            self._start(p.payment_id, self._pay_invoice if a.route == "normal" else self._send_htlc, p)
        elif isinstance(a, pol.CheckRecords):
            self._check_records(p)
        elif isinstance(a, pol.Finished):
            self._finished(p)

    def _arm(self) -> None:
        """Ask for a wake-up when the earliest try or expiry is due."""
        if self._wake is None:
            return
        with self._lock:
            due = [s.due for s in self._states.values() if s.due is not None]
        if due:
            self._wake(max(0.0, min(due) - self._clock()))

    def run_due(self) -> None:
        """The wake-up: step the payments whose next try or expiry is due."""
        now = self._clock()
        with self._lock:
            due = [pid for pid, s in self._states.items() if s.due is not None and s.due <= now]
        for pid in due:
            self._event(pid, pol.Tick())
        self._arm()

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
        p = Payment(os.urandom(16), offer.encode(), amount, invreq.encode(), os.urandom(32), Status.REQUESTED,
                    created_at=now, deadline=now + self.timeout, max_fee_msat=limits.max_fee(amount),
                    max_delay=limits.maxdelay)
        self._save(p, None)  # persisted before anything goes out
        self._event(p.payment_id, pol.Resume())
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
        new, _ = self._event(payment_id, pol.Cancel())
        if new is None or new.rec.status is not Status.CANCELLED:
            raise PayError(f"payment is {new.rec.status if new else 'gone'}: not cancelled")
        return new.rec.json(self.invoice_grace)

    def resume(self) -> None:
        """After a restart: keep asking for what each unfinished payment waits for; those we stopped
        between sending and the result are settled by :meth:`check_sending`, which every tick runs."""
        for p in self._all():
            if p.status in OPEN:
                self._event(p.payment_id, pol.Resume())

    def check_sending(self) -> None:
        """The periodic tick: settle payments still *sending* that no send of ours runs for (their result
        came while we were not watching, e.g. lightningd's ``pay`` outlived a plugin restart); fail open
        payments past their deadline; try those that are due (a wake-up missed)."""
        for p in self._all():
            if p.status not in ENDED:
                self._event(p.payment_id, pol.Tick(settle=True))

    def _check_records(self, p: Payment) -> None:
        """Tell the policy what lightningd has for the payment's hash: a normal invoice's ``listpays``,
        our own async HTLCs' ``listsendpays``."""
        if p.normal_invoice:
            result, preimage = pol.records_result(self.node.listpays(p.payment_hash))
        else:
            result, preimage = pol.records_result(self.node.listsendpays(p.payment_hash))
        peers = True
        if result == "none" and not p.normal_invoice:
            peers = bool(self.node.connected_channel_peers())
        self._event(p.payment_id, pol.Records(result, bytes.fromhex(preimage) if preimage else None, peers))

    def _finish(self, payment_id: bytes, status: Status, error: str, preimage: Optional[bytes], how: str) -> None:
        """A send of ours has the result: the payment in *sending* ends (complete or failed)."""
        self._event(payment_id, pol.Result(status, error, preimage, how))

    def _finished(self, p: Payment) -> None:
        """A payment ended (complete, failed or cancelled): notify."""
        if self._notify is None:
            return
        out = {"payment_id": p.payment_id.hex(), "status": p.status.value, "payment_hash": p.payment_hash.hex(),
               "amount_msat": p.amount_msat, "route": p.route, "offer_id": Offer.decode(p.offer).offer_id.hex()}
        if p.status is Status.COMPLETE:
            out["payment_preimage"] = p.preimage.hex()
        else:
            out["error"] = p.error or p.status.value
        try:
            self._notify(out)
        except Exception as e:  # a notification must never break the payment
            self._log(f"pay {p.payment_id.hex()[:8]}: notification not sent: {e}", "debug")

    # ---- sends ------------------------------------------------------------------------------------
    def _send_invreq(self, p: Payment) -> None:
        """Try ``p.attempts`` (counted already): the invoice_request, starting at that try's offer path."""
        sent, errors = False, []
        paths = Offer.decode(p.offer).paths
        for path in (paths[i] for i in path_order(len(paths), p.attempts)):
            try:
                self.t.send(path, m.INVOICE_REQUEST, p.invreq, reply_context=self._ctx(p, STEP_INVOICE),
                            reply_via=self._reply_via(path), may_connect=True)  # the user asked for it
                sent = True
                break
            except TransportError as e:
                errors.append(str(e))
        if not sent:
            self._event(p.payment_id, pol.Problem(f"invoice_request not sent: {'; '.join(errors)}"))
            self._log(f"pay {p.payment_id.hex()[:8]}: invoice_request not sent on any path: {'; '.join(errors)}",
                      "info")

    def _send_held(self, p: Payment) -> None:
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
            self._event(p.payment_id, pol.Problem(f"held_htlc_available not sent: {'; '.join(errors)}"))

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
        # The policy takes each answer with a compare-and-swap on the stored record: a concurrent write
        # of ours (a retry counting its try) never makes us drop an answer, and only one answer gets past.
        try:
            if msg.msg_type == m.STATIC_INVOICE and pol.answer_wanted(p, "static_invoice"):
                inv = check_static_invoice(msg.body, Offer.decode(p.offer), self.now())
                if not inv.message_paths:
                    raise DecodeError("static_invoice.held_htlc_available_paths",
                                      "none: the recipient cannot be asked")
                event = pol.GotStaticInvoice(msg.body, self.invoice_grace)
            elif msg.msg_type == m.INVOICE and pol.answer_wanted(p, "invoice"):
                # the payee answered itself (it is online): pay its invoice with lightningd's pay, which
                # checks it against the payment hash and gives proof of payment
                check_invoice(msg.body, Offer.decode(p.offer), InvoiceRequest.decode(p.invreq), p.amount_msat,
                              self.now())
                event = pol.GotInvoice(msg.body)
            elif msg.msg_type == m.RELEASE_HELD_HTLC and pol.answer_wanted(p, "release"):
                m.ReleaseHeldHtlc.decode(msg.body)
                event = pol.GotRelease()
            else:
                return self._log(f"pay {payment_id.hex()[:8]}: ignored {m.message_name(msg.raw_type)} in state "
                                 f"{p.status}", "debug")
        except DecodeError as e:
            self._event(payment_id, pol.Problem(f"{m.message_name(msg.raw_type)} refused: {e}"))
            raise
        self._event(payment_id, event)

    # ---- a send of ours: to lightningd ----------------------------------------------------------------
    def _mark_sent(self, payment_id: bytes) -> bool:
        """Record, before anything goes to lightningd, that it may: a payment marked so is never sent again
        from a restart, even if lightningd's records of it are gone (autoclean, delpay).  False if the
        payment is no longer ours to send."""
        _, actions = self._event(payment_id, pol.HandOver())
        return any(isinstance(a, pol.Proceed) for a in actions)

    def _start(self, payment_id: bytes, fn, *args) -> None:
        """Run ``fn`` in its own thread; while it runs, ticks leave the payment to it."""
        def run():
            try:
                fn(*args)
            except Exception as e:  # left in sending: check_sending settles it from lightningd's records
                self._log(f"pay {payment_id.hex()[:8]}: {getattr(fn, '__name__', 'send')} stopped: {e}", "unusual")
            finally:
                try:
                    self._event(payment_id, pol.Stopped())
                except Exception as e:  # lightningd gone: a restart starts afresh
                    self._log(f"pay {payment_id.hex()[:8]}: {e}", "debug")

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
            return self._finish(p.payment_id, Status.FAILED, str(e.error.get("message", e.error)), None, "normal invoice")
        if res.get("status") == "complete":
            self._finish(p.payment_id, Status.COMPLETE, "", bytes.fromhex(res["payment_preimage"]), "normal invoice")
        else:
            self._finish(p.payment_id, Status.FAILED, f"pay ended {res.get('status')}", None, "normal invoice")

    def _send_htlc(self, p: Payment) -> None:
        inv = StaticInvoice.decode(p.invoice)
        invreq = InvoiceRequest.decode(p.invreq)
        payment_hash = hashlib.sha256(p.preimage).digest()
        order, refused = usable_paths(inv, p.amount_msat, p.max_fee_msat, p.max_delay)
        if not order:
            return self._finish(p.payment_id, Status.FAILED, f"no payment path within the limits: {refused}", None,
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
                return self._finish(p.payment_id, Status.COMPLETE, "", None, "static invoice")
            except RpcError as e:
                if e.error.get("code") not in DEFINITE_FAILURES:
                    # the HTLC may still be out there: never another one for this hash; a tick settles it
                    return self._log(f"pay {p.payment_id.hex()[:8]}: path {i}: result not known yet "
                                     f"({e.error.get('message', e.error)}); left in sending", "info")
                error = f"path {i}: {e.error.get('message', e.error)}"
                self._log(f"pay {p.payment_id.hex()[:8]}: {error}", "info")
        self._finish(p.payment_id, Status.FAILED, error + (f"; {refused}" if refused else ""), None, "static invoice")
