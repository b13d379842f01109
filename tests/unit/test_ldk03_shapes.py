"""LDK 0.3's path shapes, synthesised with our own blinding code (lightning 0.3.0-rc3; ldk-node on it is
not released, so no live test yet).

- Reply paths (and a static invoice's held-HTLC message paths) of 4 hops, padded to one length, with no
  compact introduction: ``introduction -> payer (dummy) -> payer (dummy) -> payer``. Our sends must reach
  the last hop through every layer.
- Blinded payment paths with 3 dummy hops: ``introduction -> recipient (dummy) x3 -> recipient``. Our payer
  must still fit the invoice_request and its preimage in the 1300-byte payment onion, or say clearly that
  it cannot.

Each onion is built as lightningd's ``createonion`` would (our Sphinx code) and peeled hop by hop with
the nodes' keys, so the test checks what each hop really gets, not just sizes.
"""

import hashlib
import os

import pytest
from coincurve import PrivateKey

from asyncreceive.crypto.blinding import (EncryptedData, PaymentConstraints, PaymentRelay, blinded_privkey,
                                          build_blinded_path, decrypt_hop, pad_payloads)
from asyncreceive.crypto.onion import SMALL_ONION, build_outgoing
from asyncreceive.crypto.sphinx import build_packet, peel_packet
from asyncreceive.paying.payer import PAYMENT_ONION_SIZE, build_invoice_request, build_payment_onion
from asyncreceive.wire.payment_hop import (AMT_TO_FORWARD, CURRENT_PATH_KEY, ENCRYPTED_RECIPIENT_DATA, INVREQ_LDK,
                                           KEYSEND_PREIMAGE)
from asyncreceive.wire import messages as m
from asyncreceive.recipient.invoice import CHAINS
from asyncreceive.wire.bolt12.invoice_request import InvoiceRequest
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
from asyncreceive.wire.paths import BlindedPayInfo
from asyncreceive.wire.tlv import decode_tlv

#: LDK's dummy-hop record in an encrypted_data_tlv (empty value), and its context record
LDK_DUMMY, LDK_CONTEXT = 65539, 65537
NOW = 1_800_000_000


def key():
    k = os.urandom(32)
    return k, PrivateKey(k).public_key.format()


def ldk03_reply_path(intro, payer, context=os.urandom(40)):
    """introduction -> payer (2 dummy hops) -> payer, every hop padded to the same length."""
    datas = [EncryptedData(next_node_id=payer[1]), EncryptedData(unknown=((LDK_DUMMY, b""),)),
             EncryptedData(unknown=((LDK_DUMMY, b""),)), EncryptedData(unknown=((LDK_CONTEXT, context),))]
    datas = pad_payloads(datas)
    assert len({len(d.encode()) for d in datas}) == 1
    nodes = [intro[1], payer[1], payer[1], payer[1]]
    return build_blinded_path(os.urandom(32), [(n, d.encode()) for n, d in zip(nodes, datas)])


def peel_message(onion, privs):
    """Peel an onion message hop by hop (each with its node's real key): each hop's decrypted data, and the
    last hop's payload."""
    packet = build_packet(os.urandom(32), list(onion.hops), onion.onion_size)
    path_key, datas = onion.path_key, []
    for i, priv in enumerate(privs):
        payload, packet = peel_packet(blinded_privkey(priv, path_key), packet)
        msg = m.OnionMessagePayload.decode(payload)
        data, path_key = decrypt_hop(priv, path_key, msg.encrypted_recipient_data)
        datas.append(data)
        assert (packet is None) == (i == len(privs) - 1)
    return datas, msg


@pytest.mark.parametrize("msg_type, body", [(m.RELEASE_HELD_HTLC, b"\x00"), (m.STATIC_INVOICE, os.urandom(900))])
def test_our_reply_reaches_the_end_of_a_4_hop_padded_ldk03_reply_path(msg_type, body):
    us, intro, payer = key(), key(), key()
    path = ldk03_reply_path(intro, payer)
    assert len(path.hops) == 4 and path.first_node_id == intro[1]        # no compact introduction
    onion = build_outgoing(us[1], path, msg_type, body)
    datas, last = peel_message(onion, [us[0], intro[0], payer[0], payer[0], payer[0]])
    assert datas[1].next_node_id == payer[1]
    assert [d.unknown for d in datas[2:4]] == [((LDK_DUMMY, b""),)] * 2
    assert dict(datas[4].unknown)[LDK_CONTEXT] and last.message_type == msg_type and last.message == body
    print(f"type {msg_type}: {len(onion.hops)} hops, onion of {onion.onion_size} bytes")
    if msg_type == m.RELEASE_HELD_HTLC:
        assert onion.onion_size == SMALL_ONION


def ldk03_payment_path(intro, recipient, scid=(110 << 40) | (1 << 16), context=24):
    """introduction (forwards over ``scid``) -> recipient (3 dummy hops) -> recipient, padded alike. The
    final hop: a 32-byte path_id (LDK's payment secret), constraints and ``context`` bytes of payment context
    (LDK's async-offer context is a nonce and its framing: about 24)."""
    constraints = PaymentConstraints(NOW // 600 + 5000, 1)
    datas = [EncryptedData(short_channel_id=scid, payment_relay=PaymentRelay(40, 100, 1000),
                           payment_constraints=constraints)]
    datas += [EncryptedData(unknown=((LDK_DUMMY, b""),))] * 3
    datas.append(EncryptedData(path_id=os.urandom(32), payment_constraints=constraints,
                               unknown=((LDK_CONTEXT, os.urandom(context)),)))
    datas = pad_payloads(datas)
    nodes = [intro[1]] + [recipient[1]] * 4
    return build_blinded_path(os.urandom(32), [(n, d.encode()) for n, d in zip(nodes, datas)])


def ldk_async_offer(server, issuer):
    """An offer as an LDK recipient makes them: no amount, no description, one compact-ish server path."""
    offer_path = build_blinded_path(os.urandom(32), [(server[1], EncryptedData(path_id=os.urandom(32)).encode())])
    return Offer.build(issuer[1], [offer_path], absolute_expiry=NOW + 365 * 86400, chains=[CHAINS["regtest"]])


def static_invoice(offer, issuer, pay_path):
    msg_path = ldk03_reply_path(key(), key())
    return StaticInvoice.build(offer, [pay_path], [BlindedPayInfo(1000, 100, 80, 1, 10 ** 10)], NOW, 86400,
                               [msg_path], b"", issuer[0])


def largest_note(inv, offer):
    """The longest payer_note whose invoice_request still fits this invoice's first payment path."""
    lo, hi = 0, 1300
    while lo < hi:
        mid = (lo + hi + 1) // 2
        invreq = build_invoice_request(offer, 50_000, os.urandom(32), chain=CHAINS["regtest"], payer_note="x" * mid)
        try:
            build_payment_onion(inv, invreq, os.urandom(32), 50_000, 800)
            lo = mid
        except ValueError:
            hi = mid - 1
    return lo


@pytest.mark.parametrize("context", [24, 60])
def test_our_payer_fits_the_invreq_in_a_payment_path_with_3_dummy_hops(context):
    intro, recipient, server, issuer = key(), key(), key(), key()
    offer = ldk_async_offer(server, issuer)
    inv = static_invoice(offer, issuer, ldk03_payment_path(intro, recipient, context=context))
    assert len(inv.paths[0].hops) == 5
    invreq = build_invoice_request(offer, 50_000, os.urandom(32), chain=CHAINS["regtest"], payer_note="thanks")
    preimage = os.urandom(32)
    po = build_payment_onion(inv, invreq, preimage, 50_000, 800)
    need = sum(len(p) + 35 for _, p in po.hops)
    print(f"payment context {context} B: payment onion {len(po.hops)} hops, {need} of {PAYMENT_ONION_SIZE} bytes; "
          f"invoice_request {len(invreq.encode())} bytes; the longest payer_note that fits: "
          f"{largest_note(inv, offer)} bytes")
    # peel it as the introduction and the recipient would: the recipient gets the invreq and the preimage
    payment_hash = hashlib.sha256(preimage).digest()
    packet = build_packet(os.urandom(32), po.hops, PAYMENT_ONION_SIZE, assocdata=payment_hash)
    path_key = inv.paths[0].first_path_key
    privs = [intro[0]] + [recipient[0]] * 4
    for i, priv in enumerate(privs):
        hop_key = priv if i == 0 else blinded_privkey(priv, path_key)
        payload, packet = peel_packet(hop_key, packet, assocdata=payment_hash)
        recs = dict(decode_tlv(payload, "payload", allow_unknown_even=True).records)
        if i == 0:
            assert recs[CURRENT_PATH_KEY] == path_key
        data, path_key = decrypt_hop(priv, path_key, recs[ENCRYPTED_RECIPIENT_DATA])
        if 1 <= i <= 3:
            assert dict(data.unknown) == {LDK_DUMMY: b""} and set(recs) == {ENCRYPTED_RECIPIENT_DATA}
    assert packet is None
    assert recs[KEYSEND_PREIMAGE] == preimage and recs[AMT_TO_FORWARD]
    assert InvoiceRequest.decode(recs[INVREQ_LDK]).encode() == invreq.encode()


def test_an_invreq_too_big_for_the_payment_onion_is_a_clear_error():
    intro, recipient, server, issuer = key(), key(), key(), key()
    offer = ldk_async_offer(server, issuer)
    inv = static_invoice(offer, issuer, ldk03_payment_path(intro, recipient))
    invreq = build_invoice_request(offer, 50_000, os.urandom(32), chain=CHAINS["regtest"], payer_note="x" * 700)
    with pytest.raises(ValueError, match=r"the payment onion needs \d+ bytes, more than 1300: this path has 5 "
                                         r"blinded hops and our invoice_request is \d+ bytes"):
        build_payment_onion(inv, invreq, os.urandom(32), 50_000, 800)
