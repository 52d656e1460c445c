"""Memory benchmark: open and close 10,000 documents against one item_socket; RSS should stay flat.

Usage: .venv/bin/python benchmarks/item_socket/bench_memory.py [--documents 10000] [--concurrency 50]
Prints the server's RSS and loaded-document count at start, after 1k, 5k and 10k documents, and
after the unload grace. Each document gets one small update (so it is stored) and one presence
state, then its client closes. With ``--scale-out`` the server runs with a private redis-server and
PostgreSQL, and the report adds what Redis holds: the longest update stream, presence entries, keys
and memory (all must stay bounded however many documents come and go).
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

from benchmarks.item_socket.bench_throughput import load_harness  # noqa: E402
from tests.servers import PostgresServer, RedisServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--unload-grace", type=float, default=5.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="repeat with fresh document names: a flat RSS in round 2 shows nothing accumulates",
    )
    parser.add_argument("--scale-out", action="store_true", help="with Redis and PostgreSQL")
    args = parser.parse_args()
    harness = load_harness()
    with contextlib.ExitStack() as stack:
        run(args, harness, stack)


def redis_report(redis: RedisServer) -> str:
    """Longest update stream, presence entries, keys by kind and used memory of ``redis``."""
    client = redis_py.Redis.from_url(redis.url)
    try:
        longest = 0
        presence = 0
        kinds: dict[str, int] = {}
        for key in client.scan_iter(count=1000):
            kind = key.decode().rsplit(":", 1)[-1]
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "u":
                longest = max(longest, client.xlen(key))
            elif kind == "a":
                presence += client.xlen(key)
        memory = client.info("memory")["used_memory"]
    finally:
        client.close()
    return (
        f"redis: longest update stream {longest}, presence entries {presence}, keys {kinds}, "
        f"used memory {memory / 2**20:.1f} MiB"
    )


def run(args: argparse.Namespace, harness: ModuleType, stack: contextlib.ExitStack) -> None:
    """Open and close the documents, printing the figures at each checkpoint."""
    redis: RedisServer | None = None
    extra: tuple[str, ...] = ()
    if args.scale_out:
        base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-memory-redis-")))
        redis = RedisServer(base / "redis").start()
        stack.callback(redis.stop)
        postgres = PostgresServer().start()
        stack.callback(postgres.remove)
        (base / "pw").write_text(postgres.password)
        extra = ("--redis-url", redis.url, "--store-url", postgres.url_without_password,
                 "--store-password-file", str(base / "pw"))  # fmt: skip

    checkpoints = sorted({c for c in (1000, 5000, args.documents) if c <= args.documents})
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        server = harness.ServerProcess(
            Path(tmp) / "data",
            log_dir=Path(tmp),
            extra_args=(
                "--unload-grace",
                str(args.unload_grace),
                "--log-level",
                "WARNING",
                "--max-connections",
                "0",
                *extra,
            ),
        )
        server.start()
        try:

            def report(label: str) -> None:
                docs = server.metric("item_socket_documents")
                print(
                    f"{label:>26}: RSS {server.rss_bytes() / 2**20:7.1f} MiB, documents loaded {docs:6.0f}",
                    flush=True,
                )
                if redis is not None:
                    followed = server.metric("item_socket_documents_followed")
                    print(f"{'':>26}  followed {followed:.0f}; {redis_report(redis)}", flush=True)

            report("start")
            for round_number in range(1, args.rounds + 1):
                done = 0
                for checkpoint in checkpoints:
                    started = time.monotonic()
                    result = subprocess.run(
                        [
                            "node",
                            str(HERE / "open_close_docs.mjs"),
                            server.url,
                            f"bench-mem-r{round_number}-",
                            str(done),
                            str(checkpoint),
                            str(args.concurrency),
                        ],
                        cwd=HERE,
                        capture_output=True,
                        text=True,
                        timeout=1800,
                        check=True,
                    )
                    figures = json.loads(result.stdout.strip().splitlines()[-1])
                    rate = figures["opened"] / max(1e-9, time.monotonic() - started)
                    print(
                        f"  round {round_number}: opened+closed {done}..{checkpoint}: "
                        f"{figures['opened']} ok, {figures['failed']} failed, {rate:.0f} documents/s",
                        flush=True,
                    )
                    done = checkpoint
                    report(f"round {round_number}, after {checkpoint} documents")
                deadline = time.monotonic() + args.unload_grace + 60
                while server.metric("item_socket_documents") > 0 and time.monotonic() < deadline:
                    time.sleep(0.5)
                report(f"round {round_number}, after unload grace")
            print(
                f"  unloads counted: {server.metric('item_socket_document_unloads_total'):.0f}, "
                f"loads: {server.metric('item_socket_document_loads_total'):.0f}"
            )
            store_size = sum(p.stat().st_size for p in (Path(tmp) / "data").rglob("*") if p.is_file())
            print(f"  store on disk: {store_size / 2**20:.1f} MiB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
