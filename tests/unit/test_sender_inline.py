"""The sender runs a job at once in the calling thread when its peer has nothing queued and its turn is
now (the server's hot path: no hand-over to a sender thread); otherwise the job waits its turn on a
sender thread, in order and paced, as before.  Never on pyln's main thread."""

import threading

from asyncreceive.shell.sender import Sender

A, B = b"\x02" * 33, b"\x03" * 33


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def in_thread(fn):
    """Run ``fn()`` in a new (not main) thread, as the worker does; its result."""
    out = []
    th = threading.Thread(target=lambda: out.append(fn()))
    th.start()
    th.join(10)
    return out[0]


def test_a_peer_with_nothing_queued_is_sent_to_in_the_calling_thread():
    clock = Clock()
    s = Sender(lambda *a: None, interval=0.25, threads=1, clock=clock)
    s._started = True                         # no sender thread: whatever is queued stays queued
    ran = []
    job = lambda name: lambda: ran.append((name, threading.current_thread().name))  # noqa: E731

    def two_sends():
        me = threading.current_thread().name
        assert s.submit(A, job("a1"))         # A's turn is now: runs here, before submit returns
        assert ran == [("a1", me)]
        assert s.submit(B, job("b1"), reply="static_invoice")   # another peer: also at once
        assert s.submit(A, job("a2"))         # A was just sent to: its next turn is 250 ms away
        return me

    me = in_thread(two_sends)
    assert ran == [("a1", me), ("b1", me)] and s.queued(A) == 1 and s.queued(B) == 0
    clock.t += 1                              # A's turn again, but a2 waits in A's queue:
    in_thread(lambda: s.submit(A, job("a3")))   # a3 goes behind it, never before it
    assert [n for n, _ in ran] == ["a1", "b1"] and s.queued(A) == 2


def test_pyln_main_thread_never_runs_a_send():
    s = Sender(lambda *a: None, threads=1)
    s._started = True
    ran = []
    assert threading.current_thread() is threading.main_thread()
    assert s.submit(A, lambda: ran.append(1))
    assert ran == [] and s.queued(A) == 1


def test_a_failing_inline_job_is_logged_and_frees_the_peer():
    logs = []
    clock = Clock()
    s = Sender(lambda text, level: logs.append(level), interval=0.25, threads=1, clock=clock)
    s._started = True

    def boom():
        raise RuntimeError("bug")

    assert in_thread(lambda: s.submit(A, boom))
    assert logs == ["broken"]
    clock.t += 1
    ran = []
    assert in_thread(lambda: s.submit(A, lambda: ran.append(1))) and ran == [1]


def test_queued_jobs_still_go_out_in_order_on_the_sender_threads():
    done = threading.Event()
    ran = []
    s = Sender(lambda *a: None, interval=0, threads=2)
    release = threading.Event()

    def first():
        release.wait(10)
        ran.append(0)

    t = threading.Thread(target=lambda: s.submit(A, first))   # runs inline in t, holding A busy
    t.start()
    while A not in s._busy:
        pass
    for i in range(1, 6):
        assert s.submit(A, lambda i=i: (ran.append(i), i == 5 and done.set()))   # main thread: queued
    release.set()
    t.join(10)
    assert done.wait(10) and ran == [0, 1, 2, 3, 4, 5]
    s.stop()
