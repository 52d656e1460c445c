"""Headless Chromium on the board page, driven through tests/web/js/board_page.mjs (JSON lines), for
the page tests on nginx + item_socket (tests/web) and on the deployed stack (tests/e2e).

A page is opened in a browser context of its own (another person); `state` returns what a person
sees (status, error message and its role and style, the add button, the empty-board hint, items).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DRIVER = Path(__file__).parent / "js" / "board_page.mjs"
CHROMIUM = "/usr/bin/chromium"
CONNECTED = "document.querySelector('#add').disabled === false"
SYNCED = "document.querySelector('#board').dataset.synced === 'true'"
ERROR_SHOWN = "!document.querySelector('#message').hidden"


class Browser:
    """One Node process driving headless Chromium (tests/web/js/board_page.mjs) by JSON lines."""

    def __init__(self) -> None:
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stderr: list[str] = []
        self._next = 0
        self.proc = subprocess.Popen(
            ["node", str(DRIVER)],
            cwd=DRIVER.parent,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "CHROMIUM": CHROMIUM},
        )
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()
        self._answer("ready", 60)

    def _read(self, stream: Any, answers: bool) -> None:
        for line in stream:
            if answers and line.startswith("{"):
                self._answers.put(json.loads(line))
            else:
                self._stderr.append(line.rstrip())
                del self._stderr[:-100]

    def _answer(self, request_id: object, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"browser driver: no answer to {request_id} in {timeout}s\n{self.stderr}"
                )
            try:
                answer = self._answers.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"browser driver exited ({self.proc.returncode}):\n{self.stderr}"
                    ) from None
                continue
            if answer.get("id") == request_id:
                assert answer["ok"], f"browser driver: {answer.get('error')}\n{self.stderr}"
                return answer

    @property
    def stderr(self) -> str:
        """The driver's last stderr lines (page errors included)."""
        return "\n".join(self._stderr)

    def request(self, cmd: str, timeout: float = 45.0, **fields: Any) -> dict[str, Any]:
        """Send one request and wait (bounded) for its answer."""
        self._next += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": self._next, "cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        return self._answer(self._next, timeout)

    def open(self, url: str) -> int:
        """A new browser context (a new person) on `url`; returns its page number."""
        return int(self.request("open", url=url)["page"])

    def wait(self, page: int, expr: str, timeout_ms: int = 20000) -> None:
        """Wait until the JS expression `expr` is truthy in the page (fails after `timeout_ms`)."""
        self.request("wait", timeout=timeout_ms / 1000 + 15, page=page, expr=expr, timeoutMs=timeout_ms)

    def state(self, page: int) -> dict[str, Any]:
        """What the page shows: status, error message, add button, hint, items (see pageState)."""
        return dict(self.request("state", page=page)["state"])

    def click(self, page: int, selector: str) -> None:
        """A real mouse click on `selector`, also when it is disabled."""
        self.request("click", page=page, selector=selector)

    def close(self) -> None:
        """Close Chromium (stdin ends) and wait for the driver; kill it if it hangs."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def browser_session() -> Iterator[Browser]:
    """A started Browser, always closed; its driver's stderr (page errors) is printed at the end."""
    if not Path(CHROMIUM).exists() or shutil.which("node") is None:
        raise AssertionError(f"needs {CHROMIUM} and node: run scripts/install-deps.sh")
    started = Browser()
    try:
        yield started
    finally:
        started.close()
        if started.stderr:
            print(f"===== browser driver stderr =====\n{started.stderr}")
