"""How log lines show ids: one way everywhere, so that an operator can grep for what an RPC showed.

- a client of our static invoice server: the client_id the operator gave ``asyncserver-addclient``, as
  text in quotes (``client 'phone'``; bytes that are not UTF-8 as escapes);
- anything else that is bytes (node, offer, payment, payment_hash, server ids): its first 16 hex digits,
  a prefix of the hex the RPCs show.
"""

ID_HEX_DIGITS = 16


def short_id(b: bytes) -> str:
    return b.hex()[:ID_HEX_DIGITS]


def client_name(client_id: bytes) -> str:
    return repr(client_id.decode("utf-8", "backslashreplace"))
