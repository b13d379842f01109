"""The probe's received list read from a created_index on (what a poller uses to read only what is new)."""

from hypothesis import given, strategies as st

from asyncreceive.crypto.context import Kind, PathContext
from asyncreceive.shell.probe import KEEP, Probe
from asyncreceive.shell.transport import Received
from asyncreceive.wire import messages as m


def _probe_with(n: int) -> Probe:
    p = Probe(transport=None, clock=lambda: 1_000)
    for i in range(n):
        p.handle(Received(m.HELD_HTLC_AVAILABLE, m.HELD_HTLC_AVAILABLE, i.to_bytes(4, "big"), None,
                          PathContext(Kind.PROBE, 2_000, {}), b""))
    return p


@given(st.integers(0, 3 * KEEP), st.integers(0, 4 * KEEP), st.one_of(st.none(), st.integers(1, KEEP + 5)))
def test_received_since_is_the_kept_entries_from_start_on(n, start, limit):
    p = _probe_with(n)
    kept = list(p.received)
    assert [e["created_index"] for e in kept] == list(range(max(1, n - KEEP + 1), n + 1))
    want = [e for e in kept if e["created_index"] >= start][:limit]
    assert p.received_since(start, limit) == want


def test_a_poller_reads_each_entry_once():
    p, seen, nxt = _probe_with(0), [], 0
    for batch in (3, 0, 1, 250, 2):
        _more(p, batch)
        got = p.received_since(nxt)
        if got:
            nxt = got[-1]["created_index"] + 1
        seen += [e["created_index"] for e in got]
    # every entry once, in order; of the batch of 250 only the newest KEEP were still kept when read
    assert seen == list(range(1, 5)) + list(range(255 - KEEP, 257))


def _more(p: Probe, n: int) -> None:
    for _ in range(n):
        p.handle(Received(m.HELD_HTLC_AVAILABLE, m.HELD_HTLC_AVAILABLE, b"\x00", None,
                          PathContext(Kind.PROBE, 2_000, {}), b""))
