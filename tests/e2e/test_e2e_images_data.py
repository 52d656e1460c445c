"""The Redis and PostgreSQL images of the scale-out, and the backup script, on the real engine.

Plain containers on a private bridge network (no swarm): each image gets its password from a file
mounted where the stack mounts its Docker secret, with the arguments the stack renders. The backup
script (`spaced-backup` in the postgres image) backs up, verifies, rejects and restores for real.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.app_stack.environments import settings_for_environment
from infra.app_stack.render import render_stack
from tests.support import DockerEngine, docker, wait_until

pytestmark = pytest.mark.docker

REDIS_PASSWORD = "redis-test-" + uuid.uuid4().hex
POSTGRES_PASSWORD = "pg-test-" + uuid.uuid4().hex
RESULT_MARKER = "SPACED_BACKUP_RESULT "


@pytest.fixture(scope="module")
def data_images(docker_engine: DockerEngine) -> dict[str, str]:
    """The redis and postgres images, built (or found by their content tags) with infra.images."""
    from infra.images import build_local_images

    return build_local_images(progress=print, services=("redis", "postgres"))


@dataclass
class Sandbox:
    """A private bridge network, and the containers and volumes a test made on it (all removed)."""

    network: str
    secrets: Path
    containers: list[str]
    volumes: list[str]

    def secret(self, name: str, content: str) -> str:
        """A file as the stack's Docker secret would be (world-readable, root-owned); returns its path."""
        path = self.secrets / name
        path.write_text(content)
        path.chmod(0o444)
        return str(path)

    def volume(self) -> str:
        """A new named volume (removed at the end)."""
        name = f"spaced-test-{uuid.uuid4().hex[:10]}"
        self.volumes.append(name)
        return name

    def run(self, *args: str, name: str | None = None) -> str:
        """`docker run -d` on the network; returns the container's name."""
        name = name or f"spaced-test-{uuid.uuid4().hex[:10]}"
        docker("run", "-d", "--name", name, "--network", self.network, "--health-interval", "1s", *args)
        self.containers.append(name)
        return name


@pytest.fixture
def sandbox(docker_engine: DockerEngine, tmp_path: Path) -> Iterator[Sandbox]:
    """A bridge network for the test's containers; every container, volume and the network removed."""
    network = f"spaced-test-{uuid.uuid4().hex[:10]}"
    docker("network", "create", network)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    secrets.chmod(0o755)
    tmp_path.chmod(0o755)
    box = Sandbox(network=network, secrets=secrets, containers=[], volumes=[])
    try:
        yield box
    finally:
        for container in box.containers:
            docker("rm", "-f", "-v", container, check=False)
        if box.volumes:
            docker("volume", "rm", "-f", *box.volumes, check=False)
        docker("network", "rm", network, check=False)


def health(container: str) -> str:
    """Docker's health status of the container (its image's or the run's healthcheck)."""
    return docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()


def wait_healthy(container: str, timeout: float = 90) -> None:
    """Wait until the container's healthcheck passes; fail with its log lines otherwise."""

    def healthy() -> bool:
        state = docker("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
        if state in {"exited", "dead"}:
            raise AssertionError(f"{container} {state}: {docker('logs', container, check=False).stderr}")
        return health(container) == "healthy"

    try:
        wait_until(healthy, timeout, f"{container} to be healthy", interval=0.5)
    except AssertionError:
        logs = docker("logs", "--tail", "40", container, check=False)
        print(logs.stdout + logs.stderr)
        raise


def stack_service(name: str) -> dict:
    """The rendered local stack's compose entry of a service (its command and environment)."""
    return render_stack(settings_for_environment("local", env={})).compose["services"][name]


def test_redis_image_needs_its_password_keeps_an_aof_and_never_evicts(
    data_images: dict[str, str], sandbox: Sandbox
) -> None:
    service = stack_service("redis")
    secret = sandbox.secret("redis_password", REDIS_PASSWORD)
    volume = sandbox.volume()
    container = sandbox.run(
        "-v", f"{secret}:/run/secrets/redis_password:ro", "-v", f"{volume}:/data",
        "-e", f"REDIS_PASSWORD_FILE={service['environment']['REDIS_PASSWORD_FILE']}",
        data_images["redis"], *service["command"],
    )  # fmt: skip
    wait_healthy(container)

    def cli(*args: str, password: str | None = REDIS_PASSWORD) -> str:
        env = ["-e", f"REDISCLI_AUTH={password}"] if password else []
        return docker("exec", *env, container, "redis-cli", "--no-auth-warning", *args).stdout.strip()

    assert cli("ping", password=None).startswith("NOAUTH"), "an unauthenticated client must be refused"
    assert cli("ping", password="wrong") != "PONG"
    assert cli("ping") == "PONG"
    # One setting per call: `CONFIG GET *` lists pairs in hash order, and an empty value last
    # loses its line to the strip (the pairs then no longer pair up).
    settings = {
        name: cli("config", "get", name).split("\n")[1]
        for name in ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory")
    }
    assert settings["appendonly"] == "yes" and settings["appendfsync"] == "everysec"
    assert settings["maxmemory-policy"] == "noeviction"
    assert int(settings["maxmemory"]) > 0, "a memory cap: writes fail cleanly instead of an OOM kill"
    # Never in argv, where `ps` and `docker inspect` would show it.
    cmdline = docker("exec", container, "cat", "/proc/1/cmdline").stdout
    assert REDIS_PASSWORD not in cmdline and "redis-server" in cmdline
    assert docker("exec", container, "id", "-un").stdout.strip() == "redis"

    entry = cli("xadd", "doc:test", "*", "update", "abc")
    docker("restart", "--time", "20", container)
    wait_healthy(container)
    assert cli("xrange", "doc:test", "-", "+").split("\n")[:1] == [entry], "the stream survives a restart"


@dataclass
class Postgres:
    """A PostgreSQL container of the image, as the stack runs it, and how to reach it."""

    container: str
    name: str
    secret: str
    image: str

    def psql(self, sql: str) -> str:
        """Run SQL as the application's role over TCP with its password (what item_socket does)."""
        result = docker(
            "exec", "-e", f"PGPASSWORD={POSTGRES_PASSWORD}", self.container, "psql", "-h", "127.0.0.1",
            "-U", "item_socket", "-d", "spaced", "-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-q", "-c", sql,
        )  # fmt: skip
        return result.stdout.strip()


@pytest.fixture
def postgres(data_images: dict[str, str], sandbox: Sandbox) -> Postgres:
    """The postgres image with the stack's environment and arguments, healthy."""
    service = stack_service("postgres")
    secret = sandbox.secret("postgres_password", POSTGRES_PASSWORD)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    environment = [arg for key, value in service["environment"].items() for arg in ("-e", f"{key}={value}")]
    data = f"{sandbox.volume()}:/var/lib/postgresql/data"
    container = sandbox.run(
        "-v", f"{secret}:/run/secrets/postgres_password:ro", "-v", data,
        *environment, data_images["postgres"], *service["command"], name=name,
    )  # fmt: skip
    wait_healthy(container)
    return Postgres(container=container, name=name, secret=secret, image=data_images["postgres"])


def test_postgres_image_makes_its_role_and_database_from_the_password_file(postgres: Postgres) -> None:
    assert postgres.psql("SELECT current_user || ' ' || current_database()") == "item_socket spaced"
    connections = int(postgres.psql("SHOW max_connections"))
    assert connections == int(stack_service("postgres")["command"][1].split("=")[1])
    wrong = docker(
        "exec", "-e", "PGPASSWORD=wrong", postgres.container, "psql", "-h", "127.0.0.1", "-U",
        "item_socket", "-d", "spaced", "-c", "SELECT 1", check=False,
    )  # fmt: skip
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
    assert docker("exec", postgres.container, "id", "-un").stdout.strip() == "postgres"
    # A restart keeps the data and runs the setup again (idempotent).
    postgres.psql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    docker("restart", "--time", "30", postgres.container)
    wait_healthy(postgres.container)
    assert postgres.psql("SELECT x FROM kept") == "42"


def run_backup(
    sandbox: Sandbox, postgres: Postgres, backups: str, metrics: str, *command: str, **env: str
) -> tuple[int, dict, str]:
    """`spaced-backup <command>` in a one-off container of the backup service's shape; returns its
    exit code, its result line (JSON) and its output."""
    service = stack_service("backup")
    environment = {**service["environment"], "PGHOST": postgres.name, **env}
    args = [arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")]
    mounts = [
        f"{postgres.secret}:/run/secrets/postgres_password:ro",
        f"{backups}:/backups",
        f"{metrics}:/metrics",
    ]
    result = docker(
        "run", "--rm", "--network", sandbox.network, *(arg for mount in mounts for arg in ("-v", mount)),
        *args, postgres.image, "spaced-backup", *command, check=False, timeout=180,
    )  # fmt: skip
    output = result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    parsed = json.loads(lines[-1].removeprefix(RESULT_MARKER)) if lines else {}
    return result.returncode, parsed, output


def metrics_of(postgres: Postgres, metrics: str) -> dict[str, float]:
    """The backup's textfile-collector file, as node-exporter would read it."""
    text = docker(
        "run", "--rm", "-v", f"{metrics}:/metrics:ro", "--entrypoint", "cat", postgres.image,
        "/metrics/spaced_backup.prom",
    ).stdout  # fmt: skip
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}


def test_backup_is_verified_rejected_when_unusable_and_restores_a_wiped_database(
    sandbox: Sandbox, postgres: Postgres
) -> None:
    backups, metrics = sandbox.volume(), sandbox.volume()
    # An empty database: its dump is under the default floor (it is about 870 bytes).
    code, result, output = run_backup(sandbox, postgres, backups, metrics, "once", "manual")
    assert code == 1 and result.get("ok") is False, output
    assert "less than the floor" in result["error"]
    assert metrics_of(postgres, metrics)["spaced_backup_last_verify_ok"] == 0
    # Without a floor it gets as far as the verification, which finds no documents table.
    code, result, output = run_backup(
        sandbox, postgres, backups, metrics, "once", "manual", BACKUP_MIN_BYTES="0"
    )
    assert code == 1 and "documents table" in result["error"], output
    exported = metrics_of(postgres, metrics)
    assert exported["spaced_backup_last_verify_ok"] == 0
    assert exported["spaced_backup_last_success_timestamp_seconds"] == 0

    postgres.psql(
        "CREATE TABLE documents (name text PRIMARY KEY, snapshot bytea NOT NULL);"
        "INSERT INTO documents SELECT 'doc-' || i, sha256(i::text::bytea) FROM generate_series(1, 25) i"
    )
    before = postgres.psql(
        "SELECT string_agg(name || ':' || encode(snapshot, 'hex'), ',' ORDER BY name) FROM documents"
    )
    code, result, output = run_backup(sandbox, postgres, backups, metrics, "once", "manual")
    assert code == 0 and result["ok"] is True, output
    assert result["documents"] == 25 and result["file"].endswith("-manual.dump")
    assert result["size"] >= 1024
    exported = metrics_of(postgres, metrics)
    assert exported["spaced_backup_last_verify_ok"] == 1
    assert exported["spaced_backup_last_documents"] == 25
    assert exported["spaced_backup_last_size_bytes"] == result["size"]
    assert exported["spaced_backup_last_success_timestamp_seconds"] > 0
    print(f"\nbackup of 25 documents: {result['size']} bytes ({result['file']})")

    # A floor above the dump's size: reported as too small, and not counted as a success.
    succeeded_at = exported["spaced_backup_last_success_timestamp_seconds"]
    code, small, output = run_backup(
        sandbox, postgres, backups, metrics, "once", "manual", BACKUP_MIN_BYTES=str(10 * result["size"])
    )
    assert code == 1 and "less than the floor" in small["error"], output
    exported = metrics_of(postgres, metrics)
    assert exported["spaced_backup_last_verify_ok"] == 0
    assert exported["spaced_backup_last_success_timestamp_seconds"] == succeeded_at

    # Wiped: the tables are gone. The backup brings back the same documents.
    postgres.psql("DROP TABLE documents")
    code, restored, output = run_backup(sandbox, postgres, backups, metrics, "restore", result["file"])
    assert code == 0 and restored["documents"] == 25, output
    after = postgres.psql(
        "SELECT string_agg(name || ':' || encode(snapshot, 'hex'), ',' ORDER BY name) FROM documents"
    )
    assert after == before

    code, _, output = run_backup(sandbox, postgres, backups, metrics, "restore", "../etc/passwd")
    assert code == 1 and "not a backup file name" in output
