from ..logs import short_id
"""Per-client token buckets (as ldk-node's static invoice store: burst 5, one token per 100 ms).

Pure: the caller passes ``now`` (seconds, float).  Idle buckets are evicted, and the number of tracked
clients is bounded, so a flood of client ids cannot grow memory without limit.
"""

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, capacity: int = 5, refill_seconds: float = 0.1, idle_evict: float = 600.0,
                 max_clients: int = 10_000):
        self.capacity = capacity
        self.refill_seconds = refill_seconds
        self.idle_evict = idle_evict
        self.max_clients = max_clients
        self._buckets: "OrderedDict[bytes, _Bucket]" = OrderedDict()

    def allow(self, client: bytes, now: float) -> bool:
        """Take one token for ``client`` if it has one."""
        self._evict(now)
        b = self._buckets.pop(client, None)
        if b is None:
            b = _Bucket(float(self.capacity), now)
        else:
            b.tokens = min(self.capacity, b.tokens + max(0.0, now - b.updated) / self.refill_seconds)
            b.updated = now
        ok = b.tokens >= 1.0
        if ok:
            b.tokens -= 1.0
        self._buckets[client] = b  # most recently used last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return ok

    def _evict(self, now: float) -> None:
        while self._buckets:
            k, b = next(iter(self._buckets.items()))
            if now - b.updated < self.idle_evict:
                break
            del self._buckets[k]

    def __len__(self) -> int:
        return len(self._buckets)


class PerPeerLimit:
    """A bucket per (key, incoming peer) within a bucket per key: junk from one peer uses up only its
    own share of what is answered for a key (an offer), and all peers together at most the key's cap."""

    def __init__(self, per_peer: RateLimiter, per_key: RateLimiter):
        self.per_peer = per_peer
        self.per_key = per_key

    def allow(self, key: bytes, peer, now: float) -> bool:
        """The peer's bucket is taken from first: a peer out of tokens takes nothing from the key's cap."""
        return self.per_peer.allow((key, peer), now) and self.per_key.allow(key, now)

    @staticmethod
    def refused(what: str, key: bytes, peer) -> str:
        return f"{what} for offer {short_id(key)} from {short_id(peer) if peer is not None else 'an unknown peer'}"
