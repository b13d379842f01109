"""The BOLT 12 string form: bech32 without a checksum, with ``+`` continuations, and the human-readable
prefixes of offers (``lno``), invoice_requests (``lnr``) and invoices (``lni``).

Pure; the decoder raises only :class:`~asyncreceive.errors.DecodeError`, naming the field.
"""

import string
from typing import Optional, Tuple

from pyln.proto.bech32 import CHARSET, convertbits

from ...errors import DecodeError

HRP_OFFER = "lno"
HRP_INVOICE_REQUEST = "lnr"
HRP_INVOICE = "lni"

_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_WHITESPACE = frozenset(string.whitespace)


def bech32_encode(hrp: str, data: bytes, split: Optional[int] = None) -> str:
    """BOLT 12 string form: ``hrp || '1' || bech32(data)``, no checksum, lower case.

    With ``split``, a ``+`` followed by a newline is inserted every ``split`` data characters (readers
    must accept that form).
    """
    if not hrp or any(c not in string.ascii_lowercase + string.digits for c in hrp) or "1" in hrp:
        raise ValueError(f"bad hrp {hrp!r}")
    five = convertbits(data, 8, 5, True)
    body = "".join(CHARSET[d] for d in five)
    if split:
        if split < 1:
            raise ValueError("split must be positive")
        body = "+\n".join(body[i:i + split] for i in range(0, len(body), split))
    return hrp + "1" + body


def _join_continuations(s: str, field: str) -> str:
    """Remove ``+`` continuations: every ``+`` must sit between two bech32 characters, optionally with
    whitespace after it."""
    parts = s.split("+")
    out = []
    for i, part in enumerate(parts):
        if i > 0:
            part = part.lstrip(string.whitespace)
        if not part:
            raise DecodeError(field, "'+' must be surrounded by bech32 characters")
        if i < len(parts) - 1 and part[-1] in _WHITESPACE:
            raise DecodeError(field, "'+' must be surrounded by bech32 characters")
        out.append(part)
    return "".join(out)


def bech32_decode(s: str, expected_hrp: Optional[str] = None, field: str = "bolt12") -> Tuple[str, bytes]:
    """Decode a BOLT 12 string to ``(hrp, bytes)``.

    Accepts ``+`` joins (optionally followed by whitespace) and all-upper or all-lower case; rejects
    mixed case, characters outside the bech32 set, and padding of 5+ bits or with non-zero bits.
    """
    if not isinstance(s, str):
        raise DecodeError(field, "not a string")
    if not s.isascii():  # before any case handling: e.g. U+212A KELVIN SIGN lower-cases to 'k'
        raise DecodeError(field, "non-ASCII character")
    joined = _join_continuations(s, field)
    if joined != joined.lower() and joined != joined.upper():
        raise DecodeError(field, "mixed case")
    joined = joined.lower()
    pos = joined.rfind("1")
    if pos < 1:
        raise DecodeError(field, "missing hrp or '1' separator")
    hrp, body = joined[:pos], joined[pos + 1:]
    if any(not (33 <= ord(c) <= 126) for c in hrp):
        raise DecodeError(field, "invalid character in hrp")
    if expected_hrp is not None and hrp != expected_hrp:
        raise DecodeError(field, f"expected prefix {expected_hrp!r}, got {hrp!r}")
    try:
        five = [_CHARSET_INDEX[c] for c in body]
    except KeyError as e:
        raise DecodeError(field, f"invalid bech32 character {e.args[0]!r}")
    eight = convertbits(five, 5, 8, False)
    if eight is None:
        raise DecodeError(field, "invalid bech32 padding")
    return hrp, bytes(eight)
