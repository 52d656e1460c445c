"""backup: scheduled, verified pg_dump of the stack's PostgreSQL database (scale-out only).

The postgres image's `spaced-backup schedule` (images/postgres/backup.sh): every
`backup_interval_seconds` a custom-format dump goes to the `postgres_backups` volume on the
PostgreSQL node (`data=true`), is restored into a scratch cluster inside this container and its
documents counted; the newest `backup_keep` scheduled dumps stay. The outcome is written for
node-exporter's textfile collector on the `backup_metrics` volume, which node-exporter on the same
node mounts read-only: no extra exporter and no push gateway, and the figures outlive the container.
`spaced backup` / `spaced restore` run the same script as one-off swarm jobs with this service's spec.
"""

from __future__ import annotations

from infra.app_stack.model import (
    FileMount,
    Healthcheck,
    Resources,
    Service,
    ServiceBundle,
    StackSettings,
    UpdatePolicy,
    VolumeMount,
)
from infra.app_stack.services import postgres as pg
from infra.app_stack.services.common import DATA_CONSTRAINT, DATA_NETWORK

NAME = "backup"
BACKUPS_VOLUME = "postgres_backups"
BACKUPS_DIR = "/backups"
METRICS_VOLUME = "backup_metrics"
METRICS_DIR = "/metrics"
METRICS_FILE = "spaced_backup.prom"
SCRIPT = "spaced-backup"


def backup(settings: StackSettings) -> ServiceBundle:
    """The backup scheduler service and its two volumes (dumps, metrics)."""
    service = Service(
        name=NAME,
        image=settings.images["postgres"],
        command=[SCRIPT, "schedule"],
        environment={
            "PGHOST": pg.NAME,
            "PGPORT": str(pg.PORT),
            "PGUSER": pg.USER,
            "PGDATABASE": pg.DATABASE,
            "POSTGRES_PASSWORD_FILE": pg.PASSWORD_PATH,
            "BACKUP_DIR": BACKUPS_DIR,
            "BACKUP_METRICS_DIR": METRICS_DIR,
            "BACKUP_INTERVAL": str(settings.backup_interval_seconds),
            "BACKUP_KEEP": str(settings.backup_keep),
            "BACKUP_MIN_BYTES": str(settings.backup_min_bytes),
        },
        # The scheduler's heartbeat (touched at least every 30 s while it waits). Checked every 5 s:
        # swarm calls the task running (and a deploy done) only after its first passing check.
        healthcheck=Healthcheck(
            test=["CMD", SCRIPT, "health"], interval="5s", timeout="5s", retries=3, start_period="30s"
        ),
        # The scratch cluster that verifies each dump runs inside this container.
        resources=Resources(
            cpus_limit=0.5, memory_limit="512M", cpus_reservation=0.02, memory_reservation="32M"
        ),
        # Next to PostgreSQL: the backups volume is on the database's node.
        placement=[DATA_CONSTRAINT],
        networks=[DATA_NETWORK],
        replicas=1,
        # One scheduler at a time (a dump in progress is cut short by the update; the next one runs).
        update=UpdatePolicy(order="stop-first", monitor="10s"),
        secrets=[FileMount(key=pg.PASSWORD_SECRET, target=pg.PASSWORD_SECRET, mode=0o444)],
        volumes=[
            VolumeMount(source=BACKUPS_VOLUME, target=BACKUPS_DIR),
            VolumeMount(source=METRICS_VOLUME, target=METRICS_DIR),
        ],
        # The scheduler exits on SIGTERM (a dump in progress is cut short and retried next time).
        stop_grace_period="10s",
    )
    # The password secret is declared by the postgres service's bundle.
    return ServiceBundle(service=service, volumes=[BACKUPS_VOLUME, METRICS_VOLUME])
