"""On CI (env ``CI`` set and not "0"/"false"), a run in which any test under tests/integration or
tests/interop was skipped fails: those suites are the proof that the plugin works against real nodes,
and a run that silently skipped them must not go green. On a developer's machine a skip stays a
(loud) skip. tests/conftest.py registers these hooks.

The one exception is a test marked ``ci_may_skip(reason)``: it needs a tool that CI's machine does not
have (reckless); its skip is listed loudly but does not fail the run."""

import os

import pytest

#: the suites that need real lightningd/bitcoind (and, for interop, the ldk-node driver)
REAL_NODE_SUITES = ("tests/integration/", "tests/interop/")

_skipped: dict = {}
#: skipped tests marked ci_may_skip: nodeid -> why CI may skip them
_allowed: dict = {}


def on_ci(env=os.environ) -> bool:
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def real_node_skips(skipped: dict) -> dict:
    """The skipped tests (nodeid -> reason) that belong to a real-node suite."""
    return {n: r for n, r in skipped.items() if n.replace("\\", "/").startswith(REAL_NODE_SUITES)}


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).splitlines()[0]
    return str(longrepr).splitlines()[0] if longrepr else ""


def pytest_configure(config):
    config.addinivalue_line("markers", "ci_may_skip(reason): CI may skip this real-node test (a tool it lacks)")


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        if "ci_may_skip" in getattr(report, "keywords", {}):
            _allowed.setdefault(report.nodeid, _reason(report))
            return
        _skipped.setdefault(report.nodeid, _reason(report))


def pytest_collectreport(report):
    """A whole module skipped at collection (``importorskip``, ``skip(allow_module_level=True)``)."""
    if report.skipped:
        _skipped.setdefault(report.nodeid, _reason(report))


def pytest_sessionfinish(session, exitstatus):
    if on_ci() and real_node_skips(_skipped) and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    tr = terminalreporter
    for nodeid, reason in sorted(_allowed.items()):
        tr.write_line(f"skipped, allowed on CI: {nodeid} ({reason})", yellow=True, bold=True)
    skips = real_node_skips(_skipped)
    if not (on_ci() and skips):
        return
    tr.write_sep("!", f"CI: {len(skips)} REAL-NODE TEST(S) SKIPPED -- THIS RUN FAILS", red=True, bold=True)
    for nodeid, reason in sorted(skips.items())[:20]:
        tr.write_line(f"{nodeid}: {reason}", red=True)
    if len(skips) > 20:
        tr.write_line(f"... and {len(skips) - 20} more", red=True)
    tr.write_line("On CI every integration and interop test must run against real lightningd/bitcoind "
                  "(and ldk-node). Unset CI to allow skips on a developer's machine.", red=True)

