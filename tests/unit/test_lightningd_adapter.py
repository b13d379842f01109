"""The lightningd adapter calls pyln-client's LightningRpc with arguments it takes (an integration test
found `listpeerchannels(id=...)`, which pyln-client refuses: its parameter is `peer_id`)."""

import inspect

from pyln.client import LightningRpc, RpcError

from asyncreceive.node.lightningd import Lightningd


class CheckedRpc:
    """Answers canned results, after binding each call to LightningRpc's real signature."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def __getattr__(self, name):
        real = getattr(LightningRpc, name)

        def call(*args, **kwargs):
            inspect.signature(real).bind(self, *args, **kwargs)   # TypeError if pyln would refuse it
            self.calls.append((name, args, kwargs))
            answer = self.answers[name]
            if isinstance(answer, Exception):
                raise answer
            return answer
        return call


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
