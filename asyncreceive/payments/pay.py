"""``asyncreceive-pay``: pay a BOLT 12 offer whose recipient may be offline (CLN has no payer for this).

1. Send an invoice_request to the offer's paths, with a reply path whose context names the payment.
2. On a ``static_invoice`` reply: check it is for this offer (records byte for byte), unexpired and
   signed (the decoder checks the signature).
3. Send ``held_htlc_available`` over its TLV-236 paths with our reply path, again with backoff
   (5 s doubling to 5 min) until ``release_held_htlc`` arrives or the timeout passes.
4. On release: pay over the invoice's blinded payment path with a fresh preimage (TLV 5482373484) and
   the invoice_request (TLV 77777): ``createonion`` + ``sendonion``, then ``waitsendpay``.

Each payment's state is in the datastore, and the step to *sending* is a compare-and-swap on its
record, so a duplicate or replayed release can never pay twice, also across a restart.
"""

import hashlib
import os
import threading
import time
from typing import Callable, Dict, List, Optional

from ..crypto.context import Kind, PathContext
from ..errors import DecodeError
from ..node.lightningd import NodeError
from ..node.transport import Received, Transport, TransportError
from ..recipient.invoice import CHAINS
from ..wire import messages as m
from ..wire.bolt12 import HRP_INVOICE, INVOICE_PAYMENT_HASH, InvoiceRequest, Offer, StaticInvoice, bech32_encode
from ..wire.tlv import bigsize, decode_tlv, decode_tu, encode_tlv, tu64
from .payer import build_invoice_request, build_payment_onion

PREFIX = ["asyncreceive", "v1", "payer"]
F_PAYMENT_ID = 4
RETRY_BASE = 5
RETRY_CAP = 300
STATUSES = ["requested", "waiting_release", "sending", "complete", "failed"]


def key(payment_id: bytes) -> List[str]:
    return PREFIX + [payment_id.hex()]


def _is_static(invoice: bytes) -> bool:
    try:
        StaticInvoice.decode(invoice)
        return True
    except DecodeError:
        return False


class PayError(Exception):
    pass


class Payment:
    """A payment record: TLV in the datastore."""

    def __init__(self, payment_id, offer, amount_msat, invreq, preimage, status="requested", invoice=b"",
                 created_at=0, deadline=0, error=""):
        self.payment_id, self.offer, self.amount_msat = payment_id, offer, amount_msat
        self.invreq, self.preimage, self.status, self.invoice = invreq, preimage, status, invoice
        self.created_at, self.deadline, self.error = created_at, deadline, error

    def encode(self) -> bytes:
        recs = [(0, self.offer), (2, tu64(self.amount_msat)), (4, self.invreq), (6, self.preimage),
                (8, bytes([STATUSES.index(self.status)])), (12, tu64(self.created_at)), (14, tu64(self.deadline))]
        if self.invoice:
            recs.append((10, self.invoice))
        if self.error:
            recs.append((16, self.error.encode()))
        return encode_tlv(sorted(recs))

    @staticmethod
    def decode(payment_id: bytes, data: bytes) -> "Payment":
        r = dict(decode_tlv(data, "payment", known=lambda t: True).records)
        return Payment(payment_id, r[0], decode_tu(r[2], 8, "amount"), r[4], r[6], STATUSES[r[8][0]], r.get(10, b""),
                       decode_tu(r[12], 8, "created_at"), decode_tu(r[14], 8, "deadline"),
                       r.get(16, b"").decode("utf-8", "replace"))

    @property
    def normal_invoice(self) -> bool:
        """The payee answered itself with a normal invoice (type 66), not a static invoice."""
        return bool(self.invoice) and not _is_static(self.invoice)

    @property
    def payment_hash(self) -> bytes:
        """The normal invoice's payment hash, else that of the preimage we send with the async HTLC."""
        if self.normal_invoice:
            h = dict(decode_tlv(self.invoice, "invoice", known=lambda t: True).records).get(INVOICE_PAYMENT_HASH)
            if h is not None and len(h) == 32:
                return h
        return hashlib.sha256(self.preimage).digest()

    def json(self) -> dict:
        out = {"payment_id": self.payment_id.hex(), "status": self.status, "amount_msat": self.amount_msat,
               "offer": Offer.decode(self.offer).to_string(), "created_at": self.created_at,
               "payment_hash": self.payment_hash.hex(),
               "invoice": None if not self.invoice else ("normal" if self.normal_invoice else "static")}
        if self.status == "complete":
            out["payment_preimage"] = self.preimage.hex()
        if self.error:
            out["error"] = self.error
        return out


class PayService:
    def __init__(self, transport: Transport, network: str, log: Callable[[str, str], None], timeout: int,
                 clock: Callable[[], float] = time.time):
        self.t = transport
        self.node = transport.node
        self.network = network
        self._log = log
        self.timeout = timeout
        self._clock = clock
        self._timers: Dict[bytes, threading.Timer] = {}
        self._active: set = set()   # payments whose result a thread of ours is waiting for
        transport.on_kind(Kind.PAYER_REPLY, self.on_reply)

    def now(self) -> int:
        return int(self._clock())

    def _load(self, payment_id: bytes):
        got = self.node.ds_get(key(payment_id))
        return (Payment.decode(payment_id, got[0]), got[1]) if got else (None, None)

    def _save(self, p: Payment, gen: Optional[int]) -> int:
        return self.node.ds_put(key(p.payment_id), p.encode(), gen)

    def _ctx(self, p: Payment) -> PathContext:
        return PathContext(Kind.PAYER_REPLY, p.deadline, {F_PAYMENT_ID: p.payment_id})

    def _via(self, path) -> List[bytes]:
        intro = self.t.introduction_node(path)
        return [] if intro == self.node.node_id else [intro]

    # ---- RPC --------------------------------------------------------------------------------------
    def pay(self, offer_str: str, amount_msat: Optional[int], payer_note: Optional[str]) -> dict:
        try:
            offer = Offer.from_string(offer_str)
        except DecodeError as e:
            raise PayError(f"offer: {e}")
        amount = amount_msat if amount_msat is not None else offer.amount
        if not amount:
            raise PayError("amount_msat is needed: the offer has no amount")
        if offer.is_expired(self.now()):
            raise PayError("offer has expired")
        if not offer.paths:
            raise PayError("offer has no blinded paths (not an async offer)")
        invreq = build_invoice_request(offer, amount, os.urandom(32), CHAINS.get(self.network), payer_note)
        now = self.now()
        p = Payment(os.urandom(16), offer.encode(), amount, invreq.encode(), os.urandom(32), "requested",
                    created_at=now, deadline=now + self.timeout)
        self._save(p, None)  # persisted before anything goes out
        self._send_invreq(p, 0)
        return p.json()

    def list_pays(self) -> List[dict]:
        out = [Payment.decode(bytes.fromhex(k[-1]), v).json() for k, v, _ in self.node.ds_list(PREFIX)]
        return sorted(out, key=lambda x: x["created_at"])

    def resume(self) -> None:
        """After a restart: keep asking for what each unfinished payment waits for; those we stopped
        between sending and the result are settled by :meth:`check_sending`, which every tick runs."""
        for k, v, _ in self.node.ds_list(PREFIX):
            p = Payment.decode(bytes.fromhex(k[-1]), v)
            if p.status == "requested":
                self._send_invreq(p, 0)
            elif p.status == "waiting_release":
                self._send_held(p, 0)

    def check_sending(self) -> None:
        """On every tick: settle payments still *sending* that nothing of ours is waiting on (their
        result came while we were not watching, e.g. lightningd's ``pay`` outlived a plugin restart)."""
        for k, v, _ in self.node.ds_list(PREFIX):
            p = Payment.decode(bytes.fromhex(k[-1]), v)
            if p.status == "sending" and p.payment_id not in self._active:
                self._settle(p)

    def _settle(self, p: Payment) -> None:
        """Take the result lightningd has for the payment's hash; still in flight or never sent: leave
        it, never send again.  A normal invoice is judged by ``listpays`` (lightningd's ``pay`` may still
        retry after failed attempts); our own async HTLCs by ``listsendpays``."""
        h = p.payment_hash.hex()
        preimage = None
        if p.normal_invoice:
            pays = self.node.rpc.listpays(payment_hash=h)["pays"]
            done = next((x for x in pays if x["status"] == "complete"), None)
            if done is not None:
                status, preimage = "complete", done.get("preimage")
            elif pays and all(x["status"] == "failed" for x in pays):
                status = "failed"
            else:
                return
        else:
            parts = self.node.rpc.listsendpays(payment_hash=h)["payments"]
            if any(x["status"] == "complete" for x in parts):
                status = "complete"
            elif parts and all(x["status"] == "failed" for x in parts):
                status = "failed"
            else:
                return
        cur, gen = self._load(p.payment_id)
        if cur is None or cur.status != "sending":
            return
        cur.status = status
        if preimage:
            cur.preimage = bytes.fromhex(preimage)
        try:
            self._save(cur, gen)
        except NodeError:
            return  # changed meanwhile: the next check sees the new state
        self._log(f"pay {p.payment_id.hex()[:8]}: {status} (from lightningd's records)", "info")

    # ---- retries ------------------------------------------------------------------------------------
    def _later(self, p: Payment, attempt: int, fn) -> None:
        delay = min(RETRY_CAP, RETRY_BASE * 2 ** attempt)
        if self.now() + delay > p.deadline:
            timer = threading.Timer(max(0, p.deadline - self.now()), self._expire, args=(p.payment_id,))
        else:
            timer = threading.Timer(delay, fn, args=(p.payment_id, attempt + 1))
        timer.daemon = True
        self._timers[p.payment_id] = timer
        timer.start()

    def _send_invreq(self, p: Payment, attempt: int) -> None:
        offer = Offer.decode(p.offer)
        for path in offer.paths:
            try:
                self.t.send(path, m.INVOICE_REQUEST, p.invreq, reply_context=self._ctx(p), reply_via=self._via(path))
                break
            except TransportError as e:
                self._log(f"pay {p.payment_id.hex()[:8]}: invoice_request not sent on one path: {e}", "debug")
        self._later(p, attempt, self._retry_invreq)

    def _retry_invreq(self, payment_id: bytes, attempt: int) -> None:
        p, _ = self._load(payment_id)
        if p is not None and p.status == "requested":
            self._send_invreq(p, attempt)

    def _send_held(self, p: Payment, attempt: int) -> None:
        inv = StaticInvoice.decode(p.invoice)
        for path in inv.message_paths:
            try:
                self.t.send(path, m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode(),
                            reply_context=self._ctx(p), reply_via=self._via(path))
            except TransportError as e:
                self._log(f"pay {p.payment_id.hex()[:8]}: held_htlc_available not sent on one path: {e}", "debug")
        self._later(p, attempt, self._retry_held)

    def _retry_held(self, payment_id: bytes, attempt: int) -> None:
        p, _ = self._load(payment_id)
        if p is not None and p.status == "waiting_release":
            self._send_held(p, attempt)

    def _expire(self, payment_id: bytes) -> None:
        p, gen = self._load(payment_id)
        if p is not None and p.status in ("requested", "waiting_release"):
            p.status, p.error = "failed", "timed out waiting for the recipient"
            try:
                self._save(p, gen)
            except NodeError:
                return
            self._log(f"pay {payment_id.hex()[:8]}: {p.error}", "info")

    # ---- replies ------------------------------------------------------------------------------------
    def on_reply(self, msg: Received) -> None:
        payment_id = msg.context.get(F_PAYMENT_ID)
        p, gen = self._load(payment_id)
        if p is None:
            raise DecodeError("payer_reply", "unknown payment")
        if msg.msg_type == m.STATIC_INVOICE and p.status == "requested":
            inv = StaticInvoice.decode(msg.body)
            if inv.offer_records().encode() != Offer.decode(p.offer).stream.encode():
                raise DecodeError("static_invoice", "not for the offer we asked")
            if inv.is_expired(self.now()):
                raise DecodeError("static_invoice", "expired")
            p.status, p.invoice = "waiting_release", msg.body
            self._save(p, gen)
            self._log(f"pay {payment_id.hex()[:8]}: static invoice received, asking the recipient to release",
                      "info")
            self._send_held(p, 0)
        elif msg.msg_type == m.INVOICE and p.status == "requested":
            # the recipient is online and answered itself: a normal invoice, paid by lightningd's own pay
            # (which checks it against the payment hash and gives proof of payment)
            invoice = bech32_encode(HRP_INVOICE, msg.body)
            d = self.node.rpc.decode(invoice)
            if not d.get("valid") or d.get("offer_id") != Offer.decode(p.offer).offer_id.hex():
                raise DecodeError("invoice", "not a valid invoice for the offer we asked")
            if int(d.get("invoice_amount_msat", 0)) != p.amount_msat:
                raise DecodeError("invoice", f"amount {d.get('invoice_amount_msat')} is not {p.amount_msat}")
            p.status, p.invoice = "sending", msg.body
            try:
                self._save(p, gen)  # compare-and-swap: the static route can no longer start
            except NodeError:
                return
            self._log(f"pay {payment_id.hex()[:8]}: the recipient answered with an invoice; paying it", "info")
            self._start(p.payment_id, self._pay_invoice, p, invoice)
        elif msg.msg_type == m.RELEASE_HELD_HTLC and p.status == "waiting_release":
            m.ReleaseHeldHtlc.decode(msg.body)
            p.status = "sending"
            try:
                self._save(p, gen)  # compare-and-swap: only one release ever gets past this
            except NodeError:
                return
            self._start(p.payment_id, self._send_htlc, p)
        else:
            self._log(f"pay {payment_id.hex()[:8]}: ignored {m.message_name(msg.raw_type)} in state {p.status}",
                      "debug")

    def _start(self, payment_id: bytes, fn, *args) -> None:
        """Run ``fn`` in its own thread; while it runs, ticks leave the payment to it."""
        self._active.add(payment_id)

        def run():
            try:
                fn(*args)
            except Exception as e:
                self._log(f"pay {payment_id.hex()[:8]}: {fn.__name__} stopped: {e}", "broken")
            finally:
                self._active.discard(payment_id)

        threading.Thread(target=run, daemon=True).start()

    def _pay_invoice(self, p: Payment, invoice: str) -> None:
        try:
            res = self.node.rpc.call("pay", {"bolt11": invoice})
            error = "" if res.get("status") == "complete" else f"pay ended {res.get('status')}"
        except Exception as e:
            res, error = {}, str(getattr(e, "error", e))
        cur, gen = self._load(p.payment_id)
        if error:
            cur.status, cur.error = "failed", error
        else:
            cur.status, cur.preimage = "complete", bytes.fromhex(res["payment_preimage"])
        self._save(cur, gen)
        self._log(f"pay {p.payment_id.hex()[:8]}: {cur.status} (normal invoice)", "info")

    def _send_htlc(self, p: Payment) -> None:
        inv = StaticInvoice.decode(p.invoice)
        invreq = InvoiceRequest.decode(p.invreq)
        payment_hash = hashlib.sha256(p.preimage).digest()
        rpc = self.node.rpc
        error = ""
        for i in range(len(inv.paths)):
            height = self.node.block_height()
            try:
                po = build_payment_onion(inv, invreq, p.preimage, p.amount_msat, height, path_index=i)
                onion = rpc.call("createonion", {"hops": [{"pubkey": k.hex(), "payload": (bigsize(len(x)) + x).hex()}
                                                          for k, x in po.hops], "assocdata": payment_hash.hex()})
                rpc.call("sendonion", {"onion": onion["onion"], "payment_hash": payment_hash.hex(),
                                       "first_hop": {"id": po.first_node_id.hex(), "amount_msat": po.first_amount_msat,
                                                     "delay": po.first_cltv - height},
                                       "shared_secrets": onion["shared_secrets"], "partid": i, "groupid": 1})
                rpc.call("waitsendpay", {"payment_hash": payment_hash.hex(), "partid": i, "groupid": 1})
                error = ""
                break
            except Exception as e:  # RpcError from lightningd, or a path we cannot use
                error = str(getattr(e, "error", e))
                self._log(f"pay {p.payment_id.hex()[:8]}: path {i} failed: {error}", "info")
        cur, gen = self._load(p.payment_id)
        cur.status, cur.error = ("failed", error) if error else ("complete", "")
        self._save(cur, gen)
        self._log(f"pay {p.payment_id.hex()[:8]}: {cur.status}", "info")
