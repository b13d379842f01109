"""A cached view of the public channel graph, to route onion messages to a node that is not our peer.

Listing the graph is costly on a large network (tens of MB on mainnet), so it is fetched at most every
``max_age`` seconds, in a background thread: ``route`` only reads the cached shortest-path tree (from
our connected peers at the time of the fetch).  ``refresh_if_due`` starts a refresh when it is due: the
plugin's tick calls it, and so does one of our own sends that finds no route (its ``on_done`` then
routes it once the refresh is over).  Nobody waits for a refresh, and replies to others' messages never
start one (a stranger could otherwise make us fetch the graph every ``max_age``).
"""

import threading
import time
from typing import Callable, Dict, List, Optional, Set

#: seconds between two fetches of the channel graph at most
MAX_AGE = 60.0
#: longest route (nodes before the introduction) we look for, as CLN's offers plugin bounds its search
MAX_HOPS = 6
#: callbacks waiting for a refresh at most (one per own send that found no route)
MAX_WAITING = 256


def shortest_tree(adj: Dict[bytes, Set[bytes]], peers: Set[bytes], us: bytes,
                  max_hops: int = MAX_HOPS) -> Dict[bytes, Optional[bytes]]:
    """Breadth-first tree over ``adj`` from ``peers``: node -> the node before it (None for a peer)."""
    prev: Dict[bytes, Optional[bytes]] = {p: None for p in peers}
    frontier = list(peers)
    for _ in range(max_hops):
        nxt = []
        for n in frontier:
            for m in adj.get(n, ()):
                if m not in prev and m != us:
                    prev[m] = n
                    nxt.append(m)
        frontier = nxt
    return prev


def route_in(tree: Dict[bytes, Optional[bytes]], target: bytes) -> Optional[List[bytes]]:
    """Nodes to cross before ``target`` (first a peer), or None if ``target`` is not in the tree."""
    if target not in tree:
        return None
    path = []
    n = tree[target]
    while n is not None:
        path.append(n)
        n = tree[n]
    return list(reversed(path))


class ChannelGraph:
    def __init__(self, node, log: Callable[[str, str], None], max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.monotonic, background: bool = True):
        self.node = node
        self._log = log
        self.max_age = max_age
        self._clock = clock
        self._background = background
        self._tree: Dict[bytes, Optional[bytes]] = {}
        self._fetched_at: Optional[float] = None
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        self._waiting: List[Callable[[], None]] = []
        self.fetches = 0

    def route(self, target: bytes) -> Optional[List[bytes]]:
        """Nodes to cross before ``target`` per the cached graph (the first one was a connected peer when
        it was fetched), or None.  Never waits."""
        with self._lock:
            tree = self._tree
        return route_in(tree, target)

    def refresh_if_due(self, on_done: Optional[Callable[[], None]] = None) -> bool:
        """Start a refresh if the last one is ``max_age`` old (or there was none).  True if one is running:
        then ``on_done`` (if given) is called, on the refreshing thread, once it is over.  False if none
        is, or (rarely) too many callers wait already: ``on_done`` is not called."""
        with self._lock:
            running = not self._idle.is_set()
            start = not running and (self._fetched_at is None or self._clock() - self._fetched_at >= self.max_age)
            if start:
                self._idle.clear()
                self._fetched_at = self._clock()   # a failed fetch is not retried before max_age either
            waits = (running or start) and (on_done is None or len(self._waiting) < MAX_WAITING)
            if waits and on_done is not None:
                self._waiting.append(on_done)
        if start:
            if self._background:
                threading.Thread(target=self._refresh, name="asyncreceive-graph", daemon=True).start()
            else:
                self._refresh()
        return waits

    def _refresh(self) -> None:
        try:
            peers, adj = self.node.connected_peers(), self.node.channel_adjacency()
            tree = shortest_tree(adj, peers, self.node.node_id)
            with self._lock:
                self._tree = tree
            self.fetches += 1
            self._log(f"channel graph fetched: {len(adj)} nodes, {len(tree)} reachable through "
                      f"{len(peers)} connected peers", "debug")
        except Exception as e:  # lightningd refused or is gone: keep the old tree
            self._log(f"could not fetch the channel graph: {e}", "debug")
        finally:
            with self._lock:
                waiting, self._waiting = self._waiting, []
                self._idle.set()
            for on_done in waiting:
                try:
                    on_done()
                except Exception as e:
                    self._log(f"after the channel graph was fetched: {e!r}", "broken")
