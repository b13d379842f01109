"""The lightningd adapter calls lightningd with parameters it takes: pyln-client's LightningRpc methods
with arguments they take (an integration test found `listpeerchannels(id=...)`, which pyln-client
refuses: its parameter is `peer_id`), and ``rpc.call(name, params)`` with the parameter names lightningd
documents for ``name``."""

import inspect

import pytest
from coincurve import PrivateKey
from pyln.client import LightningRpc, RpcError

from asyncreceive.crypto.onion import OutgoingOnion
from asyncreceive.crypto.sphinx import build_packet, peel_packet
from asyncreceive.shell.lightningd import Lightningd
from asyncreceive.shell.rpc import KeptConnectionRpc

#: (required, optional) request parameters of the commands the adapter sends through ``rpc.call`` or
#: that pyln-client has no method for (or an older one: its sendonion lacks groupid), as lightningd's
#: doc/schemas/<command>.json lists them
DOCUMENTED = {
    "listincoming": ((), ()),
    "createonion": (("hops", "assocdata"), ("session_key", "onion_size")),
    "sendonion": (("onion", "first_hop", "payment_hash"),
                  ("label", "shared_secrets", "partid", "bolt11", "amount_msat", "destination", "localinvreqid",
                   "groupid", "description", "total_amount_msat")),
    "injectonionmessage": (("path_key", "message"), ()),
}


def check_params(name: str, params: dict) -> None:
    """TypeError unless lightningd takes ``params`` for command ``name``."""
    if name in DOCUMENTED:
        required, optional = DOCUMENTED[name]
        unknown = set(params) - set(required) - set(optional)
        missing = set(required) - set(params)
        if unknown or missing:
            raise TypeError(f"{name}: unknown {sorted(unknown)}, missing {sorted(missing)}")
    else:
        inspect.signature(getattr(LightningRpc, name)).bind(None, **params)


class CheckedRpc:
    """Answers canned results, after binding each call to LightningRpc's real signature (commands
    pyln-client has no method for, and ``call``, to lightningd's documented parameters)."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            if name in ("call", "call_hex"):
                method = getattr(KeptConnectionRpc, name)
                bound = inspect.signature(method).bind(self, *args, **kwargs).arguments
                command, params = bound["method"], bound.get("payload") or bound.get("params") or {}
                if name == "call_hex":
                    params = {k: v.hex() for k, v in params.items()}
                check_params(command, params)
                return self._answer(command, (), params)
            if name in DOCUMENTED or not hasattr(LightningRpc, name):
                assert not args, f"{name}: pyln-client sends positional arguments as a list"
                check_params(name, kwargs)
            else:
                inspect.signature(getattr(LightningRpc, name)).bind(self, *args, **kwargs)   # TypeError if pyln would refuse it
            return self._answer(name, args, kwargs)
        return call

    def _answer(self, name, args, kwargs):
        self.calls.append((name, args, kwargs))
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):          # lightningd's work, done the way it does it
            return answer(kwargs)
        return answer


PEER = bytes.fromhex("02" + "11" * 32)


def test_has_channel_with_asks_for_that_peer_and_reads_the_state():
    rpc = CheckedRpc({"listpeerchannels": {"channels": [{"state": "CHANNELD_NORMAL", "peer_connected": False}]}})
    assert Lightningd(rpc).has_channel_with(PEER) is True
    assert rpc.calls == [("listpeerchannels", (), {"peer_id": PEER.hex()})]
    rpc.answers["listpeerchannels"] = {"channels": [{"state": "ONCHAIN"}]}
    assert Lightningd(rpc).has_channel_with(PEER) is False
    rpc.answers["listpeerchannels"] = RpcError("listpeerchannels", {}, {"message": "shutting down"})
    assert Lightningd(rpc).has_channel_with(PEER) is False


def test_connected_channel_peers_binds_too():
    rpc = CheckedRpc({"listpeerchannels": {"channels": [{"peer_id": PEER.hex(), "peer_connected": True,
                                                         "state": "CHANNELD_NORMAL"}]}})
    assert Lightningd(rpc).connected_channel_peers() == [PEER]


HASH = bytes(range(32))


def refused(command, code):
    return RpcError(command, {}, {"code": code, "message": f"error {code}"})


def test_the_checks_catch_a_wrong_parameter_name():
    rpc = CheckedRpc({"listpays": {"pays": []}, "sendonion": {}})
    with pytest.raises(TypeError):
        rpc.listpays(hash=HASH.hex())
    with pytest.raises(TypeError):
        rpc.call("sendonion", {"onion": "00", "first_hop": {}, "payment_hash": HASH.hex(), "group": 1})
    with pytest.raises(TypeError):
        rpc.call("pay", {"bolt11": "lnbc1", "max_fee": 1})
    assert rpc.calls == []


def test_channel_peer_ids_lists_peers_with_a_channel_in_any_state():
    other = bytes.fromhex("03" + "22" * 32)
    rpc = CheckedRpc({"listpeerchannels": {"channels": [{"peer_id": PEER.hex(), "state": "ONCHAIN"},
                                                        {"peer_id": PEER.hex(), "state": "CHANNELD_NORMAL"},
                                                        {"peer_id": other.hex(), "state": "OPENINGD"}]}})
    assert Lightningd(rpc).channel_peer_ids() == {PEER, other}
    assert rpc.calls == [("listpeerchannels", (), {})]
    rpc.answers["listpeerchannels"] = refused("listpeerchannels", -1)
    with pytest.raises(RpcError):          # _is_our_peer takes a failed call as "not known"
        Lightningd(rpc).channel_peer_ids()


def test_incoming_channels_are_listincoming_entries():
    entry = {"id": PEER.hex(), "short_channel_id": "103x1x0", "fee_base_msat": 1000}
    rpc = CheckedRpc({"listincoming": {"incoming": [entry]}})
    assert Lightningd(rpc).incoming_channels() == [entry]
    assert rpc.calls == [("listincoming", (), {})]


def test_listpays_and_listsendpays_ask_for_the_hash():
    rpc = CheckedRpc({"listpays": {"pays": [{"status": "complete"}]},
                      "listsendpays": {"payments": [{"status": "failed"}]}})
    node = Lightningd(rpc)
    assert node.listpays(HASH) == [{"status": "complete"}]
    assert node.listsendpays(HASH) == [{"status": "failed"}]
    assert rpc.calls == [("listpays", (), {"payment_hash": HASH.hex()}),
                         ("listsendpays", (), {"payment_hash": HASH.hex()})]


def test_pay_answers_lightningd_and_raises_its_error_with_the_code():
    rpc = CheckedRpc({"pay": {"status": "complete", "payment_preimage": "11" * 32}})
    node = Lightningd(rpc)
    assert node.pay("lnbcrt1", 5000, 2016)["payment_preimage"] == "11" * 32
    assert rpc.calls == [("pay", (), {"bolt11": "lnbcrt1", "maxfee": 5000, "maxdelay": 2016})]
    rpc.answers["pay"] = refused("pay", 200)
    with pytest.raises(RpcError) as e:
        node.pay("lnbcrt1", 5000, 2016)
    assert e.value.error["code"] == 200


def test_createonion_sendonion_waitsendpay():
    hop1, hop2 = bytes.fromhex("02" + "33" * 32), bytes.fromhex("03" + "44" * 32)
    rpc = CheckedRpc({"createonion": {"onion": "ab" * 1366, "shared_secrets": ["55" * 32, "66" * 32]},
                      "sendonion": {"status": "pending"}, "waitsendpay": {"status": "complete"}})
    node = Lightningd(rpc)
    onion, secrets = node.createonion([(hop1, b"\x01\x02"), (hop2, b"")], HASH)
    assert (onion, secrets) == ("ab" * 1366, ["55" * 32, "66" * 32])
    node.sendonion(onion, secrets, HASH, hop1, 1234, 40, partid=2, groupid=1)
    node.waitsendpay(HASH, partid=2, groupid=1)
    assert rpc.calls == [
        ("createonion", (), {"hops": [{"pubkey": hop1.hex(), "payload": "020102"}, {"pubkey": hop2.hex(), "payload": "00"}],
                             "assocdata": HASH.hex()}),
        ("sendonion", (), {"onion": onion, "payment_hash": HASH.hex(), "shared_secrets": secrets, "partid": 2,
                           "groupid": 1, "first_hop": {"id": hop1.hex(), "amount_msat": 1234, "delay": 40}}),
        ("waitsendpay", (), {"payment_hash": HASH.hex(), "partid": 2, "groupid": 1})]
    for command, code in (("sendonion", 204), ("waitsendpay", 203)):   # the payer reads the code
        rpc.answers[command] = refused(command, code)
    with pytest.raises(RpcError) as e:
        node.sendonion(onion, secrets, HASH, hop1, 1234, 40, partid=2, groupid=1)
    assert e.value.error["code"] == 204
    with pytest.raises(RpcError) as e:
        node.waitsendpay(HASH, partid=2, groupid=1)
    assert e.value.error["code"] == 203


def test_send_onion_message_has_lightningd_build_the_onion_and_injects_it():
    """lightningd builds the onion (createonion: each hop's payload with its length, no associated data,
    the size asked for) and gets it back in one injectonionmessage, whose onion the hops peel, in order,
    to their payloads."""
    keys = [PrivateKey(bytes([i]) * 32) for i in (7, 8)]
    hops = ((keys[0].public_key.format(), b"\x07"), (keys[1].public_key.format(), b"\x08" * 40))

    def createonion(params):      # as lightningd does it: a sphinx onion of the payloads as given
        assert params["assocdata"] == ""
        built = [(bytes.fromhex(h["pubkey"]), bytes.fromhex(h["payload"])) for h in params["hops"]]
        assert [p[1:] for _, p in built] == [p for _, p in hops] and [p[0] for _, p in built] == [1, 40]
        onion = build_packet(b"\x42" * 32, [(k, p[1:]) for k, p in built], params["onion_size"])
        return {"onion": onion.hex(), "shared_secrets": []}

    for size in (1300, 32768):
        rpc = CheckedRpc({"createonion": createonion, "injectonionmessage": {}})
        Lightningd(rpc).send_onion(OutgoingOnion(PEER, hops, size))
        [(create, _, _), (name, _, params)] = rpc.calls
        assert create == "createonion" and name == "injectonionmessage" and params["path_key"] == PEER.hex()
        onion = bytes.fromhex(params["message"])
        assert len(onion) == 1 + 33 + size + 32
        payload, rest = peel_packet(keys[0].secret, onion)
        assert payload == b"\x07"
        payload, rest = peel_packet(keys[1].secret, rest)
        assert (payload, rest) == (b"\x08" * 40, None)


@pytest.mark.parametrize("answer, backend", [
    ({"configs": {"wallet": {"value_str": "sqlite3:///tmp/l1/regtest/lightningd.sqlite3", "source": "cmdline"}}},
     "sqlite3"),
    ({"configs": {"wallet": {"value_str": "postgres://user:secret@db:5432/lightningd", "source": "cmdline"}}},
     "postgres"),
    ({"configs": {}}, None),                                   # not shown: unknown
    ({"configs": {"wallet": {"value_str": "nonsense"}}}, None),
    (RpcError("listconfigs", {}, {"code": -32602, "message": "Unknown config option 'wallet'"}), None),
])
def test_database_backend_is_the_wallet_options_scheme(answer, backend):
    rpc = CheckedRpc({"listconfigs": answer})
    assert Lightningd(rpc).database_backend() == backend
    assert rpc.calls == [("listconfigs", (), {"config": "wallet"})]
