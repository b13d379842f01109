"""One background thread that runs queued work, a periodic tick, and wake-ups at services' due times.

pyln-client dispatches hooks and notifications one at a time on its main thread, so handlers only
enqueue work here and return at once.  Exceptions are logged, never propagated: they must not reach
pyln (a hook error can crash lightningd) nor kill the thread.

Two kinds of work, and local work first:

- ``submit(fn, ...)``: our own work (RPC methods, peer and channel events); bounded by ``max_local``.
- ``submit_message(peer, fn, ...)``: handling an onion message that ``peer`` sent us.  Each peer's
  messages wait in their own queue (at most ``per_sender``, and ``max_messages`` in all), the thread
  takes one from each peer in turn, and a peer's messages are admitted at most at ``rate`` (a token
  bucket, checked before any work, so before the costly peeling).  One peer flooding us thus only
  delays itself.  What does not fit is dropped, counted through ``on_drop(reason, text)``.
"""

import threading
import time
import traceback
from collections import deque
from typing import Callable, Deque, Dict, Optional, Tuple

from pyln.client import RpcError

#: the key for onion messages whose sending peer we are not told (onion_message_recv_secret)
UNKNOWN_PEER = ""
PER_SENDER = 64
MAX_MESSAGES = 4096
MAX_LOCAL = 1024


class Worker:
    def __init__(self, log: Callable[[str, str], None], tick: Optional[Callable[[], None]] = None,
                 tick_seconds: float = 60.0, name: str = "asyncreceive-worker",
                 on_drop: Optional[Callable[[str, str], None]] = None, rate=None,
                 per_sender: int = PER_SENDER, max_messages: int = MAX_MESSAGES, max_local: int = MAX_LOCAL,
                 clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._tick = tick
        self.tick_seconds = tick_seconds
        self._on_drop = on_drop or (lambda reason, text: log(f"dropped: {text}", "debug"))
        self._rate = rate            # RateLimiter-like: allow(key, now) -> bool, for messages per peer
        self.per_sender = per_sender
        self.max_messages = max_messages
        self.max_local = max_local
        self._clock = clock
        self._local: Deque = deque()
        self._messages: Dict[str, Deque] = {}   # insertion order = whose turn is next
        self._queued_messages = 0
        self._cond = threading.Condition()
        self._stop = False
        self._tick_due = False
        self._wakes: Dict[str, Tuple[float, Callable]] = {}   # name -> (monotonic time, fn)
        self._wakes_changed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    def set_tick_seconds(self, seconds: float) -> None:
        """A new interval between ticks, counted from the last tick (asyncreceive-tick-seconds changed)."""
        with self._cond:
            self.tick_seconds = seconds
            self._cond.notify()

    def tick_now(self) -> None:
        """Tick at once rather than at the end of the interval (lightningd has just started: the start-up
        tick need not wait up to a whole interval)."""
        with self._cond:
            self._tick_due = True
            self._cond.notify()

    def wake(self, name: str, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on this thread in ``delay`` seconds (a due time of a service, e.g. the payer's next
        try); one wake-up per ``name``: the sooner of this one and one already asked for is kept."""
        with self._cond:
            when = time.monotonic() + max(0.0, delay)
            if name not in self._wakes or when < self._wakes[name][0]:
                self._wakes[name] = (when, fn)
                self._wakes_changed = True
                self._cond.notify()

    def _due_wakes(self):
        """The wake-ups that are due (taken off), and the time of the next one (or None)."""
        now = time.monotonic()
        with self._cond:
            self._wakes_changed = False
            due = [(name, fn) for name, (when, fn) in self._wakes.items() if when <= now]
            for name, _ in due:
                del self._wakes[name]
            nxt = min((when for when, _ in self._wakes.values()), default=None)
        return [fn for _, fn in due], nxt

    def submit(self, fn: Callable, *args) -> bool:
        with self._cond:
            if len(self._local) >= self.max_local:
                full = True
            else:
                full = False
                self._local.append((fn, args))
                self._cond.notify()
        if full:
            self._on_drop("queue_full", f"{getattr(fn, '__name__', fn)} not run: {self.max_local} tasks waiting")
        return not full

    def submit_message(self, peer: Optional[str], fn: Callable, *args) -> bool:
        """Queue ``fn(*args)`` to handle an onion message from ``peer`` (a node id, or None when unknown:
        those share one queue and are not rate-limited).  False if it was dropped."""
        key = UNKNOWN_PEER if peer is None else peer
        with self._cond:
            if key != UNKNOWN_PEER and self._rate is not None and not self._rate.allow(key, self._clock()):
                reason = "peer_rate_limited"
            elif self._queued_messages >= self.max_messages or len(self._messages.get(key, ())) >= self.per_sender:
                reason = "queue_full"
            else:
                reason = None
                self._messages.setdefault(key, deque()).append((fn, args))
                self._queued_messages += 1
                self._cond.notify()
        if reason is not None:
            self._on_drop(reason, f"onion message from {key[:16] or 'an unknown peer'} not handled ({reason})")
        return reason is None

    def _take(self, timeout: Optional[float]):
        """The next work: local first, then one message of the peer whose turn it is; None on timeout
        or stop."""
        with self._cond:
            if not (self._local or self._messages or self._stop or self._tick_due or self._wakes_changed):
                self._cond.wait(None if timeout is None else min(timeout, threading.TIMEOUT_MAX))
            if self._stop:
                return None
            if self._local:
                return self._local.popleft()
            for key, q in self._messages.items():
                item = q.popleft()
                self._queued_messages -= 1
                del self._messages[key]
                if q:
                    self._messages[key] = q   # to the back of the round
                return item
            return None

    def _call(self, fn, args) -> None:
        name = getattr(fn, "__name__", fn)
        try:
            fn(*args)
        except OSError as e:  # lightningd's RPC socket is gone: it is shutting down
            self._log(f"{name}: lightningd not reachable ({e}); shutting down?", "debug")
        except RpcError as e:
            self._log(f"{name}: lightningd refused a call: {e}", "unusual")
        except Exception:
            self._log(f"internal error in {name}: {traceback.format_exc()}", "broken")

    def _run(self) -> None:
        last_tick = None
        while True:
            with self._cond:
                due, self._tick_due = self._tick_due, False
            if self._tick is not None and (due or last_tick is None
                                           or time.monotonic() >= last_tick + self.tick_seconds):
                self._call(self._tick, ())
                last_tick = time.monotonic()
            due, nxt = self._due_wakes()
            for fn in due:
                self._call(fn, ())
            times = [t for t in (nxt, last_tick + self.tick_seconds if self._tick is not None else None)
                     if t is not None]
            timeout = max(0.0, min(times) - time.monotonic()) if times else None
            item = self._take(timeout)
            with self._cond:
                if self._stop:
                    return
            if item is not None:
                self._call(*item)
