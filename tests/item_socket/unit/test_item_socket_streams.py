"""The scale-out's parts against a real redis-server and PostgreSQL: store, streams, fencing, loads.

No item_socket process here: DocumentStreams and PostgresStore objects in the test's event loop,
several of them standing for several replicas.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pycrdt import Doc, Map, Text
from redis import Redis as SyncRedis

from item_socket import streams as streams_module
from item_socket.metrics import Metrics
from item_socket.rooms import RoomRegistry
from item_socket.store import Snapshot, StoreError
from item_socket.store_postgres import PostgresStore
from item_socket.streams import (
    FENCE_KEY,
    DocumentStreams,
    ScaleOutError,
    lock_key,
    redis_refusal,
    updates_key,
)
from tests.servers import PostgresServer, RedisServer

from .support import wait_until


def text_update(doc: Doc, text: str) -> bytes:
    before = doc.get_state()
    doc.get("t", type=Text).insert(len(str(doc.get("t", type=Text))), text)
    return doc.get_update(before)


def text_of(updates: list[bytes]) -> str:
    doc: Doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("t", type=Text))


def holds_only_the_notice(client: SyncRedis, name: str) -> bool:
    """True when ``name``'s stream holds only a trim's notice: everything else was compacted."""
    return [sorted(fields) for _, fields in client.xrange(updates_key(name))] == [[b"r", b"t"]]


@pytest.fixture
async def store(postgres_server: PostgresServer, tmp_path: Path) -> AsyncIterator[PostgresStore]:
    password = tmp_path / "pw"
    password.write_text(postgres_server.password)
    async with PostgresStore(
        postgres_server.url_without_password, password_file=password, compact_after=10
    ) as opened:
        yield opened


def replica(redis_server: RedisServer, store: PostgresStore, compact_after: int = 1000) -> DocumentStreams:
    return DocumentStreams(redis_server.url, store, Metrics(), compact_after=compact_after)


async def test_postgres_store_keeps_and_compacts_a_log(store: PostgresStore) -> None:
    name = f"log-{uuid.uuid4().hex}"
    source: Doc = Doc()
    expected = ""
    for i in range(35):
        await store.append(name, [text_update(source, f"{i},")])
        expected += f"{i},"
    updates = await store.load(name)
    assert len(updates) <= 11  # the snapshot plus at most compact_after logged updates
    assert text_of(updates) == expected
    assert await store.load(f"never-{uuid.uuid4().hex}") == []
    assert await store.count_documents() >= 1


async def test_postgres_store_refuses_a_stale_fence_or_an_older_position(store: PostgresStore) -> None:
    name = f"fence-{uuid.uuid4().hex}"
    source: Doc = Doc()
    first = text_update(source, "one")
    assert await store.save_snapshot(name, Snapshot(first, "100-0", 5))
    assert not await store.save_snapshot(name, Snapshot(b"older", "200-0", 4)), "a stale token wrote"
    assert not await store.save_snapshot(name, Snapshot(b"behind", "99-9", 6)), "a position went back"
    assert await store.load_snapshot(name) == Snapshot(first, "100-0", 5)
    assert await store.save_snapshot(name, Snapshot(first + b"", "100-3", 6))


async def test_postgres_store_errors_name_the_server_without_the_password(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("s3cret-value")
    unreachable = PostgresStore("postgresql://spaced@127.0.0.1:9/spaced", password_file=password, timeout=2)
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:9/spaced") as raised:
        await unreachable.start()
    assert "s3cret-value" not in str(raised.value)


async def test_a_load_misses_nothing_while_another_replica_compacts(
    redis_server: RedisServer, store: PostgresStore
) -> None:
    name = f"race-{uuid.uuid4().hex}"
    writer, reader = replica(redis_server, store), replica(redis_server, store)
    await writer.start()
    await reader.start()
    try:
        source: Doc = Doc()
        expected = ""
        for round_ in range(20):
            batch = []
            for i in range(10):
                batch.append(text_update(source, f"{round_}.{i},"))
                expected += f"{round_}.{i},"
            await writer.append_many({name: batch})
            # A load and a compaction race on every round; whatever their order, nothing is missing.
            loaded, _ = await asyncio.gather(reader.load(name), writer.compact(name))
            assert text_of(loaded) == expected, f"round {round_}: a load missed updates"
        assert writer.metrics.compaction_overlaps._value.get() == 0
    finally:
        await writer.stop()
        await reader.stop()


async def test_one_compaction_at_a_time_and_the_stream_trimmed_only_after_the_snapshot(
    redis_server: RedisServer, store: PostgresStore
) -> None:
    name = f"compact-{uuid.uuid4().hex}"
    replicas = [replica(redis_server, store) for _ in range(3)]
    for r in replicas:
        await r.start()
    try:
        source: Doc = Doc()
        await replicas[0].append_many({name: [text_update(source, f"{i},") for i in range(300)]})
        outcomes = await asyncio.gather(*(r.compact(name) for r in replicas for _ in range(3)))
        assert outcomes.count("compacted") >= 1
        assert set(outcomes) <= {"compacted", "busy", "empty"}, outcomes
        assert sum(r.metrics.compaction_overlaps._value.get() for r in replicas) == 0
        # Every update entry left the stream; the trim's notice to lagging followers stays.
        assert redis_server.cli("XRANGE", updates_key(name), "-", "+").split()[1::2][:2] == ["t", "r"]
        assert int(redis_server.cli("XLEN", updates_key(name))) == 1
        snapshot = await store.load_snapshot(name)
        assert text_of([snapshot.data]) == "".join(f"{i}," for i in range(300))
    finally:
        for r in replicas:
            await r.stop()


class OvertakingStore(PostgresStore):
    """Before each snapshot read, another replica's newer compaction (a later token) saves first."""

    redis: RedisServer

    async def load_snapshot(self, name: str) -> Snapshot:
        newer = int(self.redis.cli("INCR", FENCE_KEY))
        assert await super().save_snapshot(name, Snapshot(b"", "0-0", newer))
        return await super().load_snapshot(name)


async def test_a_fenced_compaction_leaves_the_stream_alone(
    redis_server: RedisServer, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    name = f"fenced-{uuid.uuid4().hex}"
    password = tmp_path / "pg-password"
    password.write_text(postgres_server.password)
    store = OvertakingStore(postgres_server.url_without_password, password_file=password)
    store.redis = redis_server
    await store.start()
    streams = replica(redis_server, store)
    await streams.start()
    try:
        await streams.append_many({name: [text_update(Doc(), "kept")]})
        # A newer compaction (larger token) wrote after this one took its token: ours is stale.
        assert await streams.compact(name) == "fenced"
        assert streams.metrics.compaction_overlaps._value.get() == 1
        assert int(redis_server.cli("XLEN", updates_key(name))) == 1, "trimmed without a covering snapshot"
    finally:
        await streams.stop()
        await store.stop()


async def test_a_fencing_counter_redis_lost_is_raised_past_the_stores_fence(
    redis_server: RedisServer, store: PostgresStore
) -> None:
    """Redis restarted without its data: INCR starts again at 1, below every stored fence."""
    name = f"fence-lost-{uuid.uuid4().hex}"
    stored = int(redis_server.cli("INCRBY", FENCE_KEY, "1000"))
    source: Doc = Doc()
    assert await store.save_snapshot(name, Snapshot(text_update(source, "before,"), "0-0", stored))
    redis_server.cli("DEL", FENCE_KEY)  # what a restart without data leaves
    streams = replica(redis_server, store)
    await streams.start()
    try:
        await streams.append_many({name: [text_update(source, "after")]})
        assert await streams.compact(name) == "compacted"
        assert int(redis_server.cli("GET", FENCE_KEY)) > stored
        snapshot = await store.load_snapshot(name)
        assert snapshot.fence > stored
        assert text_of([snapshot.data]) == "before,after"
        assert streams.metrics.compaction_overlaps._value.get() == 0
        # The next compaction takes a token above the stored fence at once.
        await streams.append_many({name: [text_update(source, "!")]})
        assert await streams.compact(name) == "compacted"
    finally:
        await streams.stop()


async def test_what_a_restarted_redis_lost_is_appended_again(tmp_path: Path, store: PostgresStore) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    streams = replica(redis, store)
    await streams.start()
    registry = RoomRegistry(store, streams.metrics, flush_interval=0.05, unload_grace=5, streams=streams)
    await registry.start()
    name, kept = f"lost-{uuid.uuid4().hex}", f"kept-{uuid.uuid4().hex}"
    reader = replica(redis, store)
    try:
        room = await registry.acquire(name)
        source: Doc = Doc()
        for i in range(5):
            room.apply_update(text_update(source, f"{i},"), 0.0)
        await wait_until(lambda: registry.backlog() == 0, what="appended")
        idle = await registry.acquire(kept)  # open, nothing written: nothing to append again
        redis.stop()
        for path in redis.directory.iterdir():  # Redis comes back without its data
            if path.is_dir():
                for inner in path.iterdir():
                    inner.unlink()
            elif path.name != "redis.log":
                path.unlink()
        redis.start()
        # A new edit reaches the new Redis too: the stream is not empty, yet it lost the first five.
        room.apply_update(text_update(source, "5,"), 0.0)
        stream = SyncRedis.from_url(redis.url)

        def streamed() -> str:
            return text_of([f[b"u"] for _, f in stream.xrange(updates_key(name)) if b"u" in f])

        try:
            await wait_until(lambda: streamed() == "0,1,2,3,4,5,", seconds=15, what="lost updates appended")
        finally:
            stream.close()
        await reader.start()
        assert text_of(await reader.load(name)) == "0,1,2,3,4,5,"
        assert int(redis.cli("EXISTS", updates_key(kept))) == 0
        registry.release(room)
        registry.release(idle)
    finally:
        await registry.stop()
        await streams.stop()
        await reader.stop()
        redis.stop()


async def test_updates_reach_the_other_replica_and_are_not_echoed(
    redis_server: RedisServer, store: PostgresStore
) -> None:
    name = f"follow-{uuid.uuid4().hex}"
    registries = []
    for _ in range(2):
        streams = replica(redis_server, store)
        await streams.start()
        registry = RoomRegistry(store, streams.metrics, flush_interval=0.5, unload_grace=5, streams=streams)
        await registry.start()
        registries.append(registry)
    try:
        rooms = [await r.acquire(name) for r in registries]
        source: Doc = Doc()
        rooms[0].apply_update(text_update(source, "from A"), 0.0)
        await wait_until(
            lambda: str(rooms[1].doc.get("t", type=Text)) == "from A", what="B applies A's update"
        )
        # Flushed at once, not after flush_interval, and B queued nothing of its own.
        assert rooms[1].pending == []
        assert int(redis_server.cli("XLEN", updates_key(name))) == 1
        for room, registry in zip(rooms, registries, strict=True):
            registry.release(room)
    finally:
        for registry in registries:
            await registry.stop()
            assert registry.streams is not None
            await registry.streams.stop()


async def test_compact_after_counts_updates_not_merged_entries(
    redis_server: RedisServer, store: PostgresStore
) -> None:
    name = f"merged-{uuid.uuid4().hex}"
    streams = replica(redis_server, store, compact_after=50)
    await streams.start()
    registry = RoomRegistry(store, streams.metrics, flush_interval=0.5, unload_grace=5, streams=streams)
    await registry.start()
    try:
        room = await registry.acquire(name)  # followed: this replica counts what reaches the stream
        source: Doc = Doc()
        await streams.append_many({name: [text_update(source, f"{i},") for i in range(60)]})
        assert int(redis_server.cli("XLEN", updates_key(name))) <= 2  # merged: one entry (+ notice)

        async def compacted() -> bool:
            data = (await store.load_snapshot(name)).data
            return bool(data) and text_of([data]) == "".join(f"{i}," for i in range(60))

        deadline = asyncio.get_running_loop().time() + 10
        while not await compacted():
            assert asyncio.get_running_loop().time() < deadline, (
                "60 merged updates did not trigger compaction"
            )
            await asyncio.sleep(0.02)
        registry.release(room)
    finally:
        await registry.stop()
        await streams.stop()


async def test_edits_are_held_while_redis_is_away_and_sent_when_it_returns(
    tmp_path: Path, store: PostgresStore
) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    streams = replica(redis, store)
    await streams.start()
    registry = RoomRegistry(store, streams.metrics, flush_interval=0.05, unload_grace=5, streams=streams)
    await registry.start()
    name = f"held-{uuid.uuid4().hex}"
    try:
        room = await registry.acquire(name)
        redis.stop()
        source: Doc = Doc()
        room.apply_update(text_update(source, "held"), 0.0)
        await wait_until(lambda: not streams.healthy, what="Redis failure noticed")
        assert registry.backlog() == 1
        redis.start()
        await wait_until(lambda: registry.backlog() == 0, seconds=15, what="held edit appended")
        assert streams.healthy
        assert int(redis.cli("XLEN", updates_key(name))) == 1
        registry.release(room)
    finally:
        await registry.stop()
        await streams.stop()
        redis.stop()


async def test_an_evicting_redis_is_refused_naming_the_setting(tmp_path: Path, store: PostgresStore) -> None:
    for policy, refused in (("allkeys-lru", True), ("allkeys-lfu", True), ("volatile-lru", False)):
        redis = RedisServer(tmp_path / policy, maxmemory_policy=policy).start()
        try:
            streams = replica(redis, store)
            if refused:
                with pytest.raises(ScaleOutError, match=f"maxmemory-policy {policy}.*noeviction"):
                    await streams.start()
            else:
                await streams.start()
                await streams.stop()
        finally:
            redis.stop()


async def test_first_sync_answer_is_computed_once_per_document_state(
    redis_server: RedisServer, store: PostgresStore
) -> None:
    streams = replica(redis_server, store)
    await streams.start()
    registry = RoomRegistry(store, streams.metrics, flush_interval=0.5, unload_grace=5, streams=streams)
    await registry.start()
    try:
        room = await registry.acquire(f"sync-{uuid.uuid4().hex}")
        source: Doc = Doc()
        source.get("m", type=Map)["k"] = "v" * 1000
        room.apply_update(source.get_update(), 0.0)
        empty_vector = Doc().get_state()
        first = room.diff_since(empty_vector)
        assert room.diff_since(empty_vector) is first, "recomputed for the same state"
        room.apply_update(text_update(source, "more"), 0.0)
        assert room.diff_since(empty_vector) is not first, "a stale answer after a change"
        registry.release(room)
    finally:
        await registry.stop()
        await streams.stop()


async def test_a_full_redis_still_compacts_and_frees_its_memory(tmp_path: Path, store: PostgresStore) -> None:
    """At maxmemory (noeviction) Redis refuses writes: the compaction that frees memory must still run.

    Its lock, token and trim are allow-oom scripts; a plain SET NX / INCR / MULTI is refused with OOM
    (and the stream, so Redis, stayed full for good).
    """
    redis = RedisServer(tmp_path / "full", maxmemory="4mb").start()
    streams = replica(redis, store)
    await streams.start()
    name = f"full-{uuid.uuid4().hex}"
    try:
        source: Doc = Doc()
        expected = ""
        for i in range(5000):  # bounded: about 4 KB an append against a 4 MB cap
            chunk = f"{i}:" + "x" * 4000 + ","
            update = text_update(source, chunk)
            try:
                await streams.append_many({name: [update]})
            except StoreError:
                break  # refused: Redis is full (the registry holds such edits and retries)
            expected += chunk
        else:
            pytest.fail("Redis never filled up")
        assert streams.memory is not None and streams.memory[1] == 4 * 2**20  # the maxmemory gauge
        assert await streams.compact(name) == "compacted"
        assert int(redis.cli("XLEN", updates_key(name))) == 1  # the trim's notice only
        assert text_of([(await store.load_snapshot(name)).data]) == expected
        await streams.append_many({name: [text_update(Doc(), "room again")]})
    finally:
        await streams.stop()
        redis.stop()


async def test_a_stream_left_with_its_notice_only_expires_and_an_append_keeps_it(
    redis_server: RedisServer, store: PostgresStore
) -> None:
    """Redis keeps no key per document ever opened; an append in time takes the TTL away."""
    name = f"ttl-{uuid.uuid4().hex}"
    key = updates_key(name)
    streams = DocumentStreams(redis_server.url, store, Metrics(), notice_ttl_ms=400)
    await streams.start()
    try:
        source: Doc = Doc()
        await streams.append_many({name: [text_update(source, "one,")]})
        assert int(redis_server.cli("PTTL", key)) == -1  # holds an update: never expires
        assert await streams.compact(name) == "compacted"
        assert int(redis_server.cli("PTTL", key)) > 0
        await wait_until(lambda: redis_server.cli("EXISTS", key) == "0", seconds=10, what="notice expired")
        await streams.append_many({name: [text_update(source, "two,")]})
        assert await streams.compact(name) == "compacted"
        assert int(redis_server.cli("PTTL", key)) > 0
        await streams.append_many({name: [text_update(source, "three")]})
        assert int(redis_server.cli("PTTL", key)) == -1, "an update could expire with the notice"
        assert int(redis_server.cli("XLEN", key)) == 2
        assert text_of(await streams.load(name)) == "one,two,three"
    finally:
        await streams.stop()


async def test_a_closed_documents_compaction_outlasts_a_dead_replicas_lock(
    redis_server: RedisServer, store: PostgresStore
) -> None:
    """A replica that died mid-compaction leaves its lock for up to its lifetime: the compaction of a
    document closed meanwhile is tried again, so what the stream holds still reaches the store."""
    name = f"dead-lock-{uuid.uuid4().hex}"
    streams = replica(redis_server, store)
    await streams.start()
    try:
        await streams.append_many({name: [text_update(Doc(), "to store")]})
        redis_server.cli("SET", lock_key(name), "dead-replica:1", "PX", "1500")
        streams.closed(name)

        client = SyncRedis.from_url(redis_server.url)
        await wait_until(
            lambda: holds_only_the_notice(client, name), seconds=20, what="compacted once the lock expired"
        )
        assert streams.metrics.compactions.labels("busy")._value.get() >= 1
        assert text_of([(await store.load_snapshot(name)).data]) == "to store"
        client.close()
    finally:
        await streams.stop()


async def test_a_slow_compaction_keeps_its_lock(
    redis_server: RedisServer,
    postgres_server: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lock is renewed while a compaction runs: a slow one is not overlapped (nor counted as such)."""
    monkeypatch.setattr(streams_module, "COMPACTION_LOCK_MS", 600)
    gate = asyncio.Event()

    class GatedStore(PostgresStore):
        async def save_snapshot(self, name: str, snapshot: Snapshot) -> bool:
            await gate.wait()
            return await super().save_snapshot(name, snapshot)

    password = tmp_path / "pg-password"
    password.write_text(postgres_server.password)
    slow_store = GatedStore(postgres_server.url_without_password, password_file=password)
    await slow_store.start()
    slow, other = replica(redis_server, slow_store), replica(redis_server, slow_store)
    await slow.start()
    await other.start()
    name = f"slow-{uuid.uuid4().hex}"
    try:
        await slow.append_many({name: [text_update(Doc(), "slow")]})
        compaction = asyncio.create_task(slow.compact(name))
        lifetimes: list[int] = []

        def renewed_twice() -> bool:
            lifetimes.append(int(redis_server.cli("PTTL", lock_key(name))))
            return sum(1 for a, b in itertools.pairwise(lifetimes) if b > a) >= 2

        await wait_until(renewed_twice, seconds=10, what="the lock renewed twice")
        assert await other.compact(name) == "busy"
        gate.set()
        assert await compaction == "compacted"
        assert slow.metrics.compaction_overlaps._value.get() == 0
        assert redis_server.cli("EXISTS", lock_key(name)) == "0", "the lock was not released"
    finally:
        gate.set()
        await slow.stop()
        await other.stop()
        await slow_store.stop()


@pytest.mark.parametrize(
    ("version", "policy", "refused"),
    [
        ("7.0.15", "noeviction", None),
        ("7.2.4", "volatile-lfu", None),
        ("8.6.0", "allkeys-lrm", "maxmemory-policy allkeys-lrm.*noeviction"),  # redis/redis#14624
        ("7.0.15", "some-future-policy", "maxmemory-policy some-future-policy"),
        ("7.0.15", None, "does not say its maxmemory-policy"),
        ("6.2.14", "noeviction", "version 6.2.14.*7.0 or later"),
        ("", "noeviction", "version unknown"),
    ],
)
def test_only_a_redis_that_keeps_the_streams_is_accepted(
    version: str, policy: str | None, refused: str | None
) -> None:
    memory = {} if policy is None else {"maxmemory_policy": policy}
    reason = redis_refusal({"redis_version": version}, memory)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and re.search(refused, reason), reason


async def test_a_redis_user_without_info_is_refused_naming_the_permission(
    redis_server: RedisServer, store: PostgresStore, tmp_path: Path
) -> None:
    """The usual application ACL (+@all -@dangerous) has no INFO: say so, not 'cannot reach Redis'."""
    user = f"app{uuid.uuid4().hex[:8]}"
    redis_server.cli("ACL", "SETUSER", user, "on", ">app-password", "~*", "+@all", "-@dangerous")
    password = tmp_path / "redis-password"
    password.write_text("app-password")
    try:
        streams = DocumentStreams(
            f"redis://{user}@127.0.0.1:{redis_server.port}/0", store, Metrics(), password_file=password
        )
        with pytest.raises(ScaleOutError, match=r"refuses INFO.*ACL SETUSER <user> \+info"):
            await streams.start()
        redis_server.cli("ACL", "SETUSER", user, "+info")
        await streams.start()
        await streams.stop()
    finally:
        redis_server.cli("ACL", "DELUSER", user)


async def test_a_slowly_edited_document_is_compacted_within_the_max_age(
    redis_server: RedisServer, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far fewer updates than --compact-after still reach PostgreSQL (and its backups) in time."""
    monkeypatch.setattr(streams_module, "HOUSEKEEPING_INTERVAL_S", 0.2)
    name = f"slow-edits-{uuid.uuid4().hex}"
    writer = replica(redis_server, store)
    follower = DocumentStreams(redis_server.url, store, Metrics(), compact_after=1000, compact_max_age_s=1.0)
    await writer.start()
    await follower.start()
    try:
        await follower.load(name)
        follower.opened(name)
        source: Doc = Doc()
        await writer.append_many({name: [text_update(source, "a few,"), text_update(source, "edits")]})
        client = SyncRedis.from_url(redis_server.url)
        await wait_until(
            lambda: holds_only_the_notice(client, name), seconds=15, what="compacted after the max age"
        )
        client.close()
        assert text_of([(await store.load_snapshot(name)).data]) == "a few,edits"
        assert follower.metrics.compactions.labels("compacted")._value.get() == 1
    finally:
        await writer.stop()
        await follower.stop()
