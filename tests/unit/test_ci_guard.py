"""On CI a skipped real-node test fails the run; elsewhere it stays a skip (tests/ci_guard.py)."""

import pytest

from tests.ci_guard import on_ci, real_node_skips

pytest_plugins = ["pytester"]

SUITE = {
    "tests/integration/test_a.py": "import pytest\ndef test_skipped():\n    pytest.skip('no lightningd')\n",
    "tests/unit/test_b.py": "import pytest\ndef test_skipped():\n    pytest.skip('optional')\n"
                            "def test_ok():\n    pass\n",
}
CONFTEST = "from tests.ci_guard import *  # noqa\n"


def test_on_ci_reads_the_usual_values():
    assert on_ci({"CI": "true"}) and on_ci({"CI": "1"})
    assert not on_ci({}) and not on_ci({"CI": "false"}) and not on_ci({"CI": "0"}) and not on_ci({"CI": ""})


def test_only_real_node_suites_count():
    skips = {"tests/integration/test_x.py::t": "r", "tests/interop/test_y.py::t": "r", "tests/unit/test_z.py::t": "r"}
    assert set(real_node_skips(skips)) == {"tests/integration/test_x.py::t", "tests/interop/test_y.py::t"}


def _run(pytester, monkeypatch, ci, files):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    for name, text in files.items():
        p = pytester.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    import tests.ci_guard as guard
    monkeypatch.setattr(guard, "_skipped", {})
    monkeypatch.setattr(guard, "_allowed", {})
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:xdist")


@pytest.mark.parametrize("ci", ["true", "1"])
def test_a_skipped_integration_test_fails_the_run_on_ci(pytester, monkeypatch, ci):
    result = _run(pytester, monkeypatch, ci, SUITE)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*CI: 1 REAL-NODE TEST(S) SKIPPED*", "*tests/integration/test_a.py::test_skipped: *"])


def test_a_skipped_integration_test_stays_a_skip_off_ci(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, None, SUITE)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=2)


def test_a_skipped_unit_test_does_not_fail_ci(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, "true", {"tests/unit/test_b.py": SUITE["tests/unit/test_b.py"]})
    assert result.ret == pytest.ExitCode.OK


def test_a_test_marked_ci_may_skip_is_listed_but_does_not_fail_ci(pytester, monkeypatch):
    files = {"tests/integration/test_c.py": "import pytest\n@pytest.mark.ci_may_skip('no reckless here')\n"
                                            "def test_tool():\n    pytest.skip('reckless is not on PATH')\n"}
    result = _run(pytester, monkeypatch, "true", files)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*skipped, allowed on CI: tests/integration/test_c.py::test_tool*"])


def test_a_module_skipped_at_collection_fails_ci(pytester, monkeypatch):
    files = {"tests/interop/test_d.py": "import pytest\npytest.importorskip('no_such_module_here')\n"
                                        "def test_x():\n    pass\n"}
    result = _run(pytester, monkeypatch, "true", files)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*CI: 1 REAL-NODE TEST(S) SKIPPED*"])
