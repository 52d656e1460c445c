"""Run the published benchmark: every profile against every server, then write docs/benchmarks.md.

Usage:
  .venv/bin/python -m benchmarks.run --all             # every profile (about 12-15 min on 2 cores)
  .venv/bin/python -m benchmarks.run --all --quick     # small loads, about 5 min: a smoke run
  .venv/bin/python -m benchmarks.run --profiles light heavy --servers item_socket-ws hocuspocus
  .venv/bin/python -m benchmarks.run --report-only     # rewrite the page from the saved results
  (--redis: also item_socket's y-websocket endpoint with a private Redis, once it takes --redis-url)

Results go to docs/benchmarks/results.json (every figure, with the machine and date), the page to
docs/benchmarks.md and the plot to docs/benchmarks/p99_vs_load.png. Profiles are defined in
``PROFILES`` below; ``--quick`` uses their ``quick`` variants.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import harness, report
from .harness import SERVERS, BenchmarkError, Load, Server

DOCS = harness.REPO / "docs"
RESULTS = DOCS / "benchmarks/results.json"


@dataclass(frozen=True)
class Profile:
    """A named load; ``run(server, quick)`` returns its figures for one server."""

    name: str
    description: str
    run: Callable[[Server, bool], dict[str, Any]]
    servers: tuple[str, ...] | None = None  # None: every server


LIGHT = Load(rooms=100, clients=4, writers=1, rate=32, payload=64, duration=10)
LIGHT_QUICK = Load(rooms=20, clients=4, writers=1, rate=16, payload=64, duration=3)
HEAVY = Load(rooms=200, clients=5, writers=2, rate=10, payload=64, duration=10)
HEAVY_QUICK = Load(rooms=40, clients=5, writers=2, rate=5, payload=64, duration=3)
# Per-room writer rates of the ramp on the light shape: 3,000 .. 48,000 deliveries/s offered.
RAMP_RATES = [10, 20, 40, 60, 80, 100, 130, 160]
RAMP_RATES_QUICK = [10, 40]
RAMP_STEP_S = 4.0
RAMP_P99_LIMIT_MS = 100.0


def _light(server: Server, quick: bool) -> dict[str, Any]:
    load = LIGHT_QUICK if quick else LIGHT
    return {"load": load.__dict__, "offered": load.offered, **harness.throughput(server, load)}


def _heavy(server: Server, quick: bool) -> dict[str, Any]:
    load = HEAVY_QUICK if quick else HEAVY
    return {"load": load.__dict__, "offered": load.offered, **harness.throughput(server, load)}


def _ramp(server: Server, quick: bool) -> dict[str, Any]:
    base = LIGHT_QUICK if quick else LIGHT
    load = Load(base.rooms, base.clients, 1, RAMP_RATES[0], base.payload, 2.0 if quick else RAMP_STEP_S)
    rates = RAMP_RATES_QUICK if quick else RAMP_RATES
    result = harness.throughput(server, load, rates=[float(r) for r in rates], stop_p99_ms=RAMP_P99_LIMIT_MS)
    sustained = [
        s["delivered_per_s"]
        for s in result["steps"]
        if s["lost"] == 0 and (s["p99_ms"] or 0) <= RAMP_P99_LIMIT_MS and not s["generator_limited"]
    ]
    return {"load": load.__dict__, "sustained_per_s": max(sustained, default=None), **result}


def _idle(server: Server, quick: bool) -> dict[str, Any]:
    return harness.idle(server, rooms=100 if quick else 1000, clients=5)


def _docs(server: Server, quick: bool) -> dict[str, Any]:
    return harness.docs(server, documents=500 if quick else 10_000)


def _large(server: Server, quick: bool) -> dict[str, Any]:
    return harness.large(server, size_bytes=1_000_000 if quick else 5_000_000, clients=5 if quick else 20)


def _presence(server: Server, quick: bool) -> dict[str, Any]:
    users = 50 if quick else 500
    return harness.presence(
        server, users=users, observers=min(50, users), hz=1.0, duration=3 if quick else 10
    )


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "light",
            "100 rooms x 4 clients, 1 writer per room at 32/s, 64-byte values: 9,600 deliveries/s",
            _light,
        ),
        Profile("heavy", "200 rooms x 5 clients, 2 writers per room at 10/s: 16,000 deliveries/s", _heavy),
        Profile(
            "ramp", "the light shape, writer rate raised step by step until p99 > 100 ms or a loss", _ramp
        ),
        Profile("idle", "5,000 idle connections in 1,000 rooms: server memory per connection", _idle),
        Profile(
            "docs", "10,000 documents opened (one update each) and closed: server memory afterwards", _docs
        ),
        Profile("large", "first sync of a 5 MB document to 20 clients at once", _large),
        Profile(
            "presence",
            "500 users in one document moving a cursor at 1 Hz: awareness latency, drops",
            _presence,
        ),
    )
}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen profiles and servers, save the results and write the page; 0 on success."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every profile against every server")
    parser.add_argument("--profiles", nargs="+", choices=list(PROFILES), default=None)
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS), default=None)
    parser.add_argument("--quick", action="store_true", help="small loads: a smoke run of the harness")
    parser.add_argument("--redis", action="store_true", help="add item_socket with a private Redis")
    parser.add_argument("--report-only", action="store_true", help="rewrite the page from saved results")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON results go")
    parser.add_argument("--page", type=Path, default=DOCS / "benchmarks.md", help="the Markdown page")
    parser.add_argument("--no-page", action="store_true", help="print the tables only")
    args = parser.parse_args(argv)

    if args.report_only:
        results = json.loads(args.results.read_text())
    else:
        if not (args.all or args.profiles):
            parser.error("choose --all or --profiles")
        profiles = list(PROFILES) if args.all or not args.profiles else args.profiles
        servers = args.servers or list(harness.DEFAULT_SERVERS)
        if args.redis:
            if harness.item_socket_has_redis():
                servers.append("item_socket-ws-redis")
            else:
                print("--redis: this item_socket has no --redis-url yet; skipped", file=sys.stderr)
        results = run(profiles, servers, args.quick)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1) + "\n")
    tables = report.tables(results)
    print(tables)
    if not args.no_page:
        plot = args.page.parent / "benchmarks/p99_vs_load.png"
        report.plot(results, plot)
        old = args.page.read_text() if args.page.exists() else None
        args.page.write_text(report.page(results, tables, plot.relative_to(args.page.parent), old))
        print(f"wrote {args.page} and {plot}", file=sys.stderr)
    return 1 if any("error" in r for p in results["profiles"].values() for r in p.values()) else 0


def run(profiles: list[str], servers: list[str], quick: bool) -> dict[str, Any]:
    """Every profile x server (in that order: a profile's servers run back to back, side by side)."""
    results: dict[str, Any] = {"machine_start": harness.machine(), "quick": quick, "profiles": {}}
    for name in profiles:
        profile = PROFILES[name]
        rows: dict[str, Any] = {}
        for key in servers:
            if profile.servers is not None and key not in profile.servers:
                continue
            print(f"{name}: {key} ...", file=sys.stderr, flush=True)
            load_before = harness.machine()["loadavg"][0]
            try:
                rows[key] = profile.run(SERVERS[key], quick)
            except BenchmarkError as error:
                rows[key] = {"error": str(error)[:1500]}
            rows[key]["loadavg_1m_before"] = load_before
        results["profiles"][name] = rows
    results["machine_end"] = harness.machine()
    results["descriptions"] = {name: PROFILES[name].description for name in profiles}
    results["labels"] = {key: SERVERS[key].label for key in servers}
    return results


if __name__ == "__main__":
    sys.exit(main())
