"""The final hop's payload of a payment onion (BOLT 4), as we write it (paying) and read it (receiving).

Besides BOLT 4's records: the invoice_request as LDK (77777) and the draft (1) carry it, and the sender's
preimage (5482373484, keysend's type) of an async payment.
"""

from typing import Dict

from .records import BYTES, POINT, SHA256, TU32, TU64, Field, Table
from .tlv import Reader, decode_tlv

AMT_TO_FORWARD = 2
OUTGOING_CLTV = 4
ENCRYPTED_RECIPIENT_DATA = 10
CURRENT_PATH_KEY = 12
TOTAL_AMOUNT = 18
INVREQ_DRAFT = 1
INVREQ_LDK = 77777
KEYSEND_PREIMAGE = 5482373484

#: the final hop payload's records we write (as a payer) and read (BOLT 4, plus the invoice_request as LDK
#: and the draft send it and the sender's preimage); :func:`parse_payload` keeps every record and each
#: check reads the one it needs, so a bad record fails the HTLC with a reason, never an exception
PAYMENT_HOP_TABLE = Table("payment_hop", [
    Field(INVREQ_DRAFT, "invoice_request_draft", BYTES),
    Field(AMT_TO_FORWARD, "amt_to_forward", TU64),
    Field(OUTGOING_CLTV, "outgoing_cltv_value", TU32),
    Field(ENCRYPTED_RECIPIENT_DATA, "encrypted_recipient_data", BYTES),
    Field(CURRENT_PATH_KEY, "current_path_key", POINT),
    Field(TOTAL_AMOUNT, "total_amount_msat", TU64),
    Field(INVREQ_LDK, "invoice_request", BYTES),
    Field(KEYSEND_PREIMAGE, "sender_preimage", SHA256),
])


def parse_payload(raw: bytes) -> Dict[int, bytes]:
    """The final hop payload as lightningd hands it to htlc_accepted (BigSize length prefix, then TLVs).

    Every record is returned (lightningd could not decode it: 5482373484 is an unknown even type).
    """
    r = Reader(raw)
    length = r.bigsize("payload.length")
    body = r.read(length, "payload")
    r.expect_end("payload")
    return dict(decode_tlv(body, "payload", allow_unknown_even=True).records)
