"""The local stack under the failure modes Swarm + Traefik operators report (issue: the stack under
failure), each against the real stack."""

from __future__ import annotations

import importlib
import time

import pytest

from infra.app_stack.deploy import deploy
from infra.app_stack.environments import settings_for_environment
from tests.support import docker, http_get, wait_until

from .conftest import STACK, LocalStack

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The module (the package re-exports a function of the same name).
traefik_service = importlib.import_module("infra.app_stack.services.traefik")


def redeploy(local_stack: LocalStack, messages: list[str]) -> float:
    """The one deploy function with the fixture's images and ports; returns its seconds."""
    settings = settings_for_environment(
        "local",
        images=local_stack.images,
        include_cadvisor=False,
        http_port=local_stack.http_port,
        env=local_stack.environment(),
    )
    started = time.monotonic()
    deploy(settings, progress=messages.append, timeout=300)
    return time.monotonic() - started


def traefik_config_name() -> str:
    """The Docker config Traefik's running spec mounts (its name carries the content hash)."""
    return docker(
        "service",
        "inspect",
        f"{STACK}_traefik",
        "--format",
        "{{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{.ConfigName}}{{end}}",
    ).stdout.strip()


def test_a_traefik_config_change_deploys_through_the_port_handover(
    local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changing Traefik's config rolls it stop-first; its new task is refused ("host-mode port already
    in use") until the old one has let the port go. The deploy waits that out and succeeds."""
    before = traefik_config_name()
    messages: list[str] = []
    monkeypatch.setattr(traefik_service, "DIAL_TIMEOUT", "3s")
    try:
        seconds = redeploy(local_stack, messages)
        changed = traefik_config_name()
        assert changed != before, "the config change did not reach Traefik's spec"
        wait_until(lambda: http_get(local_stack.url + "/")[0] == 200, 60, "the page through the new Traefik")
        refusals = [m for m in messages if "port is still held" in m]
        print(f"\nTraefik config change deployed in {seconds:.1f}s; port refusals waited out: {refusals}")
    finally:
        monkeypatch.undo()
        redeploy(local_stack, [])
    assert traefik_config_name() == before
