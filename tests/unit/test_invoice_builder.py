"""Blinded payment paths and the async offer / static invoice the recipient builds."""

import os

from coincurve import PrivateKey

from asyncreceive.crypto.blinding import decrypt_hop
from asyncreceive.recipient.invoice import (CHAINS, IncomingChannel, build_offer, build_static_invoice,
                                            offer_signing_key, payment_paths, scid_int)
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice

NOW = 1_800_000_000

def keys():
    k = os.urandom(32)
    return k, PrivateKey(k).public_key.format()

def test_payment_path_through_peer_decrypts_to_relay_constraints_and_scid():
    peer_priv, peer = keys()
    us_priv, us = keys()
    ch = IncomingChannel(peer, scid_int("103x1x0"), 1000, 25, 6, 2, 0, 700_000_000)  # no other public channels
    paths, infos = payment_paths(us, [ch], b"\x05" * 32, height=200, relative_expiry=86400 * 30, final_cltv=18,
                                 random_bytes=os.urandom)
    assert len(paths) == 1 and paths[0].first_node_id == peer
    hop0, next_key = decrypt_hop(peer_priv, paths[0].first_path_key, paths[0].hops[0].encrypted_recipient_data)
    assert hop0.short_channel_id == scid_int("103x1x0")
    assert (hop0.payment_relay.cltv_expiry_delta, hop0.payment_relay.fee_proportional_millionths,
            hop0.payment_relay.fee_base_msat) == (6, 25, 1000)
    max_cltv = 200 + max(86400 * 30 // 540, 2016) + 3
    assert hop0.payment_constraints.max_cltv_expiry == max_cltv + 6
    hop1, _ = decrypt_hop(us_priv, next_key, paths[0].hops[1].encrypted_recipient_data)
    assert hop1.path_id == b"\x05" * 32 and hop1.payment_constraints.max_cltv_expiry == max_cltv
    assert (infos[0].fee_base_msat, infos[0].cltv_expiry_delta, infos[0].htlc_maximum_msat) == (1000, 24, 700_000_000)

def test_no_channels_gives_a_direct_path():
    us_priv, us = keys()
    paths, infos = payment_paths(us, [], b"\x01" * 32, height=10, relative_expiry=100, final_cltv=18,
                                 random_bytes=os.urandom)
    assert paths[0].first_node_id == us and len(paths[0].hops) == 1
    hop, _ = decrypt_hop(us_priv, paths[0].first_path_key, paths[0].hops[0].encrypted_recipient_data)
    assert hop.path_id == b"\x01" * 32
    assert infos[0].cltv_expiry_delta == 18

def test_offer_and_invoice_as_ldk_expects():
    _, srv = keys()
    from asyncreceive.wire.paths import BlindedHop, BlindedPath, SciddirOrPubkey
    server_path = BlindedPath(SciddirOrPubkey(node_id=srv), keys()[1], (BlindedHop(keys()[1], b"\x00" * 50),))
    k1 = offer_signing_key(b"\x09" * 32, b"n1" * 8)
    k2 = offer_signing_key(b"\x09" * 32, b"n2" * 8)
    assert k1 != k2 and offer_signing_key(b"\x09" * 32, b"n1" * 8) == k1
    offer = build_offer(k1, [server_path], NOW + 365 * 86400, "regtest")
    assert offer.chains == [CHAINS["regtest"]] and offer.amount is None and offer.description is None
    assert build_offer(k1, [server_path], None, "bitcoin").chains == []
    assert Offer.decode(offer.encode()) == offer
    _, us = keys()
    pays, infos = payment_paths(us, [], b"\x01" * 32, 10, 100, 18, random_bytes=os.urandom)
    inv = build_static_invoice(offer, k1, NOW, pays, infos, [server_path, server_path])
    d = StaticInvoice.decode(inv.encode())
    assert d.offer_records() == offer.stream and d.node_id == offer.issuer_id
    assert d.expires_at == NOW + 365 * 86400 and d.features == bytes.fromhex("020000")
    assert len(d.message_paths) == 2


def test_payment_paths_are_pure_given_the_randomness():
    """No randomness inside: the same keys in give the same paths out."""
    us = PrivateKey().public_key.format()
    ch = IncomingChannel(PrivateKey().public_key.format(), (200 << 40) | (1 << 16), 1000, 100, 40, 1, 10 ** 9)

    def keys():
        seq = iter([b"\x11" * 32, b"\x22" * 32])
        return lambda n: next(seq)
    a = payment_paths(us, [ch], b"\x05" * 32, 200, 86400, 18, random_bytes=keys())
    b = payment_paths(us, [ch], b"\x05" * 32, 200, 86400, 18, random_bytes=keys())
    assert a == b
