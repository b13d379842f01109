"""The server mailbox's pure parts: records and the hold/deliver policy."""

from hypothesis import given, strategies as st

from asyncreceive.server import mailbox as mb
from asyncreceive.wire.messages import MailboxRegistration
from asyncreceive.wire.paths import BlindedPath
from asyncreceive.wire.tlv import decode_tlv, encode_tlv, tu64

from .strategies import blinded_paths, points, secrets

NOW = 1_800_000_000
SIZE = 1403          # a 1300-byte onion on the wire
A, B, C = (bytes([2]) + bytes([n]) * 32 for n in (1, 2, 3))
LIMITS = mb.Limits(64, 96_000, 86400)


def held(ages, source=A, size=SIZE):
    """Entries oldest first, for messages ``ages`` seconds old, all from ``source``."""
    return [mb.Entry(mb.held_key(b"c", NOW - a, bytes([i]) + source), source, size, NOW - a)
            for i, a in enumerate(sorted(ages, reverse=True))]


def arriving(source, n=0, size=SIZE, at=NOW):
    return mb.Entry(mb.held_key(b"c", at, n.to_bytes(4, "big") + (source or b"")), source, size, at)


def run(box, new, now=NOW, limits=LIMITS):
    """Apply ``admit`` as the service does; returns whether ``new`` was stored."""
    ok, delete = mb.admit(box, new, now, limits)
    box[:] = [e for e in box if e.key not in delete] + ([new] if ok else [])
    return ok


@given(st.integers(0, 2**40), st.binary(max_size=2000), st.one_of(st.none(), st.binary(min_size=33, max_size=33)))
def test_held_message_roundtrip(at, onion, source):
    assert mb.HeldMessage.decode(mb.HeldMessage(at, onion, source).encode()) == mb.HeldMessage(at, onion, source)


def test_held_message_source_is_odd_so_records_stay_readable_both_ways():
    old = encode_tlv([(0, tu64(NOW)), (2, b"onion")])                  # as held by an older version
    assert mb.HeldMessage.decode(old) == mb.HeldMessage(NOW, b"onion", None)
    new = mb.HeldMessage(NOW, b"onion", A).encode()
    assert dict(decode_tlv(new, "old reader", known={0, 2}).records)[2] == b"onion"   # an older version reads it


@given(points, blinded_paths.filter(lambda p: p.first_node_id is not None), st.integers(0, 2**40))
def test_mailbox_record_roundtrip(phantom, path, at):
    rec = mb.MailboxRecord(MailboxRegistration(phantom, b"\x01" * 64, path), at)
    assert mb.MailboxRecord.decode(rec.encode()) == rec
    assert rec.client_node_id == path.first_node_id


def test_keys_sort_by_arrival_and_repeat_for_the_same_message():
    a = mb.held_key(b"c", 999, b"x")
    b = mb.held_key(b"c", 1000, b"x")
    assert a < b and a[:-1] == mb.held_prefix(b"c")
    assert mb.held_key(b"c", 1000, b"x") == b and mb.held_key(b"c", 1000, b"y") != b


sources = st.sampled_from([A, B, C, None])
entries = st.lists(st.tuples(st.integers(0, 200), sources, st.integers(1, 1500)), max_size=40)


@given(entries, sources, st.integers(1, 1500), st.integers(1, 25), st.integers(1500, 20_000), st.integers(1, 150))
def test_admit_fits_drops_expired_and_evicts_only_from_bigger_sources(es, src, size, max_count, max_bytes, max_age):
    box = sorted((mb.Entry(mb.held_key(b"c", NOW - a, i.to_bytes(2, "big")), s, n, NOW - a)
                  for i, (a, s, n) in enumerate(es)), key=lambda e: e.key)
    new = arriving(src, 99_999, size)
    limits = mb.Limits(max_count, max_bytes, max_age)
    ok, delete = mb.admit(box, new, NOW, limits)
    live = [e for e in box if NOW - e.received_at <= max_age]
    left = [e for e in box if e.key not in delete]
    assert all(NOW - e.received_at <= max_age for e in left)                  # nothing expired stays
    assert set(map(tuple, delete)) >= {tuple(e.key) for e in box if e not in live}
    evicted = [e for e in live if e.key in delete]
    if not ok:
        assert evicted == []                                                  # a refusal deletes nothing live
        return
    stored = left + [new]
    assert len(stored) <= max_count and sum(e.size for e in stored) <= max_bytes
    assert all(e.source != src for e in evicted)                              # never its own source's
    count = lambda s: sum(e.source == s for e in stored)                      # noqa: E731
    for e in evicted:                                                         # a loser still holds no less
        assert count(e.source) >= count(src)
    if evicted:                                   # and no more than needed went: the last one evicted was needed
        last = next(e for e in live if e.key == [k for k in delete if k in [x.key for x in evicted]][-1])
        back = stored + [last]
        assert len(back) > max_count or sum(e.size for e in back) > max_bytes
    for s in {e.source for e in evicted}:                                     # its newest ones went
        kept = [e.received_at for e in left if e.source == s]
        assert not kept or max(kept) <= min(e.received_at for e in evicted if e.source == s)


@given(st.lists(st.integers(0, 40), min_size=1, max_size=3), st.integers(2, 64), st.integers(1, 300))
def test_a_flood_from_one_source_never_evicts_another_source_holding_its_fair_share(counts, max_count, flood):
    others = [bytes([2]) + bytes([10 + i]) * 32 for i in range(len(counts))]
    fair = max_count // (len(others) + 1)
    limits = mb.Limits(max_count, max_count * SIZE, 86400)
    box, t = [], NOW - 1000
    for src, n in zip(others, counts):                  # the victims' messages arrive first
        for k in range(min(n, fair)):
            t += 1
            run(box, arriving(src, k, at=t))
    before = [e for e in box]
    for k in range(flood):                              # then the flood, from one source
        run(box, arriving(A, k, at=t + k), now=t + k, limits=limits)
    assert all(e in box for e in before)
    assert len(box) <= max_count


def test_a_source_never_pushes_out_its_own_first_come_messages():
    box = held(range(64), source=A)
    first = list(box)
    assert not run(box, arriving(A))                    # full of A's: A's next one is refused
    assert box == first


def test_a_newcomer_takes_room_from_the_biggest_source_newest_first():
    box = held(range(60), source=A) + held([0, 0, 0, 0], source=B)
    newest_a = [e for e in box if e.source == A][-1]
    assert run(box, arriving(C))
    assert newest_a not in box and sum(e.source == A for e in box) == 59 and len(box) == 64
    assert sum(e.source == B for e in box) == 4         # B holds less than A: untouched
    assert run(box, arriving(B))                        # B (4) is under A (59): room from A again
    assert sum(e.source == A for e in box) == 58


def test_byte_budget_and_unknown_source_counts_as_one():
    box = []
    limits = mb.Limits(64, 3000, 86400)
    assert run(box, arriving(None, 1, size=1500), limits=limits)
    assert run(box, arriving(None, 2, size=1500), limits=limits)
    assert not run(box, arriving(None, 3, size=1500), limits=limits)     # first come is kept
    assert not run(box, arriving(B, 4, size=3001), limits=limits)        # larger than the whole budget
    assert run(box, arriving(B, 5, size=1500), limits=limits)            # another source: room from None's
    assert [e.source for e in box] == [None, B]


@given(st.lists(st.integers(0, 200), max_size=30), st.integers(1, 150))
def test_due_delivers_oldest_first_and_expires_old(ages, max_age):
    h = held(ages)
    deliver, gone = mb.due(h, NOW, max_age)
    assert deliver == [e.key for e in h if NOW - e.received_at <= max_age]
    assert sorted(gone + deliver) == sorted(e.key for e in h)
    at = dict((tuple(e.key), e.received_at) for e in h)
    assert [at[tuple(k)] for k in deliver] == sorted(at[tuple(k)] for k in deliver)


@given(secrets, points, blinded_paths.filter(lambda p: p.first_node_id is not None))
def test_registration_signature_binds_phantom_server_and_path(phantom_secret, server, path):
    reg = MailboxRegistration.sign(phantom_secret, server, path)
    assert reg.verify(server)
    assert MailboxRegistration.decode(reg.encode()) == reg
    other = bytes([server[0]]) + bytes([server[1] ^ 1]) + server[2:]
    assert not reg.verify(other)                                        # another server
    forged = MailboxRegistration(reg.phantom_id, reg.signature, BlindedPath(path.introduction, path.first_path_key,
                                                                            path.hops[:1] + path.hops))
    assert not forged.verify(server)                                    # another delivery path
