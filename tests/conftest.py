"""Shared pytest setup: say loudly when integration or interop tests could not run."""

import shutil

import pytest

from tests.ci_guard import (pytest_collectreport, pytest_configure, pytest_runtest_logreport,  # noqa: F401
                            pytest_sessionfinish)  # (hooks)
from tests.ci_guard import pytest_terminal_summary as ci_terminal_summary

REQUIRED_BINARIES = ("lightningd", "bitcoind", "bitcoin-cli")
#: skip reasons of the LDK interop tests start with this (tests/interop/conftest.py)
LDK_SKIP_PREFIX = "LDK interop: "


def missing_binaries():
    return [b for b in REQUIRED_BINARIES if shutil.which(b) is None]


def skip_without_binaries(items, folder: str, what: str) -> None:
    """Mark every collected test under ``folder`` skipped when lightningd/bitcoind are not on PATH."""
    missing = missing_binaries()
    if not missing:
        return
    mark = pytest.mark.skip(reason=f"{what} test needs {', '.join(missing)} on PATH")
    for item in items:
        if folder in str(item.fspath):
            item.add_marker(mark)


def _ldk_skip_reasons(terminalreporter):
    reasons = set()
    for rep in terminalreporter.stats.get("skipped", []):
        longrepr = getattr(rep, "longrepr", None)
        if isinstance(longrepr, tuple) and len(longrepr) == 3 and LDK_SKIP_PREFIX in str(longrepr[2]):
            reasons.add(str(longrepr[2]).split(LDK_SKIP_PREFIX, 1)[1].splitlines()[0])
    return reasons


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    ci_terminal_summary(terminalreporter, exitstatus, config)
    tr = terminalreporter
    missing = missing_binaries()
    if missing:
        tr.write_sep("!", "INTEGRATION AND INTEROP TESTS SKIPPED", red=True, bold=True)
        tr.write_line(f"Not on PATH: {', '.join(missing)}. The integration tests (tests/integration) and the LDK "
                      "interop tests (tests/interop) need real lightningd (>= v24.11) and bitcoind/bitcoin-cli; "
                      "see README 'Prerequisites'.", red=True)
        tr.write_line("Only unit tests ran: behaviour against a real node was NOT checked.", red=True, bold=True)
    ldk = _ldk_skip_reasons(tr)
    if ldk:
        tr.write_sep("!", "LDK INTEROP TESTS SKIPPED", red=True, bold=True)
        for reason in sorted(ldk):
            tr.write_line(f"{reason} -- interop with ldk-node was NOT checked (see README 'LDK interop').", red=True)
