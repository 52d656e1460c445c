"""The local stack under the failure modes Swarm + Traefik operators report (issue: the stack under
failure), each against the real stack."""

from __future__ import annotations

import importlib
import json
import time
import urllib.error
import urllib.request
from typing import Any

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


def stack_containers() -> list[dict[str, Any]]:
    """`docker inspect` of every running container of the stack."""
    ids = docker("ps", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}").stdout.split()
    return json.loads(docker("inspect", *ids).stdout) if ids else []


def test_every_container_caps_its_log(local_stack: LocalStack) -> None:
    containers = stack_containers()
    assert containers
    for container in containers:
        log_config = container["HostConfig"]["LogConfig"]
        assert log_config == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}, (
            container["Name"],
            log_config,
        )


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """GET through Traefik: status, lower-cased headers, body (HTTP errors returned, not raised)."""
    request = urllib.request.Request(url)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_paths_of_a_stopped_service_answer_503_never_the_page(local_stack: LocalStack) -> None:
    """With no item_socket task, its paths fall through Traefik to nginx's catch-all: 503 with
    Retry-After (clients back off), not the board page; unknown paths are 404; robots.txt is a file."""
    base = local_stack.url
    status, headers, body = get(f"{base}/robots.txt")
    assert status == 200 and headers["content-type"].startswith("text/plain") and b"User-agent" in body
    status, _, body = get(f"{base}/no/such/page")
    assert status == 404, (status, body[:200])
    service = f"{STACK}_item_socket"
    docker("service", "scale", "--detach", f"{service}=0")
    try:
        handshake = f"{base}/socket.io/?EIO=4&transport=polling"
        wait_until(lambda: get(handshake)[0] == 503, 60, "a 503 for the Socket.IO handshake", interval=0.5)
        for path in ("/socket.io/?EIO=4&transport=polling", "/ws/some-doc"):
            status, headers, body = get(base + path)
            assert status == 503, (path, status, body[:200])
            assert headers.get("retry-after") == "5", headers
            assert b"<!doctype html" not in body.lower(), "the board page answered for item_socket"
    finally:
        docker("service", "scale", "--detach", f"{service}=1")
        wait_until(
            lambda: b'"sid"' in get(f"{base}/socket.io/?EIO=4&transport=polling")[2],
            120,
            "item_socket answering again",
            interval=1,
        )
