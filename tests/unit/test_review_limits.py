"""Review fixes: rate limits and record bounds that one stranger could use to starve real payers, and the
server's mailbox keeping what it has not really delivered (in-memory network, real crypto)."""

import os

from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.node.transport import Received
from asyncreceive.payments import service as ps
from asyncreceive.payments.payer import build_invoice_request
from asyncreceive.recipient import fallback as fb
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.recipient.service import F_OFFER_ID, HELD_HTLC_GRACE
from asyncreceive.wire import messages as m

from .test_protocol import mailbox_world


def held_path_via(w, peer):
    """A held-HTLC path ``peer -> recipient -> phantom`` for the recipient's offer, as its static
    invoice carries for each channel peer: what arrives on it has ``source`` = ``peer``."""
    offer_id = w.recipient.cache[0].offer.offer_id
    ctx = PathContext(Kind.HELD_HTLC, w.now + 3600 + HELD_HTLC_GRACE, {F_OFFER_ID: offer_id})
    return w.rt.make_path(ctx, via=[peer.node_id])


def send_held(w, sender, path):
    sender.send(path, m.HELD_HTLC_AVAILABLE, m.HeldHtlcAvailable().encode(),
                reply_context=PathContext(Kind.PAYER_REPLY, None, {4: b"payment-1"}))


# ---- 1: held_htlc_available answers per (offer, incoming peer) ----------------------------------------
def test_junk_from_one_peer_does_not_use_up_a_payers_release():
    w = mailbox_world()
    w.rt.running.set()
    anode, at = w.net.add("attacker")
    rel = []
    at.on_kind(Kind.PAYER_REPLY, rel.append)
    for _ in range(ps.RELEASE_BURST + 5):            # the attacker's peer drains its bucket ...
        send_held(w, at, held_path_via(w, anode))
    assert len(rel) == ps.RELEASE_BURST and w.drops(w.rt)["rate_limited"] == 5
    w.now += 1
    send_held(w, w.pt, held_path_via(w, w.pnode))      # ... a payer arriving through another peer is released
    assert len(w.released) == 1 and w.released[0].msg_type == m.RELEASE_HELD_HTLC


def test_releases_per_offer_are_capped_over_all_peers():
    w = mailbox_world()
    w.rt.running.set()
    peers = [w.net.add(f"peer{i}") for i in range(ps.RELEASE_OFFER_BURST // ps.RELEASE_BURST + 1)]
    for node, t in peers:
        for _ in range(ps.RELEASE_BURST):
            send_held(w, t, held_path_via(w, node))
    assert w.payments.released == ps.RELEASE_OFFER_BURST
    assert w.drops(w.rt)["rate_limited"] == ps.RELEASE_BURST
