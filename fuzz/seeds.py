"""Seed inputs: valid encodings made with our own encoders (fixed keys), plus every hex blob and BOLT 12
string found in the BOLT spec vectors (read at run time from ASYNCRECEIVE_VECTORS or
../shared/vectors/bolts, never copied into the repository)."""

import json
import re
from typing import Dict, List

from asyncreceive.crypto.blinding import (EncryptedData, PaymentConstraints, PaymentRelay, build_blinded_path,
                                          pubkey_of)
from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.crypto.sphinx import build_packet, encode_onion_message
from asyncreceive.paying.payer import build_invoice_request, build_payment_onion
from asyncreceive.recipient.invoice import build_static_invoice
from asyncreceive.server.mailbox import HeldMessage, MailboxRecord
from asyncreceive.wire import messages as m
from asyncreceive.wire.bolt12.bech32 import HRP_INVOICE_REQUEST, bech32_encode
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.paths import (BlindedPath, BlindedPayInfo, SciddirOrPubkey, encode_path_list, encode_paths,
                                     encode_payinfos)
from asyncreceive.wire.tlv import bigsize, encode_tlv, tu64, u16

from . import targets as t


def recipient_records() -> List[bytes]:
    """A slot held by two servers (ready, dedicated fields), an empty one, and a servers record."""
    from asyncreceive.recipient import cache as c, store
    holders = (c.Holder(b"A" * 8, PATHS[0].encode(), PATHS[2].encode(), pub(3), t.NOW, t.NOW + 10 ** 7),
               c.Holder(b"B" * 8, PATHS[1].encode(), PATHS[2].encode(), b"", None, None))
    offer = c.CachedOffer(OFFER.encode(), b"\x01" * 32, holders, t.NOW + 10 ** 7, t.NOW, t.NOW, t.NOW + 99,
                          b"\x05" * 16, 1000, "fuzz", "shop")
    slots = [c.Slot(3, c.READY, offer, 1, t.NOW + 5, t.NOW, t.NOW), c.Slot(0)]
    return [b"\x00" + store.encode_slot(x) for x in slots] + [
        b"\x01" + store.encode_servers([encode_path_list(PATHS[:1]), encode_path_list(PATHS)])]


def key(i: int) -> bytes:
    return bytes([i]) * 32


def pub(i: int) -> bytes:
    return pubkey_of(key(i))


SCID = (700 << 40) | (3 << 16) | 1
HOP_DATAS = [
    EncryptedData(next_node_id=pub(3)),
    EncryptedData(path_id=b"\x07" * 32, unknown=((65537, PathContext(Kind.OFFER, t.NOW + 60).encode()),)),
    EncryptedData(padding=b"\x00" * 5, short_channel_id=SCID, payment_relay=PaymentRelay(40, 100, 1000),
                  payment_constraints=PaymentConstraints(800_000, 1), allowed_features=b""),
    EncryptedData(next_node_id=pub(4), next_path_key_override=pub(5), unknown=((561, b"\x12\x34"),)),
]
PATHS = [
    build_blinded_path(key(1), [(pub(2), HOP_DATAS[0].encode()), (pub(3), HOP_DATAS[1].encode())]),
    build_blinded_path(key(6), [(pub(7), HOP_DATAS[2].encode())], SciddirOrPubkey(scid=SCID, direction=1)),
    build_blinded_path(key(8), [(pub(2), HOP_DATAS[3].encode()), (pub(4), b""), (pub(5), b"\x01")]),
]
PAYINFOS = [BlindedPayInfo(1000, 100, 42, 1, 2 ** 40), BlindedPayInfo(0, 0, 18, 1, 2 ** 63, b"\x02\x00\x00")]
CONTEXTS = [PathContext(k, t.NOW + 3600 if k % 2 else None, {4: b"phone", 6: u16(3)}) for k in Kind]
COMPACT = [PathContext(k, t.NOW + 60) for k in Kind]

OFFER = Offer.build(pub(9), [PATHS[0]], absolute_expiry=t.NOW + 10 ** 7, description="fuzz", amount=1000,
                    chains=[bytes(32)])
#: (not used for the invoice_request: build_invoice_request cannot sign an offer with records above 1e9)
OFFER_ODD = Offer.build(pub(9), [PATHS[2]], extra_records=[(1_000_000_001, b"odd")])
INVREQ = build_invoice_request(OFFER, 1000, key(10), payer_note="note", metadata=b"\x01" * 16)
STATIC_INVOICE = build_static_invoice(OFFER, key(9), t.NOW, PATHS[:2], PAYINFOS, PATHS[1:])
REGISTRATION = m.MailboxRegistration.sign(key(11), pub(12), PATHS[0])


def phantom_onion() -> bytes:
    """A wire onion_message that peel_phantom (fuzz.targets.PHANTOM_KEY) opens."""
    path = build_blinded_path(key(13), [(pubkey_of(t.PHANTOM_KEY), HOP_DATAS[1].encode())])
    payload = m.OnionMessagePayload(m.HELD_HTLC_AVAILABLE, b"\x00", PATHS[1], path.hops[0].encrypted_recipient_data)
    return encode_onion_message(path.first_path_key, build_packet(key(14), [(path.hops[0].blinded_node_id,
                                                                              payload.encode())]))


def htlc_payload() -> bytes:
    onion = build_payment_onion(STATIC_INVOICE, INVREQ, key(15), 1000, 800)
    body = onion.hops[-1][1]
    return bigsize(len(body)) + body


def async_bodies() -> Dict[int, bytes]:
    return {
        m.OFFER_PATHS_REQUEST: m.OfferPathsRequest(3).encode(),
        m.OFFER_PATHS: m.OfferPaths(PATHS[:2], t.NOW + 10 ** 7, pub(12)).encode(),
        m.SERVE_STATIC_INVOICE: m.ServeStaticInvoice(STATIC_INVOICE.encode(), PATHS[0], REGISTRATION).encode(),
        m.STATIC_INVOICE_PERSISTED: m.StaticInvoicePersisted().encode(),
        m.HELD_HTLC_AVAILABLE: m.HeldHtlcAvailable().encode(),
        m.RELEASE_HELD_HTLC: m.ReleaseHeldHtlc().encode(),
    }


def _routing_info(payload: bytes, next_hmac: bytes, size: int) -> bytes:
    return (bigsize(len(payload)) + payload + next_hmac).ljust(size, b"\x00")


def encoder_seeds() -> Dict[str, List[bytes]]:
    tlvs = [e.encode() for e in HOP_DATAS] + [OFFER.encode(), INVREQ.encode(), STATIC_INVOICE.encode()]
    onionmsgs = [m.OnionMessagePayload(ty, body, PATHS[i % 2], HOP_DATAS[0].encode()).encode()
                 for i, (ty, body) in enumerate(async_bodies().items())]
    onionmsgs.append(m.OnionMessagePayload(65541 + 1, b"\x00", None, None, ((77, b"x"),)).encode())
    offer_str = OFFER.to_string()
    return {
        "tlv": tlvs + [bigsize(n) for n in (0, 0xFC, 0xFD, 0x10000, 2 ** 32)] + [tu64(n) for n in (1, 2 ** 64 - 1)],
        "blinded_paths": [p.encode() for p in PATHS] + [encode_paths(PATHS), encode_path_list(PATHS),
                                                        encode_path_list(PATHS[:1])],
        "payinfo": [encode_payinfos(PAYINFOS), PAYINFOS[0].encode()],
        "encrypted_data": [e.encode() for e in HOP_DATAS],
        "path_context": [c.encode() for c in CONTEXTS] + [(bytes([len(c.encode())]) + c.encode()) for c in COMPACT],
        "onionmsg_tlv": onionmsgs,
        "async_messages": [bytes([t.ASYNC_TYPES.index(ty)]) + body for ty, body in async_bodies().items()]
                          + [bytes([t.ASYNC_TYPES.index(d)]) + async_bodies()[ldk] for d, ldk in m.BLIP66_DRAFT_TYPES.items()],
        "mailbox": [b"\x00" + REGISTRATION.encode(), b"\x01" + MailboxRecord(REGISTRATION, t.NOW).encode(),
                    b"\x02" + HeldMessage(t.NOW, phantom_onion()).encode()],
        "recipient_records": recipient_records(),
        "offer": [OFFER.encode(), OFFER_ODD.encode(), Offer.build(pub(9), []).encode()],
        "bolt12_string": [s.encode() for s in (offer_str, OFFER.to_string(split=20), offer_str.upper(),
                                               bech32_encode(HRP_INVOICE_REQUEST, INVREQ.encode()))],
        "invoice_request": [INVREQ.encode()],
        "static_invoice": [STATIC_INVOICE.encode()],
        "sphinx": [b"\x00" + phantom_onion(), b"\x01" + _routing_info(b"\x02\x01\x00", bytes(32), 100),
                   b"\x01" + _routing_info(b"\x04\x02ab", b"\x01" * 32, 200)],
        "htlc_payload": [htlc_payload(), b"\x00"],
    }


# ---- spec vectors ----------------------------------------------------------------------------------------

_HEX = re.compile(r"(?:[0-9a-f]{2})+")


def vector_blobs() -> Dict[str, List[bytes]]:
    """{"hex": every hex string in the vectors, "strings": every BOLT 12 string}; empty if not found."""
    from tests.vectors import vectors_dir

    out = {"hex": [], "strings": []}
    d = vectors_dir()
    if d is None:
        return out

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            if _HEX.fullmatch(x):
                out["hex"].append(bytes.fromhex(x))
            elif x[:2].lower() == "ln" or "+" in x:
                out["strings"].append(x.encode("utf-8", "replace"))

    for f in sorted(d.glob("*.json")):
        with open(f) as fh:
            walk(json.load(fh))
    return out


def structured_seeds(name: str) -> List[bytes]:
    from . import structured as s

    w = s.world()
    if name == "onion_phantom":
        bodies = dict(async_bodies())
        bodies.update({m.INVOICE_REQUEST: build_invoice_request(w.offer, 50_000, key(16)).encode(),
                       m.STATIC_INVOICE: w.invoice.encode(), m.INVOICE: INVREQ.encode(),
                       m.INVOICE_ERROR: encode_tlv([(5, b"bad")]), m.HELD_ONION_MESSAGE: phantom_onion()})
        out = []
        for route in range(len(w.routes)):
            for ty, body in bodies.items():
                out.append(s.onion_phantom_input(route, ty, body))
            before = bigsize(2) + bigsize(len(w.reply_path.encode())) + w.reply_path.encode()
            out.append(s.onion_phantom_raw(route, before, encode_tlv([(m.HELD_HTLC_AVAILABLE, b"\x00")])))
        return out
    return [s.htlc_input(w, flags) for flags in (1, 3, 0, 1 | 4, 1 | 0xF0)] + [s.htlc_input(w, 1 | 8, 30_000)]


def seeds(name: str) -> List[bytes]:
    target = t.get(name)
    if target.structured:
        return structured_seeds(name)
    out = list(encoder_seeds().get(name, []))
    vec = vector_blobs()
    out += vec["strings"] if name == "bolt12_string" else vec["hex"]
    return [s[:target.max_len] for s in out]
