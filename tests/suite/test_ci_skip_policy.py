"""The suite's own rule: in CI a skip fails the run unless its reason is on the allow-list."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
TESTS = """
import pytest

def test_not_allowed():
    pytest.skip("the engine is not a swarm manager")

def test_allowed():
    pytest.skip("network namespaces need root")

@pytest.mark.skipif(True, reason="no chromium here")
def test_marked():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_runs():
    assert True
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # The real tests/conftest.py, importing tests.support from this repository.
    monkeypatch.setenv("PYTHONPATH", str(CONFTEST.parents[1]))
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_sample=TESTS)
    return pytester


def test_in_ci_a_skip_off_the_allow_list_fails(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_subprocess("-rA")
    # A skip in a test body fails it; a skip mark (evaluated at setup) makes a setup error.
    result.assert_outcomes(passed=1, failed=1, errors=1, skipped=1, xfailed=1)
    assert result.ret != 0
    result.stdout.fnmatch_lines(
        ["*skipped in CI: the engine is not a swarm manager*", "*ALLOWED_SKIPS_IN_CI*"]
    )


def test_outside_ci_skips_stay_skips(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    suite.runpytest_subprocess().assert_outcomes(passed=1, skipped=3, xfailed=1)
