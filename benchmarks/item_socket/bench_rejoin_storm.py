"""Rejoin storm: 300 clients join a 20 MB document at 25/s on freshly started replicas.

Usage: .venv/bin/python benchmarks/item_socket/bench_rejoin_storm.py [--megabytes 20] [--clients 300]
       [--rate 25] [--replicas 2] [--pending 400]

The situation after a deploy: new replicas hold nothing, and every client of a document reconnects.
Two variants side by side in one run, each on fresh replicas sharing a private Redis and
PostgreSQL: ``compacted`` (the whole document in its PostgreSQL snapshot, the stream empty) and
``pending`` (the last ``--pending`` updates still in the document's Redis stream, not compacted).
Prints the first-sync time percentiles of each and their ratio. Goals (issue #11): p99 <= 5 s, and
the pending variant within 1.3x of the compacted one. y-redis' published benchmark for the same
load: p99 46.7 s, and pending updates 3.7x slower than compacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

import redis as redis_py  # noqa: E402
from pycrdt import Doc, Map  # noqa: E402

from benchmarks.item_socket.bench_throughput import load_harness, percentile  # noqa: E402
from item_socket.store import Snapshot  # noqa: E402
from item_socket.store_postgres import PostgresStore  # noqa: E402
from item_socket.streams import updates_key  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402

ITEM_BYTES = 1000


def build_document(megabytes: float, pending: int) -> tuple[bytes, list[bytes]]:
    """A canvas-like document: a Y.Map of items of ~1 KB. Returns (snapshot, the last updates)."""
    doc: Doc = Doc()
    items = doc.get("items", type=Map)
    count = int(megabytes * 1_000_000 / ITEM_BYTES)
    with doc.transaction():
        for i in range(count - pending):
            items[f"item-{i}"] = f"{i:08d}" + "x" * (ITEM_BYTES - 8)
    snapshot = doc.get_update()
    tail = []
    for i in range(count - pending, count):
        before = doc.get_state()
        items[f"item-{i}"] = f"{i:08d}" + "y" * (ITEM_BYTES - 8)
        tail.append(doc.get_update(before))
    return snapshot, tail


def state_vector_of(updates: list[bytes]) -> bytes:
    """The state vector of the document ``updates`` build."""
    doc: Doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc.get_state()


async def seed(postgres: PostgresServer, password: Path, name: str, snapshot: bytes) -> None:
    async with PostgresStore(postgres.url_without_password, password_file=password) as store:
        assert await store.save_snapshot(name, Snapshot(snapshot, "0-0", 1))


def storm(urls: list[str], doc: str, clients: int, rate: float, state_vector: bytes) -> dict[str, object]:
    config = json.dumps(
        {"urls": urls, "doc": doc, "clients": clients, "rate": rate, "stateVector": state_vector.hex()}
    )
    result = subprocess.run(
        ["node", str(HERE / "rejoin_storm.mjs"), config],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=clients / rate + 300,
    )
    if result.returncode != 0:
        raise RuntimeError(f"rejoin_storm.mjs failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--pending", type=int, default=400, help="updates left in the stream (pending)")
    parser.add_argument(
        "--clients-kinds", nargs="+", default=["rejoining", "new"], choices=["rejoining", "new"]
    )
    parser.add_argument(
        "--order", nargs="+", default=["compacted", "pending"], choices=["compacted", "pending"]
    )
    args = parser.parse_args()
    harness = load_harness()
    print(
        f"rejoin storm: {args.clients} clients at {args.rate:g}/s, {args.megabytes:g} MB document, "
        f"{args.replicas} fresh replicas; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
        f"{time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    started = time.perf_counter()
    full_snapshot, _ = build_document(args.megabytes, 0)
    head, tail = build_document(args.megabytes, args.pending)
    # What a client that held the document before the deploy sends; b"\x00": a client with nothing.
    vectors = {
        ("compacted", "rejoining"): state_vector_of([full_snapshot]),
        ("pending", "rejoining"): state_vector_of([head, *tail]),
        ("compacted", "new"): b"\x00",
        ("pending", "new"): b"\x00",
    }
    print(f"document: {len(full_snapshot) / 1e6:.1f} MB (built in {time.perf_counter() - started:.1f} s)")
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rejoin-") as tmp:
        base = Path(tmp)
        redis = RedisServer(base / "redis").start()
        postgres = PostgresServer().start()
        password = base / "pg-password"
        password.write_text(postgres.password)
        try:
            for clients_kind in args.clients_kinds:
                for variant in args.order:
                    figures[variant, clients_kind] = run_variant(
                        args, harness, base, redis, postgres, password, variant, clients_kind,
                        (full_snapshot, head, tail), vectors[variant, clients_kind],
                    )  # fmt: skip
        finally:
            redis.stop()
            postgres.remove()
    for clients_kind in args.clients_kinds:
        p99 = {variant: percentile(figures[variant, clients_kind], 0.99) for variant in args.order}
        if len(p99) == 2:
            print(
                f"{clients_kind} clients: p99 pending / compacted {p99['pending'] / p99['compacted']:.2f}x "
                f"(goal <= 1.3x); worst p99 {max(p99.values()) / 1000:.2f} s (goal <= 5 s)"
            )


def run_variant(
    args: argparse.Namespace, harness: ModuleType, base: Path, redis: RedisServer, postgres: PostgresServer,
    password: Path, variant: str, clients_kind: str, document: tuple[bytes, bytes, list[bytes]],
    state_vector: bytes,
) -> list[float]:  # fmt: skip
    """Seed the document as ``variant``, start fresh replicas, run the storm; returns sorted ms."""
    full_snapshot, head, tail = document
    name = f"storm-{variant}-{time.monotonic_ns()}"
    if variant == "compacted":
        asyncio.run(seed(postgres, password, name, full_snapshot))
    else:
        asyncio.run(seed(postgres, password, name, head))
        client = redis_py.Redis.from_url(redis.url)
        for update in tail:
            client.xadd(updates_key(name), {b"u": update, b"r": b"seed"})
        client.close()
    extra = [
        "--log-level", "WARNING", "--rate-limit", "0", "--max-connections", "0",
        "--redis-url", redis.url, "--store-url", postgres.url_without_password,
        "--store-password-file", str(password), "--compact-after", "1000000",
        "--max-message-bytes", str(256 * 2**20),
    ]  # fmt: skip
    servers = [
        harness.ServerProcess(base / f"{name}-{i}", log_dir=base, extra_args=extra)
        for i in range(args.replicas)
    ]
    try:
        for server in servers:
            server.start()
        result = storm([s.url for s in servers], name, args.clients, args.rate, state_vector)
        rss = sum(s.rss_bytes() for s in servers) / 2**20
    finally:
        for server in servers:
            server.stop()
    times = sorted(float(x) for x in result["first_sync_ms"])  # type: ignore[union-attr]
    print(
        f"{clients_kind:<9} clients, {variant:<9} first sync p50 {percentile(times, 0.5) / 1000:6.2f} s  "
        f"p99 {percentile(times, 0.99) / 1000:6.2f} s  max {times[-1] / 1000:6.2f} s  "
        f"failed {result['failed']}  replicas' RSS after {rss:.0f} MiB",
        flush=True,
    )
    assert result["failed"] == 0, f"{variant}: {result['failed']} clients never synced"
    return times


if __name__ == "__main__":
    main()
