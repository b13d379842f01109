"""The online fallback's shell: answers forwarded invoice_requests, keeps the records, claims their HTLCs.

The recipient's service hands it each invoice_request our server forwards while we are online, and the
payments service asks it about each HTLC on one of its paths.  The invoices' records are indexed in
memory (loaded once at start) and kept within the bounds of :mod:`.policy`: expired and excess records
are deleted on every tick and before each new one is written; their preimages are sealed with a key
derived from ``makesecret`` (:mod:`.store`).
"""

import hashlib
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from ..crypto.blinding import EncryptedData
from ..crypto.context import ContextError
from ..errors import DecodeError
from ..logs import short_id
from ..receiving.htlc import Verdict, cap_note, check_terms
from ..recipient.invoice import IncomingChannel, payment_paths
from ..server.ratelimit import PerPeerLimit, RateLimiter
from ..shell.transport import Received, Transport
from ..wire import messages as m
from ..wire.bolt12.invoice_request import InvoiceRequest
from .policy import (ANSWER_BURST, ANSWER_OFFER_BURST, ANSWER_OFFER_REFILL_SECONDS, ANSWER_REFILL_SECONDS,
                     FALLBACK_INVOICE_LIFETIME, KEEP_AFTER_EXPIRY, Issued, build_invoice, fallbacks_to_delete)
from .store import (FALLBACK_PREFIX, NONCE_LEN, FallbackInvoice, decode_fallback, encode_fallback, fallback_key,
                    open_preimage, record_key, seal_preimage)

#: [dev, regtest only] seconds an online-fallback invoice lasts (and, at most, its record after that),
#: so that integration tests can watch records expire
DEV_FALLBACK_EXPIRY_ENV = "ASYNCRECEIVE_DEV_FALLBACK_EXPIRY"


def _fallback_lifetime(network: str) -> Tuple[int, int]:
    """(invoice relative expiry, how long its record outlives it)."""
    dev = os.environ.get(DEV_FALLBACK_EXPIRY_ENV, "")
    if network == "regtest" and dev.isdigit() and int(dev) > 0:
        return int(dev), min(KEEP_AFTER_EXPIRY, int(dev))
    return FALLBACK_INVOICE_LIFETIME, KEEP_AFTER_EXPIRY


class FallbackService:
    """``signing_key(offer_id)``: the key of our offer with that id, None if it is not one of our offers now;
    ``incoming()``: our channels a payment may come in on; ``ignore(reason, text)``: count and log a
    request we do not answer (the recipient's ``ignored``)."""

    def __init__(self, transport: Transport, network: str, offer_key_base: bytes, final_cltv: int,
                 log: Callable[[str, str], None], signing_key: Callable[[bytes], Optional[bytes]],
                 incoming: Callable[[], List[IncomingChannel]], ignore: Callable[[str, str], None],
                 clock: Callable[[], float] = time.time, preimage_key: Optional[bytes] = None):
        self.t = transport
        self.node = transport.node
        self.final_cltv = final_cltv
        self._log = log
        self._signing_key = signing_key
        self._incoming = incoming
        self._ignore = ignore
        self._clock = clock
        self.lock = threading.RLock()
        #: payment_hash -> the online-fallback invoice we issued (its record is in the datastore)
        self._issued: Dict[bytes, Issued] = {}
        self._preimage_key = preimage_key or record_key(offer_key_base)
        self._answers = PerPeerLimit(RateLimiter(ANSWER_BURST, ANSWER_REFILL_SECONDS),
                                     RateLimiter(ANSWER_OFFER_BURST, ANSWER_OFFER_REFILL_SECONDS))
        self.expiry, self._keep = _fallback_lifetime(network)
        self.forwarded_invreqs = 0

    def now(self) -> int:
        return int(self._clock())

    def load(self) -> None:
        """Index every online-fallback record once; damaged ones are deleted (they could never be paid)."""
        index: Dict[bytes, Issued] = {}
        for key, val, _ in self.node.ds_list(FALLBACK_PREFIX):
            try:
                h = bytes.fromhex(key[-1])
                if len(h) != 32:
                    raise DecodeError("fallback_invoice.key", "not a payment hash")
                f = decode_fallback(h, val)
            except (DecodeError, ValueError) as e:
                self._log(f"deleting unreadable fallback invoice record {'/'.join(key)}: {e}", "unusual")
                self.node.ds_delete(key)
                continue
            # records do not say when they were written: as if with the lifetime we give invoices now
            index[h] = Issued(f.offer_id, f.expires_at, f.expires_at - self.expiry)
        with self.lock:
            self._issued = index

    # ---- a forwarded invoice_request -> an invoice --------------------------------------------------
    def on_invoice_request(self, msg: Received, offer_id: bytes) -> None:
        """An invoice_request for our offer ``offer_id`` (its forward path's context says which) a payer sent
        to our server, forwarded to us because we are online: answer it
        with a normal BOLT 12 invoice (payment hash, so the payer gets proof of payment).  The preimage is
        stored (sealed) before the invoice goes out; :meth:`check_htlc` claims the HTLC against it.

        Anyone holding our offer can send these, so answers are rate-limited per (offer, incoming peer)
        within a per-offer cap over all peers, and the records they leave are bounded and expire (see
        :mod:`.policy`): when the bounds are full of records younger than ``MIN_AGE`` (invoices a payer
        may be paying right now) the request is dropped rather than one of them deleted.

        What remains: the forward path is known only to our server, so these normally all arrive from
        it (``source`` is the server, or unknown): every payer going through our server shares one
        bucket, and a stranger who sends invoice_requests to the server for our offer faster than
        ``ANSWER_REFILL_SECONDS`` (or fills ``MAX_PER_OFFER`` young records in ``MIN_AGE``) keeps other
        payers from getting an online-fallback invoice; they still get our static invoice from the
        server.  The per-peer key only separates requests that reach us through other peers."""
        msg.expect(m.INVOICE_REQUEST, "a forward path", needs_reply=False)
        with self.lock:
            now_f = self._clock()
            allowed = self._answers.allow(offer_id, msg.source, now_f)
        if not allowed:
            raise ContextError("rate_limited", PerPeerLimit.refused("invoice_request", offer_id, msg.source))
        invreq = InvoiceRequest.decode(msg.body)
        if invreq.offer_id != offer_id:
            raise DecodeError("invoice_request.offer", "not for the offer this forward path belongs to")
        self.forwarded_invreqs += 1
        self._log(f"forwarded invoice_request for offer {short_id(offer_id)} received "
                  f"(amount {invreq.invreq_amount}, reply path {'yes' if msg.reply_path else 'no'})", "info")
        signing_key = self._signing_key(offer_id)
        # BOLT 12: with an offer_amount the payer may leave the amount out, else must not ask less
        amount = invreq.invreq_amount if invreq.invreq_amount is not None else invreq.amount
        if invreq.amount is not None and amount is not None and amount < invreq.amount:
            return self._ignore("below_offer_amount", f"forwarded invoice_request for {amount} msat, "
                                f"below the offer's {invreq.amount}")
        if signing_key is None or msg.reply_path is None or not amount:
            return self._ignore("no_fallback", "forwarded invoice_request we cannot answer")
        now = self.now()
        preimage = os.urandom(32)
        payment_hash = hashlib.sha256(preimage).digest()
        paths, infos = payment_paths(self.node.node_id, self._incoming(), self.path_id(payment_hash),
                                     self.node.block_height(), self.expiry, self.final_cltv,
                                     random_bytes=os.urandom)
        invoice = build_invoice(invreq, signing_key, payment_hash, amount, now, paths, infos, self.expiry)
        sealed = seal_preimage(self._preimage_key, payment_hash, preimage, os.urandom(NONCE_LEN))
        # the note is for asyncreceive-listpayments, as on the static route
        rec = FallbackInvoice(payment_hash, offer_id, amount, now + self.expiry, sealed, True,
                              cap_note(invreq.payer_note))
        with self.lock:
            admit, doomed = fallbacks_to_delete(self._issued, now, admitting=offer_id, keep_after=self._keep)
            self._delete(doomed)
            if not admit:
                raise ContextError("rate_limited", f"invoice_request for offer {short_id(offer_id)}: every "
                                   "online-fallback record is of an invoice issued in the last minutes")
            self.node.ds_put(fallback_key(payment_hash), encode_fallback(rec))
            self._issued[payment_hash] = Issued(offer_id, rec.expires_at, now)
        self.t.send(msg.reply_path, m.INVOICE, invoice)
        self._log(f"answered with an invoice for {amount} msat (payment_hash {short_id(payment_hash)})", "info")

    # ---- an HTLC on one of its payment paths -> claim ------------------------------------------------
    def path_id(self, payment_hash: bytes) -> bytes:
        """The path_id of the payment paths in the invoice with this payment hash."""
        return self.t.ctx_key.path_id(b"invoice" + payment_hash)

    def check_htlc(self, records: Dict[int, bytes], data: EncryptedData, payment_hash: bytes, amount_msat: int,
                   cltv_expiry: int, height: int, now: int) -> Optional[Tuple[bytes, Verdict, Optional[str]]]:
        """None if the HTLC is not on an online-fallback invoice's path; else (offer_id, verdict, payer's
        note): ``claim`` with the preimage if it pays the invoice we issued with its payment hash."""
        if data.path_id is None or data.path_id != self.path_id(payment_hash):
            return None
        f = self.invoice(payment_hash)
        if f is None:
            return b"", Verdict("fail", "no invoice of ours with this payment_hash"), None
        v = check_terms(records, data, f.amount_msat, f.expires_at, amount_msat, cltv_expiry, height,
                        self.final_cltv, now)
        v.preimage = f.preimage
        return f.offer_id, v, f.payer_note

    def paid(self, payment_hash: bytes) -> None:
        """The invoice was paid (the payment record now answers for it): its record goes."""
        with self.lock:
            self._delete([payment_hash])

    # ---- the records ---------------------------------------------------------------------------------
    def expire(self, now: Optional[int] = None) -> None:
        """Delete the records of invoices past expiry (+ grace) and any over the bounds (the tick runs this)."""
        with self.lock:
            _, doomed = fallbacks_to_delete(self._issued, self.now() if now is None else now, keep_after=self._keep)
            self._delete(doomed)

    def _delete(self, hashes: List[bytes]) -> None:
        for h in hashes:
            self.node.ds_delete(fallback_key(h))
            self._issued.pop(h, None)
        if hashes:
            self._log(f"deleted {len(hashes)} online-fallback invoice record(s) (expired or over the bound)",
                      "debug")

    def count(self) -> int:
        with self.lock:
            return len(self._issued)

    def invoice(self, payment_hash: bytes) -> Optional[FallbackInvoice]:
        """The online-fallback invoice we issued with this payment hash, its preimage opened; None if we
        issued none (no datastore read) or its record is damaged (logged)."""
        with self.lock:
            if payment_hash not in self._issued:
                return None
        got = self.node.ds_get(fallback_key(payment_hash))
        if got is None:
            return None
        try:
            f = decode_fallback(payment_hash, got[0])
            pre = open_preimage(self._preimage_key, payment_hash, f.preimage) if f.sealed else f.preimage
        except DecodeError as e:
            self._log(f"unreadable fallback invoice record {short_id(payment_hash)}: {e}", "unusual")
            return None
        return FallbackInvoice(f.payment_hash, f.offer_id, f.amount_msat, f.expires_at, pre, False, f.payer_note)
