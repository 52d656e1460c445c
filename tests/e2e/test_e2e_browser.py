"""Two headless Chromium pages on the board page of the deployed stack: a drag in one appears in
the other (nginx serves the page through Traefik, the page syncs through item_socket)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

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
