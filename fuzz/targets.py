"""Fuzz targets: one function per parser that reads network or lightningd input.

Each target takes the fuzzer's bytes and returns normally when the parser either accepted the input
correctly or refused it with a *declared* error (DecodeError, ContextError).  It raises when it found a
bug:

- any other exception escaping the parser (IndexError, struct.error, KeyError, ...);
- :class:`Failure`: an accepted input that does not re-encode to the same bytes (a non-canonical
  encoding accepted) where the codec has an encoder and does not document that it normalizes, or an
  accessor of an accepted object that raises.

The per-input time bound and the "never log broken" rule are checked by the engines (fuzz/engine.py,
fuzz/run.py) and the structured targets (fuzz/structured.py).
"""

from dataclasses import dataclass
from typing import Callable, Dict, Optional

from asyncreceive.crypto.blinding import EncryptedData, ecdh, hmac256
from asyncreceive.crypto.context import ContextError, ContextKey
from asyncreceive.crypto.onion import peel_phantom
from asyncreceive.crypto.sphinx import HMAC_LEN, _mac, chacha_stream, peel_packet
from asyncreceive.errors import DecodeError
from asyncreceive.wire.payment_hop import parse_payload
from asyncreceive.recipient import store as recipient_store
from asyncreceive.server.mailbox import HeldMessage, MailboxRecord
from asyncreceive.wire.bolt12.bech32 import bech32_decode, bech32_encode
from asyncreceive.wire.bolt12.invoice_request import InvoiceRequest
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.static_invoice import StaticInvoice
from asyncreceive.wire import messages as m
from asyncreceive.wire.paths import (BlindedPath, decode_path_list, decode_paths, decode_payinfos, decode_server_paths,
                                     encode_path_list, encode_paths, encode_payinfos)
from asyncreceive.wire.tlv import Reader, bigsize, decode_tlv, decode_tu, encode_tlv, tu64

#: a fixed "now" for expiry checks, and fixed keys (the fuzzer must not depend on randomness)
NOW = 1_800_000_000
CONTEXT_KEY = ContextKey(b"\x11" * 32)
PEEL_KEY = b"\x22" * 32
PHANTOM_KEY = b"\x33" * 32


class Failure(AssertionError):
    """The input exposed a bug (not a refusal)."""


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    structured: bool = False       # drives the services (slower; its own time bound)
    max_len: int = 4096


TARGETS: Dict[str, Target] = {}


def target(name: str, structured: bool = False, max_len: int = 4096):
    def register(fn):
        TARGETS[name] = Target(name, fn, structured, max_len)
        return fn
    return register


def same(got: bytes, want: bytes, what: str) -> None:
    if got != want:
        raise Failure(f"{what}: accepted input does not re-encode to itself\n input {want.hex()}\n again {got.hex()}")


def only_odd_records_dropped(full: bytes, kept: bytes, what: str) -> None:
    """For codecs documented to drop unknown odd records: ``kept`` must be ``full`` minus some odd records."""
    a = dict(decode_tlv(full, what, allow_unknown_even=True).records)
    b = dict(decode_tlv(kept, what, allow_unknown_even=True).records)
    if any(a.get(t) != v for t, v in b.items()) or any(t % 2 == 0 for t in set(a) - set(b)):
        raise Failure(f"{what}: re-encoding changed more than unknown odd records\n input {full.hex()}\n "
                      f"again {kept.hex()}")


def refused(fn, *args, errors=(DecodeError,)):
    """``fn(*args)``, or None if it refused the input with a declared error."""
    try:
        return fn(*args)
    except errors:
        return None


# ---- BOLT 1 -----------------------------------------------------------------------------------------

@target("tlv")
def fuzz_tlv(data: bytes) -> None:
    stream = refused(decode_tlv, data, "fuzz", None, True)
    if stream is not None:
        same(stream.encode(), data, "TlvStream")
        strict = refused(decode_tlv, data, "fuzz", {2, 4})  # unknown even types other than 2 and 4 refused
        if strict is not None and any(t % 2 == 0 and t not in (2, 4) for t in strict.types()):
            raise Failure(f"decode_tlv accepted an unknown even type: {strict.types()}")
    r = Reader(data)
    for _ in range(8):  # a few BigSizes back to back (decode_tlv above reads them all in TLV form)
        if r.at_end():
            break
        start = r.pos
        n = refused(r.bigsize, "bigsize")
        if n is None:
            break
        same(bigsize(n), data[start:r.pos], "BigSize")
    v = refused(decode_tu, data, 8, "tu64")
    if v is not None:
        same(tu64(v), data, "tu64")


# ---- BOLT 4 blinded paths and BOLT 12 payinfo -------------------------------------------------------

@target("blinded_paths")
def fuzz_blinded_paths(data: bytes) -> None:
    one = refused(BlindedPath.decode, data)
    if one is not None:
        same(one.encode(), data, "BlindedPath")
    many = refused(decode_paths, data)
    if many is not None:
        same(encode_paths(many), data, "decode_paths")
    counted = refused(decode_path_list, data)
    if counted is not None:
        same(encode_path_list(counted), data, "decode_path_list (LDK u16 count)")
    server = refused(decode_server_paths, data)
    if server is not None:
        same(server[0].encode() if one is not None else encode_path_list(server), data, "decode_server_paths")
        if (one is None) == (counted is None):
            raise Failure("decode_server_paths: input is both, or neither, a blinded_path and a counted list")
    for p in (one, *(many or ()), *(counted or ())):
        if p is not None:
            p.final_blinded_node_id, p.introduction.scid_str() if p.first_node_id is None else None


@target("payinfo")
def fuzz_payinfo(data: bytes) -> None:
    infos = refused(decode_payinfos, data)
    if infos is not None:
        same(encode_payinfos(infos), data, "decode_payinfos")


@target("encrypted_data")
def fuzz_encrypted_data(data: bytes) -> None:
    d = refused(EncryptedData.decode, data)
    if d is not None:
        same(d.encode(), data, "EncryptedData")


# ---- our path contexts --------------------------------------------------------------------------------

@target("path_context")
def fuzz_path_context(data: bytes) -> None:
    """The full context (type 65537, MAC'd by the path_id) and the compact path_id, both past their MAC:
    the MAC is computed here, so the fuzzer reaches the context decoder and the expiry/kind checks."""
    key = CONTEXT_KEY
    ctx = refused(key.verify, data, key.path_id(data), NOW, errors=(ContextError,))
    if ctx is not None:
        same(ctx.encode(), data, "PathContext")
    if refused(key.verify, data, key.path_id(data + b"\x00"), NOW, errors=(ContextError,)) is not None:
        raise Failure("ContextKey.verify accepted a path_id that does not authenticate the context")
    head = data[:16].ljust(16, b"\x00")
    pid = head + key.path_id(head)[:16]
    compact = refused(key.verify_compact, pid, NOW, errors=(ContextError,))
    if compact is not None:
        same(key.compact_path_id(compact), pid, "compact path_id")
    refused(key.verify_compact, data, NOW, errors=(ContextError,))   # the raw bytes as a path_id


# ---- onion messages -------------------------------------------------------------------------------------

@target("onionmsg_tlv")
def fuzz_onionmsg_tlv(data: bytes) -> None:
    p = refused(m.OnionMessagePayload.decode, data)
    if p is not None:
        same(p.encode(), data, "OnionMessagePayload")


def _struct_tlv(body: bytes) -> bytes:
    """The TLV stream inside LDK's ``BigSize(len) || TLV stream`` framing."""
    r = Reader(body)
    return r.read(r.bigsize("length"), "tlv")


#: every async-payments message number we accept: LDK's (75540..), the bLIP-66 draft's (65540..), 72, 74
ASYNC_TYPES = sorted(set(m.BLIP66_DRAFT_TYPES) | set(m.ASYNC_MESSAGES))


@target("async_messages")
def fuzz_async_messages(data: bytes) -> None:
    """First byte: which message (both numberings); the rest: its body.  The struct framing drops
    unknown odd records (records.Table.decode skips them), so only that normalization is allowed."""
    if not data:
        return
    t = ASYNC_TYPES[data[0] % len(ASYNC_TYPES)]
    body = data[1:]
    msg = refused(m.decode_async_message, t, body)
    if msg is None:
        return
    again = msg.encode()
    if again != body:
        only_odd_records_dropped(_struct_tlv(body), _struct_tlv(again), m.message_name(t))
    if m.decode_async_message(t, again) != msg:
        raise Failure(f"{m.message_name(t)}: decode(encode(x)) != x")
    if isinstance(msg, m.ServeStaticInvoice) and msg.mailbox is not None:
        msg.mailbox.verify(b"\x02" * 33)


@target("mailbox")
def fuzz_mailbox(data: bytes) -> None:
    """First byte: MailboxRegistration (the wire record), MailboxRecord or HeldMessage (datastore)."""
    if not data:
        return
    kind, body = data[0] % 3, data[1:]
    if kind == 0:
        reg = refused(m.MailboxRegistration.decode, body)
        if reg is not None:
            same(reg.encode(), body, "MailboxRegistration")
            reg.verify(b"\x02" * 33)
        return
    cls = MailboxRecord if kind == 1 else HeldMessage
    rec = refused(cls.decode, body)
    if rec is not None:
        again = rec.encode()
        if again != body:
            only_odd_records_dropped(body, again, cls.__name__)
        if cls.decode(again) != rec:
            raise Failure(f"{cls.__name__}: decode(encode(x)) != x")


@target("recipient_records")
def fuzz_recipient_records(data: bytes) -> None:
    """First byte: a slot record (with an older version's one-server fields, or its holders) or the
    servers record, as read from the datastore at start."""
    if not data:
        return
    body = data[1:]
    if data[0] % 2 == 0:
        slot = refused(recipient_store.decode_slot, body, b"legacy")
        if slot is not None and recipient_store.decode_slot(recipient_store.encode_slot(slot)) != slot:
            raise Failure("slot record: decode(encode(x)) != x")
        return
    servers = refused(recipient_store.decode_servers, body)
    if servers is not None:
        same(recipient_store.encode_servers(servers), body, "servers record")


# ---- BOLT 12 ---------------------------------------------------------------------------------------------

def _read_offer_fields(o) -> None:
    """Accessors of an accepted offer/invoice_request/static invoice must not raise (validated at decode)."""
    (o.chains, o.metadata, o.currency, o.amount, o.description, o.offer_features, o.absolute_expiry,
     o.offer_paths, o.issuer, o.quantity_max, o.issuer_id, o.offer_id, o.offer_is_expired(NOW))


@target("offer")
def fuzz_offer(data: bytes) -> None:
    o = refused(Offer.decode, data)
    if o is not None:
        same(o.encode(), data, "Offer")
        _read_offer_fields(o)
        o.paths, o.features, o.is_expired(NOW)
        if Offer.from_string(o.to_string()) != o:
            raise Failure("Offer: from_string(to_string(x)) != x")


def _text(data: bytes) -> str:
    return data.decode("latin-1")


@target("bolt12_string")
def fuzz_bolt12_string(data: bytes) -> None:
    """bech32_decode and the string forms of offers and invoice_requests (``+`` joins, upper case)."""
    s = _text(data)
    got = refused(bech32_decode, s)
    if got is not None:
        hrp, raw = got
        again = refused(bech32_encode, hrp, raw, errors=(ValueError,))  # it takes fewer hrps
        if again is not None and s == s.lower() and "+" not in s:
            same(again.encode("latin-1"), data, "bech32")
    o = refused(Offer.from_string, s)
    if o is not None:
        again = o.to_string()
        if bech32_decode(again) != ("lno", o.encode()):
            raise Failure("Offer.to_string does not decode back to the offer")
        if "+" not in s and s == s.lower():
            same(again.encode("latin-1"), data, "Offer string")
    refused(InvoiceRequest.from_string, s, False)


@target("invoice_request")
def fuzz_invoice_request(data: bytes) -> None:
    ir = refused(InvoiceRequest.decode, data, False)
    if ir is not None:
        same(ir.encode(), data, "InvoiceRequest")
        _read_offer_fields(ir)
        ir.invreq_metadata, ir.chain, ir.invreq_amount, ir.quantity, ir.payer_id, ir.payer_note, ir.signature
        refused(InvoiceRequest.decode, data, True)


@target("static_invoice", max_len=8192)
def fuzz_static_invoice(data: bytes) -> None:
    inv = refused(StaticInvoice.decode, data, False)
    if inv is not None:
        same(inv.encode(), data, "StaticInvoice")
        _read_offer_fields(inv)
        (inv.paths, inv.payinfos, inv.created_at, inv.relative_expiry, inv.expires_at, inv.is_expired(NOW),
         inv.fallbacks, inv.features, inv.node_id, inv.message_paths, inv.signature, inv.offer)
        refused(StaticInvoice.decode, data, True)


# ---- sphinx ---------------------------------------------------------------------------------------------

def encrypt_routing_info(priv: bytes, eph: bytes, plain: bytes) -> bytes:
    """A packet whose routing info decrypts (with ``priv``) to ``plain``: gets the fuzzer past the HMAC."""
    ss = ecdh(priv, eph)
    stream = chacha_stream(hmac256(b"rho", ss), len(plain))
    info = bytes(a ^ b for a, b in zip(plain, stream))
    return b"\x00" + eph + info + _mac(hmac256(b"mu", ss), info)


EPHEMERAL = bytes.fromhex("02" + "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")


@target("sphinx")
def fuzz_sphinx(data: bytes) -> None:
    """First byte even: ``data[1:]`` is a whole wire onion_message for peel_phantom (refused at the HMAC
    unless it is a replayed seed).  Odd: ``data[1:]`` is the *decrypted* routing info of a packet of that
    size, so peel_packet's payload framing, next-hop shift and key derivation are reached."""
    if not data:
        return
    if data[0] % 2 == 0:
        refused(peel_phantom, PHANTOM_KEY, data[1:])
        return
    plain = data[1:]
    if not plain:
        return
    payload, nxt = refused(peel_packet, PEEL_KEY, encrypt_routing_info(PEEL_KEY, EPHEMERAL, plain)) or (None, None)
    if payload is not None:
        framed = bigsize(len(payload)) + payload
        if plain[:len(framed)] != framed:
            raise Failure("peel_packet returned a payload that is not the framed bytes at the front")
        if nxt is not None and len(nxt) != 1 + 33 + len(plain) + HMAC_LEN:
            raise Failure(f"peel_packet: next packet has {len(nxt)} bytes for a {len(plain)}-byte routing info")


# ---- lightningd's htlc_accepted payload ----------------------------------------------------------------

@target("htlc_payload")
def fuzz_htlc_payload(data: bytes) -> None:
    recs = refused(parse_payload, data)
    if recs is not None:
        body = encode_tlv(recs.items())
        same(bigsize(len(body)) + body, data, "parse_payload")


def get(name: str) -> Optional[Target]:
    from . import structured  # noqa: F401  (registers the structured targets)
    return TARGETS.get(name)


def all_targets() -> Dict[str, Target]:
    from . import structured  # noqa: F401
    return TARGETS
