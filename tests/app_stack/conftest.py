"""Fixtures of the application-stack tests: rendered stacks on disk, free ports.

The Docker engine fixtures (`docker_engine`, `swarm_manager`) are suite-wide: tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from infra.app_stack.environments import settings_for_environment
from infra.app_stack.model import StackSettings
from tests import support

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


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Returns a function giving a TCP port nothing listens on right now (127.0.0.1)."""
    return lambda: support.free_port("127.0.0.1")
