"""docker-socket-proxy: the read-only Docker API Traefik's swarm provider reads, on every manager.

Traefik is the one service the internet talks to; it gets no Docker socket. It reaches the engine
through this HAProxy (images/docker-socket-proxy/haproxy.cfg), which passes GET/HEAD of the
endpoints the swarm provider reads (_ping, version, info, services, tasks, networks, nodes) and
answers every write, and every other endpoint, with 403. The proxy runs on managers only (the swarm
API answers there) and is reachable only on its own overlay, shared with Traefik alone.
"""

from __future__ import annotations

from infra.app_stack.model import (
    Healthcheck,
    Resources,
    Service,
    ServiceBundle,
    StackSettings,
    UpdatePolicy,
    VolumeMount,
)
from infra.app_stack.services.common import DOCKER_API_NETWORK, MANAGER_CONSTRAINT

NAME = "socket_proxy"
PORT = 2375
ENDPOINT = f"tcp://{NAME}:{PORT}"
"""What Traefik's swarm provider connects to: the service's name on the docker_api overlay."""


def socket_proxy(settings: StackSettings) -> ServiceBundle:
    """One proxy task per manager, holding the node's Docker socket; nothing is published."""
    service = Service(
        name=NAME,
        image=settings.images[NAME],
        mode="global",
        healthcheck=Healthcheck(
            test=["CMD", "busybox", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PORT}/_ping"]
        ),
        resources=Resources(
            cpus_limit=0.2, memory_limit="64M", cpus_reservation=0.02, memory_reservation="16M"
        ),
        placement=[MANAGER_CONSTRAINT],
        networks=[DOCKER_API_NETWORK],
        update=UpdatePolicy(order="start-first"),
        volumes=[
            VolumeMount(
                source="/var/run/docker.sock", target="/var/run/docker.sock", read_only=True, bind=True
            ),
        ],
    )
    return ServiceBundle(service=service)
