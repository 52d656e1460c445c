"""Tables, the targets of issue 12 and the p99-vs-load plot, from benchmarks.run's results dict."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def _n(value: float | None, digits: int = 0) -> str:
    """A number for a table cell ("-" when missing), thousands separated."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.1f}"


def _label(results: dict[str, Any], key: str) -> str:
    return results.get("labels", {}).get(key, key)


def _flag(row: Row) -> str:
    return " **generator-limited**" if row.get("generator_limited") else ""


def _throughput_table(results: dict[str, Any], rows: dict[str, Row]) -> list[str]:
    out = [
        "| server | connections | sent | delivered / expected | gaps | p50 ms | p90 ms | p99 ms | max ms "
        "| delivered/s | server CPU s | deliveries per core-s | server RSS MiB | generator CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, result in rows.items():
        if "error" in result:
            out.append(f"| {_label(results, key)} | failed: {result['error'][:200]!s} |" + " |" * 12)
            continue
        s = result["steps"][0]
        out.append(
            f"| {_label(results, key)} | {result['connections']:,} | {s['sent']:,} "
            f"| {s['delivered']:,} / {s['expected']:,} | {s['gaps']} | {_n(s['p50_ms'], 1)} "
            f"| {_n(s['p90_ms'], 1)} | {_n(s['p99_ms'], 1)} | {_n(s['max_ms'], 1)} "
            f"| {_n(s['delivered_per_s'])} | {_n(s['server_cpu_s'], 2)} | {_n(s['deliveries_per_core_s'])} "
            f"| {_mib(s['server_rss_bytes'])} | {s['generator_cpu_share']:.0%}{_flag(s)} |"
        )
    return out


def _ramp_table(results: dict[str, Any], rows: dict[str, Row]) -> list[str]:
    out = [
        "| server | highest sustained delivered/s | steps (offered/s: p99 ms, lost) |",
        "|---|---|---|",
    ]
    for key, result in rows.items():
        if "error" in result:
            out.append(f"| {_label(results, key)} | failed | {result['error'][:200]} |")
            continue
        steps = "; ".join(
            f"{s['offered']:,.0f}: {_n(s['p99_ms'], 0)}, {s['lost']}"
            + (" (gen.)" if s["generator_limited"] else "")
            for s in result["steps"]
        )
        out.append(f"| {_label(results, key)} | {_n(result['sustained_per_s'])} | {steps} |")
    return out


def _simple_table(
    results: dict[str, Any], rows: dict[str, Row], columns: list[tuple[str, str, Any]]
) -> list[str]:
    out = ["| server | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for key, result in rows.items():
        if "error" in result:
            out.append(
                f"| {_label(results, key)} | failed: {result['error'][:200]} |" + " |" * (len(columns) - 1)
            )
            continue
        out.append(
            f"| {_label(results, key)} | " + " | ".join(fmt(result.get(f)) for _, f, fmt in columns) + " |"
        )
    return out


def _load_note(rows: dict[str, Row]) -> str:
    """ " (load average ...)": the machine's 1-minute load average before each server's run."""
    loads = [r["loadavg_1m_before"] for r in rows.values() if "loadavg_1m_before" in r]
    if not loads:
        return ""
    return f" (1-minute load average before each server: {min(loads):.1f}-{max(loads):.1f} on this machine)"


def tables(results: dict[str, Any]) -> str:
    """Every profile's table, in Markdown, with a heading and the profile's description each."""
    parts: list[str] = []
    for name, rows in results["profiles"].items():
        parts.append(f"### {name}\n\n{results.get('descriptions', {}).get(name, '')}{_load_note(rows)}\n")
        if name in ("light", "heavy"):
            lines = _throughput_table(results, rows)
        elif name == "ramp":
            lines = _ramp_table(results, rows)
        elif name == "idle":
            lines = _simple_table(
                results,
                rows,
                [
                    ("connections", "connections", _n),
                    ("RSS before MiB", "rss_before_bytes", _mib),
                    ("RSS loaded MiB", "rss_loaded_bytes", _mib),
                    ("KiB per connection", "bytes_per_connection", lambda v: _n(v / 1024 if v else v, 1)),
                ],
            )
        elif name == "docs":
            lines = _simple_table(
                results,
                rows,
                [
                    ("opened", "opened", _n),
                    ("failed", "failed", _n),
                    ("seconds", "seconds", lambda v: _n(v, 1)),
                    ("RSS before MiB", "rss_before_bytes", _mib),
                    ("RSS after MiB", "rss_after_bytes", _mib),
                    ("RSS 3 s later MiB", "rss_settled_bytes", _mib),
                ],
            )
        elif name == "large":
            lines = _simple_table(
                results,
                rows,
                [
                    ("seeded", "seeded", str),
                    ("clients with the whole document", "synced", _n),
                    ("failed", "failed", _n),
                    ("p50 ms", "p50_ms", _n),
                    ("max ms", "max_ms", _n),
                    ("server CPU s", "server_cpu_s", lambda v: _n(v, 2)),
                    ("server RSS MiB", "server_rss_bytes", _mib),
                ],
            )
        else:  # presence
            lines = _simple_table(
                results,
                rows,
                [
                    ("connections", "connections", _n),
                    ("moves sent", "sent", _n),
                    ("states seen / expected", "received", _n),
                    ("expected", "expected_approx", _n),
                    ("dropped", "dropped", _n),
                    ("missing at end", "missing_at_end", _n),
                    ("p50 ms", "p50_ms", lambda v: _n(v, 1)),
                    ("p99 ms", "p99_ms", lambda v: _n(v, 1)),
                    ("max ms", "max_ms", lambda v: _n(v, 1)),
                    ("server CPU s", "server_cpu_s", lambda v: _n(v, 2)),
                    ("generator CPU", "generator_cpu_share", lambda v: "-" if v is None else f"{v:.0%}"),
                ],
            )
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _first_step(results: dict[str, Any], profile: str, key: str) -> Row | None:
    row = results["profiles"].get(profile, {}).get(key)
    if not row or "error" in row:
        return None
    return row["steps"][0]


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """Issue 12's targets as (target, measured, achieved); achieved is None when not measured."""
    out: list[tuple[str, str, bool | None]] = []

    def per_core(profile: str, key: str) -> float | None:
        step = _first_step(results, profile, key)
        return None if step is None else step["deliveries_per_core_s"]

    ws, hp, yws = (per_core("light", k) for k in ("item_socket-ws", "hocuspocus", "y-websocket"))
    if ws and hp:
        out.append(
            ("light: y-websocket endpoint >= 1.5x Hocuspocus per core", f"{ws / hp:.2f}x", ws >= 1.5 * hp)
        )
    if ws and yws:
        out.append(
            (
                "light: y-websocket endpoint >= y-websocket's Node server per core",
                f"{ws / yws:.2f}x",
                ws >= yws,
            )
        )
    sio, ysio = per_core("light", "item_socket-sio"), per_core("light", "y-socket.io")
    sio_step, ysio_step = (
        _first_step(results, "light", "item_socket-sio"),
        _first_step(results, "light", "y-socket.io"),
    )
    if sio and ysio and sio_step and ysio_step:
        out.append(
            (
                "light: Socket.IO endpoint >= 1.5x y-socket.io's Node server per core",
                f"{sio / ysio:.2f}x",
                sio >= 1.5 * ysio,
            )
        )
        out.append(
            ("light: Socket.IO endpoint loses nothing", f"{sio_step['lost']} lost", sio_step["lost"] == 0)
        )
        p, q = sio_step["p99_ms"], ysio_step["p99_ms"]
        limited = sio_step["generator_limited"] or ysio_step["generator_limited"]
        out.append(
            (
                "light: Socket.IO endpoint p99 <= y-socket.io's",
                f"{_n(p, 1)} vs {_n(q, 1)} ms" + (" (generator-limited: not comparable)" if limited else ""),
                None if limited else p is not None and q is not None and p <= q,
            )
        )

    heavy = {k: _first_step(results, "heavy", k) for k in results["profiles"].get("heavy", {})}
    ours = {k: v for k, v in heavy.items() if v and k.startswith("item_socket")}
    peers = {k: v for k, v in heavy.items() if v and not k.startswith("item_socket") and v["lost"] == 0}
    if ours and peers:
        best_key = min(peers, key=lambda k: peers[k]["p99_ms"] or math.inf)
        best = peers[best_key]["p99_ms"]
        for key, step in ours.items():
            limited = step["generator_limited"] or peers[best_key]["generator_limited"]
            out.append(
                (
                    f"heavy: {_label(results, key)} p99 <= best peer's ({_label(results, best_key)}), 0 lost",
                    f"{_n(step['p99_ms'], 1)} vs {_n(best, 1)} ms, {step['lost']} lost"
                    + (" (generator-limited: p99 not comparable)" if limited else ""),
                    None
                    if limited and step["lost"] == 0
                    else step["p99_ms"] is not None and step["p99_ms"] <= best and step["lost"] == 0,
                )
            )
    idle = {k: v for k, v in results["profiles"].get("idle", {}).items() if "error" not in v}
    peer_idle = {k: v["bytes_per_connection"] for k, v in idle.items() if not k.startswith("item_socket")}
    if peer_idle:
        best_key = min(peer_idle, key=lambda k: peer_idle[k])
        for key in (k for k in idle if k.startswith("item_socket")):
            mine = idle[key]["bytes_per_connection"]
            out.append(
                (
                    f"idle: {_label(results, key)} memory per connection"
                    f" <= best peer's ({_label(results, best_key)})",
                    f"{mine / 1024:.1f} vs {peer_idle[best_key] / 1024:.1f} KiB",
                    mine <= peer_idle[best_key],
                )
            )
    presence = results["profiles"].get("presence", {})
    for key in (k for k in presence if k.startswith("item_socket")):
        row = presence[key]
        if "error" in row:
            continue
        out.append(
            (
                f"presence: {_label(results, key)} p99 <= 250 ms, nothing dropped",
                f"p99 {_n(row['p99_ms'], 0)} ms, {row['dropped']} dropped, {row['missing_at_end']} missing",
                (row["p99_ms"] or math.inf) <= 250 and row["dropped"] == 0 and row["missing_at_end"] == 0,
            )
        )
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    """p99 latency (log scale) vs offered deliveries/s of the ramp, one line per server, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    plotted = 0
    for key, result in results["profiles"].get("ramp", {}).items():
        if "error" in result:
            continue
        xs = [s["offered"] for s in result["steps"] if s["p99_ms"] is not None]
        ys = [s["p99_ms"] for s in result["steps"] if s["p99_ms"] is not None]
        ax.plot(xs, ys, marker="o", label=_label(results, key))
        plotted += 1
    if plotted:
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no ramp profile in this run", ha="center", transform=ax.transAxes)
    ax.axhline(100, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("offered deliveries per second")
    ax.set_ylabel("p99 propagation latency, ms (log)")
    m = results["machine_start"]
    loads = [
        r["loadavg_1m_before"]
        for r in results["profiles"].get("ramp", {}).values()
        if "loadavg_1m_before" in r
    ]
    load = f"load avg {min(loads):.1f}-{max(loads):.1f}" if loads else f"load avg {m['loadavg'][0]:.1f}"
    ax.set_title(
        f"ramp: p99 vs offered load, each server pinned to 1 core\n{m['nproc']} x {m['cpu_model']}, "
        f"{m['date']}, {load}",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


BEGIN = "<!-- generated by benchmarks/run.py: start -->"
END = "<!-- generated by benchmarks/run.py: end -->"


def page(results: dict[str, Any], table_text: str, plot_path: Path, old: str | None = None) -> str:
    """docs/benchmarks.md: the generated block (machine, targets, plot, tables) between markers.

    Text of ``old`` (the current page) outside the markers is hand-written and kept as it is.
    """
    block = _generated(results, table_text, plot_path)
    if old and BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        return head + block + rest.split(END, 1)[1]
    return "# Benchmarks\n\n" + block + "\n"


def _generated(results: dict[str, Any], table_text: str, plot_path: Path) -> str:
    m0, m1 = results["machine_start"], results["machine_end"]
    lines = [
        BEGIN,
        "",
        "Regenerate everything on this page (tables, plot, `benchmarks/results.json`):",
        "",
        "```sh",
        "make bench                                   # = .venv/bin/python -m benchmarks.run --all --redis",
        ".venv/bin/python -m benchmarks.run --all --quick   # small loads, a few minutes",
        "```",
        "",
        f"Measured {m0['date']} on {m0['nproc']} x {m0['cpu_model']}; load average (1/5/15 min) "
        f"{' / '.join(f'{x:.2f}' for x in m0['loadavg'])} at the start and "
        f"{' / '.join(f'{x:.2f}' for x in m1['loadavg'])} at the end"
        + (" (**quick mode: small loads, not the published figures**)" if results.get("quick") else "")
        + ". Each server was pinned to CPU 0 and the load generator to the last CPU"
        + ("" if m0.get("pinned") else " (**not pinned: taskset missing or one CPU**)")
        + ". Compare rows of one run only: peers vary by a third between runs on a shared machine.",
        "",
        "## Targets (issue 12)",
        "",
        "| target | measured | achieved |",
        "|---|---|---|",
    ]
    for target, measured, achieved in targets(results):
        verdict = "yes" if achieved else "no" if achieved is False else "not measurable in this run"
        lines.append(f"| {target} | {measured} | {verdict} |")
    lines += [
        "",
        "## p99 latency vs offered load (ramp)",
        "",
        f"![p99 latency vs offered load per server]({plot_path.as_posix()})",
        "",
        "## Tables",
        "",
        table_text,
        END,
    ]
    return "\n".join(lines)
