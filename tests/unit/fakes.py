"""An in-memory stand-in for lightningd and the onion-message network, for fast protocol tests.

``FakeNode`` answers the adapter calls the services make (datastore with generations,
decryptencrypteddata, channel queries); for lightningd's channel and payment calls it runs the real
adapter's methods on ``FakeRpc`` (which a test may give more lightningd calls).  ``FakeNetwork`` carries an outgoing onion message the way real
nodes would: it builds the real sphinx packet, lets each real node peel its layer with its key, and when
a node cannot forward (the next hop is a phantom key, which is nobody's peer, or an offline node), hands
the remaining onion to *that node's* transport exactly as lightningd's ``onionmessage_forward_fail``
would.  Nothing here fakes the crypto or the codecs.
"""

import os
import time
from typing import Dict, List, Optional, Tuple

from coincurve import PrivateKey

from asyncreceive.crypto.blinding import EncryptedData, blinded_privkey, decrypt_hop
from asyncreceive.crypto.sphinx import build_packet, encode_onion_message, peel_packet
from asyncreceive.errors import DecodeError
from asyncreceive.shell.lightningd import Lightningd, NodeError
from asyncreceive.shell.graph import ChannelGraph
from asyncreceive.shell.sender import Sender
from asyncreceive.shell.transport import Transport
from asyncreceive.wire.messages import OnionMessagePayload


class FakeRpc:
    def __init__(self):
        self.incoming: List[dict] = []
        self.peer_channels: List[dict] = []

    def listincoming(self):
        return {"incoming": self.incoming}

    def listpeerchannels(self):
        return {"channels": self.peer_channels}


class FakeNode:
    def __init__(self, network: "FakeNetwork", name: str):
        self.name = name
        self.priv = os.urandom(32)
        self.node_id = PrivateKey(self.priv).public_key.format()
        self.ds: Dict[Tuple[str, ...], Tuple[bytes, int]] = {}
        self.events: List[tuple] = []    # ("write", key) / ("send", type) in order
        self.rpc = FakeRpc()
        self.network = network
        self.height = 100
        self.online = True
        self.connects: List[bytes] = []   # node ids we were asked to connect to
        self.database = "sqlite3"         # lightningd's database (database_backend)

    # adapter surface used by the services
    def makesecret(self, label: str) -> bytes:
        import hashlib
        return hashlib.sha256(self.priv + label.encode()).digest()

    def is_connected(self, node_id: bytes, fresh: bool = False) -> bool:
        return self.network.reachable(node_id)

    def connected_peers(self):
        return {n for n in self.network.nodes if n != self.node_id and self.network.reachable(n)}

    def channel_adjacency(self):
        adj = {}
        for a, b in self.network.channels.values():
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
        return adj

    def connect_then(self, node_id: bytes, timeout: float, on_done) -> None:
        self.connects.append(node_id)
        on_done(None if self.network.reachable(node_id) else f"cannot connect to {node_id.hex()}")

    def gossip_route(self, node_id):
        return None  # no gossip in the fake network

    def resolve_sciddir(self, scid, direction):
        raise NodeError("no channels in the fake network")

    def channel_peer(self, scid):
        return None

    def has_channel_with(self, node_id: bytes) -> bool:
        return any(c.get("peer_id") == node_id.hex() and c.get("state") == "CHANNELD_NORMAL"
                   for c in self.rpc.peer_channels)

    def connected_channel_peers(self):
        return [bytes.fromhex(c["peer_id"]) for c in self.rpc.peer_channels
                if c.get("peer_connected") and c.get("state") == "CHANNELD_NORMAL" and self.is_connected(bytes.fromhex(c["peer_id"]))]

    def block_height(self) -> int:
        return self.height

    # the real adapter's code, on FakeRpc (a test gives it listpays, listsendpays, call when it needs them)
    channel_peer_ids = Lightningd.channel_peer_ids
    incoming_channels = Lightningd.incoming_channels
    listpays = Lightningd.listpays
    listsendpays = Lightningd.listsendpays
    pay = Lightningd.pay
    createonion = Lightningd.createonion
    sendonion = Lightningd.sendonion
    waitsendpay = Lightningd.waitsendpay

    def decrypt_encrypted_data(self, encrypted: bytes, path_key: bytes):
        data, nxt = decrypt_hop(self.priv, path_key, encrypted)
        return data.encode(), nxt

    def send_onion(self, out) -> None:
        self.events.append(("send", out.hops[-1][1][:8]))
        self.network.deliver(out)

    def database_backend(self):
        return self.database

    def ds_get(self, key):
        return self.ds.get(tuple(key))

    def ds_list(self, prefix):
        p = tuple(prefix)
        return sorted((list(k), v, g) for k, (v, g) in self.ds.items() if k[:len(p)] == p)

    def ds_sizes(self, prefix):
        return [(k, len(v)) for k, v, _ in self.ds_list(prefix)]

    def ds_put(self, key, value, generation=None):
        k = tuple(key)
        cur = self.ds.get(k)
        if (generation is None) != (cur is None) or (cur is not None and cur[1] != generation):
            raise NodeError(f"datastore write {'/'.join(key)} failed: generation mismatch")
        gen = 0 if cur is None else cur[1] + 1
        self.ds[k] = (value, gen)
        self.events.append(("write", k))
        return gen

    def ds_set(self, key, value):
        cur = self.ds_get(key)
        return self.ds_put(key, value, None if cur is None else cur[1])

    def ds_delete(self, key):
        self.ds.pop(tuple(key), None)


class FakeNetwork:
    def __init__(self, clock):
        self.nodes: Dict[bytes, FakeNode] = {}
        self.transports: Dict[bytes, Transport] = {}   # phantom id -> transport
        self.by_node: Dict[bytes, Transport] = {}      # node id -> transport
        self.clock = clock
        self.delivered = 0
        self.dropped = 0
        self.channels: Dict[int, Tuple[bytes, bytes]] = {}   # scid -> its two nodes
        self.log: List[tuple] = []

    def add(self, name: str) -> Tuple[FakeNode, Transport]:
        node = FakeNode(self, name)
        log = lambda msg, level="info", n=name: self.log.append((n, level, msg))  # noqa: E731
        t = Transport(node, node.makesecret("phantom"), node.makesecret("context"), log, clock=self.clock,
                      sender=Sender(log, threads=0), graph=ChannelGraph(node, log, background=False))
        self.nodes[node.node_id] = node
        self.transports[t.phantom_id] = t
        self.by_node[node.node_id] = t
        return node, t

    def reachable(self, node_id: bytes) -> bool:
        n = self.nodes.get(node_id)
        return n is not None and n.online

    def deliver(self, out) -> None:
        """Carry an onion hop by hop, each real node peeling its own layer."""
        packet = build_packet(os.urandom(32), list(out.hops), size=out.onion_size)
        path_key = out.path_key
        owners = list(self.nodes.values())
        expected = None  # after the first hop, only the node named by the previous hop may peel
        source = None    # the node the current one got it from (none for the first: it was injected)
        for _ in range(len(out.hops)):
            candidates = owners if expected is None else [self.nodes[expected]]
            node = self._owner(candidates, path_key, packet)
            if node is None or not node.online:
                self.dropped += 1
                return  # dropped, as a real network would
            payload, next_packet = peel_packet(blinded_privkey(node.priv, path_key), packet)
            omp = OnionMessagePayload.decode(payload)
            data, next_key = decrypt_hop(node.priv, path_key, omp.encrypted_recipient_data)
            if next_packet is not None and data.next_node_id is None and data.short_channel_id is not None:
                ends = self.channels.get(data.short_channel_id, ())
                if node.node_id not in ends:
                    self.dropped += 1
                    return  # lightningd forwards by scid over its own channels only
                data = EncryptedData(next_node_id=[e for e in ends if e != node.node_id][0])
            if next_packet is None or data.next_node_id is None:
                return  # final at a real node: only the compact-path hook would see it (not modelled)
            if not self.reachable(data.next_node_id):
                self.delivered += data.next_node_id in self.transports
                notification = {"next_node_id": data.next_node_id.hex(),
                                "outgoing": encode_onion_message(next_key, next_packet).hex()}
                if source is not None:
                    notification["source"] = source.hex()
                self.by_node[node.node_id].handle_forward_fail(notification)
                return
            path_key, packet, expected, source = next_key, next_packet, data.next_node_id, node.node_id

    @staticmethod
    def _owner(nodes, path_key, packet) -> Optional[FakeNode]:
        for n in nodes:
            try:
                peel_packet(blinded_privkey(n.priv, path_key), packet)
                return n
            except DecodeError:
                continue
        return None


__all__ = ["FakeNetwork", "FakeNode", "EncryptedData"]


def wait_until(cond, seconds=5.0):
    """Poll ``cond`` until it holds or ``seconds`` pass (for tests with threads); its last value."""
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)
    return cond()
