"""BOLT 12 spec vectors: offers-test.json, format-string-test.json, signature-test.json."""

import re

import pytest

from asyncreceive.errors import DecodeError
from asyncreceive.wire.bolt12.bech32 import bech32_decode
from asyncreceive.wire.bolt12.invoice_request import InvoiceRequest
from asyncreceive.wire.bolt12.offer import Offer
from asyncreceive.wire.bolt12.signature import merkle_root, schnorr_verify, sighash, tagged_hash
from asyncreceive.wire.tlv import Reader, bigsize, decode_tlv

from ..vectors import load_vector


def _cases(name, ident):
    try:
        data = load_vector(name)
    except pytest.skip.Exception as e:
        return [pytest.param(None, marks=pytest.mark.skip(reason=str(e)))]
    return [pytest.param(e, id=f"{i}-{ident(e)}"[:80]) for i, e in enumerate(data)]


def _slug(s):
    return re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_")


@pytest.mark.parametrize("vec", _cases("offers-test.json", lambda e: _slug(e["description"])))
def test_offers_vector(vec):
    if not vec["valid"]:
        with pytest.raises(DecodeError):
            Offer.from_string(vec["bolt12"])
        return
    offer = Offer.from_string(vec["bolt12"])
    got = [(t, len(v), v.hex()) for t, v in offer.stream.records]
    assert got == [(f["type"], f["length"], f["hex"]) for f in vec["fields"]]
    # byte-exact re-encoding, and the same string back
    assert offer.encode() == bech32_decode(vec["bolt12"])[1]
    assert offer.to_string() == vec["bolt12"]
    assert Offer.decode(offer.encode()) == offer
    assert len(offer.offer_id) == 32


@pytest.mark.parametrize("vec", _cases("format-string-test.json", lambda e: _slug(e["comment"])))
def test_format_string_vector(vec):
    if vec["valid"]:
        offer = Offer.from_string(vec["string"])
        canonical = re.sub(r"\+\s*", "", vec["string"]).lower()
        assert offer.to_string() == canonical
    else:
        with pytest.raises(DecodeError):
            Offer.from_string(vec["string"])


def _leaf_record(leaf):
    for k in leaf:
        m = re.fullmatch(r"H\(`LnLeaf`,([0-9a-f]+)\)", k)
        if m:
            return bytes.fromhex(m.group(1))
    raise AssertionError("no LnLeaf entry")


def _record_type(record):
    return Reader(record).bigsize("type")


@pytest.mark.parametrize("vec", _cases("signature-test.json", lambda e: _slug(e["comment"])))
def test_signature_vector(vec):
    first = bytes.fromhex(vec["first-tlv"])
    if "bolt12" in vec:
        hrp, data = bech32_decode(vec["bolt12"])
        assert hrp == "lnr"
        stream = decode_tlv(data, "invreq", allow_unknown_even=True)
    else:
        stream = decode_tlv(b"".join(_leaf_record(leaf) for leaf in vec["leaves"]), "n1", allow_unknown_even=True)
    assert stream.raw_records()[0] == first

    # every leaf, nonce and per-TLV branch
    for leaf in vec["leaves"]:
        record = _leaf_record(leaf)
        values = list(leaf.values())
        leaf_h = tagged_hash(b"LnLeaf", record)
        nonce_h = tagged_hash(b"LnNonce" + first, bigsize(_record_type(record)))
        assert leaf_h.hex() == values[0]
        assert nonce_h.hex() == values[1]
        lo, hi = sorted([leaf_h, nonce_h])
        assert tagged_hash(b"LnBranch", lo + hi).hex() == values[2]
    for branch in vec["branches"]:
        for k, v in branch.items():
            m = re.fullmatch(r"H\(`LnBranch`,([0-9a-f]{128})\)", k)
            if m:
                assert tagged_hash(b"LnBranch", bytes.fromhex(m.group(1))).hex() == v

    assert merkle_root(stream).hex() == vec["merkle"]

    if "bolt12" in vec:
        assert vec["signature_tag"] == "lightninginvoice_requestsignature"
        digest = sighash("invoice_request", "signature", merkle_root(stream))
        assert digest.hex() == vec["H(signature_tag,merkle)"]
        ir = InvoiceRequest.from_string(vec["bolt12"])
        assert ir.signature.hex() == vec["signature"]
        assert ir.verify_signature()
        assert schnorr_verify(ir.payer_id, ir.signature, digest)
        assert ir.amount == 100 and ir.currency == "USD" and ir.description == "A Mathematical Treatise"
        assert ir.invreq_metadata == bytes(8)
        # the offer inside is a valid offer in its own right
        assert Offer(ir.offer_records()).issuer_id == ir.issuer_id
