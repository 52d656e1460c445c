"""The SQLite store and the room registry: restart, compaction, failed loads, shared loads, unload."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from item_socket.metrics import Metrics
from item_socket.rooms import Broadcast, Peer, RoomLoadError, RoomRegistry
from item_socket.store import DocumentStore, SQLiteStore, StoreError

from .support import FlakyStore, wait_until


def text_update(doc: Doc, text: str) -> bytes:
    """Append ``text`` to the doc's "t" and return the resulting update."""
    before = doc.get_state()
    ytext = doc.get("t", type=Text)
    ytext += text
    return doc.get_update(before)


def rebuild(updates: list[bytes]) -> str:
    doc: Doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("t", type=Text))


async def test_updates_survive_a_restart(tmp_path: Path) -> None:
    source: Doc = Doc()
    async with SQLiteStore(tmp_path) as store:
        await store.append("a", [text_update(source, "hello ")])
        await store.append("a", [text_update(source, "world")])
        await store.append("b", [text_update(Doc(), "other")])
    async with SQLiteStore(tmp_path) as store:
        assert rebuild(await store.load("a")) == "hello world"
        assert rebuild(await store.load("b")) == "other"
        assert await store.load("never-written") == []


async def test_schema_version_is_recorded_and_checked(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path):
        pass
    db = sqlite3.connect(tmp_path / SQLiteStore.FILENAME)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SQLiteStore.SCHEMA_VERSION
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99"):
        await SQLiteStore(tmp_path).start()


async def test_log_is_compacted_into_the_snapshot(tmp_path: Path) -> None:
    source: Doc = Doc()
    expected = ""
    async with SQLiteStore(tmp_path, compact_after=10) as store:
        for i in range(35):
            await store.append("doc", [text_update(source, f"{i},")])
            expected += f"{i},"
        log_length, snapshot_size = await store.stats("doc")
        assert log_length <= 10
        assert snapshot_size > 0
        assert rebuild(await store.load("doc")) == expected
    async with SQLiteStore(tmp_path, compact_after=10) as store:
        assert rebuild(await store.load("doc")) == expected


async def test_a_flush_stores_each_documents_updates_as_one_merged_row(tmp_path: Path) -> None:
    source: Doc = Doc()
    async with SQLiteStore(tmp_path, compact_after=1000) as store:
        await store.append_many(
            {"a": [text_update(source, f"{i},") for i in range(20)], "b": [text_update(Doc(), "b")]}
        )
        assert await store.stats("a") == (1, 0)  # one row, no snapshot yet
        assert rebuild(await store.load("a")) == "".join(f"{i}," for i in range(20))
    db = sqlite3.connect(tmp_path / SQLiteStore.FILENAME)
    # The compaction cadence still counts updates, not rows.
    assert db.execute("SELECT log_length FROM documents WHERE name = 'a'").fetchone() == (20,)
    db.close()


def make_registry(store: DocumentStore, grace: float = 0.05) -> RoomRegistry:
    return RoomRegistry(store, Metrics(), flush_interval=0.02, unload_grace=grace)


async def test_failed_load_refuses_and_never_overwrites_the_stored_document() -> None:
    store = FlakyStore()
    source: Doc = Doc()
    store.docs["doc"] = [text_update(source, "precious")]
    registry = make_registry(store)
    await registry.start()
    try:
        store.fail_loads = True
        with pytest.raises(RoomLoadError):
            await registry.acquire("doc")
        assert "doc" not in registry.rooms
        assert not registry.store_healthy
        await registry.flush()
        store.fail_loads = False
        room = await registry.acquire("doc")
        assert str(room.doc.get("t", type=Text)) == "precious"
        registry.release(room)
    finally:
        await registry.stop()
    assert rebuild(store.docs["doc"]) == "precious"


async def test_unreadable_stored_update_refuses_the_load() -> None:
    store = FlakyStore()
    store.docs["doc"] = [b"\x07garbage that is no update"]
    registry = make_registry(store)
    await registry.start()
    try:
        with pytest.raises(RoomLoadError):
            await registry.acquire("doc")
        assert "doc" not in registry.rooms
    finally:
        await registry.stop()
    assert store.docs["doc"] == [b"\x07garbage that is no update"]


async def test_concurrent_joins_share_one_load() -> None:
    store = FlakyStore()
    store.load_gate.clear()
    registry = make_registry(store)
    await registry.start()
    try:
        joins = [asyncio.create_task(registry.acquire("doc")) for _ in range(5)]
        await wait_until(lambda: "load-start doc" in store.events, what="the first join's load")
        await asyncio.sleep(0)  # one turn of the loop: every join task reaches the registry
        assert store.events.count("load-start doc") == 1
        store.load_gate.set()
        rooms = await asyncio.gather(*joins)
        assert store.loads == 1
        assert all(room is rooms[0] for room in rooms)
        assert rooms[0].holders == 5
        for room in rooms:
            registry.release(room)
    finally:
        await registry.stop()


async def test_room_is_flushed_then_unloaded_and_reloaded_after_the_save() -> None:
    store = FlakyStore()
    registry = make_registry(store, grace=0.05)
    await registry.start()
    try:
        room = await registry.acquire("doc")
        room.apply_update(text_update(Doc(), "kept"), time.perf_counter())
        store.write_gate.clear()  # the save stalls
        registry.release(room)
        # The grace has passed and the unload's save started (and stalls on the gate).
        await wait_until(lambda: "write-start" in store.events, what="the unload's save")
        assert "doc" in registry.rooms, "unloaded before its save finished"
        rejoin = asyncio.create_task(registry.acquire("doc"))
        await asyncio.sleep(0)  # one turn of the loop: the rejoin reaches the registry mid-save
        store.write_gate.set()
        again = await rejoin
        # Either the same in-memory room (the save was still running) or a reload after it.
        assert str(again.doc.get("t", type=Text)) == "kept"
        registry.release(again)
        await wait_until(lambda: "doc" not in registry.rooms, what="the room unloaded after its grace")
        loads = [i for i, e in enumerate(store.events) if e.startswith("load-start")]
        writes_ended = [i for i, e in enumerate(store.events) if e == "write-end"]
        for load in loads[1:]:
            assert any(w < load for w in writes_ended), store.events
    finally:
        await registry.stop()
    assert rebuild(store.docs["doc"]) == "kept"


async def test_failed_flush_keeps_updates_and_retries() -> None:
    store = FlakyStore()
    registry = make_registry(store)
    await registry.start()
    try:
        room = await registry.acquire("doc")
        store.fail_writes = True
        room.apply_update(text_update(Doc(), "retry me"), time.perf_counter())
        await wait_until(lambda: not registry.store_healthy, what="a failed flush")
        assert registry.backlog() == 1
        assert not registry.store_healthy
        store.fail_writes = False
        await wait_until(lambda: registry.backlog() == 0, what="retried flush")
        assert registry.store_healthy
        registry.release(room)
    finally:
        await registry.stop()
    assert rebuild(store.docs["doc"]) == "retry me"


async def test_invalid_update_leaves_the_document_unchanged() -> None:
    registry = make_registry(FlakyStore())
    await registry.start()
    try:
        room = await registry.acquire("doc")
        room.apply_update(text_update(Doc(), "intact"), time.perf_counter())
        before = room.doc.get_update()
        from item_socket.rooms import InvalidUpdate

        for garbage in (b"\x01\x02\x03", b"\xff" * 40, before[: len(before) // 2]):
            with pytest.raises(InvalidUpdate):
                room.apply_update(garbage, time.perf_counter())
        assert room.doc.get_update() == before
        assert room.pending == [room.pending[0]]
        registry.release(room)
    finally:
        await registry.stop()


class RecordingPeer(Peer):
    """A peer that records what the room asks of it."""

    protocol = "ywebsocket"

    def __init__(self) -> None:
        super().__init__(can_write=True)
        self.closed: list[str] = []

    @property
    def transport(self) -> str:
        return "websocket"

    def send_broadcast(self, message: Broadcast) -> int:
        return len(message.payload)

    def close_soon(self, reason: str, code: int = 1001) -> None:
        self.closed.append(reason)


async def test_edits_are_refused_not_dropped_once_too_many_wait_for_a_failing_store() -> None:
    store = FlakyStore()
    registry = RoomRegistry(store, Metrics(), flush_interval=0.02, unload_grace=5, max_backlog=3)
    await registry.start()
    try:
        room = await registry.acquire("doc")
        writer = RecordingPeer()
        room.add_peer(writer)
        store.fail_writes = True
        source: Doc = Doc()
        for word in ("a", "b", "c"):
            room.apply_update(text_update(source, word), time.perf_counter(), writer)
        await wait_until(lambda: not registry.store_healthy, what="a failed flush")
        refused = text_update(source, "d")
        room.apply_update(refused, time.perf_counter(), writer)
        assert writer.closed and "reconnect later" in writer.closed[0]
        assert str(room.doc.get("t", type=Text)) == "abc", "a refused edit was applied"
        assert registry.backlog() == 3
        store.fail_writes = False
        await wait_until(lambda: registry.backlog() == 0, what="the held edits stored")
        room.apply_update(refused, time.perf_counter(), writer)  # the client sends it again
        assert str(room.doc.get("t", type=Text)) == "abcd"
        registry.release(room)
    finally:
        await registry.stop()
    assert rebuild(store.docs["doc"]) == "abcd"
