"""A short run of every fuzz target (fuzz/): seeds plus random mutations, in this process.

``make fuzz`` runs the same targets coverage-guided for much longer; see fuzz/README.md.
"""

import pytest

from fuzz import run, structured, targets
from fuzz.targets import Failure

#: inputs per target: a few hundred milliseconds each
RUNS = {False: 600, True: 250}


@pytest.mark.parametrize("name", sorted(targets.all_targets()))
def test_fuzz_target_smoke(name):
    target = targets.get(name)
    res = run.smoke(name, RUNS[target.structured])
    assert res.crashes == [], f"{name}: failing input saved in {res.crashes}"
    assert res.runs == RUNS[target.structured]


def test_smoke_engine_reports_a_failing_input(monkeypatch, tmp_path):
    """The engine is not vacuous: a target that fails on some inputs is caught and its input saved."""
    def picky(data):
        if len(data) % 3 == 1:
            raise Failure("planted")
    monkeypatch.setitem(targets.TARGETS, "tlv", targets.Target("tlv", picky))
    monkeypatch.setattr(run, "CRASHES", tmp_path)
    res = run.smoke("tlv", 200)
    assert len(res.crashes) == 1 and len(open(res.crashes[0], "rb").read()) % 3 == 1


def test_slow_inputs_fail(monkeypatch):
    monkeypatch.setenv("FUZZ_MAX_MS", "0")
    with pytest.raises(Failure, match="slow input"):
        run.Timer(targets.get("tlv"))(b"\x01\x00")


def test_onion_phantom_reaches_every_role_s_handlers():
    """The structured target gets past the crypto: its seeds are dispatched to handlers on the server,
    the recipient and the payer (not only dropped as malformed)."""
    from fuzz import seeds
    try:
        for data in seeds.seeds("onion_phantom"):
            targets.get("onion_phantom").run(data)
        w = structured._world.w
        got = {name: sum(t.stats.received.values()) for name, t in (("server", w.st), ("recipient", w.rt),
                                                                     ("payer", w.pt))}
        assert all(n > 10 for n in got.values()), got
        assert w.rt.stats.relayed  # through the server's mailbox too
    finally:
        structured.reset()
