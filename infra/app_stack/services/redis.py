"""Redis: the Redis Streams that carry item_socket's updates between its replicas (scale-out only).

One replica on the node labelled `data=true`, its append-only file on a named volume (AOF on,
fsync every second), `maxmemory-policy noeviction` (item_socket refuses any policy that could evict
its streams: an evicted stream is a lost edit) with a memory cap under the container's limit, so a
full Redis refuses writes instead of being killed. The password is a generated Docker secret the
image's entrypoint feeds to the server on stdin. Only on the internal `data` overlay: never
published, never on Traefik's network.
"""

from __future__ import annotations

from infra.app_stack.model import (
    FileMount,
    Healthcheck,
    Resources,
    SecretSpec,
    Service,
    ServiceBundle,
    StackSettings,
    UpdatePolicy,
    VolumeMount,
)
from infra.app_stack.services.common import DATA_CONSTRAINT, DATA_NETWORK

NAME = "redis"
PORT = 6379
DATABASE = 0
PASSWORD_SECRET = "redis_password"
PASSWORD_PATH = f"/run/secrets/{PASSWORD_SECRET}"
DATA_VOLUME = "redis_data"
MEMORY_LIMIT_MB = 512
MAXMEMORY_MB = MEMORY_LIMIT_MB * 3 // 4
"""Redis' own cap: a quarter of the container's limit is left for the AOF rewrite's fork and buffers."""


def redis_url(settings: StackSettings) -> str:
    """The URL item_socket gets (no password in it: that is ITEM_SOCKET_REDIS_PASSWORD_FILE)."""
    return f"redis://{NAME}:{PORT}/{DATABASE}"


def redis(settings: StackSettings) -> ServiceBundle:
    """The Redis service, its data volume and its password secret."""
    service = Service(
        name=NAME,
        image=settings.images[NAME],
        command=[
            "--port",
            str(PORT),
            "--dir",
            "/data",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            # AOF only: no RDB snapshots besides the AOF's own base file.
            "--save",
            "",
            "--maxmemory",
            f"{MAXMEMORY_MB}mb",
            "--maxmemory-policy",
            "noeviction",
        ],
        environment={"REDIS_PASSWORD_FILE": PASSWORD_PATH},
        healthcheck=Healthcheck(
            test=["CMD", "/usr/local/bin/redis-healthcheck"],
            interval="5s",
            timeout="3s",
            retries=3,
            start_period="30s",
        ),
        resources=Resources(
            cpus_limit=1.0,
            memory_limit=f"{MEMORY_LIMIT_MB}M",
            cpus_reservation=0.1,
            memory_reservation="64M",
        ),
        # The AOF lives on a node-local volume: the task must come back on the node that has it.
        placement=[DATA_CONSTRAINT],
        networks=[DATA_NETWORK],
        replicas=1,
        # stop-first: two servers must never write one AOF. item_socket rides out the restart
        # (its replicas reconnect and resync; /readyz says 503 meanwhile).
        update=UpdatePolicy(order="stop-first", monitor="20s"),
        secrets=[FileMount(key=PASSWORD_SECRET, target=PASSWORD_SECRET, mode=0o444)],
        volumes=[VolumeMount(source=DATA_VOLUME, target="/data")],
        # SIGTERM: Redis fsyncs the AOF before it exits; give a large one time to finish.
        stop_grace_period="30s",
    )
    return ServiceBundle(
        service=service,
        secrets=[SecretSpec(key=PASSWORD_SECRET, description="Redis password of item_socket's scale-out")],
        volumes=[DATA_VOLUME],
    )
