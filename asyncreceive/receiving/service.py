"""Getting paid while offline: the recipient's shell for held HTLCs and async HTLCs.

- ``held_htlc_available`` on a static invoice's TLV-236 path (context: one of our offers, not past the
  invoice's expiry + 2 h) is answered with ``release_held_htlc`` over its reply path, at most
  ``RELEASE_BURST`` at once per (offer, incoming peer), then one per ``RELEASE_REFILL_SECONDS``, and
  ``RELEASE_OFFER_BURST`` / one per ``RELEASE_OFFER_REFILL_SECONDS`` per offer over all peers (anyone
  holding the invoice can send them).  So junk from one peer does not use up a payer's answers from
  another; messages whose peer is not known (relayed by our server's mailbox, or on a path that ends
  at our node) share one bucket per offer.  An attacker with many peers can still use up the per-offer
  cap.  Duplicates within that are harmless: each gets the same answer.
- ``htlc_accepted`` (registered before CLN's keysend plugin): an HTLC whose final blinded hop carries a
  path_id from one of our static invoices, or from an online-fallback invoice (which the fallback,
  :mod:`..fallback.service`, checks), is checked (:mod:`.htlc`, the same checks for both) and resolved with the preimage, or failed; parts of a
  multi-part payment are held until their sum reaches the total or ``MPP_TIMEOUT`` passes.  HTLCs that
  are not ours are left to the next plugin.  The payment is written to the datastore *before* the HTLC is
  resolved.  A later HTLC with a recorded payment hash (a replay after a restart, when lightningd no
  longer has the path key) is resolved from that record only if it is on the same path (its encrypted
  data is one the record names, or decrypts to our path_id) and still pays enough; otherwise it is not
  ours to judge.
"""

import hashlib
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from ..crypto.blinding import EncryptedData
from ..crypto.context import ContextError
from ..errors import DecodeError
from ..shell.crashpoint import crashpoint
from ..shell.lightningd import NodeError
from ..shell.transport import Received, Transport
from ..recipient.service import F_OFFER_ID, RecipientService
from ..server.ratelimit import PerPeerLimit, RateLimiter
from ..wire import messages as m
from ..wire.bolt12.offer import Offer
from ..wire.records import BYTES, TU64, UTF8_REPLACE, Field, Table, array, fixed_bytes
from ..wire.tlv import decode_tlv
from ..logs import short_id
from ..wire.payment_hop import CURRENT_PATH_KEY, ENCRYPTED_RECIPIENT_DATA, parse_payload
from .htlc import INVALID_ONION_BLINDING, Part, PartSet, cap_note, check_htlc, onion_amounts

PAYMENT_PREFIX = ["asyncreceive", "v1", "recipient", "payment"]
MPP_TIMEOUT = 60
#: held_htlc_available answered per (offer, incoming peer): a burst of 10 (an LDK payer sends one on
#: every message path), then one every 6 s
RELEASE_BURST = 10
RELEASE_REFILL_SECONDS = 6.0
#: and per offer over all peers: a burst of 60, then one a second
RELEASE_OFFER_BURST = 60
RELEASE_OFFER_REFILL_SECONDS = 1.0
#: lightningd replays stored HTLCs at start, before it may be asked to decrypt (see on_htlc)
STARTUP_WAIT = 30
#: a payment record names at most this many paths (encrypted data digests) its parts came over
MAX_PATHS = 8
DIGEST = 32


def payment_key(payment_hash: bytes) -> List[str]:
    return PAYMENT_PREFIX + [payment_hash.hex()]


#: a payment received (asyncreceive/v1/recipient/payment/<hash>)
RECEIVED_PAYMENT_RECORD = Table("payment_record", [
    Field(0, "offer_id", BYTES, required=True),
    Field(2, "amount_msat", TU64, required=True),
    Field(4, "received_at", TU64, required=True),
    Field(6, "preimage", fixed_bytes(32), required=True),
    Field(8, "payer_note", UTF8_REPLACE),
    Field(9, "total_msat", TU64),               # not written: not known (0)
    Field(11, "paths", array(DIGEST)),
])


def encode_payment(offer_id: bytes, amount_msat: int, received_at: int, preimage: bytes,
                   payer_note: Optional[str], total_msat: int = 0, paths: Tuple[bytes, ...] = ()) -> bytes:
    """A received payment.  The preimage is stored clear: once paid, every hop of the route knows it, and
    asyncreceive-listpayments shows it as proof of payment.  ``paths``: sha256 of each distinct
    encrypted_recipient_data the parts came with (a replay is resolved only on one of them)."""
    return RECEIVED_PAYMENT_RECORD.encode({
        "offer_id": offer_id, "amount_msat": amount_msat, "received_at": received_at, "preimage": preimage,
        "payer_note": cap_note(payer_note) or None, "total_msat": total_msat or None,
        "paths": paths[:MAX_PATHS] or None})


def decode_payment(data: bytes) -> dict:
    """Raises only DecodeError on a damaged record."""
    r = RECEIVED_PAYMENT_RECORD.decode(data)
    return {**r, "offer_id": r["offer_id"].hex(), "preimage": r["preimage"].hex(), "total_msat": r["total_msat"] or 0,
            "paths": list(r["paths"] or ())}


class PaymentsService:
    def __init__(self, transport: Transport, recipient: RecipientService, log: Callable[[str, str], None],
                 notify: Callable[[dict], None], clock: Callable[[], float] = time.time,
                 wake: Optional[Callable[[float], None]] = None):
        self.t = transport
        self.node = transport.node
        self.recipient = recipient
        self._log = log
        self._notify = notify
        self._clock = clock
        #: ``wake(delay)``: have :meth:`run_due` called in ``delay`` seconds (the worker's wake-up), when an
        #: incomplete multi-part payment's ``MPP_TIMEOUT`` is over
        self._wake = wake
        self._lock = threading.Lock()
        #: payment_hash -> (its parts, their responders, digests of the paths they came over)
        self._sets: Dict[bytes, Tuple[PartSet, List, List[bytes]]] = {}
        self._releases = PerPeerLimit(RateLimiter(RELEASE_BURST, RELEASE_REFILL_SECONDS),
                                      RateLimiter(RELEASE_OFFER_BURST, RELEASE_OFFER_REFILL_SECONDS))
        self.released = 0

    # ---- held_htlc_available -> release_held_htlc --------------------------------------------------
    def _offer(self, offer_id: bytes) -> Optional[Offer]:
        with self.recipient.lock:
            for s in self.recipient.cache:
                if s.offer is not None and s.offer.offer_id == offer_id:
                    return Offer.decode(s.offer.offer)
        return None

    def on_held_htlc_available(self, msg: Received) -> None:
        msg.expect(m.HELD_HTLC_AVAILABLE, "a held-HTLC path")
        m.HeldHtlcAvailable.decode(msg.body)
        offer_id = msg.context.get(F_OFFER_ID)
        if self._offer(offer_id) is None:
            raise DecodeError("held_htlc_available", f"offer {short_id(offer_id)} is no longer ours")
        with self._lock:
            now = self._clock()
            allowed = self._releases.allow(offer_id, msg.source, now)
        if not allowed:
            raise ContextError("rate_limited", PerPeerLimit.refused("held_htlc_available", offer_id, msg.source))
        self.t.send(msg.reply_path, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode())
        self.released += 1
        self._log(f"released held HTLC for offer {short_id(offer_id)}", "info")

    # ---- htlc_accepted ------------------------------------------------------------------------------
    def _ours(self, path_id: Optional[bytes]) -> Optional[Tuple[bytes, Offer, Optional[int]]]:
        """(offer_id, offer, static invoice expiry) of the offer whose payment paths carry ``path_id``."""
        if path_id is None:
            return None
        with self.recipient.lock:
            for s in self.recipient.cache:
                if s.offer is not None and self._payment_path_id(s.offer.offer_id) == path_id:
                    return s.offer.offer_id, Offer.decode(s.offer.offer), s.offer.invoice_expires_at
        return None

    def _payment_path_id(self, offer_id: bytes) -> bytes:
        return self.t.ctx_key.path_id(b"payment" + offer_id)

    def on_htlc(self, onion: dict, htlc: dict, respond: Callable[[dict], None]) -> bool:
        """Decide on one HTLC.  Returns False (the caller answers ``continue``) if it is not ours;
        otherwise ``respond`` is called now or later (a held MPP part, or an HTLC replayed at start)."""
        try:
            records = parse_payload(bytes.fromhex(onion.get("payload", "")))
        except (DecodeError, ValueError):
            return False
        if records.get(ENCRYPTED_RECIPIENT_DATA) is None:
            return False
        if not self.t.running.is_set():
            # lightningd replays the HTLCs it stored when it starts, and before v26.04 it aborts if
            # decryptencrypteddata is called then.  This handler runs on the plugin's only I/O thread
            # (background=True only means the answer may come later), which must stay free to hear the
            # notification that sets `running`; so the decision waits on a thread of its own.  Answering
            # `continue` now instead would make lightningd fail an HTLC of ours as unknown.
            threading.Thread(target=self._decide_once_running, args=(records, htlc, respond), daemon=True,
                             name="htlc-at-start").start()
            return True
        return self._decide(records, htlc, respond)

    def _decide_once_running(self, records, htlc, respond) -> None:
        if not self.t.running.wait(STARTUP_WAIT):
            self._log(f"lightningd not running after {STARTUP_WAIT}s: deciding on HTLC "
                      f"{htlc.get('payment_hash', '')[:16]} without decrypting its path", "info")
        try:
            if self._decide(records, htlc, respond):
                return
        except Exception as e:  # lightningd's RPC failing (e.g. shutting down): let it decide
            self._log(f"HTLC {htlc.get('payment_hash', '')[:16]} left to lightningd: {e}", "unusual")
        respond({"result": "continue"})

    def _decide(self, records: Dict[int, bytes], htlc: dict, respond: Callable[[dict], None]) -> bool:
        enc = records[ENCRYPTED_RECIPIENT_DATA]
        payment_hash = bytes.fromhex(htlc["payment_hash"])
        amount = _msat(htlc["amount_msat"])
        data = self._path_data(records, htlc, enc)
        stored = self.node.ds_get(payment_key(payment_hash))
        if stored is not None:  # already decided (e.g. replayed after a restart): same answer, if same path
            pre = self._replay(payment_hash, stored[0], records, enc, data, amount)
            if pre is None:
                return False
            respond({"result": "resolve", "payment_key": pre.hex()})
            return True
        if data is None:
            return False  # not a path to us, or not ours to judge
        height = self.node.block_height()
        cltv = int(htlc["cltv_expiry"])
        now = int(self._clock())
        fallback = self.recipient.fallback.check_htlc(records, data, payment_hash, amount, cltv, height, now)
        if fallback is not None:
            offer_id, v, note = fallback
        else:
            found = self._ours(data.path_id)
            if found is None:
                return False
            offer_id, offer, invoice_expires_at = found
            v = check_htlc(records, data, offer, payment_hash, amount, cltv, height, self.recipient.final_cltv,
                           now, invoice_expires_at)
            note = v.invreq.payer_note if v.invreq is not None else None
        if v.action == "fail":
            self._log(f"refused async HTLC {short_id(payment_hash)} for offer {short_id(offer_id)}: {v.reason}",
                      "info")
            respond({"result": "fail", "failure_message": INVALID_ONION_BLINDING.hex()})
            return True
        part = Part((htlc.get("short_channel_id", ""), str(htlc.get("id"))), amount, cltv)
        digest = hashlib.sha256(enc).digest()
        with self._lock:
            pset, waiters, digests = self._sets.setdefault(payment_hash,
                                                           (PartSet(v.total_msat, self._clock()), [], []))
            complete = pset.add(part)
            waiters.append(respond)
            if digest not in digests:
                digests.append(digest)
            first_part = len(waiters) == 1
            if complete:
                del self._sets[payment_hash]
        if not complete:
            if first_part and self._wake is not None:
                self._wake(MPP_TIMEOUT)
            self._log(f"holding part of async payment {short_id(payment_hash)} "
                      f"({sum(p.amount_msat for p in pset.parts)}/{pset.total_msat} msat)", "debug")
            return True
        paid = sum(p.amount_msat for p in pset.parts)
        try:
            self.node.ds_put(payment_key(payment_hash), encode_payment(offer_id, paid, now, v.preimage, note,
                                                                       pset.total_msat, tuple(digests)))
        except Exception as e:  # never leave a part of ours unanswered in the hook
            recorded = self._recorded(payment_hash)
            self._log(f"async payment {short_id(payment_hash)}: recording it failed ({e}); "
                      + ("another thread recorded it: claiming" if recorded else "failing its parts"), "unusual")
            for r in waiters:
                r({"result": "resolve", "payment_key": v.preimage.hex()} if recorded else
                  {"result": "fail", "failure_message": INVALID_ONION_BLINDING.hex()})
            return True
        crashpoint("recipient-payment-recorded")
        if fallback is not None:
            self.recipient.fallback.paid(payment_hash)
        for r in waiters:
            r({"result": "resolve", "payment_key": v.preimage.hex()})
        self._log(f"received async payment {short_id(payment_hash)}: {paid} msat for offer {short_id(offer_id)}",
                  "info")
        self._notify({"payment_hash": payment_hash.hex(), "offer_id": offer_id.hex(), "amount_msat": paid,
                      "parts": len(pset.parts), "payer_note": cap_note(note)})
        return True

    def _recorded(self, payment_hash: bytes) -> bool:
        try:
            return self.node.ds_get(payment_key(payment_hash)) is not None
        except Exception:
            return False

    def _path_data(self, records, htlc: dict, enc: bytes) -> Optional[EncryptedData]:
        """Our hop's encrypted data, if it decrypts (None: not for us, no path key, or not running)."""
        path_key = records.get(CURRENT_PATH_KEY) or _extra_path_key(htlc.get("extra_tlvs"))
        if path_key is None or not self.t.running.is_set():
            return None
        try:
            plain, _ = self.node.decrypt_encrypted_data(enc, path_key)
            return EncryptedData.decode(plain)
        except (NodeError, DecodeError):
            return None

    def _replay(self, payment_hash: bytes, stored: bytes, records, enc: bytes, data: Optional[EncryptedData],
                amount: int) -> Optional[bytes]:
        """The recorded preimage, if this HTLC is on a path the payment came over (or one of ours for the
        same invoice) and pays what the onion and the recorded total ask; else None (not ours)."""
        try:
            rec = decode_payment(stored)
            total, fwd, _ = onion_amounts(records, amount)
        except DecodeError as e:
            self._log(f"HTLC {short_id(payment_hash)} not resolved from its record: {e}", "unusual")
            return None
        ours = {self.recipient.fallback.path_id(payment_hash), self._payment_path_id(bytes.fromhex(rec["offer_id"]))}
        same_path = hashlib.sha256(enc).digest() in rec["paths"] or (data is not None and data.path_id in ours)
        if not same_path or amount < fwd or total < rec["total_msat"]:
            self._log(f"HTLC {short_id(payment_hash)} has a recorded payment_hash but is not on its path "
                      f"or pays too little: not ours", "info")
            return None
        return bytes.fromhex(rec["preimage"])

    def run_due(self) -> None:
        """The wake-up: fail the parts of multi-part payments still incomplete ``MPP_TIMEOUT`` after their
        first part; ask for the next wake-up."""
        now = self._clock()
        with self._lock:
            due = [h for h, (pset, _, _) in self._sets.items() if now >= pset.first_seen + MPP_TIMEOUT]
            expired = [(h, self._sets.pop(h)) for h in due]
            nxt = min((pset.first_seen + MPP_TIMEOUT for pset, _, _ in self._sets.values()), default=None)
        for payment_hash, entry in expired:
            self._log(f"async payment {short_id(payment_hash)} incomplete after {MPP_TIMEOUT}s: failing its parts",
                      "info")
            for r in entry[1]:
                r({"result": "fail", "failure_message": INVALID_ONION_BLINDING.hex()})
        if nxt is not None and self._wake is not None:
            self._wake(max(0.0, nxt - now))

    def list_payments(self) -> List[dict]:
        out = []
        for key, val, _ in self.node.ds_list(PAYMENT_PREFIX):
            try:
                p = decode_payment(val)
            except DecodeError as e:
                self._log(f"skipping unreadable payment record {'/'.join(key)}: {e}", "unusual")
                continue
            del p["paths"], p["total_msat"]
            p["payment_hash"] = key[-1]
            out.append(p)
        return sorted(out, key=lambda p: p["received_at"])


def _msat(v) -> int:
    return int(str(v).replace("msat", ""))


def _extra_path_key(extra_tlvs: Optional[str]) -> Optional[bytes]:
    """update_add_htlc's TLV 0 (blinding point / path key), as lightningd passes it on."""
    if not extra_tlvs:
        return None
    try:
        return dict(decode_tlv(bytes.fromhex(extra_tlvs), "update_add_tlvs", known=lambda t: True).records).get(0)
    except (DecodeError, ValueError):
        return None

