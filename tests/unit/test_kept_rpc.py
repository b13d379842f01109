"""The shell's cheaper paths to lightningd: one kept JSON-RPC connection per thread (shell/rpc.py) and
the connected peers kept from notifications (shell/lightningd.py PeerSet)."""

import json
import os
import socket
import tempfile
import threading

import pytest
from pyln.client import RpcError

from asyncreceive.shell.lightningd import Lightningd, PeerSet
from asyncreceive.shell.rpc import KeptConnectionRpc


class FakeLightningd:
    """A unix-socket JSON-RPC server answering like lightningd: each request on a connection in turn,
    answers ended by a blank line; ``echo`` gives its params back, ``fail`` an error, ``big`` a long
    answer sent in small pieces, ``note`` a notification before its answer.  Counts connections."""

    def __init__(self):
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "lightning-rpc")
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(8)
        self.connections = 0
        self.close_after_next = False
        self.open = []
        self.ran = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.connections += 1
            self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        dec, buf = json.JSONDecoder(), ""
        while True:
            try:
                data = conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            buf += data.decode()
            while buf.strip():
                try:
                    req, end = dec.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                self._answer(conn, req)
                if self.close_after_next:
                    self.close_after_next = False
                    conn.close()
                    return

    def _answer(self, conn, req):
        method, rid = req["method"], req["id"]
        self.ran.append(method)
        if method == "runclose":         # runs it, then goes away without answering
            conn.close()
            return
        if method == "fail":
            out = {"jsonrpc": "2.0", "id": rid, "error": {"code": 1234, "message": "no"}}
        elif method == "big":
            out = {"jsonrpc": "2.0", "id": rid, "result": {"hex": "ab" * 200_000}}
        else:
            out = {"jsonrpc": "2.0", "id": rid, "result": {"echo": req["params"]}}
        text = json.dumps(out) + "\n\n"
        if method == "note":
            text = json.dumps({"jsonrpc": "2.0", "method": "message", "params": {"x": 1}}) + "\n\n" + text
        if method == "big":
            for i in range(0, len(text), 1000):
                conn.sendall(text[i:i + 1000].encode())
        else:
            conn.sendall(text.encode())

    def close(self):
        self.srv.close()

    def gone(self):
        """lightningd stopped: no socket file, every connection closed."""
        self.srv.close()
        os.unlink(self.path)
        for conn in self.open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


@pytest.fixture
def ld():
    f = FakeLightningd()
    yield f
    f.close()


def test_one_connection_for_many_calls_and_answers_in_order(ld):
    rpc = KeptConnectionRpc(ld.path)
    for i in range(50):
        assert rpc.call("echo", {"i": i, "skip": None}) == {"echo": {"i": i}}
    assert rpc.call("big")["hex"] == "ab" * 200_000          # read in many pieces
    assert rpc.call("note", {"after": "notification"}) == {"echo": {"after": "notification"}}
    assert rpc.echo(a=1) == {"echo": {"a": 1}}                # pyln's methods go through call
    assert ld.connections == 1


def test_call_hex_sends_the_request_call_would(ld, monkeypatch):
    """call_hex writes hex params without JSON's encoder: lightningd reads the same request as from
    ``call`` with the values in hex; a name JSON would have to escape goes through ``call``."""
    rpc = KeptConnectionRpc(ld.path)
    sent = []
    real = rpc._exchange
    monkeypatch.setattr(rpc, "_exchange", lambda data, rid: sent.append(data) or real(data, rid))
    key, onion = b"\x02" + b"\xab" * 32, os.urandom(32834)
    assert rpc.call_hex("echo", {"path_key": key, "message": onion}) == \
        {"echo": {"path_key": key.hex(), "message": onion.hex()}}
    plain = json.loads(sent[-1])
    rpc.call("echo", {"path_key": key.hex(), "message": onion.hex()})
    encoded = json.loads(sent[-1])
    assert plain.pop("id") != encoded.pop("id") and plain == encoded
    for odd in ({"bad key": b"ab"}, {'q"uote': b"\x01"}, {}):
        want = {k: v.hex() for k, v in odd.items()}
        assert rpc.call_hex("echo", odd) == {"echo": want}
        assert json.loads(sent[-1])["params"] == want
    assert ld.connections == 1


def test_errors_are_pyln_rpc_errors_and_keep_the_connection(ld):
    rpc = KeptConnectionRpc(ld.path)
    with pytest.raises(RpcError) as e:
        rpc.call("fail", {"x": 1})
    assert e.value.error == {"code": 1234, "message": "no"} and e.value.method == "fail"
    assert rpc.call("echo", {}) == {"echo": {}}
    assert ld.connections == 1


def test_a_closed_connection_is_opened_again(ld):
    rpc = KeptConnectionRpc(ld.path)
    assert rpc.call("echo", {"n": 1})
    ld.close_after_next = True
    assert rpc.call("echo", {"n": 2}) == {"echo": {"n": 2}}   # answered, then lightningd closes
    # the next call finds the kept connection closed (on send, or on read before any answer): it is
    # sent again on a new connection
    assert rpc.call("echo", {"n": 3}) == {"echo": {"n": 3}}
    assert rpc.call("echo", {"n": 4}) == {"echo": {"n": 4}}
    assert ld.connections == 2


def test_a_request_lightningd_may_have_run_is_never_sent_again(ld):
    """A connection closed after lightningd read the request (it may have run it: a datastore write)
    is an error for that call, not a second send; the next call gets a new connection."""
    rpc = KeptConnectionRpc(ld.path)
    assert rpc.call("echo", {"n": 1})
    with pytest.raises(OSError):
        rpc.call("runclose", {"key": "x"})
    assert ld.ran.count("runclose") == 1
    assert rpc.call("echo", {"n": 2}) == {"echo": {"n": 2}}
    assert ld.connections == 2


def test_lightningd_gone_is_an_oserror(ld):
    rpc = KeptConnectionRpc(ld.path)
    assert rpc.call("echo", {"n": 1})
    ld.gone()
    with pytest.raises(OSError):
        rpc.call("echo", {"n": 2})
    with pytest.raises(OSError):
        rpc.call("echo", {"n": 3})


def test_each_thread_has_its_own_connection(ld):
    rpc = KeptConnectionRpc(ld.path)
    seen = []

    def worker(k):
        for i in range(20):
            seen.append(rpc.call("echo", {"k": k, "i": i}) == {"echo": {"k": k, "i": i}})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [True] * 80 and ld.connections == 4


# ---- PeerSet ---------------------------------------------------------------------------------------
A, B, C = (bytes([2]) + bytes([i]) * 32 for i in (1, 2, 3))


def test_peer_set_lists_once_then_follows_notifications():
    calls = []
    peers = PeerSet(lambda: calls.append(1) or {A})
    assert A in peers and B not in peers and len(calls) == 1
    peers.changed(B, True)
    peers.changed(A, False)
    assert peers.current() == {B} and A not in peers and len(calls) == 1
    assert peers.reload() == {A}            # the listing wins when nothing happened meanwhile
    assert len(calls) == 2


def test_peer_set_notifications_during_a_listing_are_applied_on_top():
    """A listing taken before a connect/disconnect that is told while it is under way must not undo it."""
    def listing():
        peers.changed(C, True)      # C connects after lightningd answered the listing: not in it
        peers.changed(A, False)     # A disconnects after the listing: still in it
        return {A, B}

    peers = PeerSet(listing)
    assert peers.current() == {B, C}


def test_peer_set_failed_listing_is_raised_and_tried_again():
    answers = [RuntimeError("lightningd gone"), {A}]

    def listing():
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    peers = PeerSet(listing)
    with pytest.raises(RuntimeError):
        peers.current()
    peers.changed(B, True)       # not listed yet: nothing to change, and nothing recorded
    assert peers.current() == {A}


class PeersRpc:
    def __init__(self, connected):
        self.connected, self.listed = connected, 0

    def listpeers(self, *args):
        self.listed += 1
        ids = [p for p in self.connected if not args or p.hex() == args[0]]
        return {"peers": [{"id": p.hex(), "connected": True} for p in ids]}


def test_lightningd_asks_listpeers_each_time_unless_following():
    rpc = PeersRpc({A})
    node = Lightningd(rpc)
    assert node.is_connected(A) and not node.is_connected(B) and rpc.listed == 2
    node.follow_peers()
    assert node.is_connected(A) and not node.is_connected(B) and node.connected_peers() == {A}
    assert rpc.listed == 3
    node.peer_changed(B, True)
    assert node.is_connected(B) and rpc.listed == 3
    rpc.connected = {C}          # a missed notification: the tick's reload heals it
    node.reload_peers()
    assert node.connected_peers() == {C}


def test_peer_set_two_listings_at_once_do_not_lose_a_notification():
    """A listing started while another is under way waits for it: it cannot throw away the events the
    first one saw, and the set ends as the newer listing says."""
    first_in, release = threading.Event(), threading.Event()
    answers = [{A, B}, {A, C}]           # the second listing is made after C connected

    def listing():
        a = answers.pop(0)
        if a == {A, B}:
            first_in.set()
            release.wait(5)
        return a

    peers = PeerSet(listing)
    t1 = threading.Thread(target=peers.reload)
    t1.start()
    assert first_in.wait(5)
    peers.changed(C, True)               # told while the first listing is under way
    t2 = threading.Thread(target=peers.reload)
    t2.start()
    t2.join(0.2)
    release.set()
    t1.join(5)
    t2.join(5)
    assert peers.current() == {A, C}


def test_fresh_asks_lightningd_even_when_following():
    """The mailbox relays a held message (then deletes it) only to a client lightningd says is
    connected now, not one the notifications have not yet said is gone."""
    rpc = PeersRpc({A})
    node = Lightningd(rpc)
    node.follow_peers()
    assert node.is_connected(A) and rpc.listed == 1
    rpc.connected = set()                 # A went; its disconnect notification not handled yet
    assert node.is_connected(A)           # the kept set still says so
    assert not node.is_connected(A, fresh=True) and rpc.listed == 2


def test_call_hex_refused_names_a_big_value_by_its_size(ld):
    """pyln's RpcError prints its params: a 32 kB onion is shown by its size, a key in hex."""
    rpc = KeptConnectionRpc(ld.path)
    with pytest.raises(RpcError) as e:
        rpc.call_hex("fail", {"path_key": b"\x02" * 33, "message": b"\x00" * 32834})
    assert e.value.payload == {"path_key": "02" * 33, "message": "<32834 bytes>"}
    assert len(str(e.value)) < 500
