"""Structured fuzz targets that get past the crypto, on the in-memory network of tests/unit/fakes.py.

A :class:`FuzzWorld` wires a static invoice server, a recipient (with its payments service) and a payer
as tests/unit/test_protocol.py does; the recipient holds one ready async offer and the payer has one
payment waiting for a static invoice and one waiting for its release.  The fuzzer's bytes then become:

``onion_phantom``
    a *validly encrypted* onion message to one of our phantom keys, on one of the paths the roles
    hand out (every context kind, so every handler is reached), whose final-hop plaintext is fuzzed.
    Byte 0 picks the path; byte 1 bit 0 picks the form:

    - message (bit 0 clear): byte 2 picks the message type (every type we accept, both numberings),
      bit 1 of byte 1 adds a valid reply path, and the rest is the message body;
    - raw (bit 0 set): bytes 2-3 (u16) split the rest; the onionmsg_tlv is ``rest[:k] ||
      encrypted_recipient_data record || rest[k:]``, so reply paths and messages are fuzzed as bytes.

    It goes in through ``Transport.handle_forward_fail`` of the node lightningd would notify (the one
    before the phantom), exactly as the plugin's worker runs it.
``htlc_accepted``
    ``PaymentsService.on_htlc`` with the final hop of a real static invoice's payment path: byte 0 holds
    flags (bit 0: payment_hash from the preimage record, else zeros; bit 1: path key in
    update_add_htlc's TLVs, else in the payload; bits 2-3: a smaller HTLC amount, an MPP part; bits 4-7:
    an earlier cltv_expiry), bytes 1-2 split the rest around the valid ``encrypted_recipient_data`` and
    ``current_path_key`` records.

Both fail on any exception the plugin would log as BROKEN and on any BROKEN log line.
"""

import hashlib
import os
import time
from typing import List, Tuple

from pyln.client import RpcError

from asyncreceive.app import route
from asyncreceive.crypto.blinding import decrypt_hop
from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.crypto.onion import onion_size_for
from asyncreceive.crypto.sphinx import build_packet, encode_onion_message
from asyncreceive.shell.worker import Worker
from asyncreceive.paying.service import PayService
from asyncreceive.paying.payer import build_invoice_request, build_payment_onion
from asyncreceive.wire.payment_hop import CURRENT_PATH_KEY, ENCRYPTED_RECIPIENT_DATA
from asyncreceive.receiving.service import PaymentsService
from asyncreceive.wire import messages as m
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.paths import BlindedPath, decode_path_list
from asyncreceive.wire.tlv import bigsize, encode_record, encode_tlv, tu64, u16

from .targets import Failure, target

#: a fresh world after this many inputs, so state (stored invoices, held messages, payments) stays small
INPUTS_PER_WORLD = 2000
FAR = 4_000_000_000   # an absolute expiry far ahead of the world clock
#: every message type a phantom path accepts: BOLT 12's, held/release, both numberings, ours
MESSAGE_TYPES = [m.INVOICE_REQUEST, m.INVOICE, m.INVOICE_ERROR, m.STATIC_INVOICE, m.HELD_HTLC_AVAILABLE,
                 m.RELEASE_HELD_HTLC, *sorted(m.BLIP66_DRAFT_TYPES.values()), *sorted(m.BLIP66_DRAFT_TYPES),
                 m.HELD_ONION_MESSAGE]
SESSION_KEY = b"\x44" * 32


class FuzzWorld:
    def __init__(self):
        from tests.unit.test_protocol import World, stored_invoice

        w = self.w = World(slots=1)
        self.log = w.net.log
        log = lambda msg, level="info": self.log.append(("svc", level, msg))  # noqa: E731
        w.payments = PaymentsService(w.rt, w.recipient, log, lambda p: None, clock=lambda: w.now)
        w.pnode, w.pt = w.net.add("payer")
        # no wake-ups (retries are not run); sending the HTLC is lightningd's sendonion: not modelled
        w.pay = PayService(w.pt, "regtest", log, 3600, clock=lambda: w.now,
                           spawn=lambda fn: None)
        route(w.rt, recipient=w.recipient, payments=w.payments)
        route(w.pt, pay=w.pay)
        self.worker = Worker(lambda msg, level="info": self.log.append(("worker", level, msg)))
        w.server.load()
        enrolled = w.enrol()
        w.recipient.tick(start=True)
        slot = w.recipient.cache[0]
        if slot.offer is None or slot.status != "ready":
            raise RuntimeError(f"fuzz world: the recipient's slot is not ready ({slot.status})")
        self.offer = Offer.decode(slot.offer.offer)
        self.invoice = stored_invoice(w, 0)
        offer_id = slot.offer.offer_id
        # payment 1 waits for its static invoice (the server is offline), payment 2 for its release
        w.snode.online = False
        waiting_invoice = w.pay.pay(str(self.offer), 50_000, "fuzz")["payment_id"]
        w.snode.online, w.rnode.online = True, False
        waiting_release = w.pay.pay(str(self.offer), 50_000, None)["payment_id"]
        w.rnode.online = True
        st, rt, pt = w.st, w.rt, w.pt
        paths: List[BlindedPath] = [
            *decode_path_list(bytes.fromhex(enrolled["paths_hex"])),                          # CLIENT
            st.make_path(PathContext(Kind.SERVE_REPLY, FAR, {4: b"phone", 6: u16(0)})),
            *self.offer.paths,                                                                 # OFFER
            rt.make_path(PathContext(Kind.OFFER_PATHS_REPLY, FAR, {4: u16(0)})),
            rt.make_path(PathContext(Kind.PERSISTED_REPLY, FAR, {4: offer_id, 6: tu64(slot.offer.invoice_created_at)})),
            *self.invoice.message_paths,                                        # HELD_HTLC (mailbox and direct)
            rt.make_path(PathContext(Kind.FORWARD_INVREQ, FAR, {4: offer_id})),
            rt.mailbox_registration(w.snode.node_id).delivery_path,                            # MAILBOX
            *(pt.make_path(PathContext(Kind.PAYER_REPLY, FAR, {4: bytes.fromhex(p)}))
              for p in (waiting_invoice, waiting_release)),
            st.make_path(PathContext(Kind.PROBE)),                                             # no handler
        ]
        self.routes = [self._route(p) for p in paths]
        self.reply_path = pt.make_path(PathContext(Kind.PAYER_REPLY, FAR, {4: bytes.fromhex(waiting_release)}))
        self.inputs = 0
        del self.log[:]

    def _route(self, path: BlindedPath) -> Tuple[object, bytes, bytes, object]:
        """(transport lightningd notifies, phantom id, path key at the phantom hop, phantom hop)."""
        key, node_id, notifier = path.first_path_key, path.first_node_id, None
        for hop in path.hops[:-1]:
            node = self.w.net.nodes[node_id]
            data, key = decrypt_hop(node.priv, key, hop.encrypted_recipient_data)
            notifier, node_id = node, data.next_node_id
        return self.w.net.by_node[notifier.node_id], node_id, key, path.hops[-1]

    def deliver(self, route: int, payload: bytes) -> None:
        transport, phantom, key, hop = self.routes[route % len(self.routes)]
        if not payload:
            return
        try:
            size = onion_size_for([payload])
        except ValueError:
            return  # larger than any onion message
        packet = build_packet(SESSION_KEY, [(hop.blinded_node_id, payload)], size=size)
        note = {"next_node_id": phantom.hex(), "outgoing": encode_onion_message(key, packet).hex()}
        self.run(transport.handle_forward_fail, note)

    def run(self, fn, *args):
        """Run a handler as the plugin's worker does (RpcError: 'unusual'; anything else: 'broken'),
        then fail on any BROKEN line."""
        self.worker._call(fn, args)
        self.check_log()

    def check_log(self) -> None:
        broken = [e for e in self.log if e[1] == "broken"]
        del self.log[:]
        if broken:
            raise Failure("BROKEN log line: " + "\n".join(f"{who}: {text}" for who, _, text in broken))

    def tick(self) -> None:
        self.inputs += 1
        self.w.now += 1


_world = None
#: seconds spent building worlds (the per-input time bound leaves it out)
setup_seconds = 0.0


def reset() -> None:
    """Forget the world (for callers that keep running other code, e.g. pytest)."""
    global _world
    _world = None


def world() -> FuzzWorld:
    global _world, setup_seconds
    if _world is None or _world.inputs >= INPUTS_PER_WORLD:
        t0 = time.process_time()
        _world = FuzzWorld()
        setup_seconds += time.process_time() - t0
    _world.tick()
    return _world


@target("onion_phantom", structured=True, max_len=8192)
def fuzz_onion_phantom(data: bytes) -> None:
    if len(data) < 4:
        return
    w = world()
    route = data[0]
    if data[1] & 1:
        k = int.from_bytes(data[2:4], "big")
        rest = data[4:]
        enc = w.routes[route % len(w.routes)][3].encrypted_recipient_data
        payload = rest[:k] + encode_record(m.ONIONMSG_ENCRYPTED_RECIPIENT_DATA, enc) + rest[k:]
    else:
        enc = w.routes[route % len(w.routes)][3].encrypted_recipient_data
        reply = w.reply_path if data[1] & 2 else None
        payload = m.OnionMessagePayload(MESSAGE_TYPES[data[2] % len(MESSAGE_TYPES)], data[3:], reply, enc).encode()
    w.deliver(route, payload)


def onion_phantom_input(route: int, msg_type: int, body: bytes, reply: bool = True) -> bytes:
    return bytes([route, 2 if reply else 0, MESSAGE_TYPES.index(msg_type)]) + body


def onion_phantom_raw(route: int, before: bytes, after: bytes) -> bytes:
    return bytes([route, 1]) + u16(len(before)) + before + after


# ---- htlc_accepted -------------------------------------------------------------------------------------

def _final_hop(w: FuzzWorld) -> Tuple[bytes, bytes]:
    """(encrypted_recipient_data, path key) of the recipient's hop on the static invoice's payment path."""
    path = w.invoice.paths[0]
    key, node_id = path.first_path_key, path.first_node_id
    for hop in path.hops[:-1]:
        data, key = decrypt_hop(w.w.net.nodes[node_id].priv, key, hop.encrypted_recipient_data)
        node_id = data.next_node_id
    return path.hops[-1].encrypted_recipient_data, key


@target("htlc_accepted", structured=True, max_len=4096)
def fuzz_htlc_accepted(data: bytes) -> None:
    if len(data) < 3:
        return
    w = world()
    flags, k, rest = data[0], int.from_bytes(data[1:3], "big"), data[3:]
    enc, key = _final_hop(w)
    ours = encode_record(ENCRYPTED_RECIPIENT_DATA, enc)
    if not flags & 2:
        ours += encode_record(CURRENT_PATH_KEY, key)
    body = rest[:k] + ours + rest[k:]
    preimage = _record(body, 5482373484)
    payment_hash = hashlib.sha256(preimage).digest() if flags & 1 and preimage else bytes(32)
    onion = {"payload": (bigsize(len(body)) + body).hex()}
    htlc = {"payment_hash": payment_hash.hex(), "amount_msat": f"{50_000 - ((flags >> 2) & 3) * 10_000}msat",
            "cltv_expiry": w.w.rnode.height + 200 - (flags >> 4) * 20, "id": w.inputs, "short_channel_id": "1x1x1"}
    if flags & 2:
        htlc["extra_tlvs"] = encode_tlv([(0, key)]).hex()
    answers = []
    w.run(w.w.payments.on_htlc, onion, htlc, answers.append)
    if len(answers) > 1:
        raise Failure(f"on_htlc answered one HTLC {len(answers)} times: {answers}")


def _record(body: bytes, t: int):
    from asyncreceive.errors import DecodeError
    from asyncreceive.wire.tlv import decode_tlv
    try:
        return decode_tlv(body, "payload", allow_unknown_even=True).get(t)
    except DecodeError:
        return None


def htlc_input(w: FuzzWorld, flags: int = 1, part: int = 50_000) -> bytes:
    """A valid final-hop payload paying 50 000 msat (``part`` of it in this HTLC) for the world's static
    invoice, split around our two records."""
    invreq = build_invoice_request(w.offer, 50_000, os.urandom(32))
    onion = build_payment_onion(w.invoice, invreq, os.urandom(32), part, w.w.rnode.height, total_msat=50_000)
    recs = [r for r in _decode_all(onion.hops[-1][1]) if r[0] not in (ENCRYPTED_RECIPIENT_DATA, CURRENT_PATH_KEY)]
    before = encode_tlv([r for r in recs if r[0] < ENCRYPTED_RECIPIENT_DATA])
    after = encode_tlv([r for r in recs if r[0] > CURRENT_PATH_KEY])
    return bytes([flags]) + u16(len(before)) + before + after


def _decode_all(payload: bytes):
    from asyncreceive.wire.tlv import decode_tlv
    return decode_tlv(payload, "payload", allow_unknown_even=True).records
