"""The worker: onion-message work is bounded and fair per sending peer, local work comes first."""

import time

from asyncreceive.shell.worker import Worker
from asyncreceive.server.ratelimit import RateLimiter

from .fakes import wait_until


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(**kw):
    drops = []
    w = Worker(lambda msg, level="info": None, on_drop=lambda reason, text: drops.append(reason), **kw)
    return w, drops


def run_until(w, done):
    """Start the worker and wait (10 s at most) until ``done()``."""
    w.start()
    wait_until(done, 10)
    w.stop()
    assert done()


def test_a_flooding_peer_does_not_starve_another_peer():
    w, drops = make()
    order = []
    for i in range(64):
        w.submit_message("aa", order.append, ("aa", i))
    w.submit_message("bb", order.append, ("bb", 0))
    run_until(w, lambda: len(order) == 65)
    # one message of each peer in turn: bb's message is second, not 65th as in one FIFO queue
    assert order[:3] == [("aa", 0), ("bb", 0), ("aa", 1)]
    assert drops == []


def test_queues_stay_bounded_and_drops_are_counted():
    w, drops = make(per_sender=64, max_messages=100)
    accepted = sum(w.submit_message("aa", lambda: None) for _ in range(10_000))
    assert accepted == 64
    accepted += sum(w.submit_message(f"peer{i}", lambda: None) for i in range(200))
    assert accepted == 100                      # the total bound
    assert drops == ["queue_full"] * (10_000 + 200 - 100)


def test_messages_from_a_peer_are_rate_limited_before_any_work():
    clock = Clock()
    w, drops = make(rate=RateLimiter(20, 0.25), clock=clock)
    assert sum(w.submit_message("aa", lambda: None) for _ in range(100)) == 20   # the burst
    assert sum(w.submit_message("bb", lambda: None) for _ in range(3)) == 3      # another peer is not affected
    clock.now += 1.0
    assert sum(w.submit_message("aa", lambda: None) for _ in range(100)) == 4    # then 4 a second
    # messages whose peer we are not told share a queue and are not rate-limited (only bounded)
    assert sum(w.submit_message(None, lambda: None) for _ in range(50)) == 50
    assert drops == ["peer_rate_limited"] * (80 + 96)


def test_local_work_runs_before_queued_messages():
    w, _ = make()
    order = []
    for i in range(50):
        w.submit_message(f"peer{i % 5}", order.append, "message")
    w.submit(order.append, "local")
    run_until(w, lambda: len(order) == 51)
    assert order[0] == "local" and order.count("message") == 50


def test_local_queue_is_bounded():
    w, drops = make(max_local=10)
    assert sum(w.submit(lambda: None) for _ in range(15)) == 10
    assert drops == ["queue_full"] * 5


def test_exceptions_are_logged_and_the_worker_goes_on():
    logs = []
    w = Worker(lambda msg, level="info": logs.append(level))
    w.submit_message("aa", lambda: 1 / 0)
    run_until(w, lambda: logs)
    assert logs == ["broken"]


def ticking_worker():
    """A started worker whose tick records when it ran, an hour apart unless told otherwise."""
    ticks = []
    w = Worker(lambda msg, level="info": None, tick=lambda: ticks.append(time.monotonic()), tick_seconds=3600)
    w.start()
    assert wait_until(lambda: ticks) and len(ticks) == 1      # the first tick comes at start
    return w, ticks


def test_tick_now_ticks_at_once_instead_of_waiting_out_the_interval():
    w, ticks = ticking_worker()
    try:
        time.sleep(0.05)
        assert len(ticks) == 1                  # the next one would be an hour later
        w.tick_now()
        assert wait_until(lambda: len(ticks) == 2)
    finally:
        w.stop()


def test_worker_takes_a_new_tick_interval_without_waiting_out_the_old_one():
    """setconfig asyncreceive-tick-seconds: the new interval counts at once."""
    w, ticks = ticking_worker()
    try:
        w.set_tick_seconds(0.05)
        assert wait_until(lambda: len(ticks) >= 4)
    finally:
        w.stop()


def test_a_huge_tick_interval_does_not_kill_the_worker():
    """Condition.wait raises OverflowError above threading.TIMEOUT_MAX: the wait is clamped."""
    done = []
    w = Worker(lambda msg, level="info": None, tick=lambda: None, tick_seconds=10 ** 10)
    w.start()
    time.sleep(0.05)
    w.submit(lambda: done.append(1))
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.005)
    w.stop()
    assert done == [1]


def test_a_wake_up_runs_between_ticks_and_the_sooner_one_is_kept():
    """The payer's due times: one wake-up per name, on the worker's thread, long before the next tick."""
    w, ticks = ticking_worker()
    ran, logs = [], []
    w._log = lambda msg, level="info": logs.append(level)
    try:
        w.wake("pay", 3600, lambda: ran.append("late"))
        w.wake("pay", 0.05, lambda: ran.append("soon"))      # sooner: taken
        w.wake("pay", 10, lambda: ran.append("later"))       # later than the one asked for: the sooner stays
        assert wait_until(lambda: ran) and ran == ["soon"]
        time.sleep(0.1)
        assert ran == ["soon"] and len(ticks) == 1
        w.wake("pay", 0, lambda: 1 / 0)                      # an error is logged as other work's are
        w.wake("other", 0.01, lambda: ran.append("other"))
        assert wait_until(lambda: "other" in ran) and logs == ["broken"]
    finally:
        w.stop()
