"""Onion-message payloads: the final-hop ``onionmsg_tlv`` and the async-payments messages.

Type numbers.  LDK sends 75540..75546 for the four bLIP-66 server messages; the bLIP draft says
65540..65546.  We send LDK's numbers and accept both (``canonical_type`` maps the draft's to LDK's).

Bodies.  Every async-payments message (the bLIP-66 four plus held_htlc_available 72 and
release_held_htlc 74) is LDK's "TLV struct": ``BigSize(len) || TLV stream``.  The empty messages are
therefore the single byte ``00``.  BOLT 12 messages (invoice_request 64, invoice 66, invoice_error 68,
static_invoice 70) are raw TLV streams with no prefix.
"""

import hashlib
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..errors import DecodeError
from .bolt12.signature import schnorr_sign, schnorr_verify
from .paths import BlindedPath
from .records import (BLINDED_PATH, BLINDED_PATHS, BYTES, NONEMPTY_BYTES, POINT, U16, U64, Field, Table, TableRecord,
                      record_codec)
from .tlv import Reader, bigsize, decode_point, encode_tlv

# onionmsg_tlv record types
ONIONMSG_REPLY_PATH = 2
ONIONMSG_ENCRYPTED_RECIPIENT_DATA = 4

INVOICE_REQUEST = 64
INVOICE = 66
INVOICE_ERROR = 68
STATIC_INVOICE = 70
HELD_HTLC_AVAILABLE = 72
RELEASE_HELD_HTLC = 74
OFFER_PATHS_REQUEST = 75540
OFFER_PATHS = 75542
SERVE_STATIC_INVOICE = 75544
STATIC_INVOICE_PERSISTED = 75546

# Our extension (odd numbers, so any other implementation ignores them; "ar" = 0x6172 prefix).
# A static invoice server that holds onion messages for an offline client's phantom key says so in
# offer_paths (its node id); the client registers its phantom id and a delivery path in
# serve_static_invoice; the server later relays each held onion_message, whole, in a
# held_onion_message over that delivery path.  See asyncreceive/server/mailbox.py.
HELD_ONION_MESSAGE = 0x61720005
OFFER_PATHS_MAILBOX_NODE = 0x61720001      # offer_paths record: the server's node id (33 bytes)
SERVE_MAILBOX = 0x61720003   # serve_static_invoice record: phantom id (33) || signature (64) || blinded path
MAILBOX_TAG = b"asyncreceive/mailbox/v1"

#: bLIP-66 draft numbers -> the numbers LDK uses (and we send)
BLIP66_DRAFT_TYPES = {65540: OFFER_PATHS_REQUEST, 65542: OFFER_PATHS,
                      65544: SERVE_STATIC_INVOICE, 65546: STATIC_INVOICE_PERSISTED}

MESSAGE_NAMES = {
    INVOICE_REQUEST: "invoice_request", INVOICE: "invoice", INVOICE_ERROR: "invoice_error",
    STATIC_INVOICE: "static_invoice", HELD_HTLC_AVAILABLE: "held_htlc_available",
    RELEASE_HELD_HTLC: "release_held_htlc", OFFER_PATHS_REQUEST: "offer_paths_request",
    OFFER_PATHS: "offer_paths", SERVE_STATIC_INVOICE: "serve_static_invoice",
    STATIC_INVOICE_PERSISTED: "static_invoice_persisted", HELD_ONION_MESSAGE: "held_onion_message",
}

#: every message type we understand on input (LDK's numbers, the draft's, and BOLT 12's)
KNOWN_MESSAGE_TYPES = frozenset(MESSAGE_NAMES) | frozenset(BLIP66_DRAFT_TYPES)

#: messages whose body is LDK's length-prefixed TLV struct
LENGTH_PREFIXED = frozenset({HELD_HTLC_AVAILABLE, RELEASE_HELD_HTLC, OFFER_PATHS_REQUEST, OFFER_PATHS,
                             SERVE_STATIC_INVOICE, STATIC_INVOICE_PERSISTED})


def canonical_type(t: int) -> int:
    return BLIP66_DRAFT_TYPES.get(t, t)


def message_name(t: int) -> str:
    return MESSAGE_NAMES.get(canonical_type(t), f"type_{t}")


ONIONMSG_TLV_TABLE = Table("onionmsg_tlv", [
    Field(ONIONMSG_REPLY_PATH, "reply_path", BLINDED_PATH),
    Field(ONIONMSG_ENCRYPTED_RECIPIENT_DATA, "encrypted_recipient_data", BYTES),
], also_known=KNOWN_MESSAGE_TYPES.__contains__)    # plus one message record, of any type we understand


@dataclass(frozen=True)
class OnionMessagePayload:
    """The final hop's ``onionmsg_tlv``: reply_path, encrypted_recipient_data and one message.

    ``message_type`` is kept as received (a draft number stays a draft number); use
    :func:`canonical_type` to dispatch.  ``unknown`` holds unknown odd records.
    """

    message_type: Optional[int] = None
    message: bytes = b""
    reply_path: Optional[BlindedPath] = None
    encrypted_recipient_data: Optional[bytes] = None
    unknown: Tuple[Tuple[int, bytes], ...] = ()

    def encode(self) -> bytes:
        extra = list(self.unknown)
        if self.message_type is not None:
            extra.append((self.message_type, self.message))
        return ONIONMSG_TLV_TABLE.encode({"reply_path": self.reply_path,
                                          "encrypted_recipient_data": self.encrypted_recipient_data}, extra)

    @staticmethod
    def decode(data: bytes, field: str = "onionmsg_tlv") -> "OnionMessagePayload":
        values = ONIONMSG_TLV_TABLE.decode(data, field, keep_unknown=True)
        messages = [(t, v) for t, v in values["unknown"] if t in KNOWN_MESSAGE_TYPES]
        if len(messages) > 1:
            raise DecodeError(f"{field}[{messages[1][0]}]",
                              f"second message in one onion message (after {messages[0][0]})")
        msg_type, msg = messages[0] if messages else (None, b"")
        unknown = tuple((t, v) for t, v in values["unknown"] if t not in KNOWN_MESSAGE_TYPES)
        return OnionMessagePayload(msg_type, msg, values["reply_path"], values["encrypted_recipient_data"],
                                   unknown)


# ---- LDK "TLV struct" framing: each message's table says ``length_prefixed=True`` ------------------

def encode_struct(records) -> bytes:
    """``BigSize(len) || TLV stream`` of raw (type, value) records (tests build odd bodies with it)."""
    inner = encode_tlv(records)
    return bigsize(len(inner)) + inner


OFFER_PATHS_REQUEST_TABLE = Table(MESSAGE_NAMES[OFFER_PATHS_REQUEST], [
    Field(0, "invoice_slot", U16, required=True),
], length_prefixed=True)


@dataclass(frozen=True)
class OfferPathsRequest(TableRecord):
    invoice_slot: int
    TYPE = OFFER_PATHS_REQUEST
    TABLE = OFFER_PATHS_REQUEST_TABLE


OFFER_PATHS_TABLE = Table(MESSAGE_NAMES[OFFER_PATHS], [
    Field(0, "paths", BLINDED_PATHS, required=True),
    Field(2, "paths_absolute_expiry", U64),
    Field(OFFER_PATHS_MAILBOX_NODE, "mailbox_node_id", POINT),   # ours: the server holds messages for our phantom
], length_prefixed=True)


@dataclass(frozen=True)
class OfferPaths(TableRecord):
    paths: List[BlindedPath]
    paths_absolute_expiry: Optional[int] = None
    mailbox_node_id: Optional[bytes] = None
    TYPE = OFFER_PATHS
    TABLE = OFFER_PATHS_TABLE


@dataclass(frozen=True)
class MailboxRegistration:
    """Ours: "hold onion messages for ``phantom_id`` while I am offline, and relay them over
    ``delivery_path`` (a blinded path to that phantom, starting at my node id)".

    ``signature`` is BIP-340 by the phantom key over :meth:`digest` (which names the server), so only
    the holder of that key can register it, and only with that server.
    """

    phantom_id: bytes
    signature: bytes
    delivery_path: BlindedPath

    @staticmethod
    def digest(server_node_id: bytes, phantom_id: bytes, delivery_path: BlindedPath) -> bytes:
        return hashlib.sha256(MAILBOX_TAG + server_node_id + phantom_id + delivery_path.encode()).digest()

    @staticmethod
    def sign(phantom_secret: bytes, server_node_id: bytes, delivery_path: BlindedPath) -> "MailboxRegistration":
        from coincurve import PrivateKey
        phantom_id = PrivateKey(phantom_secret).public_key.format()
        sig = schnorr_sign(phantom_secret, MailboxRegistration.digest(server_node_id, phantom_id, delivery_path))
        return MailboxRegistration(phantom_id, sig, delivery_path)

    def verify(self, server_node_id: bytes) -> bool:
        return schnorr_verify(self.phantom_id, self.signature,
                              self.digest(server_node_id, self.phantom_id, self.delivery_path))

    def encode(self) -> bytes:
        return self.phantom_id + self.signature + self.delivery_path.encode()

    @staticmethod
    def decode(data: bytes, field: str = "mailbox") -> "MailboxRegistration":
        r = Reader(data)
        phantom = decode_point(r.read(33, field + ".phantom_id"), field + ".phantom_id")
        sig = r.read(64, field + ".signature")
        path = BlindedPath.decode(r.rest(), field + ".delivery_path")
        if path.first_node_id is None:
            raise DecodeError(field + ".delivery_path", "must start at a node id")
        return MailboxRegistration(phantom, sig, path)


SERVE_STATIC_INVOICE_TABLE = Table("serve_static_invoice", [
    Field(0, "invoice", NONEMPTY_BYTES, required=True),
    Field(2, "forward_invoice_request_path", BLINDED_PATH, required=True),
    Field(SERVE_MAILBOX, "mailbox", record_codec(MailboxRegistration)),   # ours: hold messages for my phantom
], length_prefixed=True)


@dataclass(frozen=True)
class ServeStaticInvoice(TableRecord):
    invoice: bytes
    forward_invoice_request_path: BlindedPath
    mailbox: Optional[MailboxRegistration] = None
    TYPE = SERVE_STATIC_INVOICE
    TABLE = SERVE_STATIC_INVOICE_TABLE


# The empty messages: a table with no fields, so the body is the one byte ``00`` (and unknown odd
# records in it are skipped).

@dataclass(frozen=True)
class StaticInvoicePersisted(TableRecord):
    TYPE = STATIC_INVOICE_PERSISTED
    TABLE = Table(MESSAGE_NAMES[STATIC_INVOICE_PERSISTED], [], length_prefixed=True)


@dataclass(frozen=True)
class HeldHtlcAvailable(TableRecord):
    TYPE = HELD_HTLC_AVAILABLE
    TABLE = Table(MESSAGE_NAMES[HELD_HTLC_AVAILABLE], [], length_prefixed=True)


@dataclass(frozen=True)
class ReleaseHeldHtlc(TableRecord):
    TYPE = RELEASE_HELD_HTLC
    TABLE = Table(MESSAGE_NAMES[RELEASE_HELD_HTLC], [], length_prefixed=True)


ASYNC_MESSAGES = {cls.TYPE: cls for cls in (OfferPathsRequest, OfferPaths, ServeStaticInvoice,
                                             StaticInvoicePersisted, HeldHtlcAvailable, ReleaseHeldHtlc)}


def decode_async_message(msg_type: int, body: bytes):
    """Decode the body of an async-payments message (either numbering) into its dataclass."""
    t = canonical_type(msg_type)
    cls = ASYNC_MESSAGES.get(t)
    if cls is None:
        raise DecodeError(f"type_{msg_type}", "not an async-payments message type")
    return cls.decode(body, MESSAGE_NAMES[t])
