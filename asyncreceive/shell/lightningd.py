"""The one adapter to lightningd: every RPC the package makes goes through here."""

import threading
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from pyln.client import RpcError

from ..crypto.onion import OutgoingOnion
from ..wire.tlv import bigsize


class NodeError(Exception):
    """lightningd refused or failed something we asked for."""


#: channel states in which lightningd reconnects to the peer and the channel can carry payments
OPEN_STATES = ("CHANNELD_AWAITING_LOCKIN", "CHANNELD_NORMAL", "DUALOPEND_AWAITING_LOCKIN")
#: connections being made at once at most (each waits in its own thread for lightningd's answer)
MAX_CONNECTING = 8


class _Connect(threading.Thread):
    """One ``connect`` RPC; each waiter hears of it once: when it ends or when it has taken ``timeout``
    seconds, whichever is first.  This thread waits for the RPC, which runs in a thread of its own (it
    blocks until lightningd answers), at most ``timeout`` seconds."""

    def __init__(self, rpc, node_id: bytes, timeout: float, on_end: Callable[[bytes], None]):
        super().__init__(name="asyncreceive-connect", daemon=True)
        self.rpc, self.node_id, self.on_end = rpc, node_id, on_end
        self.timeout = timeout
        self._lock = threading.Lock()
        self._waiting: List[Callable[[Optional[str]], None]] = []
        self._outcome: Optional[Tuple[Optional[str]]] = None   # (error or None,) once told

    def wait_for(self, on_done: Callable[[Optional[str]], None]) -> None:
        with self._lock:
            told = self._outcome
            if told is None:
                self._waiting.append(on_done)
        if told is not None:   # timed out already (lightningd is still trying)
            on_done(*told)

    def _tell(self, error: Optional[str]) -> None:
        with self._lock:
            if self._outcome is not None:
                return
            self._outcome = (error,)
            waiting, self._waiting = self._waiting, []
        for on_done in waiting:
            on_done(error)

    def run(self) -> None:
        call = threading.Thread(target=self._connect, name="asyncreceive-connect-rpc", daemon=True)
        call.start()
        call.join(self.timeout)
        if call.is_alive():   # lightningd still tries (it holds the slot): the waiters go on without it
            self._tell(f"no answer within {self.timeout:g} s")

    def _connect(self) -> None:
        error = None
        try:
            self.rpc.connect(self.node_id.hex())
        except RpcError as e:
            error = str(e.error.get("message", e.error))
        except Exception as e:  # lightningd gone, or anything else: the caller sees a failed connect
            error = str(e)
        finally:
            self.on_end(self.node_id)
            self._tell(error)


class PeerSet:
    """The peers lightningd is connected to, kept from its ``connect``/``disconnect`` notifications so
    that a send does not ask ``listpeers`` each time.  Loaded from ``listpeers`` on first use and again
    on :meth:`reload` (the tick heals any drift); notifications that come while a listing is under way
    are applied again on top of it, in order, so a listing older than them does not undo them."""

    def __init__(self, listpeers: Callable[[], Set[bytes]]):
        self._listpeers = listpeers
        self._lock = threading.Lock()
        self._reloading = threading.Lock()   # one listing at a time (each has its own events seen)
        self._peers: Optional[Set[bytes]] = None       # None: not listed yet
        self._during: Optional[List[Tuple[bool, bytes]]] = None   # events seen while listing

    def changed(self, node_id: bytes, connected: bool) -> None:
        with self._lock:
            if self._peers is not None:
                (self._peers.add if connected else self._peers.discard)(node_id)
            if self._during is not None:
                self._during.append((connected, node_id))

    def reload(self) -> Set[bytes]:
        with self._reloading:
            return self._reload()

    def _reload(self) -> Set[bytes]:
        with self._lock:
            self._during = []
        try:
            listed = set(self._listpeers())
        except BaseException:
            with self._lock:
                self._during = None
            raise
        with self._lock:
            for connected, node_id in self._during or ():
                (listed.add if connected else listed.discard)(node_id)
            self._during = None
            self._peers = listed
            return set(listed)

    def current(self) -> Set[bytes]:
        with self._lock:
            if self._peers is not None:
                return set(self._peers)
        return self.reload()

    def __contains__(self, node_id: bytes) -> bool:
        with self._lock:
            if self._peers is not None:
                return node_id in self._peers
        return node_id in self.reload()


class Lightningd:
    def __init__(self, rpc):
        self.rpc = rpc
        self._node_id: Optional[bytes] = None
        self._connecting: Dict[bytes, _Connect] = {}
        self._connect_lock = threading.Lock()
        self._peers: Optional[PeerSet] = None   # set by follow_peers

    def follow_peers(self) -> PeerSet:
        """Keep the connected peers from notifications from now on (the plugin subscribes to
        ``connect`` and ``disconnect`` and tells :meth:`peer_changed`); without it every question asks
        ``listpeers``."""
        self._peers = PeerSet(self._list_connected)
        return self._peers

    def peer_changed(self, node_id: bytes, connected: bool) -> None:
        if self._peers is not None:
            self._peers.changed(node_id, connected)

    def reload_peers(self) -> None:
        """List the connected peers again (on the tick), in case a notification was missed."""
        if self._peers is not None:
            self._peers.reload()

    def _list_connected(self) -> Set[bytes]:
        return {bytes.fromhex(p["id"]) for p in self.rpc.listpeers()["peers"] if p.get("connected")}

    @property
    def node_id(self) -> bytes:
        if self._node_id is None:
            self._node_id = bytes.fromhex(self.rpc.getinfo()["id"])
        return self._node_id

    def makesecret(self, label: str) -> bytes:
        """A 32-byte secret that only this node can derive, stable across restarts."""
        return bytes.fromhex(self.rpc.call("makesecret", {"string": label})["secret"])

    def is_connected(self, node_id: bytes, fresh: bool = False) -> bool:
        """Whether lightningd is connected to ``node_id``: from the peers kept from notifications when
        followed, unless ``fresh`` (asked of lightningd: for a decision that must not act on a
        disconnect the main thread has not told yet)."""
        if self._peers is not None and not fresh:
            return node_id in self._peers
        peers = self.rpc.listpeers(node_id.hex())["peers"]
        return bool(peers) and bool(peers[0].get("connected"))

    def connected_peers(self) -> Set[bytes]:
        if self._peers is not None:
            return self._peers.current()
        return self._list_connected()

    def channel_adjacency(self) -> Dict[bytes, Set[bytes]]:
        """The public channel graph (lightningd's gossip): node -> nodes it has a channel towards."""
        adj: Dict[bytes, Set[bytes]] = {}
        for c in self.rpc.listchannels()["channels"]:
            adj.setdefault(bytes.fromhex(c["source"]), set()).add(bytes.fromhex(c["destination"]))
        return adj

    def gossip_route(self, node_id: bytes, fanout: int = 8) -> Optional[List[bytes]]:
        """Nodes to cross before ``node_id`` (first a connected peer), found from its neighbours in the
        gossip (``listchannels destination=``: small answers, never the whole graph): one of them is our
        peer, or a neighbour of one of the first ``fanout`` of them is.  None otherwise.  Onion messages
        need no liquidity, so payment routing (getroute) is not the tool."""
        def neighbours(n: bytes) -> List[bytes]:
            try:
                chans = self.rpc.listchannels(destination=n.hex())["channels"]
            except (RpcError, KeyError):
                return []
            return list(dict.fromkeys(bytes.fromhex(c["source"]) for c in chans))

        peers = self.connected_peers()
        first = [n for n in neighbours(node_id) if n != self.node_id]
        for n in first:
            if n in peers:
                return [n]
        for n in first[:fanout]:
            for m in neighbours(n):
                if m in peers and m != node_id:
                    return [m, n]
        return None

    def connect_then(self, node_id: bytes, timeout: float, on_done: Callable[[Optional[str]], None]) -> None:
        """Connect to ``node_id`` (gossip addresses) without waiting: ``on_done(error or None)`` is called
        (on another thread, or at once if already connected) when the connect ends or has taken
        ``timeout`` seconds.  Raises NodeError at once if ``MAX_CONNECTING`` connects are pending.

        lightningd's own attempt may take a minute (a host that accepts TCP and never answers the
        handshake); it goes on in the background, one at a time per node, holding its slot.
        """
        if node_id == self.node_id or self.is_connected(node_id):
            return on_done(None)
        with self._connect_lock:
            attempt = self._connecting.get(node_id)
            if attempt is None:
                if len(self._connecting) >= MAX_CONNECTING:
                    raise NodeError(f"cannot connect to {node_id.hex()}: too many connections pending "
                                    f"({MAX_CONNECTING})")
                attempt = self._connecting[node_id] = _Connect(self.rpc, node_id, timeout, self._connect_done)
                attempt.start()
        attempt.wait_for(lambda error: on_done(None if error is None else f"cannot connect to {node_id.hex()}: {error}"))

    def _connect_done(self, node_id: bytes) -> None:
        with self._connect_lock:
            self._connecting.pop(node_id, None)

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

    def database_backend(self) -> Optional[str]:
        """The kind of database lightningd keeps (its datastore included): the scheme of its ``wallet``
        option, "sqlite3" or "postgres"; None if lightningd does not say (listconfigs leaves the option
        out unless it was set: the default is SQLite)."""
        try:
            wallet = self.rpc.call("listconfigs", {"config": "wallet"}).get("configs", {}).get("wallet")
        except RpcError:
            return None
        dsn = wallet.get("value_str") if isinstance(wallet, dict) else None
        return dsn.split(":", 1)[0] if isinstance(dsn, str) and ":" in dsn else None

    # ---- datastore: keys are lists of strings, values bytes; generations give compare-and-swap ----
    def ds_get(self, key: List[str]) -> Optional[Tuple[bytes, int]]:
        for e in self.rpc.listdatastore(key=key)["datastore"]:
            if e["key"] == key and "hex" in e:
                return bytes.fromhex(e["hex"]), e["generation"]
        return None

    def ds_list(self, prefix: List[str]) -> List[Tuple[List[str], bytes, int]]:
        """Every (key, value, generation) at any depth below ``prefix``, in key order."""
        return [(e["key"], bytes.fromhex(e["hex"]), e["generation"]) for e in self._ds_walk(prefix)]

    def ds_sizes(self, prefix: List[str]) -> Iterator[Tuple[List[str], int]]:
        """(key, value length) of every record below ``prefix``, in key order, one listing (one key's
        children) at a time: the values are never all in memory."""
        for e in self._ds_walk(prefix):
            yield e["key"], len(e["hex"]) // 2

    def _ds_walk(self, key: List[str]) -> Iterator[dict]:
        """listdatastore's entries with a value at any depth below ``key``, in key order (lightningd
        lists one level: a key's children, those with children of their own without a value)."""
        for e in sorted(self.rpc.listdatastore(key=key)["datastore"], key=lambda e: e["key"]):
            if "hex" in e:
                yield e
            elif e["key"] != key:
                yield from self._ds_walk(e["key"])

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

    def has_channel_with(self, node_id: bytes) -> bool:
        """Whether we have a channel with ``node_id`` that is open or opening (connected or not)."""
        try:
            chans = self.rpc.listpeerchannels(peer_id=node_id.hex())["channels"]
        except RpcError:     # lightningd's answer, not remote input: a refused call means "not known"
            return False
        return any(c.get("state") in OPEN_STATES for c in chans)

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
        """Inject an onion message, built by lightningd's ``createonion`` (in C: a 32 kB onion of three
        hops costs the plugin 0.45 ms of CPU there, 0.77 ms built in Python by ``crypto/sphinx.py``,
        measured with ``make bench-scale STAGES=1``); a fresh session key each time (lightningd's)."""
        try:
            onion, _ = self.createonion(out.hops, b"", out.onion_size)
            params = {"path_key": out.path_key, "message": bytes.fromhex(onion)}
            if hasattr(self.rpc, "call_hex"):    # the plugin's KeptConnectionRpc
                self.rpc.call_hex("injectonionmessage", params)
            else:                                 # pyln's LightningRpc (tests)
                self.rpc.call("injectonionmessage", {k: v.hex() for k, v in params.items()})
        except RpcError as e:
            raise NodeError(f"sending onion message failed: {e.error.get('message', e.error)}")
        except ValueError as e:   # not hex: lightningd would not answer that
            raise NodeError(f"sending onion message failed: createonion gave {e}")

    def channel_peer_ids(self) -> Set[bytes]:
        """The peers we have a channel with, in any state (open, opening, closing, onchain).  Raises
        what lightningd's ``listpeerchannels`` raises."""
        return {bytes.fromhex(c["peer_id"]) for c in self.rpc.listpeerchannels()["channels"] if c.get("peer_id")}

    def incoming_channels(self) -> List[dict]:
        """lightningd's ``listincoming`` entries (one per channel a payment can reach us through: the
        peer's ``id``, ``short_channel_id``, the peer's fees and ``cltv_expiry_delta``, ``htlc_min_msat``,
        ``htlc_max_msat``, ``incoming_capacity_msat``, ``peer_can_forward``), as lightningd gives them."""
        return self.rpc.listincoming()["incoming"]

    # ---- payments: lightningd's RpcError is raised as is (callers read its code) ----
    def listpays(self, payment_hash: bytes) -> List[dict]:
        """lightningd's ``pay`` attempts for ``payment_hash`` (``status``, and ``preimage`` once complete)."""
        return self.rpc.listpays(payment_hash=payment_hash.hex())["pays"]

    def listsendpays(self, payment_hash: bytes) -> List[dict]:
        """The HTLCs (parts) lightningd sent for ``payment_hash``, each with its ``status``."""
        return self.rpc.listsendpays(payment_hash=payment_hash.hex())["payments"]

    def pay(self, bolt11: str, maxfee_msat: int, maxdelay: int) -> dict:
        """Pay a BOLT 11 invoice with lightningd's ``pay`` and wait for the end: its answer (``status``,
        ``payment_preimage`` when complete).  Raises RpcError when ``pay`` fails or refuses."""
        return self.rpc.call("pay", {"bolt11": bolt11, "maxfee": maxfee_msat, "maxdelay": maxdelay})

    def createonion(self, hops: Sequence[Tuple[bytes, bytes]], assocdata: bytes,
                    onion_size: Optional[int] = None) -> Tuple[str, List[str]]:
        """A sphinx onion to the (node id, payload) ``hops``: (onion, shared secrets), hex as lightningd
        gives them (sendonion takes both).  ``onion_size`` None: lightningd's payment onion size."""
        params = {"hops": [{"pubkey": node.hex(), "payload": (bigsize(len(p)) + p).hex()} for node, p in hops],
                  "assocdata": assocdata.hex()}
        if onion_size is not None:
            params["onion_size"] = onion_size
        onion = self.rpc.call("createonion", params)
        return onion["onion"], onion["shared_secrets"]

    def sendonion(self, onion: str, shared_secrets: List[str], payment_hash: bytes, first_hop: bytes,
                  amount_msat: int, delay: int, partid: int, groupid: int) -> None:
        """Offer ``first_hop`` an HTLC of ``amount_msat`` expiring ``delay`` blocks from now, carrying
        ``onion`` (from :meth:`createonion`); returns once it is on its way (see :meth:`waitsendpay`).
        Raises RpcError if lightningd refuses it."""
        self.rpc.call("sendonion", {"onion": onion, "payment_hash": payment_hash.hex(),
                                    "first_hop": {"id": first_hop.hex(), "amount_msat": amount_msat, "delay": delay},
                                    "shared_secrets": shared_secrets, "partid": partid, "groupid": groupid})

    def waitsendpay(self, payment_hash: bytes, partid: int, groupid: int) -> None:
        """Wait for the result of the HTLC sent with :meth:`sendonion`: returns when it is complete;
        raises RpcError otherwise (its code says whether it failed for good or is still pending)."""
        self.rpc.call("waitsendpay", {"payment_hash": payment_hash.hex(), "partid": partid, "groupid": groupid})
