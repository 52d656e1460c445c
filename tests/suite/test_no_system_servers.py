"""No test depends on the Redis and PostgreSQL servers Debian's packages run system-wide.

scripts/install-deps.sh installs `redis-server` and `postgresql`, whose packages start servers on
6379 and 5432 where systemd runs. The tests start their own (tests/servers.py, on free ports with
private directories) and the stack has its own in containers: a test must never pass, or fail,
because of a system server that happens to run.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.servers import PostgresServer, RedisServer

TESTS = Path(__file__).resolve().parents[1]
SYSTEM_ENDPOINTS = re.compile(
    r"(localhost|127\.0\.0\.1|\[::1\]):(6379|5432)\b|/var/run/(postgresql|redis)|/run/(postgresql|redis)/"
)


def test_the_server_fixtures_are_private(redis_server: RedisServer, postgres_server: PostgresServer) -> None:
    assert redis_server.port != 6379 and postgres_server.port != 5432
    # The server answering on the fixture's port is the one it started, in its own directory.
    assert redis_server.cli("CONFIG", "GET", "dir").splitlines()[1] == str(redis_server.directory)
    data_directory = postgres_server.psql("SHOW data_directory")
    assert data_directory == str(postgres_server.directory / "data")


def test_no_test_connects_to_a_system_server() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted([*TESTS.rglob("*.py"), *TESTS.rglob("*.mjs")])
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if SYSTEM_ENDPOINTS.search(line)
    ]
    assert not offenders, "tests must start their own servers (tests/servers.py):\n" + "\n".join(offenders)
