"""`spaced backup` and `spaced restore` on the local stack: a wiped database comes back.

Documents are written through Traefik by real npm clients (enough edits that item_socket compacts
them into PostgreSQL snapshots), backed up with `spaced backup local` (a job on the PostgreSQL node,
verified in a scratch database), the database is wiped (its tables dropped), and `spaced restore
local <file> --yes` brings the same documents back: the same names with their snapshots in the
database, and every edit when a fresh client opens them. The backup's figures reach Prometheus
through node-exporter's textfile collector.
"""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid

import pytest

from tests.support import docker, http_json, wait_until

from .conftest import STACK, LocalStack, load_harness, spaced

pytestmark = [pytest.mark.docker, pytest.mark.slow]

harness = load_harness()
DOCS = 3
EDITS_PER_DOC = 520
"""More than item_socket's compact_after (500): the stream is compacted into a PostgreSQL snapshot."""


def postgres_container() -> str:
    """The local stack's PostgreSQL container."""
    ids = docker(
        "ps",
        "-q",
        "--filter",
        f"label=com.docker.swarm.service.name={STACK}_postgres",
        "--filter",
        "status=running",
    ).stdout.split()
    assert len(ids) == 1, f"expected one running postgres container, found {ids}"
    return ids[0]


def psql(sql: str) -> str:
    """SQL as the superuser over the container's own unix socket (an operator's `docker exec`)."""
    return docker(
        "exec", postgres_container(), "psql", "-U", "postgres", "-d", "spaced", "-X", "-A", "-t", "-q",
        "-v", "ON_ERROR_STOP=1", "-c", sql, check=True,
    ).stdout.strip()  # fmt: skip


def stored(prefix: str) -> dict[str, int]:
    """Documents named `prefix*` in PostgreSQL with their snapshot's size."""
    rows = psql(
        f"SELECT name || '|' || length(snapshot) FROM documents WHERE name LIKE '{prefix}%' ORDER BY name"
    )
    return {name: int(size) for name, size in (row.split("|") for row in rows.splitlines() if row)}


def test_spaced_restore_brings_a_wiped_database_back(local_stack: LocalStack) -> None:
    prefix = f"e2e-backup-{uuid.uuid4().hex[:8]}-"
    names = [f"{prefix}{i}" for i in range(DOCS)]
    token = local_stack.token(f"{prefix}*")
    keys = {f"k{i}" for i in range(EDITS_PER_DOC)}
    with harness.agents(1) as (agent,):
        for name in names:
            writer = agent.open(f"writer-{name}", "ws", local_stack.url, name, token=token)
            writer.wait_synced(timeout=30)
            writer.ops([{"op": "map_set", "key": key, "value": 1} for key in sorted(keys)])
        wait_until(
            lambda: len(stored(prefix)) == DOCS and all(stored(prefix).values()),
            120,
            f"{DOCS} compacted documents in PostgreSQL",
            interval=1,
        )
    before = stored(prefix)

    started = time.monotonic()
    backup = spaced(["backup", "local"], local_stack.environment(), timeout=600)
    backup_seconds = time.monotonic() - started
    assert backup.returncode == 0, backup.stdout + backup.stderr
    file = re.search(r"^backup (\S+\.dump)$", backup.stdout, re.MULTILINE)
    documents = re.search(r"^  documents  (\d+) ", backup.stdout, re.MULTILINE)
    size = re.search(r"^  size       (\d+) bytes", backup.stdout, re.MULTILINE)
    assert file and documents and size, backup.stdout
    assert int(documents.group(1)) >= DOCS

    # The figures reach Prometheus through node-exporter's textfile collector (scraped every 15 s).
    # (Series of an exporter task of an earlier deploy may linger for minutes: ask for this one's.)
    def exported(query: str) -> list[dict]:
        url = f"{local_stack.prometheus_url}/api/v1/query?query={urllib.parse.quote(query)}"
        return http_json(url)["data"]["result"]

    series = wait_until(
        lambda: exported(f"spaced_backup_last_size_bytes == {size.group(1)}"),
        60,
        "the manual backup's size in Prometheus",
        interval=1,
    )[0]
    instance = series["metric"]["instance"]
    for metric, value in (
        ("spaced_backup_last_verify_ok", 1),
        ("spaced_backup_last_documents", documents.group(1)),
    ):
        [sample] = exported(f'{metric}{{instance="{instance}", job="node"}}')
        assert float(sample["value"][1]) == float(value), (metric, sample)

    # Wiped: every table item_socket made is gone.
    psql("DROP TABLE documents, document_updates, item_socket_schema")
    assert psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"

    refused = spaced(["restore", "local", file.group(1)], local_stack.environment(), timeout=60)
    assert refused.returncode == 1 and "ConfirmationNeeded" in refused.stderr

    started = time.monotonic()
    restore = spaced(["restore", "local", file.group(1), "--yes"], local_stack.environment(), timeout=600)
    restore_seconds = time.monotonic() - started
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert f": {documents.group(1)} documents" in restore.stdout, restore.stdout
    assert stored(prefix) == before, "the restored database holds other documents than the backup's"
    print(
        f"\nbackup {file.group(1)}: {size.group(1)} bytes, {documents.group(1)} documents, "
        f"{backup_seconds:.1f}s; restore of the wiped database {restore_seconds:.1f}s "
        "(item_socket stopped and started again)"
    )

    # item_socket is back (with its replicas) and serves every edit from the restored snapshots.
    with harness.agents(1) as (agent,):
        for name in names:
            reader = agent.open(
                f"reader-{name}", "sio", local_stack.url, name, token=token, withCredentials=True
            )
            reader.wait_state(
                lambda state: state["synced"] and set(state["map"]) == keys,
                90,
                f"every edit of {name} after the restore",
                digest_only=True,
            )
