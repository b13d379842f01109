"""The one adapter to lightningd: every RPC the package makes goes through here."""

from typing import Optional

from pyln.client import RpcError

from ..crypto.onion import OutgoingOnion
from ..wire.tlv import bigsize


class NodeError(Exception):
    """lightningd refused or failed something we asked for."""


class Lightningd:
    def __init__(self, rpc):
        self.rpc = rpc
        self._node_id: Optional[bytes] = None

    @property
    def node_id(self) -> bytes:
        if self._node_id is None:
            self._node_id = bytes.fromhex(self.rpc.getinfo()["id"])
        return self._node_id

    def makesecret(self, label: str) -> bytes:
        """A 32-byte secret that only this node can derive, stable across restarts."""
        return bytes.fromhex(self.rpc.call("makesecret", {"string": label})["secret"])

    def is_connected(self, node_id: bytes) -> bool:
        peers = self.rpc.listpeers(node_id.hex())["peers"]
        return bool(peers) and bool(peers[0].get("connected"))

    def ensure_connected(self, node_id: bytes) -> None:
        """Onion messages only go to connected peers; connect by id (gossip addresses) if needed."""
        if node_id == self.node_id or self.is_connected(node_id):
            return
        try:
            self.rpc.connect(node_id.hex())
        except RpcError as e:
            raise NodeError(f"cannot connect to {node_id.hex()}: {e.error.get('message', e.error)}")

    def resolve_sciddir(self, scid: str, direction: int) -> bytes:
        """The node at ``direction`` (0 = lesser node id) of channel ``scid``."""
        chans = self.rpc.listchannels(short_channel_id=scid)["channels"]
        for c in chans:
            if c.get("direction") == direction:
                return bytes.fromhex(c["source"])
        for c in self.rpc.listpeerchannels()["channels"]:
            if scid in (c.get("short_channel_id"), (c.get("alias") or {}).get("remote")):
                ids = sorted([self.node_id, bytes.fromhex(c["peer_id"])])
                return ids[direction]
        raise NodeError(f"unknown channel {scid}")

    def send_onion(self, out: OutgoingOnion) -> None:
        hops = [{"pubkey": node.hex(), "payload": (bigsize(len(p)) + p).hex()} for node, p in out.hops]
        try:
            onion = self.rpc.call("createonion", {"hops": hops, "assocdata": "", "onion_size": out.onion_size})
            self.rpc.call("injectonionmessage", {"path_key": out.path_key.hex(), "message": onion["onion"]})
        except RpcError as e:
            raise NodeError(f"sending onion message failed: {e.error.get('message', e.error)}")
