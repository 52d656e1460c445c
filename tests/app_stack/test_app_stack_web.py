"""The board page: its bundle builds with esbuild and leaves no bare module import behind; its HTML
carries what the newcomer path needs before any script runs (description, error element, editing off)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ESBUILD = REPO_ROOT / "node_modules/.bin/esbuild"


def test_board_bundle_builds(tmp_path: Path) -> None:
    if not ESBUILD.exists():
        pytest.fail("node_modules/.bin/esbuild is missing: run scripts/install-deps.sh (npm ci)")
    out = tmp_path / "board.js"
    # The flags of package.json's build:web, into a temporary file.
    result = subprocess.run(
        [str(ESBUILD), "web/src/board.js", "--bundle", "--minify", "--format=esm", f"--outfile={out}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    bundle = out.read_text()
    assert not re.search(r"""\bfrom\s*["'](yjs|y-socket\.io|socket\.io-client)["']""", bundle)
    assert "sync-step-1" in bundle, "the y-socket.io provider must be in the bundle"
    index = (REPO_ROOT / "web/index.html").read_text()
    assert 'src="/dist/board.js"' in index


def test_board_page_starts_with_editing_off_and_an_error_element() -> None:
    """Before the script connects, the page offers no editing; errors go to a role="alert" element."""
    index = (REPO_ROOT / "web/index.html").read_text()
    assert re.search(r'<meta name="description" content="[^"]{20,}">', index)
    assert re.search(r'<button id="add"[^>]*\bdisabled\b', index), "Add item must start disabled"
    assert re.search(r'<p id="message" class="error" role="alert" hidden>', index)
    assert re.search(r'<p id="hint" class="hint" hidden>[^<]*empty', index)
