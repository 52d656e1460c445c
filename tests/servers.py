"""Real Redis and PostgreSQL servers for the tests, each in a temporary directory on 127.0.0.1.

The Debian packages (`redis-server`, `postgresql`) are installed by scripts/install-deps.sh; these
helpers start private instances on free ports, so no system service and no state is shared with
anything else on the machine. Every start waits for the server to answer (bounded), and every
``stop`` ends the process (SIGTERM, then SIGKILL after a bound).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import free_port, wait_until

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@dataclass
class RedisServer:
    """A private ``redis-server`` on 127.0.0.1:``port`` with its data (AOF on) in ``directory``.

    ``maxmemory_policy`` is what the server starts with (item_socket refuses the evicting ones);
    ``maxmemory`` (e.g. ``"3mb"``) caps its memory. ``restart()`` keeps the data directory: what
    AOF saved comes back.
    """

    directory: Path
    port: int = field(default_factory=lambda: free_port("127.0.0.1"))
    maxmemory_policy: str = "noeviction"
    maxmemory: str = "0"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait (at most 20 s) until it accepts connections."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "/usr/bin/redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--maxmemory-policy",
                self.maxmemory_policy,
                "--maxmemory",
                self.maxmemory,
                "--protected-mode",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        process = self.process
        wait_until(
            lambda: _answers(self.port) or (process.poll() is not None and self._died()),
            20,
            f"redis-server on port {self.port}",
        )
        return self

    def _died(self) -> bool:
        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        raise AssertionError(f"redis-server exited: {log}")

    def stop(self) -> None:
        """Stop the server (SIGTERM: it writes its AOF), bounded."""
        if self.process is not None:
            _stop_process(self.process)
            self.process = None

    def kill(self) -> None:
        """SIGKILL the server (no shutdown work)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        """Stop, then start again on the same port with the same data."""
        self.stop()
        wait_until(lambda: not _answers(self.port), 10, f"port {self.port} to close")
        self.start()

    def cli(self, *args: str) -> str:
        """Run ``redis-cli`` against this server; returns its stdout, raises on failure."""
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=20
        )
        if result.returncode != 0:
            raise AssertionError(f"redis-cli {' '.join(args)}: {result.stderr}")
        return result.stdout.strip()


@dataclass
class PostgresServer:
    """A private PostgreSQL 15 cluster on 127.0.0.1:``port`` in ``directory``, run as ``postgres``.

    ``initdb`` refuses to run as root, so the cluster belongs to the Debian package's ``postgres``
    user, and ``directory`` (default: a new one under /tmp) must be reachable by that user, which
    pytest's private temporary directories are not. Local TCP connections use password
    authentication (``user``/``password``).
    """

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="spaced-pg-")))
    port: int = field(default_factory=lambda: free_port("127.0.0.1"))
    user: str = "spaced"
    password: str = "test-password"
    database: str = "spaced"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """A libpq URL with the password in it (the tests' servers only)."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def url_without_password(self) -> str:
        """The URL item_socket gets with ``--store-password-file``."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _as_postgres(self, *argv: str, timeout: float = 60) -> str:
        owner = pwd.getpwnam("postgres")

        def demote() -> None:
            os.setgid(owner.pw_gid)
            os.setuid(owner.pw_uid)

        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=demote if os.geteuid() == 0 else None,
            cwd="/tmp",
        )
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed: {result.stderr or result.stdout}")
        return result.stdout

    def start(self) -> PostgresServer:
        """initdb (first time), start the server, create the user and database; bounded waits."""
        data = self.directory / "data"
        if not (data / "PG_VERSION").exists():
            self.directory.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                owner = pwd.getpwnam("postgres")
                os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            pwfile = self.directory / "pw"
            pwfile.write_text(self.password)
            if os.geteuid() == 0:
                os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
            self._as_postgres(
                str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8",
            )  # fmt: skip
            pwfile.unlink()
            created = True
        else:
            created = False
        owner = pwd.getpwnam("postgres")

        def demote() -> None:
            os.setgid(owner.pw_gid)
            os.setuid(owner.pw_uid)

        self.process = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.directory}",
                "-c",
                "fsync=on",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.directory / "postgres.log", "ab"),
            preexec_fn=demote if os.geteuid() == 0 else None,
            cwd="/tmp",
        )
        wait_until(lambda: self._ready(), 30, f"postgres on port {self.port}")
        if created:
            self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'", database="postgres")
            self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}", database="postgres")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.directory / "postgres.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"postgres exited: {log}")
        result = subprocess.run(
            [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            timeout=10,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run ``sql`` as the superuser over the cluster's unix socket; returns psql's unaligned output."""
        return self._as_postgres(
            "psql", "-h", str(self.directory), "-p", str(self.port), "-U", "postgres", "-d",
            database or self.database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
        ).strip()  # fmt: skip

    def stop(self) -> None:
        """Fast shutdown (SIGINT), bounded."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Stop and start on the same port with the same data."""
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def reset(self) -> None:
        """Drop and re-create the test database (each test starts from an empty store)."""
        self.psql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.database}' "
            "AND pid <> pg_backend_pid()",
            database="postgres",
        )
        self.psql(f"DROP DATABASE IF EXISTS {self.database}", database="postgres")
        self.psql(f"CREATE DATABASE {self.database} OWNER {self.user}", database="postgres")


@contextlib.contextmanager
def running(server: RedisServer | PostgresServer) -> Iterator[RedisServer | PostgresServer]:
    """Start ``server``, yield it, always stop it."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_port_closed(port: int, timeout: float = 10) -> None:
    """Wait until nothing accepts on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    wait_until(lambda: not _answers(port), max(0.1, deadline - time.monotonic()), f"port {port} closed")
