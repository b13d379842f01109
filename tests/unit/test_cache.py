"""The recipient cache policy, event by event (LDK's async_payments_tests behaviours, and ours)."""

from dataclasses import replace

from hypothesis import given, settings, strategies as st

from asyncreceive.recipient import cache as c

NOW = 1_800_000_000
YEAR = 365 * 24 * 3600


def offer(i, created=NOW, paths=None, expires=NOW + YEAR, inv=NOW, server=b""):
    """Offer ``i``, held by one server, which confirmed its invoice made at ``inv``."""
    return c.CachedOffer(offer=b"offer%d" % i, offer_id=bytes([i]) * 32,
                         holders=(c.Holder(server, paths or b"paths%d" % i, b"reply", persisted_at=inv),),
                         expires_at=expires, created_at=created, invoice_created_at=inv)


def filled(n=3, status=c.READY, created=NOW):
    return tuple(c.Slot(i, status, offer(i, created)) for i in range(n))


def test_start_requests_every_empty_slot_at_once():
    cache, actions = c.tick(c.new_cache(10), NOW, start=True)
    assert actions == [c.SendRequest(i) for i in range(10)]
    assert all(s.status == c.REQUESTED and s.attempts == 1 for s in cache)


def test_unanswered_requests_back_off_exponentially_with_cap():
    cache, _ = c.tick(c.new_cache(1), NOW, start=True)
    sent_at = [NOW]
    t = NOW
    while t < NOW + 6 * 3600:
        t += 1
        cache, actions = c.tick(cache, t)
        if actions:
            sent_at.append(t)
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert gaps[:4] == [5, 10, 20, 40]
    assert max(gaps) == c.OFFER_PATHS_RETRY_CAP and gaps[-1] == c.OFFER_PATHS_RETRY_CAP
    assert all(b >= a for a, b in zip(gaps, gaps[1:]))  # never speeds up while unanswered
    # a restart asks again at once instead of waiting out the backoff
    cache, actions = c.tick(cache, t + 1, start=True)
    assert actions == [c.SendRequest(0)]


def test_full_handshake_pending_to_ready():
    cache, _ = c.tick(c.new_cache(2), NOW, start=True)
    assert c.check_offer_paths(cache, 0, b"p0", NOW + YEAR, NOW) is None
    cache, actions = c.offer_built(cache, 0, offer(0, paths=b"p0"))
    assert actions == [c.SendInvoice(0)] and cache[0].status == c.PENDING
    # pending re-sends its invoice on every tick
    for k in range(1, 4):
        _, actions = c.tick(cache, NOW + k)
        assert c.SendInvoice(0) in actions
    cache, changed = c.persisted(cache, offer(0).offer_id, NOW + 3)
    assert changed and cache[0].status == c.READY and cache[0].offer.invoice_created_at == NOW + 3
    _, actions = c.tick(cache, NOW + 10)
    assert c.SendInvoice(0) not in actions


def test_duplicate_late_and_reordered_messages():
    cache, _ = c.tick(c.new_cache(2), NOW, start=True)
    cache, _ = c.offer_built(cache, 0, offer(0, paths=b"p0"))
    # a second (late, duplicate) offer_paths for the same slot is ignored: the slot is pending now
    assert c.check_offer_paths(cache, 0, b"p0-other", NOW + YEAR, NOW) == "slot_not_wanting"
    # identical paths for another slot are refused (the server must send fresh paths)
    assert c.check_offer_paths(cache, 1, b"p0", NOW + YEAR, NOW) == "duplicate_paths"
    # a persisted ack for an unknown offer changes nothing
    before = cache
    cache, changed = c.persisted(cache, b"\x09" * 32, NOW)
    assert not changed and cache == before
    cache, _ = c.persisted(cache, offer(0).offer_id, NOW + 5)
    # duplicate ack: no change; older ack (reordered): no change; newer ack moves time forward (max)
    assert c.persisted(cache, offer(0).offer_id, NOW + 5) == (cache, False)
    assert c.persisted(cache, offer(0).offer_id, NOW + 1) == (cache, False)
    cache2, changed = c.persisted(cache, offer(0).offer_id, NOW + 9)
    assert changed and cache2[0].offer.invoice_created_at == NOW + 9 and cache2[0].status == c.READY


def test_paths_expiring_too_soon_rejected():
    cache, _ = c.tick(c.new_cache(1), NOW, start=True)
    assert c.check_offer_paths(cache, 0, b"p", NOW + c.MIN_PATHS_LIFETIME - 1, NOW) == "paths_expire_too_soon"
    assert c.check_offer_paths(cache, 0, b"p", NOW + c.MIN_PATHS_LIFETIME, NOW) is None
    assert c.check_offer_paths(cache, 0, b"p", None, NOW) is None
    assert c.check_offer_paths(cache, 5, b"p", None, NOW) == "slot_not_wanting"


def test_get_offer_newest_ready_then_used_latest_expiry():
    cache = (c.Slot(0, c.READY, offer(0, created=NOW - 50)), c.Slot(1, c.READY, offer(1, created=NOW - 10)),
             c.Slot(2, c.PENDING, offer(2)))
    cache, s = c.get_offer(cache, NOW)
    assert s.index == 1 and cache[1].status == c.USED
    cache, s = c.get_offer(cache, NOW)
    assert s.index == 0 and cache[0].status == c.USED
    cache = _with_expiry(cache, 0, NOW + 100)
    cache = _with_expiry(cache, 1, NOW + 50)
    cache, s = c.get_offer(cache, NOW)
    assert s.index == 0 and cache[0].status == c.USED  # no ready left: used with the latest expiry
    # pending-only never hands out
    assert c.get_offer((c.Slot(0, c.PENDING, offer(0)),), NOW)[1] is None


def _with_expiry(cache, i, exp):
    return tuple(replace(s, offer=replace(s.offer, expires_at=exp)) if s.index == i else s for s in cache)


def test_used_invoice_refreshed_after_threshold_only():
    cache = (c.Slot(0, c.USED, offer(0, inv=NOW)),)
    assert c.tick(cache, NOW + c.INVOICE_REFRESH)[1] == []
    assert c.tick(cache, NOW + c.INVOICE_REFRESH + 1)[1] == [c.SendInvoice(0)]


def test_expired_offers_pruned_and_slot_requested_again():
    cache = (c.Slot(0, c.READY, offer(0, expires=NOW + 10)), c.Slot(1, c.READY, offer(1)))
    cache, actions = c.tick(cache, NOW + 11)
    assert cache[0].status == c.REQUESTED and c.SendRequest(0) in actions


def test_old_ready_offers_replaced_oldest_first_keeping_one_payable():
    old = NOW - c.OFFER_REFRESH - 1
    cache = (c.Slot(0, c.READY, offer(0, created=old - 5)), c.Slot(1, c.READY, offer(1, created=old)),
             c.Slot(2, c.USED, offer(2, created=old - 100)))
    cache, actions = c.tick(cache, NOW)
    assert actions == [c.SendRequest(0)]
    assert cache[0].status == c.READY  # still served until the replacement is built
    assert c.check_offer_paths(cache, 0, b"new", None, NOW) is None
    # a single payable offer is never replaced
    lone = (c.Slot(0, c.READY, offer(0, created=old)), c.Slot(1, c.PENDING, offer(1)))
    assert c.SendRequest(0) not in c.tick(lone, NOW)[1]
    # a used offer is never replaced (only its invoice refreshed)
    used = (c.Slot(0, c.USED, offer(0, created=old)), c.Slot(1, c.USED, offer(1, created=old)))
    assert all(not isinstance(a, c.SendRequest) for a in c.tick(used, NOW)[1])


def test_channels_changed_refreshes_every_offer():
    cache = (c.Slot(0, c.READY, offer(0)), c.Slot(1), c.Slot(2, c.USED, offer(2)), c.Slot(3, c.PENDING, offer(3)))
    assert c.channels_changed(cache)[1] == [c.SendInvoice(0), c.SendInvoice(2), c.SendInvoice(3)]


def test_resize_never_drops_payable_offers():
    cache = filled(3)
    assert len(c.resize(cache, 5)) == 5
    assert [s.index for s in c.resize(cache, 1)] == [0, 1, 2]
    assert [s.index for s in c.resize(c.new_cache(3), 1)] == [0]


def test_resize_down_then_up_keeps_indices_unique_and_the_used_offer():
    """setconfig asyncreceive-slots 4 -> 2 -> 4 with slot 2 empty and slot 3 used (handed out): slot 3 is
    kept through the shrink, and the grow adds slot 2 back, not a second slot 3 (the review's case)."""
    cache = (c.Slot(0, c.READY, offer(0)), c.Slot(1, c.READY, offer(1)), c.Slot(2), c.Slot(3, c.USED, offer(3)))
    small = c.resize(cache, 2)
    assert [s.index for s in small] == [0, 1, 3]
    big = c.resize(small, 4)
    assert [s.index for s in big] == [0, 1, 2, 3]
    assert next(s for s in big if s.index == 3) == cache[3]


@given(st.lists(st.integers(1, 8), min_size=1, max_size=6), st.lists(st.sampled_from([c.EMPTY, c.READY, c.USED]),
                                                                     min_size=8, max_size=8))
def test_resize_property_indices_unique_and_payable_kept(sizes, statuses):
    cache = tuple(c.Slot(i, st_, None if st_ == c.EMPTY else offer(i)) for i, st_ in enumerate(statuses))
    for n in sizes:
        new = c.resize(cache, n)
        idx = [s.index for s in new]
        assert len(idx) == len(set(idx)) and set(range(n)) <= set(idx)
        assert all(s in new for s in cache if s.payable)
        cache = new


events = st.lists(st.tuples(st.sampled_from(["tick", "paths", "built", "persisted", "get", "chan"]),
                            st.integers(0, 4), st.integers(0, 3 * 3600)), max_size=40)


@settings(max_examples=200)
@given(events)
def test_invariants_under_any_event_order(evs):
    """Whatever arrives, in any order: slots keep their index, statuses match offers, no two cached
    offers share paths, and ready/used offers are never lost except by expiry."""
    cache, _ = c.tick(c.new_cache(4), NOW, start=True)
    t = NOW
    for kind, i, dt in evs:
        t += dt
        payable_before = {s.offer.offer_id for s in cache if s.payable and
                          (s.offer.expires_at is None or s.offer.expires_at >= t)}
        if kind == "tick":
            cache, _ = c.tick(cache, t)
        elif kind in ("paths", "built"):
            p = b"paths-%d-%d" % (i, t)
            if c.check_offer_paths(cache, i, p, t + YEAR, t) is None:
                replaced = cache[i]
                if replaced.payable:  # only an old ready offer, and never the last payable one
                    assert replaced.status == c.READY and len(payable_before) >= 2
                    payable_before.discard(replaced.offer.offer_id)
                o = c.CachedOffer(b"o", bytes([i, t % 256]) + t.to_bytes(8, "big") + bytes(22),
                                  (c.Holder(b"", p, b"r"),), t + YEAR, t, t)
                cache, _ = c.offer_built(cache, i, o)
        elif kind == "persisted":
            s = cache[i % len(cache)]
            if s.offer is not None:
                cache, _ = c.persisted(cache, s.offer.offer_id, t)
        elif kind == "get":
            cache, _ = c.get_offer(cache, t)
        else:
            cache, _ = c.channels_changed(cache)
        assert [s.index for s in cache] == list(range(4))
        for s in cache:
            assert (s.offer is None) == (s.status in (c.EMPTY, c.REQUESTED))
        paths = [h.paths for s in cache if s.offer is not None for h in s.offer.holders]
        assert len(paths) == len(set(paths))
        still = {s.offer.offer_id for s in cache if s.payable}
        assert payable_before <= still  # nothing payable is lost, except by expiry or replacement
