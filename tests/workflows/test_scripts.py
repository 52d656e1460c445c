"""The scripts the workflows call, run for real where this machine can: pulumi-stack.sh's checks before
it reaches pulumi (no Pulumi CLI can be installed here), and the item_socket build context."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PULUMI_STACK = REPO_ROOT / "scripts/ci/pulumi-stack.sh"


def pulumi_stack(*args: str, path: str = "/usr/bin:/bin", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": path, "HOME": os.environ.get("HOME", "/root"), **env}
    return subprocess.run(
        ["bash", str(PULUMI_STACK), *args],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "usage: scripts/ci/pulumi-stack.sh preview|up|drift|dns STACK"),
        (("destroy", "dev"), "usage:"),
        (("up", "staging"), "ERROR (NoStack): stacks/Pulumi.staging.yaml does not exist"),
        (("up", "local"), "ERROR (CloudEnvironment): the local stack is deployed with `spaced up local`"),
        (("preview", "dev"), "ERROR (NoPulumi): the pulumi CLI is not on PATH"),
    ],
)
def test_pulumi_stack_refuses_before_running_pulumi(args: tuple[str, ...], error: str) -> None:
    result = pulumi_stack(*args)
    assert result.returncode == 2
    assert error in result.stderr


def test_pulumi_stack_needs_the_passphrase_with_a_self_managed_backend(tmp_path: Path) -> None:
    # A stand-in `pulumi` on PATH only gets the script past its "is the CLI installed" check; the
    # script must stop at the backend check before it runs it.
    fake = tmp_path / "pulumi"
    fake.write_text("#!/bin/sh\necho 'pulumi must not run' >&2\nexit 99\n")
    fake.chmod(0o755)
    result = pulumi_stack(
        "preview", "dev", path=f"{tmp_path}:/usr/bin:/bin", PULUMI_BACKEND_URL="file:///var/lib/spaced-state"
    )
    assert result.returncode == 2, result.stderr
    assert (
        "ERROR (NoPassphrase): PULUMI_BACKEND_URL is set but neither PULUMI_CONFIG_PASSPHRASE"
        in result.stderr
    )
    assert "pulumi must not run" not in result.stderr


@pytest.mark.slow
def test_item_socket_build_context(tmp_path: Path) -> None:
    """Dockerfile and wheels of the image: the project wheel and every pinned dependency."""
    cache = Path(os.environ.get("SPACED_CACHE_DIR", "/var/cache/spaced"))
    argv = [sys.executable, "scripts/ci/item-socket-context.py", str(tmp_path / "ctx")]
    if cache.is_dir() and os.access(cache, os.W_OK):
        argv.append(str(cache))  # reuse the dependency wheels of `scripts/build-images.sh`
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    context = tmp_path / "ctx"
    assert (context / "Dockerfile").read_text() == (REPO_ROOT / "item_socket/Dockerfile").read_text()
    wheels = {p.name.split("-")[0].lower() for p in (context / "wheels").glob("*.whl")}
    assert {"spaced_infra", "aiohttp", "pycrdt", "python_socketio", "pip"} <= wheels
