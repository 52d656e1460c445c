"""Side-by-side throughput of item_socket and the Node reference servers, in one run, loopback only.

Usage: .venv/bin/python benchmarks/compare/run.py [--servers ...] [--rooms 100] [--rate 33]
       [--duration 20] [--processes 2]
Each server runs alone, pinned to CPU 0 with taskset; the Node load processes run on the other
CPUs. Load: `rooms` rooms x 4 clients, one writer per room at `rate` updates/s (33 -> 9,900
deliveries/s). Prints one table: deliveries/s achieved, server CPU per delivery (from
/proc/<pid>/stat), deliveries per server core-second, p50/p99 latency and lost updates.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ITEM_SOCKET_LOAD = REPO / "benchmarks/item_socket/load_clients.mjs"
HOCUSPOCUS_LOAD = HERE / "load_hocuspocus.mjs"
START_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Target:
    """One row of the table: a server and the load that drives it."""

    key: str
    server: str
    protocol: str
    load_script: Path
    load_protocol: str  # the "protocol" field of the load config ("ws", "sio"; unused by Hocuspocus)


TARGETS = {
    target.key: target
    for target in (
        Target("item_socket-ws", "item_socket", "y-websocket", ITEM_SOCKET_LOAD, "ws"),
        Target("item_socket-sio", "item_socket", "y-socket.io (ws)", ITEM_SOCKET_LOAD, "sio"),
        Target("hocuspocus", "Hocuspocus 4.7 (Node)", "hocuspocus", HOCUSPOCUS_LOAD, "hocuspocus"),
        Target("y-socket.io", "y-socket.io 1.1.3 (Node)", "y-socket.io (ws)", ITEM_SOCKET_LOAD, "sio"),
    )
}


def load_bench_throughput() -> ModuleType:
    """Import benchmarks/item_socket/bench_throughput.py by path for its /proc and percentile helpers."""
    path = REPO / "benchmarks/item_socket/bench_throughput.py"
    spec = importlib.util.spec_from_file_location("item_socket_bench_throughput", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = load_bench_throughput()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants (threads are already in the process's own stat)."""
    total = BENCH.process_cpu_seconds(pid)
    children_file = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        children = children_file.read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return total
    return total + sum(tree_cpu_seconds(int(child)) for child in children)


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    # taskset execs the command, so the Popen pid is the server's own pid.
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def start_server(
    target: Target, port: int, data_dir: Path, log: Path, cpu: str | None
) -> subprocess.Popen[str]:
    """Start the target's server on 127.0.0.1:port and return once it accepts connections."""
    env = {k: v for k, v in os.environ.items() if k != "YPERSISTENCE"}  # keep y-socket.io in memory
    if target.server == "item_socket":
        python = str(REPO / ".venv/bin/python")
        cmd = [python, "-m", "item_socket", "--host", "127.0.0.1", "--port", str(port)]
        # Same flags as bench_throughput.py: no per-connection rate limit, no connection cap.
        cmd += ["--data-dir", str(data_dir), "--log-level", "WARNING", "--rate-limit", "0"]
        cmd += ["--max-connections", "0"]
    elif target.key == "hocuspocus":
        cmd = ["node", str(HERE / "hocuspocus_server.mjs"), str(port)]
    else:
        cmd = ["node", str(HERE / "ysocketio_server.mjs"), str(port)]
    with log.open("w") as log_file:
        proc = subprocess.Popen(
            pinned(cmd, cpu), cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{target.server} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            # Every server answers plain HTTP on its port (item_socket: /healthz; Node: any path).
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc
        except urllib.error.HTTPError:
            return proc  # an HTTP answer, even 404/426, means it is listening
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{target.server} did not listen on port {port} within {START_TIMEOUT_S:g}s")


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def run_target(target: Target, args: argparse.Namespace) -> dict[str, float]:
    """Drive one server with the load and return its figures."""
    cpus = os.cpu_count() or 1
    use_taskset = shutil.which("taskset") is not None and cpus > 1
    server_cpu = "0" if use_taskset else None
    client_cpus = f"1-{cpus - 1}" if use_taskset else None
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        server = start_server(target, port, Path(tmp) / "data", Path(tmp) / "server.log", server_cpu)
        procs: list[subprocess.Popen[str]] = []
        results: list[dict[str, object]] = []
        load_cpu_before = 0.0
        try:
            rooms = [f"cmp-{target.key}-{i}" for i in range(args.rooms)]
            for index in range(args.processes):
                config = {
                    "url": f"http://127.0.0.1:{port}",
                    "protocol": target.load_protocol,
                    "rooms": rooms[index :: args.processes],
                    "receivers": args.clients_per_room - 1,
                    "rate": args.rate,
                    "duration": args.duration,
                }
                cmd = pinned(["node", str(target.load_script), json.dumps(config)], client_cpus)
                procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=REPO,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                )
            ready_lines: list[str] = []
            readers = [
                threading.Thread(target=lambda p=proc: ready_lines.append(p.stdout.readline()), daemon=True)
                for proc in procs
            ]
            for reader in readers:
                reader.start()
            for reader in readers:
                reader.join(timeout=READY_TIMEOUT_S)
            ready = [line for line in ready_lines if line and "ready" in json.loads(line)]
            if len(ready) != len(procs):
                raise RuntimeError(f"{target.key}: load processes did not get ready: {ready_lines!r}")
            cpu_before = tree_cpu_seconds(server.pid)
            load_cpu_before = sum(BENCH.process_cpu_seconds(proc.pid) for proc in procs)
            wall_before = time.monotonic()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()

            def collect(proc: subprocess.Popen[str]) -> None:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line:
                    result = json.loads(line)
                    # The load process lingers 200 ms after its result line: read its CPU time now.
                    result["cpu_seconds"] = BENCH.process_cpu_seconds(proc.pid)
                    results.append(result)

            collectors = [threading.Thread(target=collect, args=(proc,), daemon=True) for proc in procs]
            for collector in collectors:
                collector.start()
            # Results come after the send window plus at most 10 s of drain (load script's own bound).
            for collector in collectors:
                collector.join(timeout=args.duration + 30)
            cpu_total = tree_cpu_seconds(server.pid) - cpu_before
            wall = time.monotonic() - wall_before
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)
            stop_server(server)
    errors = [r for r in results if "error" in r]
    if errors or len(results) != len(procs):
        raise RuntimeError(f"{target.key}: load processes failed: {errors or results}")
    deliveries = sum(int(r["deliveries"]) for r in results)  # type: ignore[call-overload]
    send_seconds = max(float(r["sendSeconds"]) for r in results)  # type: ignore[arg-type]
    latencies = sorted(x for r in results for x in r["latencies"])  # type: ignore[attr-defined]
    return {
        "deliveries": deliveries,
        "expected": sum(int(r["expected"]) for r in results),  # type: ignore[call-overload]
        "lost": sum(int(r["lost"]) for r in results),  # type: ignore[call-overload]
        "deliveries_per_s": deliveries / send_seconds,
        "server_cpu_s": cpu_total,
        "cpu_us_per_delivery": 1e6 * cpu_total / max(1, deliveries),
        "deliveries_per_core_s": deliveries / max(1e-9, cpu_total),
        "p50_ms": BENCH.percentile(latencies, 0.50),
        "p99_ms": BENCH.percentile(latencies, 0.99),
        "wall_s": wall,
        # Share of the load's CPUs the load processes used; near 100% means the clients limit the figures.
        "load_cpu_percent": 100
        * (sum(float(r["cpu_seconds"]) for r in results) - load_cpu_before)  # type: ignore[arg-type]
        / (wall * max(1, (os.cpu_count() or 1) - 1)),
        "pinned": float(use_taskset),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--servers", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--clients-per-room", type=int, default=4)
    parser.add_argument("--rate", type=float, default=33.0, help="updates per second per room")
    parser.add_argument("--duration", type=float, default=20.0, help="send window per server, seconds")
    parser.add_argument("--processes", type=int, default=2, help="Node load processes per server")
    args = parser.parse_args()
    if args.rooms < 1 or args.clients_per_room < 2 or args.rate <= 0 or not 1 <= args.duration <= 120:
        parser.error("need --rooms >= 1, --clients-per-room >= 2, --rate > 0 and 1 <= --duration <= 120")
    offered = args.rooms * (args.clients_per_room - 1) * args.rate
    print(
        f"{args.rooms} rooms x {args.clients_per_room} clients, one writer per room at {args.rate:g} "
        f"updates/s -> {offered:.0f} deliveries/s offered, {args.duration:g} s per server",
        flush=True,
    )
    rows: list[tuple[Target, dict[str, float]]] = []
    for key in args.servers:
        target = TARGETS[key]
        print(f"running {key} ...", file=sys.stderr, flush=True)
        rows.append((target, run_target(target, args)))
    header = (
        "\n| server | protocol | deliveries/s | server CPU us/delivery | deliveries per core-s "
        "| p50 ms | p99 ms | lost | load CPU |\n|---|---|---|---|---|---|---|---|---|"
    )
    print(header)
    for target, fig in rows:
        print(
            f"| {target.server} | {target.protocol} | {fig['deliveries_per_s']:,.0f} "
            f"| {fig['cpu_us_per_delivery']:.1f} | {fig['deliveries_per_core_s']:,.0f} "
            f"| {fig['p50_ms']:.1f} | {fig['p99_ms']:.1f} | {fig['lost']:.0f} of {fig['expected']:.0f} "
            f"| {fig['load_cpu_percent']:.0f}% |"
        )
    if not all(fig["pinned"] for _, fig in rows):
        print("\n(taskset unavailable or 1 CPU: servers and load were NOT pinned)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
