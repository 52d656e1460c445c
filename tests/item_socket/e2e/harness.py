"""Drive a real item_socket server process and real npm Yjs clients (tests/item_socket/js/agent.mjs).

Shared by the e2e tests, the fuzz tests and the benchmarks (loaded by file path there, see
`load_harness` in their conftest/scripts); besides the standard library it needs only packages of
the project's own environment (pyjwt, prometheus_client), imported where used.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests import support

REPO = Path(__file__).resolve().parents[3]
JS_DIR = REPO / "tests" / "item_socket" / "js"
AGENT_JS = JS_DIR / "agent.mjs"
NODE = os.environ.get("NODE", "node")

T = TypeVar("T")


class HarnessError(AssertionError):
    """A server or client agent did not behave within its deadline."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (tests.support.free_port)."""
    return support.free_port("127.0.0.1")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """tests.support.wait_until, polling every 20 ms (client agents answer within milliseconds);
    a HarnessError from `predicate` (an agent or server failed) ends the wait at once."""
    return support.wait_until(predicate, timeout, what, interval)


def holds_for(predicate: Callable[[], Any], seconds: float, what: str, interval: float = 0.1) -> None:
    """Check that `predicate` stays truthy for `seconds` (polled); fail at the first falsy value.

    For negative facts ("the client does not come back"): an observation window, not a wait.
    """
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if not value:
            raise HarnessError(f"{what} stopped holding; last value: {_short(value)}")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def _short(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def make_jwt(secret: bytes, docs: dict[str, str], *, expires_in: float = 3600.0, **claims: Any) -> str:
    """Return an HS256 JWT with the `docs` claim ({glob: "read"|"write"}) and an `exp` claim."""
    import jwt  # pyjwt, a runtime dependency of item_socket

    return jwt.encode(
        {"docs": docs, "exp": int(time.time() + expires_in), **claims}, secret, algorithm="HS256"
    )


class ServerProcess:
    """One `python -m item_socket` subprocess on a free port; always stop it (use it as a context)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        log_dir: Path | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cpu: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir) if log_dir else self.data_dir.parent
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.env = env
        self.cpu = cpu
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.returncode: int | None = None

    @property
    def url(self) -> str:
        """Base http URL (Socket.IO clients and y-websocket clients both take it)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """Base ws URL; y-websocket documents live under `/ws/<doc>`."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / f"item_socket-{self.port}.stderr.log"

    def stderr_text(self, tail: int = 8000) -> str:
        """The server's stderr so far (the last `tail` characters)."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-tail:]

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "item_socket", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir), *self.extra_args]
        if self.cpu is not None and _which("taskset"):
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        return cmd

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the server and wait until /healthz answers 200; fail with its stderr otherwise."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(self.env or {})}
        with self.stderr_path.open("ab") as stderr:
            stderr.write(f"--- start #{self.starts + 1}: {' '.join(self.command())}\n".encode())
            stderr.flush()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        self.starts += 1
        self.returncode = None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self.returncode = self.proc.returncode
                raise HarnessError(
                    f"item_socket exited with {self.proc.returncode} before answering /healthz:\n"
                    f"{self.stderr_text()}"
                )
            if self.http_status("/healthz") == 200:
                return self
            if time.monotonic() >= deadline:
                self.stop()
                raise HarnessError(
                    f"item_socket did not answer /healthz within {timeout}s:\n{self.stderr_text()}"
                )
            time.sleep(0.05)

    def http_status(self, path: str, timeout: float = 2.0) -> int | None:
        """GET `path`; return the status code, or None when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return None

    def http_get(self, path: str, timeout: float = 5.0) -> str:
        """GET `path` and return the body (raises on HTTP errors)."""
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return resp.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` on /metrics whose labels include `labels` (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.http_get("/metrics")):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send `sig`, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        return self.returncode

    def rss_bytes(self) -> int:
        """Resident set size of the server process (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        for line in fields:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise HarnessError("VmRSS missing from /proc status")

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used (Linux /proc/<pid>/stat)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        rest = stat[stat.rindex(")") + 2 :].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(rest[11]) + int(rest[12])) / ticks

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _which(name: str) -> bool:
    return any((Path(p) / name).exists() for p in os.environ.get("PATH", "").split(os.pathsep))


class AgentError(AssertionError):
    """The client agent answered a request with an error."""


class Agent:
    """One Node process hosting real npm Yjs clients; requests are JSON lines (see agent.mjs)."""

    def __init__(self, name: str = "agent") -> None:
        self.name = name
        self._next_id = 0
        self._answers: dict[Any, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._stderr_tail: list[str] = []
        self.proc = subprocess.Popen(
            [NODE, str(AGENT_JS)],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self._wait_answer("ready", timeout=20.0)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                answer = json.loads(raw)
            except ValueError:
                self._stderr_tail.append(f"[non-JSON stdout] {raw[:200]!r}")
                continue
            with self._cond:
                self._answers[answer.get("id")] = answer
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self._stderr_tail.append(raw.decode(errors="replace").rstrip())
            del self._stderr_tail[:-200]

    def stderr_text(self) -> str:
        return "\n".join(self._stderr_tail)

    def _wait_answer(self, request_id: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while request_id not in self._answers:
                remaining = deadline - time.monotonic()
                if self.proc.poll() is not None:
                    raise HarnessError(
                        f"agent {self.name} exited ({self.proc.returncode}):\n{self.stderr_text()}"
                    )
                if remaining <= 0:
                    raise HarnessError(
                        f"agent {self.name} did not answer request {request_id} within {timeout}s"
                    )
                self._cond.wait(min(remaining, 0.5))
            return self._answers.pop(request_id)

    def request(self, cmd: str, timeout: float = 20.0, **args: Any) -> dict[str, Any]:
        """Send one command and return its answer; raise AgentError when it failed."""
        assert self.proc.stdin is not None
        # Requests may come from several test threads at once: ids and writes stay whole.
        with self._send_lock:
            self._next_id += 1
            request_id = self._next_id
            line = json.dumps({"id": request_id, "cmd": cmd, **args}) + "\n"
            try:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
            except BrokenPipeError as exc:
                raise HarnessError(f"agent {self.name} is gone:\n{self.stderr_text()}") from exc
        answer = self._wait_answer(request_id, timeout)
        if not answer.get("ok"):
            raise AgentError(f"agent {self.name} {cmd} failed: {answer.get('error')}")
        return answer

    def open(
        self, client: str, protocol: str, server: ServerProcess | str, doc: str, **options: Any
    ) -> YClient:
        """Open a Yjs client ('ws' = y-websocket, 'sio' = y-socket.io WebSocket, 'sio-polling')."""
        url = server.url if isinstance(server, ServerProcess) else server
        answer = self.request("open", client=client, protocol=protocol, url=url, doc=doc, **options)
        return YClient(self, client, protocol, doc, int(answer["clientID"]))

    def kill(self) -> None:
        """SIGKILL the agent: its connections drop without any goodbye."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        """Ask the agent to exit; kill it if it does not."""
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


class YClient:
    """One Yjs client inside an agent; text lives in Y.Text 'text', keys in Y.Map 'map'."""

    def __init__(self, agent: Agent, name: str, protocol: str, doc: str, client_id: int) -> None:
        self.agent = agent
        self.name = name
        self.protocol = protocol
        self.doc = doc
        self.client_id = client_id

    def __repr__(self) -> str:
        return f"YClient({self.name}, {self.protocol}, doc={self.doc})"

    def _req(self, cmd: str, **args: Any) -> dict[str, Any]:
        return self.agent.request(cmd, client=self.name, **args)

    def insert(self, index: int, content: str, repeat: int | None = None) -> None:
        self._req("insert", index=index, content=content, **({"repeat": repeat} if repeat else {}))

    def delete(self, index: int, length: int) -> None:
        self._req("delete", index=index, length=length)

    def map_set(self, key: str, value: Any) -> None:
        self._req("map_set", key=key, value=value)

    def ops(self, ops: list[dict[str, Any]]) -> None:
        """Apply ops ({op: insert|delete|map_set, ...}) one transaction each, indexes clamped."""
        self._req("ops", ops=ops)

    def state(self, digest_only: bool = False) -> dict[str, Any]:
        return self._req("state", digestOnly=digest_only)

    def text(self) -> str:
        return str(self.state()["text"])

    def set_awareness(self, state: Any) -> None:
        self._req("set_awareness", state=state)

    def awareness(self) -> dict[int, Any]:
        """Awareness states this client knows, by client id (its own included)."""
        return {int(cid): st for cid, st in self._req("awareness")["states"]}

    def disconnect(self) -> None:
        self._req("disconnect")

    def connect(self) -> None:
        self._req("connect")

    def destroy(self) -> None:
        self._req("destroy")

    def events(self) -> list[dict[str, Any]]:
        return list(self.state(digest_only=True)["events"])

    def wait_synced(self, timeout: float = 15.0) -> dict[str, Any]:
        return wait_until(
            lambda: (st := self.state(digest_only=True))["synced"] and st, timeout, f"{self} to sync"
        )

    def wait_text(self, expected: str, timeout: float = 15.0) -> None:
        wait_until(lambda: self.text() == expected, timeout, f"{self} text == {_short(expected, 120)}")

    def wait_state(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        digest_only: bool = False,
    ) -> dict[str, Any]:
        """Poll this client's state until `predicate(state)` holds; return that state."""

        last: list[dict[str, Any]] = []

        def check() -> dict[str, Any] | None:
            st = self.state(digest_only=digest_only)
            last[:] = [st]
            return st if predicate(st) else None

        try:
            return wait_until(check, timeout, f"{self}: {what}")
        except AssertionError as exc:  # support.wait_until's timeout included: show what was seen
            seen = {k: v for k, v in last[0].items() if k != "events"} if last else None
            events = last[0]["events"][-12:] if last else None
            raise HarnessError(f"{exc}\nlast state: {_short(seen, 1500)}\nlast events: {events}") from None


@contextlib.contextmanager
def agents(count: int = 1) -> Iterator[list[Agent]]:
    """Start `count` agents and always stop them."""
    started: list[Agent] = []
    try:
        for index in range(count):
            started.append(Agent(f"agent{index}"))
        yield started
    finally:
        for agent in started:
            agent.close()
