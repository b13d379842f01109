"""Shared pytest setup: say loudly when integration tests could not run."""

import shutil

REQUIRED_BINARIES = ("lightningd", "bitcoind", "bitcoin-cli")


def missing_binaries():
    return [b for b in REQUIRED_BINARIES if shutil.which(b) is None]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    missing = missing_binaries()
    if missing:
        tr = terminalreporter
        tr.write_sep("!", "INTEGRATION TESTS SKIPPED", red=True, bold=True)
        tr.write_line(f"Not on PATH: {', '.join(missing)}. The integration tests (tests/integration) need real "
                      "lightningd (>= v24.11) and bitcoind/bitcoin-cli; see README 'Prerequisites'.", red=True)
        tr.write_line("Only unit tests ran: behaviour against a real node was NOT checked.", red=True, bold=True)
