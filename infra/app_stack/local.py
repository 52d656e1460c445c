"""What only the local environment needs before a deploy: a one-node swarm, free ports, the cAdvisor image."""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import jwt

from infra.app_stack import commands
from infra.app_stack.deploy import Progress, stack_leftovers, wait_until_gone
from infra.app_stack.environments import local_image_ref
from infra.app_stack.errors import PortInUseError, SwarmInactiveError
from infra.app_stack.model import StackSettings
from infra.app_stack.services.item_socket import JWT_SECRET
from infra.app_stack.stack_secrets import secrets_dir_for
from infra.docker_cli import DockerRunner

LOCAL_NODE_LABELS = {"edge": "true", "acme": "true", "data": "true"}
"""The labels the swarm bootstrap gives the cloud's edge manager; the one local node plays every role."""


def ensure_local_swarm(runner: DockerRunner, progress: Progress) -> str:
    """Initialise a one-node swarm if needed and label the node; returns the node ID."""
    state, _, node_id = runner.run(commands.swarm_info_command()).stdout.strip().partition(" ")
    if state == "inactive":
        progress("initialising a one-node swarm (docker swarm init --advertise-addr 127.0.0.1)")
        runner.run(commands.swarm_init_command())
        state, _, node_id = runner.run(commands.swarm_info_command()).stdout.strip().partition(" ")
    if state != "active" or not node_id:
        raise SwarmInactiveError(
            f"the local engine's swarm state is {state!r}; run `docker swarm leave --force` and try again"
        )
    runner.run(commands.node_label_command(node_id, LOCAL_NODE_LABELS))
    return node_id


def cadvisor_image_available(runner: DockerRunner, image: str, progress: Progress) -> bool:
    """True when the cAdvisor image is present or can be pulled (it has no offline build)."""
    if runner.run(commands.image_present_command(image), check=False).returncode == 0:
        return True
    progress(f"pulling {image}")
    pulled = runner.run(commands.image_pull_command(image), check=False)
    return pulled.returncode == 0


def published_ports_of_stack(runner: DockerRunner, stack: str) -> set[int]:
    """Host ports the stack's current services publish."""
    names = [
        json.loads(line)["Name"]
        for line in runner.run(commands.service_list_command(stack)).stdout.splitlines()
        if line
    ]
    if not names:
        return set()
    services = json.loads(runner.run(commands.service_inspect_command(names)).stdout or "[]")
    return {
        port["PublishedPort"]
        for service in services
        for port in (service["Spec"].get("EndpointSpec") or {}).get("Ports") or []
        if "PublishedPort" in port
    }


def port_is_free(port: int) -> bool:
    """Whether a TCP listener could bind `port` on every address (what a host-mode publish does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def check_local_ports(settings: StackSettings, ours: set[int], runner: DockerRunner | None = None) -> None:
    """Raise PortInUseError for a port the stack publishes that something else holds.

    `ours`: ports the running stack publishes already (a redeploy finds them taken by itself). With
    a `runner`, a port held by a container of this project's own stack (one still being removed)
    is named as such, with what to do.
    """
    wanted: Sequence[tuple[int | None, str]] = [
        (settings.http_port, "--http-port N (or SPACED_HTTP_PORT=N)"),
        (settings.prometheus_port, "--prometheus-port N (or SPACED_PROMETHEUS_PORT=N; 0 = not published)"),
    ]
    for port, how in wanted:
        if port is None or port in ours or port_is_free(port):
            continue
        holders = (
            runner.run(commands.port_holder_command(port), check=False).stdout.split("\n") if runner else []
        )
        own = [line.split()[0] for line in holders if line.split()[1:] == [settings.stack_name]]
        if own:
            raise PortInUseError(
                f"port {port} is held by container {own[0]} of this project's own stack "
                f"{settings.stack_name!r}, which is not deployed any more; wait for it to stop "
                f"(spaced down {settings.environment} waits for it) or remove it: docker rm -f {own[0]}"
            )
        raise PortInUseError(
            f"port {port} is already in use by another program (see `ss -ltnp 'sport = :{port}'`); "
            f"stop it or choose another port: spaced up local {how}"
        )


def mint_token(secret: bytes, docs: Mapping[str, str], ttl_seconds: int, now: float) -> str:
    """An HS256 JWT item_socket accepts: claim `docs` maps glob patterns to "read" or "write"."""
    claims = {"docs": dict(docs), "iat": int(now), "exp": int(now + ttl_seconds), "sub": "spaced-cli"}
    return jwt.encode(claims, secret.strip(), algorithm="HS256")


def read_jwt_secret(environment: str, build_dir: Path | None = None) -> bytes:
    """The JWT secret the last deploy of `environment` from this machine created."""
    path = (
        secrets_dir_for(environment) / JWT_SECRET
        if build_dir is None
        else (secrets_dir_for(environment, build_dir) / JWT_SECRET)
    )
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; deploy first (spaced up {environment})")
    return path.read_bytes()


def build_images(settings: StackSettings, progress: Progress) -> dict[str, str]:
    """Service -> image reference, built (or found by content tag) by `infra.images`, for every
    built service whose image is not set by a `SPACED_IMAGE_<SERVICE>` variable (those are used
    as they are, and not built)."""
    from infra.images import build_local_images  # debootstrap and docker build: only for `up`

    built = settings.built_services
    wanted = [s for s in built if settings.images.get(s) == local_image_ref(s)]
    for service in sorted(set(built) - set(wanted)):
        progress(
            f"using {settings.images[service]} for {service} (SPACED_IMAGE_{service.upper()}); not built"
        )
    if wanted:
        progress("building the images locally (infra.images.build_local_images)")
    return build_local_images(progress=progress, services=wanted)


def prepare_local(settings: StackSettings, runner: DockerRunner, progress: Progress) -> StackSettings:
    """Everything `docker stack deploy` needs locally: the swarm, free ports, images, cAdvisor or not.

    Returns the settings with the built image references (and cAdvisor left out if unavailable).
    """
    ensure_local_swarm(runner, progress)
    left = stack_leftovers(runner, settings.stack_name)
    if left and "services" not in left:
        # A `docker stack rm` still in progress (containers stopping): the ports come free soon.
        progress(f"stack {settings.stack_name} is still being removed; waiting for it to go")
        wait_until_gone(runner, settings.stack_name, progress)
    check_local_ports(settings, published_ports_of_stack(runner, settings.stack_name), runner)
    images = build_images(settings, progress)
    include_cadvisor = settings.include_cadvisor
    if include_cadvisor and not cadvisor_image_available(runner, settings.images["cadvisor"], progress):
        progress(
            f"WARNING: leaving cAdvisor out: {settings.images['cadvisor']} is not here and cannot be pulled "
            "(no container metrics; pass --no-cadvisor or SPACED_NO_CADVISOR=1 to skip this check)"
        )
        include_cadvisor = False
    prepared = dataclasses.replace(
        settings, images={**settings.images, **images}, include_cadvisor=include_cadvisor
    )
    prepared.validate()
    return prepared
