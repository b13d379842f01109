"""Getting paid while offline: the recipient's shell for held HTLCs and async HTLCs.

- ``held_htlc_available`` on a static invoice's TLV-236 path (context: one of our offers, not past the
  invoice's expiry + 2 h) is answered with ``release_held_htlc`` over its reply path.  Duplicates are
  harmless: each gets the same answer.
- ``htlc_accepted`` (registered before CLN's keysend plugin): an HTLC whose final blinded hop carries a
  path_id from one of our static invoices is checked (:mod:`.receive`) and resolved with the sender's
  preimage, or failed; parts of a multi-part payment are held until their sum reaches the total or
  ``MPP_TIMEOUT`` passes.  HTLCs that are not ours are left to the next plugin.  The payment is written
  to the datastore *before* the HTLC is resolved, and a replay after a restart (when lightningd no longer
  has the path key) is resolved from that record.
"""

import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

from ..crypto.blinding import EncryptedData
from ..crypto.context import Kind
from ..errors import DecodeError
from ..node.crashpoint import crashpoint
from ..node.lightningd import NodeError
from ..node.transport import Received, Transport
from ..recipient.service import F_OFFER_ID, RecipientService
from ..wire import messages as m
from ..wire.bolt12 import Offer
from ..wire.tlv import decode_tlv, decode_tu, encode_tlv, tu64
from ..recipient.store import fallback_key
from .receive import (CURRENT_PATH_KEY, ENCRYPTED_RECIPIENT_DATA, INVALID_ONION_BLINDING, TOTAL_AMOUNT, Part,
                      PartSet, Verdict, check_htlc, parse_payload)

PAYMENT_PREFIX = ["asyncreceive", "v1", "recipient", "payment"]
MPP_TIMEOUT = 60


def payment_key(payment_hash: bytes) -> List[str]:
    return PAYMENT_PREFIX + [payment_hash.hex()]


def encode_payment(offer_id: bytes, amount_msat: int, received_at: int, preimage: bytes,
                   payer_note: Optional[str]) -> bytes:
    recs = [(0, offer_id), (2, tu64(amount_msat)), (4, tu64(received_at)), (6, preimage)]
    if payer_note:
        recs.append((8, payer_note.encode()))
    return encode_tlv(recs)


def decode_payment(data: bytes) -> dict:
    r = dict(decode_tlv(data, "payment_record", known={0, 2, 4, 6, 8}).records)
    return {"offer_id": r[0].hex(), "amount_msat": decode_tu(r[2], 8, "amount"),
            "received_at": decode_tu(r[4], 8, "received_at"), "preimage": r[6].hex(),
            "payer_note": r[8].decode("utf-8", "replace") if 8 in r else None}


class PaymentsService:
    def __init__(self, transport: Transport, recipient: RecipientService, log: Callable[[str, str], None],
                 notify: Callable[[dict], None], clock: Callable[[], float] = time.time):
        self.t = transport
        self.node = transport.node
        self.recipient = recipient
        self._log = log
        self._notify = notify
        self._clock = clock
        self._lock = threading.Lock()
        self._sets: Dict[bytes, Tuple[PartSet, List]] = {}
        self.released = 0
        transport.on_kind(Kind.HELD_HTLC, self.on_held_htlc_available)

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
            raise DecodeError("held_htlc_available", f"offer {offer_id.hex()[:16]} is no longer ours")
        self.t.send(msg.reply_path, m.RELEASE_HELD_HTLC, m.ReleaseHeldHtlc().encode())
        self.released += 1
        self._log(f"released held HTLC for offer {offer_id.hex()[:16]}", "info")

    # ---- htlc_accepted ------------------------------------------------------------------------------
    def _ours(self, path_id: Optional[bytes]) -> Optional[Tuple[bytes, Offer]]:
        if path_id is None:
            return None
        with self.recipient.lock:
            for s in self.recipient.cache:
                if s.offer is not None and self.t.ctx_key.path_id(b"payment" + s.offer.offer_id) == path_id:
                    return s.offer.offer_id, Offer.decode(s.offer.offer)
        return None

    def on_htlc(self, onion: dict, htlc: dict, respond: Callable[[dict], None]) -> bool:
        """Decide on one HTLC.  Returns False (the caller answers ``continue``) if it is not ours;
        otherwise ``respond`` is called now or, for a held MPP part, later."""
        try:
            records = parse_payload(bytes.fromhex(onion.get("payload", "")))
        except (DecodeError, ValueError):
            return False
        enc = records.get(ENCRYPTED_RECIPIENT_DATA)
        if enc is None:
            return False
        payment_hash = bytes.fromhex(htlc["payment_hash"])
        stored = self.node.ds_get(payment_key(payment_hash))
        if stored is not None:  # already decided (e.g. replayed after a restart): same answer
            respond({"result": "resolve", "payment_key": decode_payment(stored[0])["preimage"]})
            return True
        path_key = records.get(CURRENT_PATH_KEY) or _extra_path_key(htlc.get("extra_tlvs"))
        if path_key is None:
            return False
        try:
            plain, _ = self.node.decrypt_encrypted_data(enc, path_key)
            data = EncryptedData.decode(plain)
        except (NodeError, DecodeError):
            return False  # not a path to us, or not ours to judge
        amount = _msat(htlc["amount_msat"])
        height = self.node.block_height()
        if data.path_id is not None and data.path_id == self.recipient.fallback_path_id(payment_hash):
            offer_id, v, note = self._fallback_verdict(records, payment_hash, amount, int(htlc["cltv_expiry"]),
                                                       height)
        else:
            found = self._ours(data.path_id)
            if found is None:
                return False
            offer_id, offer = found
            v = check_htlc(records, data, offer, payment_hash, amount, int(htlc["cltv_expiry"]),
                           height, self.recipient.final_cltv, int(self._clock()))
            note = v.invreq.payer_note if v.invreq is not None else None
        if v.action == "fail":
            self._log(f"refused async HTLC {payment_hash.hex()[:16]} for offer {offer_id.hex()[:16]}: {v.reason}",
                      "info")
            respond({"result": "fail", "failure_message": INVALID_ONION_BLINDING.hex()})
            return True
        part = Part(str(htlc.get("id")) + htlc.get("short_channel_id", ""), amount, int(htlc["cltv_expiry"]))
        with self._lock:
            pset, waiters = self._sets.setdefault(payment_hash, (PartSet(v.total_msat, self._clock()), []))
            complete = pset.add(part)
            waiters.append(respond)
            if not complete:
                if len(waiters) == 1:
                    threading.Timer(MPP_TIMEOUT, self._expire, args=(payment_hash,)).start()
                self._log(f"holding part of async payment {payment_hash.hex()[:16]} "
                          f"({sum(p.amount_msat for p in pset.parts)}/{pset.total_msat} msat)", "debug")
                return True
            del self._sets[payment_hash]
        paid = sum(p.amount_msat for p in pset.parts)
        self.node.ds_put(payment_key(payment_hash), encode_payment(offer_id, paid, int(self._clock()),
                                                                   v.preimage, note))
        crashpoint("recipient-payment-recorded")
        for r in waiters:
            r({"result": "resolve", "payment_key": v.preimage.hex()})
        self._log(f"received async payment {payment_hash.hex()[:16]}: {paid} msat for offer {offer_id.hex()[:16]}",
                  "info")
        self._notify({"payment_hash": payment_hash.hex(), "offer_id": offer_id.hex(), "amount_msat": paid,
                      "parts": len(pset.parts), "payer_note": note})
        return True

    def _fallback_verdict(self, records, payment_hash: bytes, amount: int, cltv: int, height: int):
        """An HTLC paying an online-fallback invoice we issued (we hold its preimage and the payer's
        note, from its invoice_request): (offer_id, verdict, payer_note)."""
        got = self.node.ds_get(fallback_key(payment_hash))
        if got is None:
            return b"", Verdict("fail", "no invoice of ours with this payment_hash"), None
        r = dict(decode_tlv(got[0], "fallback_invoice", known=lambda t: True).records)
        note = r[8].decode("utf-8", "replace") if 8 in r else None
        want = decode_tu(r[2], 8, "amount")
        total = decode_tu(records[TOTAL_AMOUNT], 8, "total_amount_msat") if TOTAL_AMOUNT in records else amount
        if total < want:
            return r[4], Verdict("fail", f"total {total} msat below the invoice amount {want}"), note
        if cltv < height + self.recipient.final_cltv:
            return r[4], Verdict("fail", f"cltv_expiry {cltv} too soon"), note
        return r[4], Verdict("claim", preimage=r[0], total_msat=total), note

    def _expire(self, payment_hash: bytes) -> None:
        with self._lock:
            entry = self._sets.pop(payment_hash, None)
        if entry is None:
            return
        self._log(f"async payment {payment_hash.hex()[:16]} incomplete after {MPP_TIMEOUT}s: failing its parts",
                  "info")
        for r in entry[1]:
            r({"result": "fail", "failure_message": INVALID_ONION_BLINDING.hex()})

    def list_payments(self) -> List[dict]:
        out = []
        for key, val, _ in self.node.ds_list(PAYMENT_PREFIX):
            p = decode_payment(val)
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

