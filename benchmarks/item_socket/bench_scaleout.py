"""Scale-out benchmark: the same load on 1 replica without Redis, and on 1, 2 and 3 replicas with it.

Usage: .venv/bin/python benchmarks/item_socket/bench_scaleout.py [--rooms 60] [--rate 20]
       [--duration 15] [--protocol ws|sio]

Side by side in one run, on 127.0.0.1: a private redis-server (AOF on) and PostgreSQL cluster
(tests/servers.py), item_socket replicas, and the Node load of load_clients.mjs with each room's
receivers on other replicas than its writer (every delivery crosses Redis once there are two).
Prints per configuration: deliveries/s, lost updates, p50/p99 latency, the CPU seconds per
delivered update of the item_socket processes and of redis-server, and the load clients' CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.item_socket.bench_throughput import (  # noqa: E402
    go,
    load_harness,
    percentile,
    process_cpu_seconds,
    start_load,
)
from tests.servers import PostgresServer, RedisServer  # noqa: E402

CONFIGURATIONS = (("1 replica, SQLite", 1, False), *((f"{n} replica(s), Redis", n, True) for n in (1, 2, 3)))


def run(
    label: str, replicas: int, scale_out: bool, args: argparse.Namespace, base: Path, redis: RedisServer,
    postgres: PostgresServer,
) -> dict[str, float | str]:  # fmt: skip
    """Run the load against one configuration; returns its figures."""
    harness = load_harness()
    password = base / "pg-password"
    password.write_text(postgres.password)
    extra = ["--log-level", "WARNING", "--rate-limit", "0", "--max-connections", "0"]
    if scale_out:
        extra += ["--redis-url", redis.url, "--store-url", postgres.url_without_password]
        extra += ["--store-password-file", str(password)]
    servers = [
        harness.ServerProcess(base / f"{label[:1]}-{i}-{scale_out}", log_dir=base, extra_args=extra)
        for i in range(replicas)
    ]
    procs: list[subprocess.Popen[str]] = []
    try:
        for server in servers:
            server.start()
        prefix = f"scale-{replicas}-{int(scale_out)}-{time.monotonic_ns()}"
        rooms = [f"{prefix}-{i}" for i in range(args.rooms)]
        configs = [
            {
                "url": servers[0].url,
                "urls": [s.url for s in servers],
                "protocol": args.protocol,
                "rooms": rooms[index :: args.processes],
                "receivers": args.clients_per_room - 1,
                "rate": args.rate,
                "duration": args.duration,
            }
            for index in range(args.processes)
        ]
        procs = start_load(configs)
        redis_pid = redis.process.pid if redis.process else 0
        cpu_before = sum(s.cpu_seconds() for s in servers)
        redis_before = process_cpu_seconds(redis_pid)
        wall_before = time.monotonic()
        results, threads = go(procs)
        for thread in threads:
            thread.join(timeout=args.duration + 90)
        wall = min(time.monotonic() - wall_before, args.duration)
        server_cpu = sum(s.cpu_seconds() for s in servers) - cpu_before
        redis_cpu = process_cpu_seconds(redis_pid) - redis_before
        overlaps = sum(s.metric("item_socket_compaction_overlaps_total") for s in servers)
        rss = sum(s.rss_bytes() for s in servers)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for server in servers:
            server.stop()
    if len(results) != len(procs) or any("error" in r for r in results):
        raise RuntimeError(f"load processes failed: {results}")
    deliveries = sum(int(r["deliveries"]) for r in results)
    latencies = sorted(x for r in results for x in r["latencies"])  # type: ignore[union-attr]
    redis_share = redis_cpu if scale_out else 0.0
    return {
        "label": label,
        "deliveries_per_s": deliveries / wall,
        "expected": sum(int(r["expected"]) for r in results),
        "deliveries": deliveries,
        "lost": sum(int(r["lost"]) for r in results),
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "server_us": 1e6 * server_cpu / max(1, deliveries),
        "redis_us": 1e6 * redis_share / max(1, deliveries),
        "client_cpu_share": sum(float(r["cpu_seconds"]) for r in results) / max(1e-9, wall),
        "rss_mib": rss / 2**20,
        "overlaps": overlaps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=60)
    parser.add_argument("--clients-per-room", type=int, default=4)
    parser.add_argument("--rate", type=float, default=20.0, help="updates per second per room")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--protocol", choices=["ws", "sio"], default="ws")
    args = parser.parse_args()
    offered = args.rooms * (args.clients_per_room - 1) * args.rate
    load = os.getloadavg()[0]
    print(
        f"{args.rooms} rooms x {args.clients_per_room} clients ({args.protocol}), one writer per room at "
        f"{args.rate:g}/s = {offered:.0f} deliveries/s offered for {args.duration:g} s; "
        f"{os.cpu_count()} cores, load average {load:.2f}, {time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        base = Path(tmp)
        redis = RedisServer(base / "redis").start()
        postgres = PostgresServer().start()
        try:
            for label, replicas, scale_out in CONFIGURATIONS:
                rows.append(run(label, replicas, scale_out, args, base, redis, postgres))
                row = rows[-1]
                print(
                    f"{row['label']:<22} {row['deliveries_per_s']:8.0f}/s  lost {row['lost']:>4}  "
                    f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
                    f"item_socket {row['server_us']:6.1f} us + redis {row['redis_us']:5.1f} us per delivery  "
                    f"clients {100 * float(row['client_cpu_share']):4.0f}% of a core  "
                    f"RSS {row['rss_mib']:6.1f} MiB  overlaps {row['overlaps']:.0f}",
                    flush=True,
                )
        finally:
            redis.stop()
            postgres.remove()
    base_row = rows[0]
    for row in rows[1:]:
        ratio = (float(row["server_us"]) + float(row["redis_us"])) / float(base_row["server_us"])
        print(f"CPU per delivery, {row['label']} vs {base_row['label']}: {ratio:.2f}x")
    # Bounds a regression would break: nothing lost, no compaction overlap anywhere.
    assert all(row["lost"] == 0 for row in rows), "updates were lost"
    assert all(row["overlaps"] == 0 for row in rows), "compactions overlapped"


if __name__ == "__main__":
    main()
