"""The benchmark harness: servers on 127.0.0.1, the Node load generator, and one function per profile.

Every server runs pinned to CPU 0 (``taskset``) and the generator (``benchmarks/load.mjs``, one Node
process) to the last CPU, so each has a core of its own on a 2-core machine. Each profile function
starts a server, drives it, stops it (always: ``try``/``finally``) and returns plain dicts that
``benchmarks.report`` turns into tables. Units are in the key names (``_ms``, ``_s``, ``_bytes``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOAD_SCRIPT = HERE / "load.mjs"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
# The generator counts as the limit when it used this share of its core (or more).
GENERATOR_LIMIT_CPU = 0.90
# ... or when its event loop was this late (ms, p99): timers and reads then lag the server.
GENERATOR_LIMIT_LOOP_DELAY_MS = 100.0
WARMUP_S = 2.0


class BenchmarkError(RuntimeError):
    """A server or the load generator failed; the message says which and shows its last output."""


@dataclass(frozen=True)
class Server:
    """One server under test and how the generator reaches it.

    ``protocol`` is load.mjs's protocol name; ``url_path`` follows ``ws://127.0.0.1:<port>``
    (a y-websocket room is appended as ``/<room>``).
    """

    key: str
    label: str
    protocol: str
    url_path: str = ""
    kind: str = ""  # "item_socket", "hocuspocus", "y-socket.io", "y-websocket", "pycrdt-websocket"
    redis: bool = False

    def command(self, port: int, data_dir: Path, scale_out: ScaleOut | None) -> list[str]:
        """The server's command line (unpinned)."""
        if self.kind == "item_socket":
            cmd = [sys.executable, "-m", "item_socket", "--host", "127.0.0.1", "--port", str(port)]
            # Persistence (SQLite) and metrics stay on; no per-connection rate limit, no connection cap.
            cmd += ["--data-dir", str(data_dir), "--log-level", "WARNING", "--rate-limit", "0"]
            cmd += ["--max-connections", "0"]
            if scale_out is not None:
                cmd += ["--redis-url", scale_out.redis_url, "--store-url", scale_out.store_url]
                cmd += ["--store-password-file", str(scale_out.store_password_file)]
            return cmd
        if self.kind == "hocuspocus":
            return ["node", str(HERE / "servers/hocuspocus_server.mjs"), str(port)]
        if self.kind == "y-socket.io":
            return ["node", str(HERE / "servers/ysocketio_server.mjs"), str(port)]
        if self.kind == "y-websocket":
            return ["node", str(REPO / "node_modules/@y/websocket-server/src/server.js")]
        if self.kind == "pycrdt-websocket":
            return [sys.executable, str(HERE / "servers/pycrdt_server.py"), str(port)]
        raise ValueError(f"unknown server kind {self.kind!r}")


SERVERS: dict[str, Server] = {
    s.key: s
    for s in (
        Server("item_socket-ws", "item_socket y-websocket", "ywebsocket", "/ws", "item_socket"),
        Server("item_socket-sio", "item_socket Socket.IO", "sio", "", "item_socket"),
        Server("hocuspocus", "Hocuspocus 4.7 (Node)", "hocuspocus", "", "hocuspocus"),
        Server("y-socket.io", "y-socket.io 1.1.3 (Node)", "sio", "", "y-socket.io"),
        Server("y-websocket", "y-websocket server 0.1.1 (Node)", "ywebsocket", "", "y-websocket"),
        Server("pycrdt-websocket", "pycrdt-websocket 0.16 (Hypercorn)", "ywebsocket", "", "pycrdt-websocket"),
        Server(
            "item_socket-ws-redis",
            "item_socket y-websocket + Redis",
            "ywebsocket",
            "/ws",
            "item_socket",
            True,
        ),
    )
}
DEFAULT_SERVERS = [key for key, s in SERVERS.items() if not s.redis]


def item_socket_has_redis() -> bool:
    """True when this checkout's item_socket takes ``--redis-url`` (the scale-out has landed)."""
    result = subprocess.run(
        [sys.executable, "-m", "item_socket", "--help"], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    return "--redis-url" in result.stdout


# ------------------------------------------------------------------------------------------------
# /proc figures


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (bounded by the process table)."""
    pids, todo = [], [pid]
    while todo and len(pids) < 4096:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc/<pid>/stat; 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process tree (taskset execs, so the server's pid is the tree's root)."""
    return sum(cpu_seconds(p) for p in tree_pids(pid))


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process tree, bytes (VmRSS of each process)."""
    total = 0
    for p in tree_pids(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPUs, their model, load average, date (UTC)."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count() or 1,
        "cpu_model": model,
        "loadavg": list(os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "pinned": shutil.which("taskset") is not None and (os.cpu_count() or 1) > 1,
    }


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The ``fraction`` quantile (nearest rank) of ascending ``sorted_values``; None if empty."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def latency_summary(latencies: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max of latencies in ms."""
    ordered = sorted(latencies)
    return {
        "p50_ms": percentile(ordered, 0.50),
        "p90_ms": percentile(ordered, 0.90),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": ordered[-1] if ordered else None,
    }


# ------------------------------------------------------------------------------------------------
# processes


def _cpus() -> tuple[str | None, str | None]:
    """(server CPU, generator CPU) for taskset, or (None, None) when pinning is impossible."""
    n = os.cpu_count() or 1
    if shutil.which("taskset") is None or n < 2:
        return None, None
    return "0", str(n - 1)


def _pinned(cmd: list[str], cpu: str | None) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if cpu else cmd


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; always reaps."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class Running:
    """A started server: its process, port and log, and the generator's URL for it."""

    server: Server
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port><url_path>``."""
        return f"ws://127.0.0.1:{self.port}{self.server.url_path}"

    def cpu(self) -> float:
        """CPU seconds used so far by the server's process tree."""
        return tree_cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        """Resident bytes of the server's process tree now."""
        return tree_rss_bytes(self.proc.pid)

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the server's output."""
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


@dataclass(frozen=True)
class ScaleOut:
    """What item_socket's scale-out needs: a Redis server and the shared PostgreSQL store."""

    redis_url: str
    store_url: str  # without the password (item_socket refuses one in the URL)
    store_password_file: Path


@contextlib.contextmanager
def _scale_out(tmp: Path) -> Iterator[ScaleOut]:
    """A private redis-server and PostgreSQL cluster on free ports (tests/servers.py), stopped on exit."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.servers import PostgresServer, RedisServer

    redis = RedisServer(tmp / "redis")
    postgres = PostgresServer()
    try:
        redis.start()
        postgres.start()
        password_file = tmp / "store-password"
        password_file.write_text(postgres.password)
        yield ScaleOut(redis.url, postgres.url_without_password, password_file)
    finally:
        redis.stop()
        postgres.remove()  # stops it, then deletes its directory


@contextlib.contextmanager
def running(server: Server, extra_args: tuple[str, ...] = ()) -> Iterator[Running]:
    """Start ``server`` pinned to CPU 0 on a free port; stop it (and its Redis) on exit."""
    server_cpu, _ = _cpus()
    with tempfile.TemporaryDirectory(prefix=f"bench-{server.key}-") as tmp_name:
        tmp = Path(tmp_name)
        with contextlib.ExitStack() as stack:
            scale_out = stack.enter_context(_scale_out(tmp)) if server.redis else None
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if k != "YPERSISTENCE"}  # Node peers in memory
            env |= {"HOST": "127.0.0.1", "PORT": str(port)}  # y-websocket's server reads these
            log = tmp / "server.log"
            cmd = _pinned([*server.command(port, tmp / "data", scale_out), *extra_args], server_cpu)
            with log.open("wb") as log_file:
                proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
            stack.callback(_stop, proc)
            handle = Running(server, proc, port, log)
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _port_open(port):
                if proc.poll() is not None:
                    raise BenchmarkError(f"{server.key} exited with {proc.returncode}: {handle.log_tail()}")
                if time.monotonic() > deadline:
                    raise BenchmarkError(f"{server.key} did not listen within {START_TIMEOUT_S:g} s")
                time.sleep(0.05)  # polling the port: the server gives no other readiness signal
            yield handle


@dataclass
class Generator:
    """The Node load generator (benchmarks/load.mjs) pinned to the last CPU, speaking JSON lines."""

    config: dict[str, Any]
    proc: subprocess.Popen[str] = field(init=False)
    _stderr: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        _, cpu = _cpus()
        cmd = _pinned(["node", str(LOAD_SCRIPT), json.dumps(self.config)], cpu)
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if len(self._stderr) < 200:
                self._stderr.append(line)

    def read(self, timeout: float) -> dict[str, Any]:
        """The next JSON line within ``timeout`` s; BenchmarkError on an error line, exit or timeout."""
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            self.stop()
            what = "timed out" if not box else f"exited with {self.proc.poll()}"
            raise BenchmarkError(f"load generator {what}: {''.join(self._stderr)[-2000:]}")
        message = json.loads(box[0])
        if "error" in message:
            raise BenchmarkError(f"load generator: {message['error']}")
        return message

    def send(self, line: str) -> None:
        """Write one command line (``go {...}``, ``stop``, ``close``)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def cpu(self) -> float:
        """CPU seconds used so far by the generator."""
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        """Close stdin (the generator's "stop"), then end it within the bound."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def generator(config: dict[str, Any]) -> Iterator[Generator]:
    """A started generator, always stopped on exit."""
    gen = Generator(config)
    try:
        yield gen
    finally:
        gen.stop()


# ------------------------------------------------------------------------------------------------
# profiles


@dataclass(frozen=True)
class Load:
    """R rooms x C clients, K writers per room each setting its Y.Map key at U updates/s, P-byte values."""

    rooms: int
    clients: int
    writers: int
    rate: float
    payload: int
    duration: float

    @property
    def offered(self) -> float:
        """Deliveries per second offered: every update goes to the C - 1 other clients of its room."""
        return self.rooms * self.writers * self.rate * (self.clients - 1)


def _step_figures(
    result: dict[str, Any], server_cpu_s: float, gen_cpu_s: float, wall_s: float, rss: int
) -> dict[str, Any]:
    """One step's row: counts, latency percentiles, rates, server and generator usage."""
    delivered = int(result["delivered"])
    gen_share = gen_cpu_s / max(wall_s, 1e-9)
    row = {
        "sent": int(result["sent"]),
        "expected": int(result["expected"]),
        "delivered": delivered,
        "lost": int(result["expected"]) - delivered,
        "gaps": int(result["gaps"]),
        "out_of_order": int(result["outOfOrder"]),
        "duplicates": int(result["duplicates"]),
        "delivered_per_s": delivered / max(float(result["sendSeconds"]), 1e-9),
        "server_cpu_s": server_cpu_s,
        "deliveries_per_core_s": delivered / server_cpu_s if server_cpu_s > 0 else None,
        "server_rss_bytes": rss,
        "generator_cpu_share": gen_share,
        "generator_loop_delay_p99_ms": float(result["loopDelayP99Ms"]),
        **latency_summary(result["latencies"]),
    }
    row["generator_limited"] = (
        gen_share >= GENERATOR_LIMIT_CPU or row["generator_loop_delay_p99_ms"] > GENERATOR_LIMIT_LOOP_DELAY_MS
    )
    return row


def throughput(
    server: Server, load: Load, rates: list[float] | None = None, stop_p99_ms: float | None = None
) -> dict[str, Any]:
    """Drive ``server`` with ``load``; with ``rates``, one step per rate on the same connections.

    Ramp mode (``stop_p99_ms`` set) stops after the first step whose p99 exceeds it or that lost an
    update. Returns ``{"connections", "steps": [row per step, with "rate" and "offered"]}``.
    """
    steps = rates or [load.rate]
    with running(server) as srv:
        config = throughput_config(server, srv.url, load)
        with generator(config) as gen:
            ready = gen.read(timeout=180)
            # Warm-up (not reported): connection set-up work still running in the clients (the
            # y-socket.io provider's upgrade from polling, the garbage of 1,000 handshakes) and the
            # servers' first-use costs would otherwise land in the first measured step.
            warm = {"rate": steps[0], "duration": min(WARMUP_S, load.duration), "index": 0}
            gen.send("go " + json.dumps(warm))
            gen.read(timeout=WARMUP_S + 60)
            rows = []
            for index, rate in enumerate(steps, start=1):
                cpu0, gcpu0, t0 = srv.cpu(), gen.cpu(), time.monotonic()
                gen.send("go " + json.dumps({"rate": rate, "duration": load.duration, "index": index}))
                result = gen.read(timeout=load.duration + 60)
                wall = time.monotonic() - t0
                row = _step_figures(result, srv.cpu() - cpu0, gen.cpu() - gcpu0, wall, srv.rss())
                row |= {"rate": rate, "offered": load.offered * rate / load.rate}
                rows.append(row)
                if stop_p99_ms is not None and (row["lost"] > 0 or (row["p99_ms"] or 0) > stop_p99_ms):
                    break
            gen.send("stop")
        if srv.proc.poll() is not None:
            raise BenchmarkError(f"{server.key} died during the run: {srv.log_tail()}")
    return {"connections": int(ready["connections"]), "steps": rows}


def idle(server: Server, rooms: int, clients: int) -> dict[str, Any]:
    """Open rooms x clients idle connections; server memory per connection (RSS delta / connections)."""
    with running(server) as srv:
        config = {"mode": "idle", "protocol": server.protocol, "url": srv.url, "clients": clients}
        config["rooms"] = [f"idle-{i}" for i in range(rooms)]
        base = srv.rss()
        with generator(config) as gen:
            ready = gen.read(timeout=300)
            loaded = srv.rss()
            gen.send("close")
        connections = int(ready["connections"])
        return {
            "connections": connections,
            "rss_before_bytes": base,
            "rss_loaded_bytes": loaded,
            "bytes_per_connection": (loaded - base) / max(1, connections),
        }


def docs(server: Server, documents: int, concurrency: int = 50) -> dict[str, Any]:
    """Open and close ``documents`` documents (one small update each); RSS before, after, settled."""
    extra = ("--unload-grace", "1") if server.kind == "item_socket" else ()
    with running(server, extra) as srv:
        base = srv.rss()
        config = {"mode": "docs", "protocol": server.protocol, "url": srv.url, "rooms": []}
        config |= {"documents": documents, "concurrency": concurrency, "prefix": "doc-"}
        with generator(config) as gen:
            result = gen.read(timeout=600)
        after = srv.rss()
        # What is left once every server had the chance to free documents: item_socket unloads
        # after --unload-grace (1 s here); the others free on the last disconnect. Sampled over
        # 3 s (a measurement window, not a synchronisation), the last sample reported.
        settled = after
        for _ in range(6):
            time.sleep(0.5)
            settled = srv.rss()
        return {
            "documents": documents,
            "opened": int(result["opened"]),
            "failed": int(result["failed"]),
            "seconds": float(result["seconds"]),
            "rss_before_bytes": base,
            "rss_after_bytes": after,
            "rss_settled_bytes": settled,
        }


def large(server: Server, size_bytes: int, clients: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """Seed a ``size_bytes`` document, then ``clients`` real providers open it at once (ms to content)."""
    with running(server) as srv:
        config = {"mode": "large", "protocol": server.protocol, "url": srv.url, "rooms": ["large"]}
        config |= {"bytes": size_bytes, "clients": clients, "timeoutMs": timeout_s * 1000}
        cpu0 = srv.cpu()
        with generator(config) as gen:
            result = gen.read(timeout=3 * timeout_s + 30)
        times = sorted(t for t in result["times"] if t is not None)
        return {
            "bytes": size_bytes,
            "clients": clients,
            "seeded": bool(result["seeded"]),
            "seed_s": float(result["seedSeconds"]),
            "synced": len(times),
            "failed": int(result["failed"]) if result["seeded"] else clients,
            "p50_ms": percentile(times, 0.5),
            "max_ms": times[-1] if times else None,
            "server_cpu_s": srv.cpu() - cpu0,
            "server_rss_bytes": srv.rss(),
        }


def presence(server: Server, users: int, observers: int, hz: float, duration: float) -> dict[str, Any]:
    """``users`` clients of one document move a cursor at ``hz``; observers' awareness latency, drops."""
    with running(server) as srv:
        config = {"mode": "presence", "protocol": server.protocol, "url": srv.url, "rooms": ["presence"]}
        config |= {"users": users, "observers": observers, "hz": hz, "duration": duration}
        with generator(config) as gen:
            ready = gen.read(timeout=180)
            cpu0, gcpu0, t0 = srv.cpu(), gen.cpu(), time.monotonic()
            gen.send("go")
            result = gen.read(timeout=duration + 60)
            wall = time.monotonic() - t0
            server_cpu = srv.cpu() - cpu0
            gen_share = (gen.cpu() - gcpu0) / max(wall, 1e-9)
        # Each observer should see every other user's moves: all sends but its own.
        expected = round(int(result["sent"]) * observers * (users - 1) / users)
        row = {
            "connections": int(ready["connections"]),
            "sent": int(result["sent"]),
            "observers": observers,
            "received": int(result["received"]),
            "dropped": int(result["dropped"]),
            "missing_at_end": int(result["missingAtEnd"]),
            "expected_approx": expected,
            "server_cpu_s": server_cpu,
            "server_rss_bytes": srv.rss(),
            "generator_cpu_share": gen_share,
            "generator_loop_delay_p99_ms": float(result["loopDelayP99Ms"]),
            **latency_summary(result["latencies"]),
        }
        row["generator_limited"] = (
            gen_share >= GENERATOR_LIMIT_CPU
            or row["generator_loop_delay_p99_ms"] > GENERATOR_LIMIT_LOOP_DELAY_MS
        )
        return row


def throughput_config(server: Any, url: str, load: Any) -> dict[str, Any]:
    """The load generator's config for a throughput step of ``load`` against ``server`` at ``url``."""
    return {
        "mode": "throughput",
        "protocol": server.protocol,
        "url": url,
        "rooms": [f"b-{i}" for i in range(load.rooms)],
        "clients": load.clients,
        "writers": load.writers,
        "payload": load.payload,
        "receivers": "raw",
    }
