from hypothesis import given, strategies as st

from asyncreceive.server.ratelimit import RateLimiter


def test_burst_then_one_per_100ms():
    r = RateLimiter()
    assert [r.allow(b"a", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert r.allow(b"a", 0.05) is False
    assert r.allow(b"a", 0.1001) is True
    assert r.allow(b"a", 0.1002) is False
    # another client is not affected
    assert r.allow(b"b", 0.1002) is True


def test_refill_caps_at_capacity():
    r = RateLimiter()
    r.allow(b"a", 0.0)
    assert [r.allow(b"a", 100.0) for _ in range(6)] == [True] * 5 + [False]


def test_idle_eviction_and_bound():
    r = RateLimiter(idle_evict=10, max_clients=3)
    for i in range(5):
        r.allow(bytes([i]), 0.0)
    assert len(r) == 3
    r.allow(b"x", 20.0)
    assert len(r) == 1


@given(st.lists(st.floats(0, 0.05), min_size=1, max_size=200))
def test_never_more_than_capacity_plus_refill(gaps):
    r = RateLimiter()
    t = 0.0
    allowed = 0
    for g in gaps:
        t += g
        allowed += r.allow(b"c", t)
    assert allowed <= 5 + t / 0.1 + 1e-9
