"""Fixtures of the end-to-end tests: a real Docker engine in swarm mode (tests/conftest.py), the
images built from scratch (debootstrap base, no registry) and the whole stack deployed with
`spaced up local`.

The stack fixture always runs `spaced down local` at the end, also when a test fails. The tests
take over the local stack (named `spaced`): one a developer left running is replaced.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import DockerEngine, docker, free_port, http_get, wait_until

REPO = Path(__file__).resolve().parents[2]
SPACED = [sys.executable, "-m", "infra.cli"]
STACK = "spaced"
UP_TIMEOUT_SECONDS = 300


def load_harness() -> ModuleType:
    """tests/item_socket/e2e/harness.py (the npm client agent driver), imported by path."""
    name = "item_socket_e2e_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests/item_socket/e2e/harness.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def local_images(swarm_manager: DockerEngine) -> dict[str, str]:
    """The stack's images, built (or found by their content tags) with infra.images."""
    from infra.images import build_local_images

    started = time.monotonic()
    images = build_local_images(progress=lambda message: print(message, flush=True))
    print(f"e2e: images ready in {time.monotonic() - started:.1f}s: {images}")
    return images


@dataclass(frozen=True)
class LocalStack:
    """The deployed local stack: where to reach it and how to act on it."""

    http_port: int
    prometheus_port: int
    images: dict[str, str]

    @property
    def url(self) -> str:
        """Traefik's HTTP entrypoint (every client goes through it)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def prometheus_url(self) -> str:
        """Prometheus, published on the host for the tests."""
        return f"http://127.0.0.1:{self.prometheus_port}"

    def token(self, doc_glob: str = "*", read_only: bool = False) -> str:
        """A JWT from `spaced token local`, signed with the secret the deploy generated."""
        args = [*SPACED, "token", "local", "--doc", doc_glob, *(["--read-only"] if read_only else [])]
        result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"spaced token failed: {result.stderr}"
        return result.stdout.strip()

    def environment(self) -> dict[str, str]:
        """Environment of the `spaced` CLI for this stack (no cAdvisor, the test's ports)."""
        return {
            **os.environ,
            "SPACED_NO_CADVISOR": "1",
            "SPACED_HTTP_PORT": str(self.http_port),
            "SPACED_PROMETHEUS_PORT": str(self.prometheus_port),
        }


def spaced(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the `spaced` CLI (as a subprocess, like a user would)."""
    return subprocess.run(
        [*SPACED, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def stack_services() -> list[str]:
    """Names of the local stack's services."""
    listed = docker("stack", "services", STACK, "--format", "{{.Name}}", check=False)
    return listed.stdout.split() if listed.returncode == 0 else []


def remove_stack(env: dict[str, str]) -> None:
    """`spaced down local`, then wait (bounded) until its services and networks are gone."""
    down = spaced(["down", "local"], env, timeout=120)
    print(f"e2e: spaced down local -> {down.returncode}\n{down.stdout}{down.stderr}")
    wait_until(lambda: not stack_services(), 60, "the stack's services to be removed", interval=1)
    wait_until(
        lambda: (
            not docker(
                "network", "ls", "--filter", f"label=com.docker.stack.namespace={STACK}", "-q"
            ).stdout.strip()
        ),
        60,
        "the stack's networks to be removed",
        interval=1,
    )


def remove_rollout_images() -> None:
    """The item_socket tags the rolling-update test made (label layers; the stack no longer uses them)."""
    tags = docker("images", "spaced/item_socket", "--format", "{{.Repository}}:{{.Tag}}", check=False).stdout
    for reference in tags.split():
        if "-rollout-" in reference:
            docker("rmi", reference, check=False)


def print_stack_state() -> None:
    """The services and their last log lines, for a failing test's report."""
    print(docker("stack", "ps", STACK, "--no-trunc", check=False).stdout)
    for service in stack_services():
        logs = docker("service", "logs", "--tail", "30", service, check=False)
        print(f"===== {service} =====\n{logs.stdout}{logs.stderr}")


@pytest.fixture(scope="session")
def local_stack(local_images: dict[str, str]) -> Iterator[LocalStack]:
    """`spaced up local` (cAdvisor left out, free ports); always `spaced down local` afterwards."""
    stack = LocalStack(http_port=free_port(), prometheus_port=free_port(), images=local_images)
    env = stack.environment()
    try:
        if stack_services():
            # A stack left running (by a developer or a killed run) has other ports: start clean.
            remove_stack(env)
        started = time.monotonic()
        up = spaced(
            ["up", "local", "--timeout", str(UP_TIMEOUT_SECONDS)], env, timeout=UP_TIMEOUT_SECONDS + 120
        )
        print(f"e2e: spaced up local -> {up.returncode} in {time.monotonic() - started:.1f}s\n{up.stdout}")
        if up.returncode != 0:
            print_stack_state()
            pytest.fail(f"spaced up local failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
        wait_until(lambda: http_get(stack.url + "/")[0] == 200, 60, "the page through Traefik")
        yield stack
    finally:
        with contextlib.suppress(Exception):
            print_stack_state()
        remove_stack(env)
        remove_rollout_images()
