"""Lighthouse CI (npm @lhci/cli, Debian's Chromium, no download) against the board page served by
nginx with the application stack's own nginx.conf on 127.0.0.1: the budgets of lighthouserc.json
pass for the real page and fail for a page that is over them. The same run against `spaced up local`
is tests/e2e/test_e2e_lighthouse.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.app_stack.services.nginx import render_nginx_conf
from tests.support import http_get, wait_until
from tests.workflows.lighthouse import CHROMIUM, REPO_ROOT, run_lighthouse

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ESBUILD = REPO_ROOT / "node_modules/.bin/esbuild"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_web_root(root: Path) -> Path:
    """web/index.html and the esbuild bundle (package.json's build:web flags) under `root`."""
    root.mkdir(parents=True, mode=0o755)
    shutil.copy2(REPO_ROOT / "web/index.html", root / "index.html")
    subprocess.run(
        [
            str(ESBUILD),
            "web/src/board.js",
            "--bundle",
            "--minify",
            "--format=esm",
            f"--outfile={root / 'dist/board.js'}",
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return root


@pytest.fixture
def web_dir() -> Iterator[Path]:
    """A world-readable scratch directory (pytest's tmp_path is 0700: nginx's workers, running as
    nobody, could not read the page there). Removed at teardown."""
    path = Path(tempfile.mkdtemp(prefix="spaced-lighthouse-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def serve_with_nginx(tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """`serve(web_root)` -> the URL of nginx (the stack's nginx.conf) serving it on 127.0.0.1.

    Every nginx started is stopped (SIGTERM, then SIGKILL) at teardown.
    """
    for tool, hint in ((ESBUILD, "npm ci"), (Path(CHROMIUM), "apt-get install chromium")):
        if not tool.exists():
            pytest.fail(f"{tool} is missing: run scripts/install-deps.sh ({hint})")
    if shutil.which("nginx") is None:
        pytest.fail("nginx is missing: run scripts/install-deps.sh")
    processes: list[subprocess.Popen[bytes]] = []

    def serve(web_root: Path) -> str:
        port = _free_port()
        prefix = tmp_path / f"nginx-{port}"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(
            render_nginx_conf(listen=f"127.0.0.1:{port}", web_root=str(web_root), temp_dir=str(prefix))
        )
        process = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}/"

        def healthy() -> bool:
            assert process.poll() is None, f"nginx exited with {process.returncode}"
            return http_get(f"{url}healthz", timeout=2)[0] == 200

        wait_until(healthy, 15, "nginx /healthz", interval=0.1)
        return url

    yield serve
    for process in processes:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_the_board_page_meets_the_budgets(
    serve_with_nginx: Callable[[Path], str], web_dir: Path, tmp_path: Path
) -> None:
    url = serve_with_nginx(build_web_root(web_dir / "web"))
    run = run_lighthouse(url, tmp_path / "report")
    assert run.returncode == 0, run.output[-3000:]
    assert run.scores["performance"] >= 0.9 and run.scores["accessibility"] >= 0.9
    # nginx gzips the bundle: what travels is well under its ~130 kB on disk
    assert 0 < run.resources["script"]["transferSize"] < 80_000
    assert run.resources["third-party"]["requestCount"] == 0


def test_a_page_over_budget_fails(
    serve_with_nginx: Callable[[Path], str], web_dir: Path, tmp_path: Path
) -> None:
    root = build_web_root(web_dir / "web")
    # 300 kB of incompressible script loaded by the page: over the script and total byte budgets
    (root / "dist/heavy.js").write_text(f"window.heavy = '{os.urandom(150_000).hex()}';\n")
    index = root / "index.html"
    index.write_text(index.read_text().replace("</body>", '<script src="/dist/heavy.js"></script></body>'))
    run = run_lighthouse(serve_with_nginx(root), tmp_path / "report")
    assert run.returncode != 0
    assert "resource-summary" in run.output and "script" in run.output
    assert run.resources["script"]["transferSize"] > 80_000
