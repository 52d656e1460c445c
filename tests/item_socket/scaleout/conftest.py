"""Fixtures of the scale-out tests: three item_socket replicas sharing a real Redis and PostgreSQL.

The replicas are real ``python -m item_socket`` processes on their own ports; ``front`` is a real
nginx balancing WebSocket connections over them (round robin, next replica on a refused
connection), so clients of a killed replica reconnect to another one as they would behind Traefik.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.item_socket.e2e.harness import HarnessError, ServerProcess
from tests.servers import PostgresServer, RedisServer
from tests.support import free_port, wait_until

REPLICAS = 3
# Fast unloads (documents reload and compact often), small compaction threshold, short presence
# timeout (a dead replica's users vanish within seconds), short shutdown.
REPLICA_ARGS = (
    "--unload-grace", "1",
    "--compact-after", "50",
    "--awareness-timeout", "4",
    "--shutdown-grace", "5",
    "--log-level", "INFO",
)  # fmt: skip


class Cluster:
    """Replicas of one scale-out deployment: ``replicas[i]`` are ServerProcess objects."""

    def __init__(self, base: Path, redis: RedisServer, postgres: PostgresServer) -> None:
        self.base = base
        self.redis = redis
        self.postgres = postgres
        password_file = base / "postgres-password"
        password_file.write_text(postgres.password + "\n")
        self.args = (
            "--redis-url", redis.url,
            "--store-url", postgres.url_without_password,
            "--store-password-file", str(password_file),
            *REPLICA_ARGS,
        )  # fmt: skip
        self.replicas = [
            ServerProcess(base / f"replica{i}", log_dir=base, extra_args=self.args) for i in range(REPLICAS)
        ]

    def start(self) -> None:
        """Start every replica that is not running (waits until each answers /healthz)."""
        for replica in self.replicas:
            if not replica.alive():
                replica.start()

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def ready(self, replica: ServerProcess) -> bool:
        """True when ``replica`` answers /readyz with 200."""
        return replica.http_status("/readyz") == 200

    def metric_sum(self, name: str, **labels: str) -> float:
        """Sum of a metric over the running replicas."""
        return sum(r.metric(name, **labels) for r in self.replicas if r.alive())

    def logs(self) -> str:
        return "\n".join(f"===== replica :{r.port} =====\n{r.stderr_text(4000)}" for r in self.replicas)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, postgres_server: PostgresServer
) -> Iterator[Cluster]:
    """Three replicas for the module's tests (each test uses documents of its own)."""
    cluster = Cluster(tmp_path_factory.mktemp("scaleout"), redis_server, postgres_server)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def replicas(cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster, all replicas running and ready; their logs shown if the test fails."""
    cluster.start()
    for replica in cluster.replicas:
        wait_until(lambda r=replica: cluster.ready(r), 20, f"replica :{replica.port} ready")
    yield cluster
    print(cluster.logs())


NGINX_CONF = """
daemon off;
worker_processes 1;
error_log {base}/nginx-error.log warn;
pid {base}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {base}/body;
    proxy_temp_path {base}/proxy;
    fastcgi_temp_path {base}/fastcgi;
    uwsgi_temp_path {base}/uwsgi;
    scgi_temp_path {base}/scgi;
    upstream replicas {{
{servers}
    }}
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 300s;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


class Front:
    """A real nginx on 127.0.0.1:``port`` balancing over the cluster's replicas."""

    def __init__(self, base: Path, cluster: Cluster) -> None:
        self.base = base
        self.port = free_port("127.0.0.1")
        servers = "\n".join(f"        server 127.0.0.1:{r.port} max_fails=0;" for r in cluster.replicas)
        self.conf = base / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(base=base, servers=servers, port=self.port))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen(
            [nginx, "-c", str(self.conf), "-p", str(self.base)],
            stdout=subprocess.DEVNULL,
            stderr=(self.base / "nginx-stderr.log").open("ab"),
        )

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(f"nginx exited: {(self.base / 'nginx-stderr.log').read_text()}")
            import socket

            with socket.socket() as probe:
                probe.settimeout(0.5)
                return probe.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(answers, 15, "nginx in front of the replicas")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def front(tmp_path: Path, replicas: Cluster) -> Iterator[Front]:
    """nginx in front of the running replicas (WebSocket transports only: no sticky sessions)."""
    front = Front(tmp_path, replicas)
    front.start()
    try:
        yield front
    finally:
        front.stop()
