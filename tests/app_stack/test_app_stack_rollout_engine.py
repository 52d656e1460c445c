"""The deploy's wait against the real engine: it returns only once an update has rolled, and reports
an update swarm rolled back.

A small probe stack (its own name, so it never touches the `spaced` stack) is rendered with the
stack's own model and deployed with the deploy module's commands and wait, exactly as `deploy()`
strings them together. The probe becomes healthy 2 s after it starts, so a rolling update takes a
few seconds: long enough to see the old wait (replica counts) and the new one (rollout) disagree.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from infra import docker_cli
from infra.app_stack import commands as c
from infra.app_stack import deploy as d
from infra.app_stack import errors, rollout
from infra.app_stack.model import (
    ConfigFile,
    FileMount,
    Healthcheck,
    Resources,
    Service,
    UpdatePolicy,
    content_hash,
)
from infra.app_stack.rollout import parse_services, parse_tasks, task_runs_spec
from tests.support import DockerEngine, docker, wait_until

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROBE_REPOSITORY = "spaced/rollout-probe"
HEALTHY_AFTER_SECONDS = 2
WAIT_TIMEOUT = 150.0


@pytest.fixture(scope="module")
def probe_images(swarm_manager: DockerEngine) -> Iterator[tuple[str, str]]:
    """Two tags of a tiny image on the project's Debian base: what two releases of a service look like."""
    from infra.images import DEFAULT_CACHE_DIR, cache_lock, ensure_base_image

    cache_dir = Path(os.environ.get("SPACED_CACHE_DIR", DEFAULT_CACHE_DIR))
    with cache_lock(cache_dir):
        base = ensure_base_image(docker_cli.DockerRunner(), cache_dir, progress=print)
    run_id = uuid.uuid4().hex[:8]
    tags = []
    for release in ("a", "b"):
        tag = f"{PROBE_REPOSITORY}:{run_id}-{release}"
        subprocess.run(
            ["docker", "build", "-q", "-t", tag, "-"],
            input=f"FROM {base}\nLABEL fun.spaced.rollout-probe={tag}\n",
            text=True,
            check=True,
            capture_output=True,
            timeout=120,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        tags.append(tag)
    try:
        yield tags[0], tags[1]
    finally:
        docker("rmi", *tags, check=False)


def probe_service(name: str, image: str, *, healthy: bool = True, mode: str = "replicated") -> Service:
    """A service shaped like the stack's (model defaults, dnsrr, limits, a config); healthy after 2 s."""
    if healthy:
        script = (
            f"echo probe {image} starting; sleep {HEALTHY_AFTER_SECONDS}; touch /tmp/healthy; "
            "trap 'exit 0' TERM; while :; do sleep 1; done"
        )
        healthcheck = Healthcheck(
            test=["CMD", "test", "-f", "/tmp/healthy"],
            interval="1s",
            timeout="1s",
            retries=2,
            start_period="30s",
        )
    else:
        script = f"echo probe {image} never gets healthy; trap 'exit 0' TERM; while :; do sleep 1; done"
        healthcheck = Healthcheck(
            test=["CMD", "test", "-f", "/tmp/healthy"],
            interval="1s",
            timeout="1s",
            retries=2,
            start_period="1s",
        )
    return Service(
        name=name,
        image=image,
        command=["bash", "-c", script],
        healthcheck=healthcheck,
        resources=Resources(
            cpus_limit=0.2, memory_limit="32M", cpus_reservation=0.01, memory_reservation="8M"
        ),
        placement=["node.role == manager"],
        networks=["probe"],
        mode="global" if mode == "global" else "replicated",
        update=UpdatePolicy(order="stop-first", delay="0s", monitor="3s"),
        configs=[FileMount(key="probe_conf", target="/etc/probe.conf")],
        labels={"fun.spaced.test": "rollout"},
        stop_grace_period="5s",
    )


@dataclass
class ProbeStack:
    """A throwaway stack on the engine, deployed with the deploy module's own commands."""

    name: str
    directory: Path
    runner: docker_cli.DockerRunner
    agent_image: str = ""
    """The global service's image: the same in every deploy (a service the update leaves alone)."""

    def services(self, app_image: str, *, healthy: bool = True) -> list[str]:
        """Write the compose file: `app` (replicated, the one updated) and `agent` (global, unchanged)."""
        config = ConfigFile(key="probe_conf", path="probe.conf", content="probe\n")
        (self.directory / config.path).write_text(config.content)
        services = [
            probe_service("app", app_image, healthy=healthy),
            probe_service("agent", self.agent_image, mode="global"),
        ]
        compose = {
            "version": "3.8",
            "services": {s.name: s.to_compose() for s in services},
            "networks": {"probe": {"driver": "overlay"}},
            "configs": {
                config.key: {
                    "file": f"./{config.path}",
                    "name": f"{self.name}_probe_conf_{content_hash(config.content)}",
                }
            },
        }
        self.compose_file.write_text(yaml.safe_dump(compose, sort_keys=False))
        return [f"{self.name}_{s.name}" for s in services]

    @property
    def compose_file(self) -> Path:
        """Where the compose file is written."""
        return self.directory / "docker-stack.yml"

    def deploy(self, app_image: str, *, healthy: bool = True) -> tuple[list[str], d.Baseline]:
        """`docker stack deploy` as deploy() runs it; returns the expected services and the baseline."""
        expected = self.services(app_image, healthy=healthy)
        existing = [
            s.name
            for s in rollout.parse_service_list(self.runner.run(c.service_list_command(self.name)).stdout)
        ]
        baseline = d.take_baseline(self.runner, [s for s in expected if s in existing])
        self.runner.run(
            c.stack_deploy_command(
                self.name, self.compose_file, detach_flag=self.runner.supports_stack_detach()
            )
        )
        return expected, baseline

    def wait(
        self, expected: list[str], baseline: d.Baseline, messages: list[str]
    ) -> list[rollout.ServiceState]:
        """The deploy's wait, bounded."""
        return d.wait_for_convergence(
            self.runner,
            self.name,
            expected,
            baseline,
            timeout=WAIT_TIMEOUT,
            progress=messages.append,
            poll_interval=0.5,
        )

    def running_images(self, service: str) -> list[str]:
        """Images of the service's tasks that run now (from `docker service ps`, not from our parser)."""
        rows = docker(
            "service",
            "ps",
            f"{self.name}_{service}",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Image}} {{.CurrentState}}",
        ).stdout.splitlines()
        return [row.split()[0] for row in rows if " Running" in row]

    def update_state(self, service: str) -> str:
        """UpdateStatus.State from the engine ("" when absent)."""
        inspected = json.loads(docker("service", "inspect", f"{self.name}_{service}").stdout)[0]
        return (inspected.get("UpdateStatus") or {}).get("State", "")


@pytest.fixture
def probe_stack(probe_images: tuple[str, str], tmp_path: Path) -> Iterator[ProbeStack]:
    """A fresh probe stack; always removed (services, network, config) at the end."""
    stack = ProbeStack(
        name=f"spacedprobe{uuid.uuid4().hex[:8]}", directory=tmp_path, runner=docker_cli.DockerRunner()
    )
    stack.agent_image = probe_images[0]
    try:
        yield stack
    finally:
        docker("stack", "rm", stack.name, check=False)
        wait_until(
            lambda: (
                not docker(
                    "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack.name}", check=False
                ).stdout.strip()
            ),
            60,
            f"the containers of {stack.name} to go",
            interval=0.5,
        )
        for kind in ("network", "config"):
            names = docker(
                kind, "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack.name}", check=False
            )
            if names.stdout.split():
                docker(kind, "rm", *names.stdout.split(), check=False)


def test_the_wait_returns_only_once_the_update_has_rolled(
    probe_stack: ProbeStack, probe_images: tuple[str, str]
) -> None:
    release_a, release_b = probe_images
    messages: list[str] = []
    expected, baseline = probe_stack.deploy(release_a)
    probe_stack.wait(expected, baseline, messages)
    assert probe_stack.running_images("app") == [release_a]

    # Every task of a freshly deployed stack runs its service's spec, as the real engine reports both
    # (the service with the defaults `docker service inspect` fills in, the task without them).
    services = parse_services(probe_stack.runner.run(c.service_inspect_command(expected)).stdout)
    task_ids = probe_stack.runner.run(c.stack_running_tasks_command(probe_stack.name)).stdout.split()
    tasks = parse_tasks(probe_stack.runner.run(c.task_inspect_command(task_ids)).stdout)
    assert tasks and {t.service_id for t in tasks} == {s.id for s in services.values()}
    by_id = {s.id: s for s in services.values()}
    assert all(task_runs_spec(t.spec, by_id[t.service_id].task_template) for t in tasks)

    expected, baseline = probe_stack.deploy(release_b)
    # The new task cannot be healthy yet (it sleeps 2 s first): the update has not rolled.
    _, rollouts = d.observe_rollouts(probe_stack.runner, probe_stack.name, expected, baseline)
    assert rollouts[f"{probe_stack.name}_app"].phase == "pending", rollouts
    started = time.monotonic()
    probe_stack.wait(expected, baseline, messages)
    waited = time.monotonic() - started
    # Checked with the docker CLI, not with the code under test: the update is over when the wait ends.
    assert probe_stack.running_images("app") == [release_b]
    assert probe_stack.update_state("app") == "completed"
    assert probe_stack.running_images("agent") == [release_a], "the unchanged global service keeps running"
    print(f"\nrolling update of the probe waited {waited:.1f}s; progress: {messages}")


def test_an_update_swarm_rolls_back_fails_the_deploy_with_its_logs(
    probe_stack: ProbeStack, probe_images: tuple[str, str]
) -> None:
    release_a, release_b = probe_images
    messages: list[str] = []
    expected, baseline = probe_stack.deploy(release_a)
    probe_stack.wait(expected, baseline, messages)

    expected, baseline = probe_stack.deploy(release_b, healthy=False)
    with pytest.raises(errors.ConvergenceError) as failure:
        probe_stack.wait(expected, baseline, messages)
    message = str(failure.value)
    assert f"service {probe_stack.name}_app" in message
    assert f"probe {release_b} never gets healthy" in message, "the failing release's log lines are reported"
    assert probe_stack.update_state("app") in {"rollback_started", "rollback_completed"}
    # Swarm puts the previous release back (bounded wait: the rollback itself takes a few seconds).
    wait_until(
        lambda: probe_stack.running_images("app") == [release_a], 60, "the old release back", interval=0.5
    )
