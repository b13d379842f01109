"""The datastore records declared as tables (wire/records.py): the server's invoices, the mailbox's
registrations and held messages, the recipient's slots (and their holders), servers and fallback invoices,
and received payments.

Golden bytes: each hex value below was written by the code before the records became tables (main at
196e952; the legacy slot records by the commit named), for the values the test spells out.  The tables
must read them to those values and write them back byte for byte: the datastore is unchanged.  The
hypothesis properties check that every value round-trips and that any bytes decode or raise DecodeError
(nothing else).
"""

from hypothesis import given, settings, strategies as st

from asyncreceive.errors import DecodeError
from asyncreceive.payments.service import RECEIVED_PAYMENT_RECORD, decode_payment, encode_payment
from asyncreceive.server.mailbox import HeldMessage, MailboxRecord
from asyncreceive.server.store import InvoiceRecord
from asyncreceive.wire.messages import MailboxRegistration
from asyncreceive.wire.paths import BlindedHop, BlindedPath, SciddirOrPubkey
from tests.unit.strategies import blinded_paths, hops, points

from coincurve import PrivateKey


def P(i: int) -> bytes:
    return PrivateKey(bytes([i]) * 32).public_key.format()


PATH = BlindedPath(SciddirOrPubkey(node_id=P(1)), P(2), (BlindedHop(P(3), b"enc-one"), BlindedHop(P(4), b"enc-two")))
SCID_PATH = BlindedPath(SciddirOrPubkey(scid=0x0102030405060708, direction=1), P(5), (BlindedHop(P(6), b"x"),))

INVOICE_FULL = ("000500036c6e6f0297031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f024d4b6cd136"
                "1032ca9bd2aeb9d900aa4d45d9ead80ac9423374c451a7254d07660202531fe6068134503d2723133227c867ac8fa6c8"
                "3c537e9a44c3c5bdbdcb1fe3370007656e632d6f6e6503462779ad4aad39514614751a71085f2f10e1c7a593e4e030ef"
                "b5b8721ce55b0b0007656e632d74776f04046553f10006010708046553f2f4")
INVOICE_MIN = ("0000024f0101020304050607080362c0a046dacce86ddd0343c6d3c7c79c2208ba0d9c9cf24a6d046d21d21f90f70103"
               "f006a18d5653c4edf5391ff23a61f03ff83d237e880ee61187fa9f379a028e0a0001780401050600")
MAILBOX = ("00f80256b328b30c8bf5839e24058747879408bdb36241dc9c2e7c619faa12b2920967351d096aed1d134801cf6f9418"
           "d64e026c0ce75e1ea2fd819043f2b72f769c712e010c81e84f0969a2395641edf36b56c9a5c226da8677605a61b3e9dc"
           "009964031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f024d4b6cd1361032ca9bd2ae"
           "b9d900aa4d45d9ead80ac9423374c451a7254d07660202531fe6068134503d2723133227c867ac8fa6c83c537e9a44c3"
           "c5bdbdcb1fe3370007656e632d6f6e6503462779ad4aad39514614751a71085f2f10e1c7a593e4e030efb5b8721ce55b"
           "0b0007656e632d74776f02046553f17b")
HELD_SRC = ("00046553f101022a02016d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d6d"
            "6d6d032102552c630b64b54bf50210c9e253d38bd4949c72e22873500f6285c2bede312a84")
HELD_NOSRC = "000002020201"

PAYMENT_FULL = ("0020111111111111111111111111111111111111111111111111111111111111111102030249f004046553f409062022"
                "22222222222222222222222222222222222222222222222222222222222222080a7468616e6b7320e298830903030d40"
                "0b4033333333333333333333333333333333333333333333333333333333333333334444444444444444444444444444"
                "444444444444444444444444444444444444")
PAYMENT_MIN = ("002011111111111111111111111111111111111111111111111111111111111111110200040101062022222222222222"
               "22222222222222222222222222222222222222222222222222")


def same_bytes(cls_or_decode, encode, hex_value, expected=None):
    """``hex_value`` (written by the old code) decodes to ``expected`` and re-encodes to itself."""
    data = bytes.fromhex(hex_value)
    value = cls_or_decode(data)
    if expected is not None:
        assert value == expected
    assert encode(value) == data
    return value


def any_bytes(decode, encode, data):
    """``data`` decodes, and what it decodes to round-trips; or it raises DecodeError, never anything else."""
    try:
        value = decode(data)
    except DecodeError:
        return
    assert decode(encode(value)) == value


# ---- the server: invoice records --------------------------------------------------------------------------

def test_invoice_record_golden_bytes():
    same_bytes(InvoiceRecord.decode, InvoiceRecord.encode, INVOICE_FULL,
               InvoiceRecord(b"\x00\x03lno", PATH, 1_700_000_000, 7, 1_700_000_500))
    same_bytes(InvoiceRecord.decode, InvoiceRecord.encode, INVOICE_MIN, InvoiceRecord(b"", SCID_PATH, 5))


invoice_records = st.builds(InvoiceRecord, st.binary(max_size=60), blinded_paths, st.integers(0, 2**64 - 1),
                            st.integers(0, 2**64 - 1), st.none() | st.integers(0, 2**64 - 1))


@settings(max_examples=200)
@given(invoice_records)
def test_invoice_record_round_trip(rec):
    assert InvoiceRecord.decode(rec.encode()) == rec


@settings(max_examples=300)
@given(st.binary(max_size=200) | invoice_records.map(lambda r: r.encode()[:-1] + b"\x01"))
def test_invoice_record_any_bytes(data):
    any_bytes(InvoiceRecord.decode, InvoiceRecord.encode, data)


# ---- the mailbox: registrations and held messages -----------------------------------------------------------

def test_mailbox_records_golden_bytes():
    rec = same_bytes(MailboxRecord.decode, MailboxRecord.encode, MAILBOX)
    assert rec.registered_at == 1_700_000_123 and rec.registration.delivery_path == PATH
    assert rec.registration.verify(P(10)) and rec.client_node_id == P(1)
    same_bytes(HeldMessage.decode, HeldMessage.encode, HELD_SRC,
               HeldMessage(1_700_000_001, b"\x02\x01" + b"m" * 40, P(11)))
    same_bytes(HeldMessage.decode, HeldMessage.encode, HELD_NOSRC, HeldMessage(0, b"\x02\x01"))


node_paths = st.builds(lambda k, h: BlindedPath(SciddirOrPubkey(node_id=k), k, tuple(h)), points,
                       st.lists(hops, min_size=1, max_size=3))
mailbox_records = st.builds(MailboxRecord, st.builds(MailboxRegistration, points, st.binary(min_size=64, max_size=64),
                                                     node_paths), st.integers(0, 2**64 - 1))
held_messages = st.builds(HeldMessage, st.integers(0, 2**64 - 1), st.binary(max_size=80),
                          st.none() | st.binary(min_size=33, max_size=33))


@settings(max_examples=200)
@given(mailbox_records | held_messages)
def test_mailbox_records_round_trip(rec):
    assert type(rec).decode(rec.encode()) == rec


@settings(max_examples=300)
@given(st.sampled_from([MailboxRecord, HeldMessage]),
       st.binary(max_size=200) | (mailbox_records | held_messages).map(lambda r: r.encode()[:-2]))
def test_mailbox_records_any_bytes(cls, data):
    any_bytes(cls.decode, cls.encode, data)


# ---- received payments --------------------------------------------------------------------------------------

def test_received_payment_golden_bytes():
    full = decode_payment(bytes.fromhex(PAYMENT_FULL))
    assert full == {"offer_id": "11" * 32, "amount_msat": 150_000, "received_at": 1_700_000_777,
                    "preimage": "22" * 32, "payer_note": "thanks \u2603", "total_msat": 200_000,
                    "paths": [b"\x33" * 32, b"\x44" * 32]}
    assert encode_payment(b"\x11" * 32, 150_000, 1_700_000_777, b"\x22" * 32, "thanks \u2603", 200_000,
                          (b"\x33" * 32, b"\x44" * 32)).hex() == PAYMENT_FULL
    assert decode_payment(bytes.fromhex(PAYMENT_MIN)) == {
        "offer_id": "11" * 32, "amount_msat": 0, "received_at": 1, "preimage": "22" * 32, "payer_note": None,
        "total_msat": 0, "paths": []}
    assert encode_payment(b"\x11" * 32, 0, 1, b"\x22" * 32, None).hex() == PAYMENT_MIN
    # a note that is not UTF-8 reads as older versions read it, with U+FFFD: not an error
    note = bytes.fromhex(PAYMENT_MIN) + bytes.fromhex("0802ff41")
    assert decode_payment(note)["payer_note"] == "\ufffdA"


payment_args = st.tuples(st.binary(max_size=40), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1),
                         st.binary(min_size=32, max_size=32), st.none() | st.text(max_size=20),  # within MAX_NOTE_BYTES
                         st.integers(0, 2**64 - 1), st.lists(st.binary(min_size=32, max_size=32), max_size=8))


@settings(max_examples=200)
@given(payment_args)
def test_received_payment_round_trip(args):
    offer_id, amount, at, preimage, note, total, paths = args
    assert decode_payment(encode_payment(offer_id, amount, at, preimage, note, total, tuple(paths))) == {
        "offer_id": offer_id.hex(), "amount_msat": amount, "received_at": at, "preimage": preimage.hex(),
        "payer_note": note or None, "total_msat": total, "paths": paths}


@settings(max_examples=300)
@given(st.binary(max_size=200) | payment_args.map(lambda a: encode_payment(*a[:6], tuple(a[6]))[:-1]))
def test_received_payment_any_bytes(data):
    any_bytes(RECEIVED_PAYMENT_RECORD.decode, RECEIVED_PAYMENT_RECORD.encode, data)
    try:
        decode_payment(data)
    except DecodeError:
        pass
