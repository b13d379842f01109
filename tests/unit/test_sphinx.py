import pytest
from coincurve import PrivateKey
from hypothesis import given, settings, strategies as st

from asyncreceive.crypto.blinding import (EncryptedData, blinded_privkey, build_blinded_path, decrypt_hop,
                                         decrypt_with_secret, hop_secret)
from asyncreceive.crypto.sphinx import (LARGE_SIZE, SMALL_SIZE, build_packet, decode_onion_message,
                                        encode_onion_message, peel_packet)
from asyncreceive.errors import DecodeError
from asyncreceive.wire.tlv import Reader, decode_tlv, encode_tlv

from ..vectors import load_vector
from .strategies import secrets

H = bytes.fromhex


# --- onion-test.json -----------------------------------------------------------------------------------

def _onion_vector():
    v = load_vector("onion-test.json")
    g = v["generate"]
    hops = []
    for h in g["hops"]:
        r = Reader(H(h["payload"]))  # the vector's payloads carry their length prefix
        n = r.bigsize("len")
        payload = r.rest()
        assert len(payload) == n
        hops.append((H(h["pubkey"]), payload))
    return v, H(g["session_key"]), hops, H(g["associated_data"])


def test_onion_vector_build():
    v, sk, hops, ad = _onion_vector()
    assert build_packet(sk, hops, assocdata=ad).hex() == v["onion"]
    assert build_packet(sk, hops, size=1300, assocdata=ad).hex() == v["onion"]


def test_onion_vector_peel():
    v, sk, hops, ad = _onion_vector()
    packet = H(v["onion"])
    assert len(v["decode"]) == len(hops)
    for i, priv in enumerate(v["decode"]):
        payload, packet = peel_packet(H(priv), packet, ad)
        assert payload == hops[i][1]
        assert (packet is None) == (i == len(hops) - 1)
        if packet is not None:
            assert len(packet) == 1366


def test_onion_vector_wrong_assocdata_rejected():
    v, _, _, ad = _onion_vector()
    with pytest.raises(DecodeError) as e:
        peel_packet(H(v["decode"][0]), H(v["onion"]), b"")
    assert e.value.field == "onion.hmac"


# --- blinded-onion-message-onion-test.json -------------------------------------------------------------

def test_onion_message_vector_build():
    v = load_vector("blinded-onion-message-onion-test.json")
    route = v["route"]["hops"]
    final = v["decrypt"]["hops"][-1]["tlvs"]
    assert final["encrypted_recipient_data"] == route[-1]["encrypted_recipient_data"]
    hops = []
    for i, h in enumerate(route):
        recs = [(4, H(h["encrypted_recipient_data"]))]
        if i == len(route) - 1:
            recs = [(1, H(v["onionmessage"]["unknown_tag_1"]))] + recs
        hops.append((H(h["blinded_node_id"]), encode_tlv(recs)))
    packet = build_packet(H(v["generate"]["session_key"]), hops)
    assert packet.hex() == v["onionmessage"]["onion_message_packet"]
    first = H(v["decrypt"]["hops"][0]["onion_message"])
    assert encode_onion_message(H(v["route"]["first_path_key"]), packet) == first


def test_onion_message_vector_decrypt():
    v = load_vector("blinded-onion-message-onion-test.json")
    hops = v["decrypt"]["hops"]
    for i, h in enumerate(hops):
        priv = H(h["privkey"])
        path_key, packet = decode_onion_message(H(h["onion_message"]))
        payload, next_packet = peel_packet(blinded_privkey(priv, path_key), packet)
        tlv = decode_tlv(payload, "onionmsg_tlv", known={4})
        data, next_path_key = decrypt_hop(priv, path_key, tlv.get(4))
        if i < len(hops) - 1:
            assert next_packet is not None
            assert data.next_node_id.hex() == h["next_node_id"]
            assert encode_onion_message(next_path_key, next_packet).hex() == hops[i + 1]["onion_message"]
        else:
            assert next_packet is None
            assert tlv.get(1).hex() == h["tlvs"]["unknown_tag_1"]
            assert tlv.get(4).hex() == h["tlvs"]["encrypted_recipient_data"]
            assert data.path_id.hex() == v["generate"]["hops"][-1]["tlvs"]["path_id"]
            assert data.next_node_id is None


def test_onion_message_vector_raw_key_is_not_enough():
    v = load_vector("blinded-onion-message-onion-test.json")
    h = v["decrypt"]["hops"][1]
    _, packet = decode_onion_message(H(h["onion_message"]))
    with pytest.raises(DecodeError):
        peel_packet(H(h["privkey"]), packet)


# --- onion_message wrapper -----------------------------------------------------------------------------

@pytest.mark.parametrize("raw,field", [
    ("0200", "onion_message.type"),
    ("0202" + "02" * 33, "onion_message.type"),
    ("0201" + "02" * 20, "onion_message.path_key"),
    ("0201" + "04" * 33 + "0000", "onion_message.path_key"),
    ("0201" + "031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f" + "0005" + "00" * 4,
     "onion_message.onion_message_packet"),
    ("0201" + "031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f" + "0001" + "00" * 4,
     "onion_message"),
])
def test_decode_onion_message_rejects(raw, field):
    with pytest.raises(DecodeError) as e:
        decode_onion_message(H(raw))
    assert e.value.field == field


# --- properties ----------------------------------------------------------------------------------------

payloads = st.binary(min_size=1, max_size=200)


def _peel_all(privs, packet, assocdata=b""):
    out = []
    for i, priv in enumerate(privs):
        assert packet is not None
        size = len(packet)
        payload, packet = peel_packet(priv, packet, assocdata)
        out.append(payload)
        if packet is not None:
            assert len(packet) == size
    assert packet is None
    return out


@settings(max_examples=40, deadline=None)
@given(secrets, st.lists(st.tuples(secrets, payloads), min_size=1, max_size=5), st.binary(max_size=32))
def test_build_then_peel_small(session_key, hops, assocdata):
    privs = [k for k, _ in hops]
    packet = build_packet(session_key, [(PrivateKey(k).public_key.format(), p) for k, p in hops],
                          assocdata=assocdata)
    assert len(packet) == 1 + 33 + SMALL_SIZE + 32
    assert _peel_all(privs, packet, assocdata) == [p for _, p in hops]


@settings(max_examples=8, deadline=None)
@given(secrets, st.lists(st.tuples(secrets, payloads), min_size=0, max_size=3), secrets,
       st.integers(1301, 30000))
def test_build_then_peel_large(session_key, hops, last_key, last_len):
    hops = hops + [(last_key, bytes([7]) * last_len)]
    privs = [k for k, _ in hops]
    packet = build_packet(session_key, [(PrivateKey(k).public_key.format(), p) for k, p in hops])
    assert len(packet) == 1 + 33 + LARGE_SIZE + 32
    assert _peel_all(privs, packet) == [p for _, p in hops]


def test_3000_byte_final_payload_through_blinded_path():
    privs = [bytes([i]) * 32 for i in (0x11, 0x12, 0x13)]
    nodes = [PrivateKey(k).public_key.format() for k in privs]
    datas = [EncryptedData(next_node_id=nodes[1]), EncryptedData(next_node_id=nodes[2]),
             EncryptedData(path_id=b"\x05" * 32)]
    path = build_blinded_path(b"\x21" * 32, [(n, d.encode()) for n, d in zip(nodes, datas)])
    big = b"\xaa" * 3000
    payloads = [encode_tlv([(4, h.encrypted_recipient_data)]) for h in path.hops[:-1]]
    payloads.append(encode_tlv([(4, path.hops[-1].encrypted_recipient_data), (64, big)]))
    packet = build_packet(b"\x22" * 32, [(h.blinded_node_id, p) for h, p in zip(path.hops, payloads)])
    assert len(packet) == 1 + 33 + LARGE_SIZE + 32
    msg = encode_onion_message(path.first_path_key, packet)
    for i, priv in enumerate(privs):
        path_key, packet = decode_onion_message(msg)
        payload, nxt = peel_packet(blinded_privkey(priv, path_key), packet)
        assert payload == payloads[i]
        data, next_key = decrypt_hop(priv, path_key, decode_tlv(payload, "p", known={4, 64}).get(4))
        assert data == datas[i]
        ss = hop_secret(priv, path_key)   # the final hop's way (peel_phantom): one ECDH, no next key
        assert blinded_privkey(priv, path_key, ss=ss) == blinded_privkey(priv, path_key)
        assert decrypt_with_secret(ss, decode_tlv(payload, "p", known={4, 64}).get(4)) == data
        if nxt is None:
            assert i == 2
            break
        msg = encode_onion_message(next_key, nxt)


def test_build_size_limits():
    k = PrivateKey(b"\x01" * 32).public_key.format()
    with pytest.raises(ValueError):
        build_packet(b"\x02" * 32, [(k, b"\x00" * 1300)], size=1300)
    with pytest.raises(ValueError):
        build_packet(b"\x02" * 32, [(k, b"\x00" * 40000)])
    with pytest.raises(ValueError):
        build_packet(b"\x02" * 32, [])
    with pytest.raises(ValueError):
        build_packet(b"\x02" * 32, [(k, b"")])
    # exactly filling the routing info works: 3 (bigsize) + 1265 + 32 = 1300
    p = build_packet(b"\x02" * 32, [(k, b"\x01" * 1265)])
    assert len(p) == 1366
    assert peel_packet(b"\x01" * 32, p) == (b"\x01" * 1265, None)
    assert len(build_packet(b"\x02" * 32, [(k, b"\x01" * 1266)])) == 1 + 33 + LARGE_SIZE + 32
    # a custom size
    p = build_packet(b"\x02" * 32, [(k, b"hi")], size=100)
    assert len(p) == 166 and peel_packet(b"\x01" * 32, p) == (b"hi", None)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=400))
def test_random_packets_only_decodeerror(data):
    try:
        peel_packet(b"\x01" * 32, data)
    except DecodeError as e:
        assert e.field.startswith("onion")


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=200))
def test_random_onion_messages_only_decodeerror(data):
    try:
        decode_onion_message(b"\x02\x01" + data)
    except DecodeError as e:
        assert e.field.startswith("onion_message")


_PRIV = b"\x01" * 32
_PACKET = build_packet(b"\x02" * 32, [(PrivateKey(_PRIV).public_key.format(), b"payload")], size=200)


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_tampered_packets_rejected(data):
    p = bytearray(_PACKET)
    i = data.draw(st.integers(0, len(p) - 1))
    p[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecodeError) as e:
        peel_packet(_PRIV, bytes(p))
    assert e.value.field.startswith("onion")


def test_malformed_packets():
    cases = {
        "onion": _PACKET[:66],
        "onion.version": b"\x01" + _PACKET[1:],
        "onion.ephemeral_key": _PACKET[:1] + b"\x02" + b"\xff" * 32 + _PACKET[34:],
        "onion.hmac": _PACKET[:-1] + bytes([_PACKET[-1] ^ 1]),
    }
    for field, pkt in cases.items():
        with pytest.raises(DecodeError) as e:
            peel_packet(_PRIV, pkt)
        assert e.value.field == field
    with pytest.raises(DecodeError):
        peel_packet(b"\x03" * 32, _PACKET)  # not for this key


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_valid_hmac_garbage_contents_only_decodeerror(info):
    # a packet whose HMAC is right but whose routing info decrypts to garbage (bad lengths etc.)
    import hashlib
    import hmac

    from asyncreceive.crypto.blinding import ecdh, hmac256

    eph = PrivateKey(b"\x09" * 32).public_key.format()
    ss = ecdh(_PRIV, eph)
    mac = hmac.new(hmac256(b"mu", ss), info, hashlib.sha256).digest()
    try:
        payload, nxt = peel_packet(_PRIV, b"\x00" + eph + info + mac)
    except DecodeError as e:
        assert e.field.startswith("onion.payload")
    else:
        assert nxt is None or len(nxt) == 1 + 33 + len(info) + 32


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=3000))
def test_chacha_xor_is_the_data_xor_the_keystream(key, data):
    from asyncreceive.crypto.sphinx import _xor, chacha_stream, chacha_xor
    assert chacha_xor(key, data) == _xor(data, chacha_stream(key, len(data)))
