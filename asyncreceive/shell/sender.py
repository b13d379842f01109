"""Sends onion messages off the thread that asks for them: one FIFO queue per first peer, paced.

``submit(peer, job)`` queues ``job`` (a callable doing the RPCs of one send) behind what is already
queued for ``peer`` and returns at once.  Sender threads run the jobs: one job per peer at a time, in
order, and the next one for that peer not before ``interval`` seconds later (CLN accepts one onion
message per 250 ms from a peer).  Waiting for a peer's turn holds no thread, so one slow or paced peer
does not delay the others.  Jobs never wait on the network themselves (a connect is over before
its send is queued), only on lightningd's RPCs.

The queues are bounded per peer and in total; ``submit`` returns False when a job does not fit.
Replies (answers to others' messages, forwards: ``submit(..., reply=<message name>)``) and our own
sends have separate budgets, so that strangers who make us answer towards a peer of their choice fill
only the replies' share of that peer's queue (``replies_per_peer``, at most ``replies_per_type`` of one
message type) and of the total (half), never the room of our own sends (``per_peer``, the other half).
With ``threads=0`` jobs run at once in the caller's thread (unpaced): for in-memory tests.
"""

import threading
import time
import traceback
from collections import deque
from typing import Callable, Deque, Dict, Optional, Set, Tuple

#: CLN accepts at most one onion message per 250 ms from a peer (burst 4); we pace ourselves to that.
PEER_INTERVAL = 0.25
#: queued per first peer: our own sends, and replies (of which of one message type)
PER_PEER = 48
REPLIES_PER_PEER, REPLIES_PER_TYPE = 16, 8
#: queued in all; replies take at most half of it
TOTAL = 1024
THREADS = 2


class Sender:
    def __init__(self, log: Callable[[str, str], None], interval: float = PEER_INTERVAL, per_peer: int = PER_PEER,
                 total: int = TOTAL, threads: int = THREADS, clock: Callable[[], float] = time.monotonic,
                 replies_per_peer: int = REPLIES_PER_PEER, replies_per_type: int = REPLIES_PER_TYPE):
        self._log = log
        self.interval = interval
        self.per_peer = per_peer
        self.replies_per_peer = replies_per_peer
        self.replies_per_type = replies_per_type
        self.total = total
        self._threads = threads
        self._clock = clock
        #: (job, None for our own send or the reply's message type); insertion order = round-robin order
        self._queues: Dict[bytes, Deque[Tuple[Callable[[], None], Optional[str]]]] = {}
        self._ready_at: Dict[bytes, float] = {}                     # a peer's next turn
        self._busy: Set[bytes] = set()
        self._queued = 0
        self._queued_replies = 0
        self._cond = threading.Condition()
        self._started = False
        self._stop = False

    def submit(self, peer: bytes, job: Callable[[], None], reply: Optional[str] = None) -> bool:
        """Queue ``job`` for ``peer``: one of our own sends, or (``reply`` = its message type) a reply."""
        if self._threads == 0:
            self._run_job(job)
            return True
        with self._cond:
            if not self._fits(self._queues.get(peer, ()), reply):
                return False
            self._queues.setdefault(peer, deque()).append((job, reply))
            self._queued += 1
            self._queued_replies += reply is not None
            if not self._started:
                self._started = True
                for i in range(self._threads):
                    threading.Thread(target=self._run, name=f"asyncreceive-sender-{i}", daemon=True).start()
            self._cond.notify()
        return True

    def _fits(self, q, reply: Optional[str]) -> bool:
        replies = sum(r is not None for _, r in q)
        if reply is None:
            return len(q) - replies < self.per_peer and self._queued - self._queued_replies < self.total - self.total // 2
        return (replies < self.replies_per_peer and sum(r == reply for _, r in q) < self.replies_per_type
                and self._queued_replies < self.total // 2)

    def queued(self, peer: Optional[bytes] = None) -> int:
        with self._cond:
            return self._queued if peer is None else len(self._queues.get(peer, ()))

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def _take(self):
        """The next (peer, job) whose peer is free and due (round-robin over peers); None to stop."""
        with self._cond:
            while not self._stop:
                now = self._clock()
                wait = None
                for peer, q in self._queues.items():
                    if peer in self._busy:
                        continue
                    at = self._ready_at.get(peer, now)
                    if at <= now:
                        job, reply = q.popleft()
                        self._queued -= 1
                        self._queued_replies -= reply is not None
                        del self._queues[peer]
                        if q:
                            self._queues[peer] = q   # to the back of the round
                        self._busy.add(peer)
                        return peer, job
                    wait = at - now if wait is None else min(wait, at - now)
                self._cond.wait(wait)
            return None

    def _done(self, peer: bytes) -> None:
        with self._cond:
            self._busy.discard(peer)
            now = self._clock()
            self._ready_at[peer] = now + self.interval
            if len(self._ready_at) > 2 * self.total:   # forget turns that are past
                self._ready_at = {p: t for p, t in self._ready_at.items() if t > now or p in self._queues}
            if self._queues:   # a sender thread may now take this peer's next job, or wait less
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            got = self._take()
            if got is None:
                return
            peer, job = got
            try:
                self._run_job(job)
            finally:
                self._done(peer)

    def _run_job(self, job: Callable[[], None]) -> None:
        try:
            job()
        except OSError as e:  # lightningd's RPC socket is gone: it is shutting down
            self._log(f"sending: lightningd not reachable ({e}); shutting down?", "debug")
        except Exception:
            self._log(f"internal error while sending: {traceback.format_exc()}", "broken")
