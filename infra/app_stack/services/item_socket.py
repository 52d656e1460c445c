"""item_socket: the real-time Yjs service (Socket.IO at /socket.io/, y-websocket at /ws/<doc>)."""

from __future__ import annotations

from dataclasses import replace

from infra.app_stack.model import (
    FileMount,
    Resources,
    SecretSpec,
    Service,
    ServiceBundle,
    StackSettings,
    UpdatePolicy,
    VolumeMount,
)
from infra.app_stack.services.common import (
    EDGE_CONSTRAINT,
    MONITORING_NETWORK,
    PUBLIC_NETWORK,
    bash_http_probe,
)
from infra.app_stack.services.traefik import router_labels

PORT = 8000
DATA_VOLUME = "item_socket_data"
JWT_SECRET = "item_socket_jwt_secret"
JWT_SECRET_PATH = f"/run/secrets/{JWT_SECRET}"
STICKY_COOKIE = "spaced_item_socket"
READINESS_PROBE_INTERVAL = "1s"


def item_socket(settings: StackSettings) -> ServiceBundle:
    """The item_socket service: one replica, SQLite on a named volume, JWT secret as a Docker secret."""
    labels = router_labels(
        settings,
        router="item_socket",
        rule="PathPrefix(`/socket.io/`) || PathPrefix(`/ws/`)",
        port=PORT,
        priority=100,
    )
    # Socket.IO long-polling sends each request anew: they must all reach the task that holds the
    # session, hence the sticky cookie (WebSocket connections stay on one task anyway).
    sticky = "traefik.http.services.item_socket.loadbalancer.sticky.cookie"
    labels |= {
        sticky: "true",
        f"{sticky}.name": STICKY_COOKIE,
        f"{sticky}.httponly": "true",
        f"{sticky}.samesite": "lax",
        f"{sticky}.secure": "false" if settings.is_local else "true",
    }
    # Traefik's own probe of /readyz: a task that starts draining (503) leaves the pool within a
    # second, before swarm has even removed it, and one that is not ready yet gets no clients.
    health = "traefik.http.services.item_socket.loadbalancer.healthcheck"
    labels |= {
        f"{health}.path": "/readyz",
        f"{health}.interval": READINESS_PROBE_INTERVAL,
        f"{health}.timeout": "1s",
    }
    drain = settings.item_socket_drain_seconds
    service = Service(
        name="item_socket",
        image=settings.images["item_socket"],
        environment={
            "ITEM_SOCKET_HOST": "0.0.0.0",
            "ITEM_SOCKET_PORT": str(PORT),
            "ITEM_SOCKET_DATA_DIR": "/data",
            # The secret's *path*, never its value: application secrets reach containers as files.
            "ITEM_SOCKET_AUTH_SECRET_FILE": JWT_SECRET_PATH,
            "ITEM_SOCKET_SHUTDOWN_GRACE": str(drain),
        },
        # A task counts as running (and Traefik routes to it) only once this passes, so during a
        # rolling update the first probe after start bounds the gap: probe every 2 s. bash's /dev/tcp
        # costs a few ms per probe where a python one costs ~60 ms of CPU. Failures in the start
        # period do not count; 5 retries let a busy event loop miss 10 s before swarm restarts it.
        healthcheck=replace(
            bash_http_probe(PORT, "/healthz"),
            interval="2s",
            timeout="2s",
            retries=5,
            start_period="30s",
        ),
        resources=Resources(
            cpus_limit=1.0, memory_limit="512M", cpus_reservation=0.25, memory_reservation="128M"
        ),
        # SQLite lives on a node-local named volume: the task must always come back on the same node.
        # The edge node is the one fixed, labelled node of every topology.
        placement=[EDGE_CONSTRAINT],
        networks=[PUBLIC_NETWORK, MONITORING_NETWORK],
        replicas=settings.item_socket_replicas,
        # stop-first: two processes must never serve one document from separate memories (each would
        # accept updates the other never sees, and both would write the same SQLite file). Clients
        # reconnect after the short gap. Switch to start-first once the Redis scale-out lands, when
        # replicas share one ordered per-document log.
        update=UpdatePolicy(order="stop-first", monitor="30s"),
        # World-readable inside the container only: the image may run as a non-root user.
        secrets=[FileMount(key=JWT_SECRET, target=JWT_SECRET, mode=0o444)],
        volumes=[VolumeMount(source=DATA_VOLUME, target="/data")],
        labels=labels,
        # SIGTERM starts the drain; Docker's SIGKILL must come only after it has finished.
        stop_grace_period=f"{drain + 10}s",
    )
    return ServiceBundle(
        service=service,
        secrets=[SecretSpec(key=JWT_SECRET, description="HS256 key that signs item_socket's JWTs")],
        volumes=[DATA_VOLUME],
    )
