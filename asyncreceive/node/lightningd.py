"""The one adapter to lightningd: every RPC the package makes goes through here."""

from typing import List, Optional, Tuple

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

    def route_to(self, node_id: bytes, max_hops: int = 6) -> Optional[List[bytes]]:
        """Nodes between us and ``node_id`` through the public channel graph, starting at a connected
        peer (shortest path); None if there is none.  Onion messages need no channel liquidity."""
        peers = {bytes.fromhex(p["id"]) for p in self.rpc.listpeers()["peers"] if p.get("connected")}
        adj = {}
        for c in self.rpc.listchannels()["channels"]:
            a, b = bytes.fromhex(c["source"]), bytes.fromhex(c["destination"])
            adj.setdefault(a, set()).add(b)
        prev = {p: None for p in peers}
        frontier = list(peers)
        for _ in range(max_hops):
            if node_id in prev:
                break
            nxt = []
            for n in frontier:
                for m in adj.get(n, ()):
                    if m not in prev and m != self.node_id:
                        prev[m] = n
                        nxt.append(m)
            frontier = nxt
        if node_id not in prev:
            return None
        path = []
        n = prev[node_id]
        while n is not None:
            path.append(n)
            n = prev[n]
        return list(reversed(path))

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

    def decrypt_encrypted_data(self, encrypted: bytes, path_key: bytes) -> Tuple[bytes, bytes]:
        """Decrypt a blinded hop addressed to our node id: (plaintext encrypted_data_tlv, next path key)."""
        try:
            r = self.rpc.call("decryptencrypteddata", {"encrypted_data": encrypted.hex(), "path_key": path_key.hex()})
        except RpcError as e:
            raise NodeError(f"decryptencrypteddata failed: {e.error.get('message', e.error)}")
        d = r["decryptencrypteddata"]
        return bytes.fromhex(d["decrypted"]), bytes.fromhex(d["next_path_key"])

    def block_height(self) -> int:
        return self.rpc.getinfo()["blockheight"]

    # ---- datastore: keys are lists of strings, values bytes; generations give compare-and-swap ----
    def ds_get(self, key: List[str]) -> Optional[Tuple[bytes, int]]:
        for e in self.rpc.listdatastore(key=key)["datastore"]:
            if e["key"] == key and "hex" in e:
                return bytes.fromhex(e["hex"]), e["generation"]
        return None

    def ds_list(self, prefix: List[str]) -> List[Tuple[List[str], bytes, int]]:
        """Every (key, value, generation) at any depth below ``prefix``."""
        out = []
        todo = [prefix]
        while todo:
            k = todo.pop()
            for e in self.rpc.listdatastore(key=k)["datastore"]:
                if "hex" in e:
                    out.append((e["key"], bytes.fromhex(e["hex"]), e["generation"]))
                elif e["key"] != k:
                    todo.append(e["key"])
        return sorted(out, key=lambda x: x[0])

    def ds_put(self, key: List[str], value: bytes, generation: Optional[int] = None) -> int:
        """Create ``key`` (generation None) or replace it only if still at ``generation``.

        Returns the new generation; raises NodeError if someone else changed it in between.
        """
        args = {"key": key, "hex": value.hex()}
        if generation is None:
            args["mode"] = "must-create"
        else:
            args["mode"] = "must-replace"
            args["generation"] = generation
        try:
            return self.rpc.call("datastore", args)["generation"]
        except RpcError as e:
            raise NodeError(f"datastore write {'/'.join(key)} failed: {e.error.get('message', e.error)}")

    def ds_set(self, key: List[str], value: bytes) -> int:
        """Write ``key`` whatever it holds (compare-and-swap on its current generation, retried)."""
        for _ in range(5):
            cur = self.ds_get(key)
            try:
                return self.ds_put(key, value, None if cur is None else cur[1])
            except NodeError:
                continue
        raise NodeError(f"datastore write {'/'.join(key)} kept conflicting")

    def ds_delete(self, key: List[str]) -> None:
        try:
            self.rpc.call("deldatastore", {"key": key})
        except RpcError:
            pass

    def connected_channel_peers(self) -> List[bytes]:
        """Peers we have a normal channel with and are connected to, in lightningd's order, once each."""
        out = []
        for c in self.rpc.listpeerchannels()["channels"]:
            if c.get("peer_connected") and c.get("state") == "CHANNELD_NORMAL":
                p = bytes.fromhex(c["peer_id"])
                if p not in out:
                    out.append(p)
        return out

    def channel_peer(self, scid: str) -> Optional[bytes]:
        """The peer at the other end of our channel ``scid`` (real scid or an alias)."""
        for c in self.rpc.listpeerchannels()["channels"]:
            alias = c.get("alias") or {}
            if scid in (c.get("short_channel_id"), alias.get("local"), alias.get("remote")):
                return bytes.fromhex(c["peer_id"])
        return None

    def send_onion(self, out: OutgoingOnion) -> None:
        hops = [{"pubkey": node.hex(), "payload": (bigsize(len(p)) + p).hex()} for node, p in out.hops]
        try:
            onion = self.rpc.call("createonion", {"hops": hops, "assocdata": "", "onion_size": out.onion_size})
            self.rpc.call("injectonionmessage", {"path_key": out.path_key.hex(), "message": onion["onion"]})
        except RpcError as e:
            raise NodeError(f"sending onion message failed: {e.error.get('message', e.error)}")
