"""Headless Chromium on the board page of the deployed stack (nginx serves the page through Traefik,
the page syncs through item_socket): a drag in one page appears in the other, and a newcomer
without a token is told to run `spaced token local` and is offered no editing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.web.browser import CONNECTED, ERROR_SHOWN, SYNCED, browser_session

from .conftest import LocalStack

pytestmark = [pytest.mark.docker, pytest.mark.browser]

DRAG_SCRIPT = Path(__file__).parent / "js" / "board_drag.mjs"
CHROMIUM = "/usr/bin/chromium"


def test_a_drag_in_one_browser_appears_in_the_other(local_stack: LocalStack) -> None:
    if not Path(CHROMIUM).exists() or shutil.which("node") is None:
        pytest.fail(f"needs {CHROMIUM} and node: run scripts/install-deps.sh")
    doc = f"e2e-board-{uuid.uuid4().hex[:8]}"
    url = f"{local_stack.url}/#token={local_stack.token(doc)}&doc={doc}"
    process = subprocess.Popen(
        ["node", str(DRAG_SCRIPT), url],
        cwd=DRAG_SCRIPT.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    try:
        stdout, stderr = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=10)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the drag script (exit {process.returncode}):\n{stdout}\n{stderr}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{result['error']}\n{stderr}"
    print(
        f"drag {result['start']} -> {result['dropped']} seen in the other browser after {result['syncMs']} ms"
    )
    start, dropped = result["start"], result["dropped"]
    # It really moved, and the other page shows it (and holds it in its document) where it was dropped.
    assert (f"{dropped['x']}px", f"{dropped['y']}px") != (start["left"], start["top"])
    assert result["seenInB"] == {"left": f"{dropped['x']}px", "top": f"{dropped['y']}px"}
    assert result["mapInB"] == dropped


def test_the_newcomer_without_a_token_is_told_what_to_run(local_stack: LocalStack) -> None:
    doc = f"e2e-newcomer-{uuid.uuid4().hex[:8]}"
    with browser_session() as browser:
        # As a newcomer opens it: the bare address, no token.
        bare = browser.open(f"{local_stack.url}/")
        browser.wait(bare, ERROR_SHOWN, timeout_ms=30000)
        state = browser.state(bare)
        assert "spaced token local" in state["message"]["codes"], state["message"]
        assert state["message"]["role"] == "alert" and "error" in state["message"]["className"].split()
        assert state["addDisabled"] is True and state["status"] == "refused"
        # With the token from `spaced token local`: connected, editing on, and the empty board's hint.
        page = browser.open(f"{local_stack.url}/#token={local_stack.token(doc)}&doc={doc}")
        browser.wait(page, f"{CONNECTED} && {SYNCED}", timeout_ms=30000)
        state = browser.state(page)
        assert state["status"] == "connected" and not state["message"]["visible"]
        assert state["hint"]["visible"], state
        assert state["description"], "the page has a meta description"
