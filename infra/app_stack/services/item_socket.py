"""item_socket: the real-time Yjs service (Socket.IO at /socket.io/, y-websocket at /ws/<doc>).

With `item_socket_scale_out` (the default): `item_socket_replicas` replicas sharing documents through
Redis (a stream per document) and PostgreSQL (the store), updated start-first, on any node. Without:
the embedded single replica with SQLite on a volume of the edge node, updated stop-first.
"""

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
from infra.app_stack.services import postgres as pg
from infra.app_stack.services import redis as rd
from infra.app_stack.services.common import (
    DATA_NETWORK,
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
    """The item_socket service: N replicas on Redis + PostgreSQL (scale-out) or one on SQLite; its
    JWT key (and the Redis and PostgreSQL passwords) as Docker secrets."""
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
    environment = {
        "ITEM_SOCKET_HOST": "0.0.0.0",
        "ITEM_SOCKET_PORT": str(PORT),
        "ITEM_SOCKET_DATA_DIR": "/data",
        # The secret's *path*, never its value: application secrets reach containers as files.
        "ITEM_SOCKET_AUTH_SECRET_FILE": JWT_SECRET_PATH,
        "ITEM_SOCKET_SHUTDOWN_GRACE": str(drain),
    }
    secrets = [FileMount(key=JWT_SECRET, target=JWT_SECRET, mode=0o444)]
    if settings.item_socket_scale_out:
        environment |= {
            "ITEM_SOCKET_REDIS_URL": rd.redis_url(settings),
            "ITEM_SOCKET_REDIS_PASSWORD_FILE": rd.PASSWORD_PATH,
            "ITEM_SOCKET_STORE_URL": pg.store_url(settings),
            "ITEM_SOCKET_STORE_PASSWORD_FILE": pg.PASSWORD_PATH,
        }
        # World-readable inside the container only: the image runs as a non-root user.
        secrets += [
            FileMount(key=rd.PASSWORD_SECRET, target=rd.PASSWORD_SECRET, mode=0o444),
            FileMount(key=pg.PASSWORD_SECRET, target=pg.PASSWORD_SECRET, mode=0o444),
        ]
        # Replicas share one ordered stream per document: a new task may serve a document while an
        # old one still does, so updates start the new task first and no client waits for a gap.
        # Documents are in PostgreSQL: no volume, no node to come back to.
        update = UpdatePolicy(order="start-first", monitor="30s")
        placement = ["node.platform.os == linux"]
        networks = [PUBLIC_NETWORK, MONITORING_NETWORK, DATA_NETWORK]
        volumes: list[VolumeMount] = []
    else:
        # stop-first: two processes must never serve one document from separate memories (each would
        # accept updates the other never sees, and both would write the same SQLite file). Clients
        # reconnect after the short gap.
        update = UpdatePolicy(order="stop-first", monitor="30s")
        # SQLite lives on a node-local named volume: the task must always come back on the same
        # node. The edge node is the one fixed, labelled node of every topology.
        placement = [EDGE_CONSTRAINT]
        networks = [PUBLIC_NETWORK, MONITORING_NETWORK]
        volumes = [VolumeMount(source=DATA_VOLUME, target="/data")]
    service = Service(
        name="item_socket",
        image=settings.images["item_socket"],
        environment=environment,
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
        placement=placement,
        networks=networks,
        replicas=settings.item_socket_replicas,
        update=update,
        secrets=secrets,
        volumes=volumes,
        labels=labels,
        # SIGTERM starts the drain; Docker's SIGKILL must come only after it has finished.
        stop_grace_period=f"{drain + 10}s",
    )
    return ServiceBundle(
        service=service,
        secrets=[SecretSpec(key=JWT_SECRET, description="HS256 key that signs item_socket's JWTs")],
        volumes=[] if settings.item_socket_scale_out else [DATA_VOLUME],
    )
