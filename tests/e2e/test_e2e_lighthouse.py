"""Lighthouse CI (scripts/ci/lighthouse.sh, lighthouserc.json's budgets) against the board page of the
stack `spaced up local` deployed: the page through Traefik and nginx, as the lighthouse workflow audits
a cloud stack's page. tests/workflows/test_lighthouse.py is the same without Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows.lighthouse import CHROMIUM, run_lighthouse

from .conftest import LocalStack

pytestmark = [pytest.mark.docker, pytest.mark.browser, pytest.mark.slow]


def test_the_local_stack_page_meets_the_budgets(local_stack: LocalStack, tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"needs {CHROMIUM}: run scripts/install-deps.sh")
    run = run_lighthouse(f"{local_stack.url}/", tmp_path / "report")
    assert run.returncode == 0, run.output[-3000:]
    assert run.scores["performance"] >= 0.9 and run.scores["accessibility"] >= 0.9
    assert run.resources["third-party"]["requestCount"] == 0
    # gzip from nginx survives Traefik: the bundle travels compressed
    assert 0 < run.resources["script"]["transferSize"] < 80_000
