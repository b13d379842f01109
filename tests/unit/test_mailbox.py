"""The server mailbox's pure parts: records and the hold/deliver policy."""

from hypothesis import given, strategies as st

from asyncreceive.server import mailbox as mb
from asyncreceive.wire.messages import MailboxRegistration
from asyncreceive.wire.paths import BlindedPath

from .strategies import blinded_paths, points, secrets

NOW = 1_800_000_000


def held(ages):
    """(key, received_at) oldest first, for messages ``ages`` seconds old."""
    return [(mb.held_key(b"c", NOW - a, bytes([i])), NOW - a) for i, a in enumerate(sorted(ages, reverse=True))]


@given(st.integers(0, 2**40), st.binary(max_size=2000))
def test_held_message_roundtrip(at, onion):
    assert mb.HeldMessage.decode(mb.HeldMessage(at, onion).encode()) == mb.HeldMessage(at, onion)


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


@given(st.lists(st.integers(0, 200), max_size=30), st.integers(1, 25), st.integers(1, 150))
def test_admit_makes_room_and_drops_expired(ages, max_held, max_age):
    h = held(ages)
    evict = mb.admit(h, NOW, max_held, max_age)
    left = [(k, at) for k, at in h if k not in evict]
    assert len(left) + 1 <= max_held                          # room for the new one
    assert all(NOW - at <= max_age for _, at in left)          # nothing expired stays
    live = [k for k, at in h if NOW - at <= max_age]
    assert len(left) == min(len(live), max_held - 1)           # nothing live dropped without need
    evicted_live = [at for k, at in h if k in evict and NOW - at <= max_age]
    if left and evicted_live:                                  # the oldest live ones went first
        assert max(evicted_live) <= min(at for _, at in left)


@given(st.lists(st.integers(0, 200), max_size=30), st.integers(1, 150))
def test_due_delivers_oldest_first_and_expires_old(ages, max_age):
    h = held(ages)
    deliver, gone = mb.due(h, NOW, max_age)
    assert deliver == [k for k, at in h if NOW - at <= max_age]
    assert sorted(gone + deliver) == sorted(k for k, _ in h)
    at = dict((tuple(k), a) for k, a in h)
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
