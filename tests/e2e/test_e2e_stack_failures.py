"""The local stack under the failure modes Swarm + Traefik operators report (issue: the stack under
failure), each against the real stack."""

from __future__ import annotations

import importlib
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.app_stack.deploy import deploy
from infra.app_stack.environments import settings_for_environment
from infra.plans.mesh import OVERLAY_MTU, OVERLAY_MTU_OPTION
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
    replicas = docker(
        "service", "inspect", service, "--format", "{{.Spec.Mode.Replicated.Replicas}}"
    ).stdout.strip()
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
        docker("service", "scale", "--detach", f"{service}={replicas}")
        wait_until(
            lambda: b'"sid"' in get(f"{base}/socket.io/?EIO=4&transport=polling")[2],
            120,
            "item_socket answering again",
            interval=1,
        )


def service_container(service: str) -> str:
    """The ID of the running container of `<stack>_<service>` (one task)."""
    ids = docker(
        "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_{service}"
    ).stdout.split()
    assert len(ids) == 1, f"expected one running {service} container, found {ids}"
    return ids[0]


def test_traefik_reads_the_swarm_through_a_read_only_proxy_and_cannot_write(local_stack: LocalStack) -> None:
    traefik = service_container("traefik")
    assert docker("exec", traefik, "test", "-e", "/var/run/docker.sock", check=False).returncode != 0, (
        "Traefik must not have the Docker socket"
    )
    api = "http://socket_proxy:2375"
    read = docker("exec", traefik, "busybox", "wget", "-q", "-O", "-", f"{api}/v1.41/services", check=False)
    assert read.returncode == 0 and json.loads(read.stdout), read.stderr
    name = f"e2e-write-{uuid.uuid4().hex[:8]}"
    write = docker(
        "exec",
        traefik,
        "busybox",
        "wget",
        "-q",
        "-O",
        "-",
        "--header",
        "Content-Type: application/json",
        "--post-data",
        json.dumps({"Name": name}),
        f"{api}/v1.41/networks/create",
        check=False,
    )
    assert write.returncode != 0 and "403" in write.stderr, (write.stdout, write.stderr)
    assert not docker("network", "ls", "-q", "--filter", f"name={name}").stdout.strip(), "the write passed"
    for path in ("/v1.41/containers/json", "/v1.41/secrets", "/v1.41/services/x/logs"):
        denied = docker("exec", traefik, "busybox", "wget", "-q", "-O", "-", api + path, check=False)
        assert denied.returncode != 0 and "403" in denied.stderr, (path, denied.stderr)

    # Discovery still works: a new service with Traefik labels is routed within seconds.
    route = f"e2e-route-{uuid.uuid4().hex[:8]}"
    labels = {
        "traefik.enable": "true",
        f"traefik.http.routers.{route}.rule": f"PathPrefix(`/{route}`)",
        f"traefik.http.routers.{route}.entrypoints": "web",
        f"traefik.http.routers.{route}.priority": "300",
        f"traefik.http.routers.{route}.middlewares": f"{route}-strip",
        f"traefik.http.middlewares.{route}-strip.stripprefix.prefixes": f"/{route}",
        f"traefik.http.services.{route}.loadbalancer.server.port": "8000",
    }
    label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    docker(
        "service",
        "create",
        "--detach",
        "--name",
        route,
        "--network",
        f"{STACK}_public",
        "--endpoint-mode",
        "dnsrr",
        *label_args,
        local_stack.images["item_socket"],  # runs on its own: /healthz on port 8000
    )
    try:
        # Only the new service answers /healthz under this prefix (the stack's nginx would say 404).
        wait_until(
            lambda: get(f"{local_stack.url}/{route}/healthz")[0] == 200, 90, f"Traefik routing /{route}", 1
        )
    finally:
        docker("service", "rm", route, check=False)


def main_process_uid(container_id: str) -> int:
    """Effective uid of a container's main process, read from the host's /proc."""
    pid = docker("inspect", "--format", "{{.State.Pid}}", container_id).stdout.strip()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])
    raise AssertionError(f"no Uid line for pid {pid}")


def test_no_service_runs_as_root(local_stack: LocalStack) -> None:
    uids = {container["Name"]: main_process_uid(container["Id"]) for container in stack_containers()}
    assert uids
    print(f"\nmain process uids: {uids}")
    assert not [name for name, uid in uids.items() if uid == 0], uids


def test_the_deployed_overlays_carry_the_mesh_mtu(local_stack: LocalStack) -> None:
    for network in ("public", "monitoring", "docker_api", "data"):
        options = docker("network", "inspect", f"{STACK}_{network}", "--format", "{{json .Options}}").stdout
        assert json.loads(options).get(OVERLAY_MTU_OPTION) == str(OVERLAY_MTU), (network, options)
