"""Running scripts/ci/lighthouse.sh (Lighthouse CI with lighthouserc.json's budgets) from a test."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts/ci/lighthouse.sh"
CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 240  # seconds for one Lighthouse run on a busy 2-core machine


@dataclass(frozen=True)
class LighthouseRun:
    """Exit status, output, and the report's category scores and resource summary."""

    returncode: int
    output: str
    scores: dict[str, float]
    resources: dict[str, dict[str, Any]]


def run_lighthouse(url: str, output_dir: Path) -> LighthouseRun:
    """scripts/ci/lighthouse.sh URL with Debian's Chromium; reports in `output_dir`."""
    env = {**os.environ, "CHROME_PATH": CHROMIUM, "LHCI_OUTPUT_DIR": str(output_dir)}
    result = subprocess.run(
        ["bash", str(SCRIPT), url],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = result.stdout + result.stderr
    manifest = output_dir / "manifest.json"
    assert manifest.exists(), f"lhci wrote no report (exit {result.returncode}):\n{output[-3000:]}"
    (entry,) = json.loads(manifest.read_text())
    report = json.loads(Path(entry["jsonPath"]).read_text())
    resources = {
        item["resourceType"]: item for item in report["audits"]["resource-summary"]["details"]["items"]
    }
    return LighthouseRun(result.returncode, output, entry["summary"], resources)
