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
from prometheus_client.parser import text_string_to_metric_families
from pycrdt import Doc, Text

from item_socket.keys import REGISTRY, STREAMS
from item_socket.streams import updates_key
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


async def histogram_counts(
    session: aiohttp.ClientSession, server: RunningServer, name: str
) -> dict[str, float]:
    """Observation count of histogram ``name`` on /metrics, by its ``operation`` label ("" if none)."""
    async with session.get(server.http_url + "/metrics") as response:
        text = await response.text()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_count":
                counts[sample.labels.get("operation", "")] = sample.value
    return counts


def edit(text: str) -> bytes:
    """A Yjs update inserting ``text`` into a new document's text ``t``."""
    source: Doc = Doc()
    source.get("t", type=Text).insert(0, text)
    return source.get_update()


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


async def test_a_scale_out_flush_is_timed_as_redis_not_as_a_store_append(
    server_factory: ServerFactory,
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    tmp_path: Path,
    session: aiohttp.ClientSession,
) -> None:
    server = await server_factory(
        redis_url=redis_server.url,
        store_url=postgres_server.url_without_password,
        store_password_file=password_file(tmp_path, postgres_server),
    )
    registry = server.app[REGISTRY]
    name = f"timed-{tmp_path.name}"
    room = await registry.acquire(name)
    try:
        room.apply_update(edit("appended to Redis"), 0.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while registry.backlog() or redis_server.cli("XLEN", updates_key(name)) != "1":
            assert loop.time() < deadline, "the edit did not reach the document's stream"
            await asyncio.sleep(0.02)
        store = await histogram_counts(session, server, "item_socket_store_operation_seconds")
        # Only PostgreSQL calls: the load's snapshot read; the flush went to Redis, not the store.
        assert store.get("append", 0) == 0 and store.get("load", 0) == 0, store
        assert store["load_snapshot"] == 1, store
        redis = await histogram_counts(session, server, "item_socket_redis_seconds")
        assert redis[""] >= 2, "the load's XRANGE and the flush's XADD are Redis round trips"
        # The readiness probe's ping is a PostgreSQL round trip too, timed as one.
        deadline = loop.time() + 10
        while not (await histogram_counts(session, server, "item_socket_store_operation_seconds")).get(
            "ping"
        ):
            assert loop.time() < deadline, "no PostgreSQL ping was timed"
            await asyncio.sleep(0.1)
    finally:
        registry.release(room)


async def test_with_one_replica_the_store_histogram_times_sqlite(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = await server_factory()
    registry = server.app[REGISTRY]
    room = await registry.acquire("sqlite-timed")
    try:
        room.apply_update(edit("stored in SQLite"), 0.0)
        assert await registry.flush()
        store = await histogram_counts(session, server, "item_socket_store_operation_seconds")
        assert store.get("load") == 1 and store.get("append", 0) >= 1, store
        assert "ping" not in store, "nothing pings a store without the scale-out"
    finally:
        registry.release(room)
