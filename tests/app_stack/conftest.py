"""Fixtures of the application-stack tests: rendered stacks on disk and a running Docker engine."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.app_stack.environments import settings_for_environment
from infra.app_stack.model import StackSettings

PROD_TOPOLOGY = """\
config:
  spaced:topology:
    environment: prod
    domain: example.org
    admin_ssh_cidrs: ["198.51.100.0/24"]
    ssh:
      user: deploy
      public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJpVyd/+FNRD37TqRveeZU7KB8py0tVbPYZW8lZHKYvm t@x"
    nodes:
      - {name: edge-1, provider: hetzner, region: fsn1, manager: true, edge: true, dns: ["@"]}
"""


@pytest.fixture
def local_settings() -> StackSettings:
    """Local settings from defaults only (no SPACED_* variables of the caller's shell)."""
    return settings_for_environment("local", env={})


@pytest.fixture
def stacks_dir(tmp_path: Path) -> Path:
    """A stacks/ directory holding a minimal prod topology."""
    directory = tmp_path / "stacks"
    directory.mkdir()
    (directory / "Pulumi.prod.yaml").write_text(PROD_TOPOLOGY)
    return directory


@pytest.fixture
def prod_settings(stacks_dir: Path) -> StackSettings:
    """Cloud settings read from the fixture's topology yaml."""
    return settings_for_environment("prod", env={}, stacks_dir=stacks_dir)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Returns a function giving a TCP port nothing listens on right now (127.0.0.1)."""
    return _free_port


def _docker_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A Docker engine: the running one, or dockerd started here (left running: others share it)."""
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        pytest.skip("docker/dockerd not installed (make deps)")
    if not _docker_answers():
        with open("/tmp/dockerd.log", "ab") as log:
            subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        while not _docker_answers():
            if time.monotonic() > deadline:
                pytest.fail("dockerd did not answer within 60 s; see /tmp/dockerd.log")
            time.sleep(1)
    yield
