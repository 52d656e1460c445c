"""Throughput benchmark: 100 rooms x 4 clients, one writer per room, over y-websocket and y-socket.io.

Usage: .venv/bin/python benchmarks/item_socket/bench_throughput.py [--protocols ws sio] [--rooms 100]
       [--rate 33] [--duration 20] [--processes 2]
Prints, per protocol: deliveries/s, server CPU seconds per delivery (and deliveries per server
core-second), p50/p99 latency, lost updates. The server is pinned to CPU 0 and the load processes to
the other CPUs when taskset is available.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def load_harness() -> ModuleType:
    """Import tests/item_socket/e2e/harness.py by path (server process and /proc helpers)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the harness imports tests.support
    spec = importlib.util.spec_from_file_location(
        "item_socket_e2e_harness", REPO / "tests/item_socket/e2e/harness.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc/<pid>/stat); 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def start_load(configs: list[dict[str, object]], cpus: str | None = None) -> list[subprocess.Popen[str]]:
    """Start one ``load_clients.mjs`` per config (pinned to ``cpus``) and wait until each is ready.

    Raises RuntimeError with the process' stderr when one is not (all of them killed first).
    """
    procs: list[subprocess.Popen[str]] = []
    for config in configs:
        cmd = ["node", str(HERE / "load_clients.mjs"), json.dumps(config)]
        if cpus:
            cmd = ["taskset", "-c", cpus, *cmd]
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=HERE,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if not line or "ready" not in json.loads(line):
            for started in procs:
                started.kill()
            raise RuntimeError(f"load process failed to get ready: {line!r} {proc.stderr.read()[-2000:]}")
    return procs


def go(procs: list[subprocess.Popen[str]]) -> tuple[list[dict[str, object]], list[threading.Thread]]:
    """Tell the load processes to start; collect each one's result line (plus its CPU seconds).

    Returns the list the results are appended to and the collecting threads (join them).
    """
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results: list[dict[str, object]] = []

    def collect(proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        result = json.loads(proc.stdout.readline())
        # The process lingers 200 ms after its result line: read its CPU time now.
        result["cpu_seconds"] = process_cpu_seconds(proc.pid)
        results.append(result)

    threads = [threading.Thread(target=collect, args=(proc,)) for proc in procs]
    for thread in threads:
        thread.start()
    return results, threads


def run_protocol(harness: ModuleType, protocol: str, args: argparse.Namespace) -> dict[str, float]:
    cpus = os.cpu_count() or 1
    taskset = shutil.which("taskset") is not None and cpus > 1
    client_cpus = f"1-{cpus - 1}" if taskset else None
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        server = harness.ServerProcess(
            Path(tmp) / "data",
            log_dir=Path(tmp),
            cpu=0 if taskset else None,
            extra_args=("--log-level", "WARNING", "--rate-limit", "0", "--max-connections", "0"),
        )
        server.start()
        procs: list[subprocess.Popen[str]] = []
        try:
            rooms = [f"bench-{protocol}-{i}" for i in range(args.rooms)]
            configs = [
                {
                    "url": server.url,
                    "protocol": protocol,
                    "rooms": rooms[index :: args.processes],
                    "receivers": args.clients_per_room - 1,
                    "rate": args.rate,
                    "duration": args.duration,
                }
                for index in range(args.processes)
            ]
            procs = start_load(configs, client_cpus)
            cpu_before = server.cpu_seconds()
            wall_before = time.monotonic()
            # The send window ends after `duration`; read the server CPU there so the drain is excluded.
            results, reader_threads = go(procs)
            time.sleep(args.duration)
            cpu_window = server.cpu_seconds() - cpu_before
            wall_window = time.monotonic() - wall_before
            for thread in reader_threads:
                thread.join(timeout=args.duration + 60)
            cpu_total = server.cpu_seconds() - cpu_before
            rss = server.rss_bytes()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            server.stop()
        errors = [r for r in results if "error" in r]
        if errors or len(results) != len(procs):
            raise RuntimeError(f"load processes failed: {errors or results}")
        deliveries = sum(int(r["deliveries"]) for r in results)
        expected = sum(int(r["expected"]) for r in results)
        written = sum(int(r["written"]) for r in results)
        lost = sum(int(r["lost"]) for r in results)
        latencies = sorted(x for r in results for x in r["latencies"])  # type: ignore[union-attr]
        return {
            "written": written,
            "deliveries": deliveries,
            "expected": expected,
            "lost": lost,
            "deliveries_per_s": deliveries / wall_window,
            "server_cpu_s": cpu_total,
            "server_cpu_window_s": cpu_window,
            "cpu_us_per_delivery": 1e6 * cpu_total / max(1, deliveries),
            "deliveries_per_core_s": deliveries / max(1e-9, cpu_total),
            "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": latencies[-1] if latencies else float("nan"),
            "server_rss_mib": rss / 2**20,
            "client_cpu_s": sum(float(r["cpu_seconds"]) for r in results),
            "wall_s": wall_window,
            "pinned": float(taskset),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", default=["ws", "sio"], choices=["ws", "sio"])
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--clients-per-room", type=int, default=4)
    parser.add_argument("--rate", type=float, default=33.0, help="updates per second per room")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=2, help="Node load processes")
    args = parser.parse_args()
    harness = load_harness()
    target = args.rooms * (args.clients_per_room - 1) * args.rate
    print(
        f"{args.rooms} rooms x {args.clients_per_room} clients, one writer per room at "
        f"{args.rate:g} updates/s -> target {target:.0f} deliveries/s for {args.duration:g}s",
        flush=True,
    )
    for protocol in args.protocols:
        figures = run_protocol(harness, protocol, args)
        name = {"ws": "y-websocket", "sio": "y-socket.io (websocket)"}[protocol]
        print(f"\n{name}:")
        print(
            f"  deliveries/s            {figures['deliveries_per_s']:10.0f}  ({figures['deliveries']:.0f} of "
            f"{figures['expected']:.0f} expected, {figures['written']:.0f} updates written)"
        )
        print(
            f"  server CPU per delivery {figures['cpu_us_per_delivery']:10.1f} us  "
            f"(= {figures['deliveries_per_core_s']:.0f} deliveries per server core-second; "
            f"{figures['server_cpu_s']:.1f} CPU s, pinned={bool(figures['pinned'])})"
        )
        print(
            f"  latency p50 / p99 / max {figures['p50_ms']:7.2f} / {figures['p99_ms']:.2f} / "
            f"{figures['max_ms']:.2f} ms"
        )
        print(f"  lost updates            {figures['lost']:10.0f}")
        print(
            f"  load clients' CPU       {figures['client_cpu_s']:10.1f} s over {figures['wall_s']:.0f} s "
            f"(pinned to the other cores; near 100% of them means the clients limit the figures)"
        )
        print(f"  server RSS              {figures['server_rss_mib']:10.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
