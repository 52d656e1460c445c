"""PostgreSQL: the document store item_socket's replicas share (scale-out only).

One replica on the node labelled `data=true`, its cluster on a named volume. The image
(images/postgres, Debian's postgresql-15) makes the role and database from POSTGRES_USER,
POSTGRES_DB and POSTGRES_PASSWORD_FILE, a generated Docker secret. Only on the internal `data`
overlay: never published. `max_connections` is sized for item_socket's replicas during a
start-first update (one more than configured) plus the backups and an operator's session.
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

NAME = "postgres"
PORT = 5432
USER = "item_socket"
DATABASE = "spaced"
PASSWORD_SECRET = "postgres_password"
PASSWORD_PATH = f"/run/secrets/{PASSWORD_SECRET}"
DATA_VOLUME = "postgres_data"
DATA_DIR = "/var/lib/postgresql/data"
CONNECTIONS_PER_REPLICA = 8
"""item_socket's pool holds at most 4 connections (store_postgres.py): twice that, for a replica
that reconnects while its old connections are still being closed."""
RESERVED_CONNECTIONS = 10
"""The backup and restore jobs (pg_dump, pg_restore: one each), psql sessions of an operator,
and PostgreSQL's 3 superuser-reserved slots."""


def store_url(settings: StackSettings) -> str:
    """The URL item_socket gets (no password in it: that is ITEM_SOCKET_STORE_PASSWORD_FILE)."""
    return f"postgresql://{USER}@{NAME}:{PORT}/{DATABASE}"


def max_connections(settings: StackSettings) -> int:
    """Connections the server accepts: every replica plus the one a start-first update adds."""
    return (settings.item_socket_replicas + 1) * CONNECTIONS_PER_REPLICA + RESERVED_CONNECTIONS


def postgres(settings: StackSettings) -> ServiceBundle:
    """The PostgreSQL service, its data volume and its password secret."""
    service = Service(
        name=NAME,
        image=settings.images[NAME],
        command=[
            "-c",
            f"max_connections={max_connections(settings)}",
            "-c",
            "shared_buffers=128MB",
            "-c",
            f"port={PORT}",
            # Durable commits: a snapshot item_socket was told is stored must survive a crash.
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "log_min_duration_statement=1000",
        ],
        environment={
            "POSTGRES_USER": USER,
            "POSTGRES_DB": DATABASE,
            # The secret's *path*: application secrets reach containers as files.
            "POSTGRES_PASSWORD_FILE": PASSWORD_PATH,
        },
        healthcheck=Healthcheck(
            test=["CMD", "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(PORT), "-U", USER, "-d", DATABASE],
            interval="5s",
            timeout="3s",
            retries=3,
            start_period="60s",
        ),
        resources=Resources(
            cpus_limit=1.0, memory_limit="1G", cpus_reservation=0.25, memory_reservation="256M"
        ),
        # The cluster lives on a node-local volume: the task must come back on the node that has it.
        placement=[DATA_CONSTRAINT],
        networks=[DATA_NETWORK],
        replicas=1,
        # stop-first: two servers must never open one data directory.
        update=UpdatePolicy(order="stop-first", monitor="30s"),
        secrets=[FileMount(key=PASSWORD_SECRET, target=PASSWORD_SECRET, mode=0o444)],
        volumes=[VolumeMount(source=DATA_VOLUME, target=DATA_DIR)],
        # SIGINT is the fast shutdown (SIGTERM would wait for item_socket's pooled connections);
        # the checkpoint it writes may take a while on a busy server.
        stop_signal="SIGINT",
        stop_grace_period="60s",
    )
    return ServiceBundle(
        service=service,
        secrets=[SecretSpec(key=PASSWORD_SECRET, description="PostgreSQL password of item_socket's store")],
        volumes=[DATA_VOLUME],
    )
