"""A scale-out replica's service side against a real redis-server and PostgreSQL: /readyz, /metrics.

The app runs in the test's event loop (aiohttp's TestServer), with ``--redis-url`` and
``--store-url``; the PostgreSQL cluster is the test's own where the test stops it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pycrdt import Doc, Text

from item_socket.keys import REGISTRY, STREAMS
from tests.servers import PostgresServer, RedisServer

from .conftest import RunningServer, ServerFactory

# A stopped PostgreSQL is noticed by the next probe (every STORE_PROBE_SECONDS), whose ping may
# wait up to the store's 10 s timeout for a connection; a restarted one once the pool reconnects.
READINESS_DEADLINE = 40.0


async def readiness(session: aiohttp.ClientSession, server: RunningServer) -> tuple[int, list[str]]:
    """(HTTP status, problems) of the server's /readyz."""
    async with session.get(server.http_url + "/readyz") as response:
        body = await response.json()
        return response.status, list(body.get("problems", []))


async def wait_for_readiness(
    session: aiohttp.ClientSession, server: RunningServer, status: int, seconds: float = READINESS_DEADLINE
) -> list[str]:
    """Poll /readyz until it answers ``status``; returns its problems. Fails after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        got, problems = await readiness(session, server)
        if got == status:
            return problems
        assert loop.time() < deadline, f"/readyz still {got} {problems} after {seconds} s"
        await asyncio.sleep(0.1)  # the polling period, not a synchronisation


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[PostgresServer]:
    """A PostgreSQL cluster of this test alone (it is stopped and started again), always removed."""
    server = PostgresServer()
    try:
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.remove)


def password_file(tmp_path: Path, postgres: PostgresServer) -> Path:
    path = tmp_path / "pg-password"
    path.write_text(postgres.password)
    return path


async def test_readyz_follows_postgresql_with_no_document_open(
    server_factory: ServerFactory,
    redis_server: RedisServer,
    own_postgres: PostgresServer,
    tmp_path: Path,
    session: aiohttp.ClientSession,
) -> None:
    server = await server_factory(
        redis_url=redis_server.url,
        store_url=own_postgres.url_without_password,
        store_password_file=password_file(tmp_path, own_postgres),
    )
    await wait_for_readiness(session, server, 200)
    await asyncio.to_thread(own_postgres.stop)
    problems = await wait_for_readiness(session, server, 503)
    assert problems == ["store failing"]
    assert not server.app[REGISTRY].rooms, "readiness must not wait for a document to be opened"
    await asyncio.to_thread(own_postgres.start)
    await wait_for_readiness(session, server, 200)


async def test_a_redis_outage_is_not_reported_as_a_store_failure(
    server_factory: ServerFactory,
    postgres_server: PostgresServer,
    tmp_path: Path,
    session: aiohttp.ClientSession,
) -> None:
    redis = await asyncio.to_thread(RedisServer(tmp_path / "redis").start)
    try:
        server = await server_factory(
            redis_url=redis.url,
            store_url=postgres_server.url_without_password,
            store_password_file=password_file(tmp_path, postgres_server),
        )
        await wait_for_readiness(session, server, 200)
        registry, streams = server.app[REGISTRY], server.app[STREAMS]
        assert streams is not None
        room = await registry.acquire("redis-outage")
        await asyncio.to_thread(redis.stop)
        source: Doc = Doc()
        source.get("t", type=Text).insert(0, "held while Redis is away")
        room.apply_update(source.get_update(), 0.0)
        assert not await registry.flush(), "an append to a stopped Redis succeeded"
        # A failed append is Redis' failure: PostgreSQL, which answers, is not blamed for it.
        assert registry.store_healthy
        assert await wait_for_readiness(session, server, 503) == ["redis unreachable"]
        assert registry.backlog() == 1, "the edit is held"
        await asyncio.to_thread(redis.start)
        await wait_for_readiness(session, server, 200)
        assert registry.store_healthy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READINESS_DEADLINE
        while registry.backlog():
            assert loop.time() < deadline, "the held edit was not appended once Redis returned"
            await asyncio.sleep(0.05)
        registry.release(room)
    finally:
        await asyncio.to_thread(redis.stop)
