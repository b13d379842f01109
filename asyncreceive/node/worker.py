"""One background thread that runs queued work and a periodic tick.

pyln-client dispatches hooks and notifications one at a time on its main thread, so handlers only
enqueue work here and return at once.  Exceptions are logged, never propagated: they must not reach
pyln (a hook error can crash lightningd) nor kill the thread.
"""

import queue
import threading
import time
import traceback
from typing import Callable, Optional

from pyln.client import RpcError


class Worker:
    def __init__(self, log: Callable[[str, str], None], tick: Optional[Callable[[], None]] = None,
                 tick_seconds: float = 60.0, name: str = "asyncreceive-worker"):
        self._q: "queue.Queue" = queue.Queue()
        self._log = log
        self._tick = tick
        self.tick_seconds = tick_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._q.put(None)

    def submit(self, fn: Callable, *args) -> None:
        self._q.put((fn, args))

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
        next_tick = time.monotonic()
        while not self._stop.is_set():
            if self._tick is not None and time.monotonic() >= next_tick:
                self._call(self._tick, ())
                next_tick = time.monotonic() + self.tick_seconds
            timeout = max(0.0, next_tick - time.monotonic()) if self._tick is not None else None
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                continue
            if item is None:
                break
            self._call(*item)
