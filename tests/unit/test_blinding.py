from dataclasses import replace

import pytest
from coincurve import PrivateKey
from hypothesis import given, settings, strategies as st

from asyncreceive.crypto.blinding import (EncryptedData, PaymentConstraints, PaymentRelay, blinded_privkey,
                                          build_blinded_path, decrypt_hop, derive_next_path_key, ecdh, hmac256,
                                          pad_payloads)
from asyncreceive.errors import DecodeError
from asyncreceive.wire.paths import BlindedPath, SciddirOrPubkey

from ..vectors import load_vector
from .strategies import points, secrets

H = bytes.fromhex


def scid(s):
    block, tx, out = (int(x) for x in s.split("x"))
    return (block << 40) | (tx << 16) | out


def features(bits):
    if not bits:
        return b""
    n = (max(bits) + 8) // 8
    v = 0
    for b in bits:
        v |= 1 << b
    return v.to_bytes(n, "big")


def from_vector_tlvs(t):
    unknown = tuple(sorted((int(k[len("unknown_tag_"):]), H(v)) for k, v in t.items() if k.startswith("unknown_tag_")))
    pr = t.get("payment_relay")
    pc = t.get("payment_constraints")
    af = t.get("allowed_features")
    return EncryptedData(
        padding=H(t["padding"]) if "padding" in t else None,
        short_channel_id=scid(t["short_channel_id"]) if "short_channel_id" in t else None,
        next_node_id=H(t["next_node_id"]) if "next_node_id" in t else None,
        path_id=H(t["path_id"]) if "path_id" in t else None,
        next_path_key_override=H(t["next_path_key_override"]) if "next_path_key_override" in t else None,
        payment_relay=PaymentRelay(pr["cltv_expiry_delta"], pr["fee_proportional_millionths"],
                                   pr.get("fee_base_msat", 0)) if pr else None,
        payment_constraints=PaymentConstraints(pc["max_cltv_expiry"], pc["htlc_minimum_msat"]) if pc else None,
        allowed_features=features(af["features"]) if af is not None else None,
        unknown=unknown,
    )


# --- route-blinding-test.json -------------------------------------------------------------------------

def test_vector_encoded_tlvs():
    v = load_vector("route-blinding-test.json")
    for hop in v["generate"]["hops"]:
        ed = from_vector_tlvs(hop["tlvs"])
        assert ed.encode().hex() == hop["encoded_tlvs"], hop["alias"]
        assert EncryptedData.decode(H(hop["encoded_tlvs"])) == ed


def test_vector_generate_route():
    v = load_vector("route-blinding-test.json")
    hops = v["generate"]["hops"]
    # Bob -> Carol built with Bob's session key; Dave -> Eve with Eve's; concatenated.
    bob_carol = build_blinded_path(H(hops[0]["session_key"]),
                                   [(H(h["node_id"]), H(h["encoded_tlvs"])) for h in hops[0:2]])
    dave_eve = build_blinded_path(H(hops[2]["session_key"]),
                                  [(H(h["node_id"]), H(h["encoded_tlvs"])) for h in hops[2:4]])
    assert bob_carol.first_path_key.hex() == hops[0]["path_key"]
    assert dave_eve.first_path_key.hex() == hops[2]["path_key"]
    assert bob_carol.introduction == SciddirOrPubkey(node_id=H(hops[0]["node_id"]))
    route = v["route"]
    assert bob_carol.first_node_id.hex() == route["first_node_id"]
    assert bob_carol.first_path_key.hex() == route["first_path_key"]
    all_hops = bob_carol.hops + dave_eve.hops
    assert len(all_hops) == len(route["hops"]) == 4
    for got, want, gen in zip(all_hops, route["hops"], hops):
        assert got.blinded_node_id.hex() == want["blinded_node_id"] == gen["blinded_node_id"]
        assert got.encrypted_recipient_data.hex() == want["encrypted_data"] == gen["encrypted_data"]


def test_vector_generate_intermediates():
    v = load_vector("route-blinding-test.json")
    for h in v["generate"]["hops"]:
        assert PrivateKey(H(h["path_privkey"])).public_key.format().hex() == h["path_key"]
        ss = ecdh(H(h["path_privkey"]), H(h["node_id"]))
        assert ss.hex() == h["shared_secret"]
        assert hmac256(b"rho", ss).hex() == h["rho"]


def test_vector_unblind():
    v = load_vector("route-blinding-test.json")
    for h in v["unblind"]["hops"]:
        priv, pk = H(h["node_privkey"]), H(h["path_key"])
        data, nxt = decrypt_hop(priv, pk, H(_encrypted_for(v, h["alias"])))
        assert data.encode().hex() == h["decrypted_data"]
        assert EncryptedData.decode(H(h["decrypted_data"])) == data
        if "next_path_key_override" in h:
            assert nxt.hex() == h["next_path_key_override"]
            assert data.next_path_key_override.hex() == h["next_path_key_override"]
        else:
            assert nxt.hex() == h["next_path_key"]
        assert derive_next_path_key(pk, ecdh(priv, pk)).hex() == h["next_path_key"]
        bp = blinded_privkey(priv, pk)
        assert bp.hex() == h["blinded_privkey"]
        assert PrivateKey(bp).public_key.format().hex() == _blinded_id_for(v, h["alias"])


def _gen_hop(v, alias):
    return next(h for h in v["generate"]["hops"] if h["alias"] == alias)


def _encrypted_for(v, alias):
    return _gen_hop(v, alias)["encrypted_data"]


def _blinded_id_for(v, alias):
    return _gen_hop(v, alias)["blinded_node_id"]


# --- blinded-onion-message-onion-test.json: the blinding half -------------------------------------------

def test_vector_onion_message_route():
    v = load_vector("blinded-onion-message-onion-test.json")
    gen = v["generate"]["hops"]
    alice_id = H(v["route"]["first_node_id"])
    node_ids = [alice_id] + [H(h["tlvs"]["next_node_id"]) for h in gen[:3]]
    for h in gen:
        assert EncryptedData.decode(H(h["encrypted_data_tlv"])).encode().hex() == h["encrypted_data_tlv"]
    alice = build_blinded_path(H(gen[0]["path_key_secret"]), [(alice_id, H(gen[0]["encrypted_data_tlv"]))])
    dave = build_blinded_path(H(gen[1]["path_key_secret"]),
                              [(n, H(h["encrypted_data_tlv"])) for n, h in zip(node_ids[1:], gen[1:])])
    assert alice.first_path_key.hex() == v["route"]["first_path_key"]
    assert dave.first_path_key.hex() == gen[0]["tlvs"]["next_path_key_override"]
    for got, want in zip(alice.hops + dave.hops, v["route"]["hops"]):
        assert got.blinded_node_id.hex() == want["blinded_node_id"]
        assert got.encrypted_recipient_data.hex() == want["encrypted_recipient_data"]


# --- EncryptedData codec ------------------------------------------------------------------------------

opt = lambda s: st.one_of(st.none(), s)  # noqa: E731
encrypted_datas = st.builds(
    EncryptedData,
    padding=opt(st.binary(max_size=300)),
    short_channel_id=opt(st.integers(0, 2**64 - 1)),
    next_node_id=opt(points),
    path_id=opt(st.binary(max_size=40)),
    next_path_key_override=opt(points),
    payment_relay=opt(st.builds(PaymentRelay, st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1),
                                st.integers(0, 2**32 - 1))),
    payment_constraints=opt(st.builds(PaymentConstraints, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))),
    allowed_features=opt(st.binary(max_size=8)),
    unknown=st.dictionaries(st.integers(7, 2**20).map(lambda t: t | 1).filter(lambda t: t > 15),
                            st.binary(max_size=20), max_size=3).map(lambda d: tuple(sorted(d.items()))),
)


@settings(max_examples=50)
@given(encrypted_datas)
def test_encrypted_data_roundtrip(ed):
    assert EncryptedData.decode(ed.encode()) == ed


def _mutated(data: bytes, at: int, byte: int) -> bytes:
    return data[:at % (len(data) + 1)] + bytes([byte]) + data[at % (len(data) + 1) + 1:]


@settings(max_examples=200)
@given(st.binary(max_size=120) | st.builds(_mutated, encrypted_datas.map(EncryptedData.encode), st.integers(0),
                                           st.integers(0, 255)))
def test_encrypted_data_any_bytes_decode_to_the_same_bytes_or_decodeerror(data):
    """The table's codec: any bytes either decode to a record that writes back exactly those bytes, or
    raise DecodeError naming the record."""
    try:
        ed = EncryptedData.decode(data)
    except DecodeError as e:
        assert e.field.startswith("encrypted_data")
        return
    assert ed.encode() == data


@pytest.mark.parametrize("raw,field", [
    ("1000", "encrypted_data[16]"),                 # unknown even type
    ("0407" + "02" * 7, "encrypted_data.next_node_id"),  # short point
    ("0207" + "00" * 7, "encrypted_data.short_channel_id"),
    ("0a050024000000", "encrypted_data.payment_relay"),
    ("0a0800240000009600", "encrypted_data[10].value"),  # truncated record
    ("0a0700240000009600", "encrypted_data.payment_relay.fee_base_msat"),  # tu32 leading zero
    ("0c050000000100", "encrypted_data.payment_constraints.htlc_minimum_msat"),  # tu64 leading zero
    ("0600" + "0100", "encrypted_data.type"),        # not increasing
])
def test_encrypted_data_rejects(raw, field):
    with pytest.raises(DecodeError) as e:
        EncryptedData.decode(H(raw))
    assert e.value.field == field


def test_unknown_must_be_odd_and_unknown():
    with pytest.raises(ValueError):
        EncryptedData(unknown=((16, b""),)).encode()
    with pytest.raises(ValueError):
        EncryptedData(unknown=((1, b""),)).encode()


@settings(max_examples=50)
@given(st.lists(encrypted_datas, min_size=1, max_size=5))
def test_pad_payloads_same_length(datas):
    padded = pad_payloads(datas)
    lens = {len(p.encode()) for p in padded}
    assert len(lens) == 1
    for a, b in zip(datas, padded):
        assert EncryptedData.decode(b.encode()) == b
        assert b.padding is None or set(b.padding) <= {0}
        assert replace(a, padding=None) == replace(b, padding=None)


def test_pad_payloads_gap_of_one():
    a = EncryptedData(path_id=b"x" * 10)
    b = EncryptedData(path_id=b"x" * 9)
    padded = pad_payloads([a, b])
    assert len(padded[0].encode()) == len(padded[1].encode())
    assert padded[0].padding is not None and padded[1].padding is not None


def test_pad_payloads_across_bigsize_boundary():
    # gaps near 255/256 can't be filled by a padding record (its length prefix grows from 1 to 3 bytes)
    datas = [EncryptedData(path_id=b"x" * n) for n in (0, 1, 255, 400)]
    padded = pad_payloads(datas)
    assert len({len(p.encode()) for p in padded}) == 1


# --- build / decrypt roundtrip --------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(secrets, st.lists(st.tuples(secrets, encrypted_datas), min_size=1, max_size=5))
def test_build_then_decrypt_each_hop(session_key, hops):
    # the override would break the chain; the test checks the derived chain
    hops = [(k, replace(d, next_path_key_override=None)) for k, d in hops]
    nodes = [PrivateKey(k).public_key.format() for k, _ in hops]
    path = build_blinded_path(session_key, [(n, d.encode()) for n, (_, d) in zip(nodes, hops)])
    assert path.first_node_id == nodes[0]
    assert BlindedPath.decode(path.encode()) == path
    path_key = path.first_path_key
    for (priv, data), hop in zip(hops, path.hops):
        assert PrivateKey(blinded_privkey(priv, path_key)).public_key.format() == hop.blinded_node_id
        got, path_key = decrypt_hop(priv, path_key, hop.encrypted_recipient_data)
        assert got == data


@settings(max_examples=30, deadline=None)
@given(secrets, secrets, encrypted_datas, st.data())
def test_tampered_ciphertext_rejected(session_key, priv, data, draw):
    node = PrivateKey(priv).public_key.format()
    path = build_blinded_path(session_key, [(node, data.encode())])
    enc = bytearray(path.hops[0].encrypted_recipient_data)
    i = draw.draw(st.integers(0, len(enc) - 1))
    enc[i] ^= draw.draw(st.integers(1, 255))
    with pytest.raises(DecodeError) as e:
        decrypt_hop(priv, path.first_path_key, bytes(enc), "hop")
    assert e.value.field == "hop"


def test_wrong_key_and_bad_path_key_rejected():
    priv, other = b"\x11" * 32, b"\x22" * 32
    path = build_blinded_path(b"\x33" * 32, [(PrivateKey(priv).public_key.format(), EncryptedData(path_id=b"p").encode())])
    enc = path.hops[0].encrypted_recipient_data
    with pytest.raises(DecodeError):
        decrypt_hop(other, path.first_path_key, enc)
    with pytest.raises(DecodeError):
        decrypt_hop(priv, b"\x02" + b"\xff" * 32, enc)  # not on the curve
    with pytest.raises(DecodeError):
        decrypt_hop(priv, path.first_path_key[:20], enc)
    with pytest.raises(DecodeError):
        decrypt_hop(priv, path.first_path_key, b"")
    with pytest.raises(DecodeError):
        blinded_privkey(priv, b"\x04" * 33)


def test_explicit_introduction_and_override():
    priv = b"\x11" * 32
    node = PrivateKey(priv).public_key.format()
    intro = SciddirOrPubkey(scid=12345, direction=1)
    override = PrivateKey(b"\x44" * 32).public_key.format()
    path = build_blinded_path(b"\x33" * 32, [(node, EncryptedData(next_node_id=node,
                                                                  next_path_key_override=override).encode())],
                              introduction=intro)
    assert path.introduction == intro
    data, nxt = decrypt_hop(priv, path.first_path_key, path.hops[0].encrypted_recipient_data)
    assert nxt == override and data.next_node_id == node


def test_encrypted_data_fields_are_its_tables():
    from dataclasses import fields
    from asyncreceive.crypto.blinding import ENCRYPTED_DATA_TABLE
    assert [f.name for f in fields(EncryptedData)] == [f.name for f in ENCRYPTED_DATA_TABLE.fields] + ["unknown"]
