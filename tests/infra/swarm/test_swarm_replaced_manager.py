"""A replaced first manager joins the swarm the other managers still run instead of starting a second.

The init script runs for real under bash, against a stand-in `docker` on PATH (it reports an inactive
engine and records what it is asked) and a real TCP listener standing for a surviving manager's 2377.
The component feeds init the other managers' offers (`manager_probe_script`) as a secret on stdin.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.plans import swarm as plan

from .conftest import CommandMocks, RecordingMonitor
from .test_swarm_component import build, inputs, unwrap

NODE_ID = "newnode0000000000000000000"[:25]
STALE_ID = "oldnode0000000000000000000"[:25]
TOKEN = "SWMTKN-1-" + "m" * 50 + "-" + "k" * 25
FAKE_DOCKER = f"""#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
case "$*" in
  "info") exit 0 ;;
  "info --format {{{{.Swarm.LocalNodeState}}}}") echo inactive ;;
  "info --format {{{{.Swarm.NodeID}}}}") echo {NODE_ID} ;;
  "node ls --quiet") echo {STALE_ID}; echo {NODE_ID} ;;
  *"node inspect --format {{{{index .Spec.Labels \\"spaced.node\\"}}}} {STALE_ID}") echo apex ;;
  *"node inspect --format {{{{.Status.State}}}} {STALE_ID}") echo down ;;
esac
exit 0
"""


@pytest.fixture
def fake_docker(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    log.touch()
    yield {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DOCKER_LOG": str(log)}, log


@pytest.fixture
def surviving_manager() -> Iterator[str]:
    """A TCP listener on 127.0.0.1 standing for another manager's swarm port: `host:port`."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


def closed_port() -> str:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    return f"127.0.0.1:{port}"  # nothing listens there any more


def run_init(env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    script = plan.init_script(
        "10.210.0.1", node_name="apex", cloud_init_timeout_s=30, docker_timeout_s=10, probe_timeout_s=3
    )
    return subprocess.run(
        ["bash", "-c", plan.bash_command(script)],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_replaced_first_manager_joins_the_managers_that_answer(fake_docker, surviving_manager) -> None:  # type: ignore[no-untyped-def]
    env, log = fake_docker
    offers = f"# first manager server 4711\n{closed_port()} {TOKEN}\n{surviving_manager} {TOKEN}\n"
    result = run_init(env, offers)
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert "swarm init" not in calls
    assert (
        f"swarm join --token {TOKEN} --advertise-addr 10.210.0.1 --listen-addr 10.210.0.1:2377 "
        f"{surviving_manager}"
    ) in calls
    assert f"node rm --force {STALE_ID}" in calls  # the replaced node's old entry
    assert f"node rm --force {NODE_ID}" not in calls
    assert result.stdout.strip().splitlines()[-1] == NODE_ID


@pytest.mark.parametrize("offers", ["", "# first manager server 1\n", "127.0.0.1:1 SWMTKN-1-x\n", "junk\n"])
def test_without_an_answering_manager_the_first_manager_initialises(fake_docker, offers: str) -> None:  # type: ignore[no-untyped-def]
    env, log = fake_docker
    if offers.startswith("127.0.0.1:1 "):
        offers = f"{closed_port()} {TOKEN}\n"
    result = run_init(env, offers)
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert "swarm init --advertise-addr 10.210.0.1 --listen-addr 10.210.0.1:2377" in calls
    assert "swarm join" not in calls


def test_the_other_managers_offer_themselves_to_init_as_a_secret(
    pulumi_mocks: tuple[CommandMocks, RecordingMonitor],
) -> None:
    _, monitor = pulumi_mocks
    build()
    probe = inputs(monitor, "swarm-mgr-b-manager-probe")
    assert probe["create"] == plan.bash_command(plan.manager_probe_script())
    assert unwrap(probe["connection"])[0]["host"] == "203.0.113.3"  # the other manager, not the first
    assert "stdout" in monitor.requests["swarm-mgr-b-manager-probe"].additionalSecretOutputs
    init_request = monitor.requests["swarm-apex-init"]
    assert "stdin" in init_request.additionalSecretOutputs
    assert any("manager-probe" in dependency for dependency in init_request.dependencies)
