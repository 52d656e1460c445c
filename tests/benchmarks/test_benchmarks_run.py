"""The benchmark harness itself, on a tiny load against item_socket: so it cannot silently rot.

Runs `benchmarks.run` end to end (its CLI, both item_socket endpoints, the real npm clients, the
page and the plot) with the quick `light` profile and checks the report's shape and that nothing
was lost. No timing is asserted: bounds on figures belong in the benchmark's output, not in CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import report, run

STEP_KEYS = {
    "sent",
    "expected",
    "delivered",
    "lost",
    "gaps",
    "delivered_per_s",
    "server_cpu_s",
    "deliveries_per_core_s",
    "server_rss_bytes",
    "generator_cpu_share",
    "generator_loop_delay_p99_ms",
    "generator_limited",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "rate",
    "offered",
}


@pytest.mark.timeout(180)
def test_quick_light_run_against_item_socket(tmp_path: Path) -> None:
    results_path, page_path = tmp_path / "results.json", tmp_path / "benchmarks.md"
    code = run.main(
        [
            "--profiles",
            "light",
            "--servers",
            "item_socket-ws",
            "item_socket-sio",
            "--quick",
            "--results",
            str(results_path),
            "--page",
            str(page_path),
        ]
    )
    assert code == 0
    results = json.loads(results_path.read_text())
    machine = results["machine_start"]
    assert machine["nproc"] >= 1 and machine["cpu_model"] and machine["date"]
    load = run.LIGHT_QUICK
    for key in ("item_socket-ws", "item_socket-sio"):
        row = results["profiles"]["light"][key]
        assert "error" not in row, row
        assert row["connections"] == load.rooms * load.clients
        (step,) = row["steps"]
        assert set(step) >= STEP_KEYS
        assert step["sent"] > 0
        assert step["expected"] == step["sent"] * (load.clients - 1)
        assert step["delivered"] == step["expected"] and step["lost"] == 0 and step["gaps"] == 0
        assert 0 < step["p50_ms"] <= step["p90_ms"] <= step["p99_ms"] <= step["max_ms"]
        assert step["server_cpu_s"] > 0 and step["server_rss_bytes"] > 0
    page = page_path.read_text()
    assert report.BEGIN in page and report.END in page
    assert "item_socket y-websocket" in page and machine["cpu_model"] in page
    assert (tmp_path / "benchmarks/p99_vs_load.png").read_bytes().startswith(b"\x89PNG")


def test_page_keeps_hand_written_text_around_the_generated_block(tmp_path: Path) -> None:
    machine = {"nproc": 2, "cpu_model": "cpu", "loadavg": [0.1, 0.2, 0.3], "date": "d", "pinned": True}
    results = {"machine_start": machine, "machine_end": machine, "profiles": {}}
    old = f"# Title\n\nbefore\n\n{report.BEGIN}\nstale\n{report.END}\n\nafter\n"
    new = report.page(results, "TABLES", Path("benchmarks/p.png"), old)
    assert new.startswith("# Title\n\nbefore\n\n") and new.endswith("\n\nafter\n")
    assert "stale" not in new and "TABLES" in new
