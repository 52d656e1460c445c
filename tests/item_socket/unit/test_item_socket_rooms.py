"""Rooms: what is relayed and stored is what the document integrated; a Doc yrs panicked on is rebuilt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pycrdt import Doc, Map, Text

from item_socket.metrics import Metrics
from item_socket.rooms import (
    AWARENESS_BATCH_PEERS,
    Broadcast,
    InvalidUpdate,
    Peer,
    RoomLoadError,
    RoomRegistry,
    RoomUnavailable,
)
from item_socket.store import DocumentStore, SQLiteStore
from item_socket.yprotocol import awareness_entries, merge_awareness_updates

from .support import FlakyStore, awareness_update, decode_awareness, wait_until

# Mutated real updates found by the fuzz suite (tests/item_socket/fuzz): yrs accepts the first but
# npm Yjs throws on it; yrs panics mid-commit on the second and the Doc panics ever after.
YJS_POISON_UPDATE = bytes.fromhex(
    "0106fe070028010773637261746368026b30017c0000000004010c736372617463682d746578740532323a303b28"
    "010773637261746368026b31017c41b0000084fe07050532323a310228010773637261746368026b32017c423000"
    "0084fe075a0532323a323b00"
)
YRS_PANIC_UPDATE = bytes.fromhex(
    "010281080024010773637261746368026b30017c0000000004010c736354617463682d746578740532353a303b00"
)


class RecordingPeer(Peer):
    """A peer that keeps what the room sends it and the reason it was closed for."""

    protocol = "ywebsocket"

    def __init__(self, can_write: bool = True) -> None:
        super().__init__(can_write)
        self.updates: list[bytes] = []
        self.closed_for: str | None = None

    @property
    def transport(self) -> str:
        return "websocket"

    def send_broadcast(self, message: Broadcast) -> int:
        if message.event == "sync-update":
            self.updates.append(message.payload)
        return len(message.payload)

    def close_soon(self, reason: str) -> None:
        self.closed_for = reason


def edits(client_id: int, *texts: str) -> list[bytes]:
    """The updates of a client appending each of ``texts`` to the root text "t", one by one."""
    doc: Doc = Doc(client_id=client_id)
    text = doc.get("t", type=Text)
    updates: list[bytes] = []
    for piece in texts:
        before = doc.get_state()
        text += piece
        updates.append(doc.get_update(before))
    return updates


def text_of(updates: list[bytes]) -> str:
    doc: Doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("t", type=Text))


def errors(metrics: Metrics, kind: str) -> float:
    return metrics.registry.get_sample_value("item_socket_errors_total", {"kind": kind}) or 0.0


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[RoomRegistry]:
    store = SQLiteStore(tmp_path)
    await store.start()
    registry = RoomRegistry(store, Metrics(), flush_interval=3600, unload_grace=3600)
    await registry.start()
    try:
        yield registry
    finally:
        await registry.stop()
        await store.stop()


# --- E: relay and store what was integrated --------------------------------------------------


async def test_the_room_relays_and_stores_the_integrated_update_not_the_received_bytes(
    registry: RoomRegistry,
) -> None:
    room = await registry.acquire("poison")
    peer = RecordingPeer()
    room.add_peer(peer)
    room.apply_update(YJS_POISON_UPDATE, time.perf_counter(), peer)

    assert len(peer.updates) == 1
    relayed = peer.updates[0]
    assert relayed != YJS_POISON_UPDATE
    # What was relayed is exactly the server's state: a fresh Doc fed only with it agrees.
    replica: Doc = Doc()
    replica.apply_update(relayed)
    assert replica.get_state() == room.doc.get_state()
    assert replica.get("scratch", type=Map).to_py() == room.doc.get("scratch", type=Map).to_py()
    assert room.pending == [relayed]
    assert await registry.flush()
    assert await registry.store.load("poison") == [relayed]
    registry.release(room)


async def test_an_update_that_integrates_nothing_is_neither_relayed_nor_stored(
    registry: RoomRegistry,
) -> None:
    room = await registry.acquire("dup")
    peer = RecordingPeer()
    room.add_peer(peer)
    first, second = edits(41, "ab", "cd")

    room.apply_update(first, time.perf_counter(), peer)
    room.apply_update(first, time.perf_counter(), peer)  # a resent update: nothing new
    assert len(peer.updates) == 1
    assert len(room.pending) == 1

    # An update whose dependency is missing integrates nothing yet; once the dependency arrives
    # both are integrated in one transaction, and that is what is relayed.
    other = edits(42, "xy", "z")
    room.apply_update(other[1], time.perf_counter(), peer)
    assert len(peer.updates) == 1
    room.apply_update(other[0], time.perf_counter(), peer)
    assert len(peer.updates) == 2
    room.apply_update(second, time.perf_counter(), peer)
    assert text_of(peer.updates) == str(room.doc.get("t", type=Text))
    assert sorted(text_of(peer.updates)) == sorted("abcdxyz")
    assert room.pending == peer.updates
    registry.release(room)


# --- F: a Doc yrs panicked on is replaced ----------------------------------------------------


async def test_a_decoder_panic_closes_its_sender_and_the_document_is_rebuilt(registry: RoomRegistry) -> None:
    stored_edit, pending_edit, later_edit = edits(51, "stored;", "pending;", "later;")
    room = await registry.acquire("panic")
    writer, reader, attacker = RecordingPeer(), RecordingPeer(), RecordingPeer()
    for peer in (writer, reader, attacker):
        room.add_peer(peer)
    room.apply_update(stored_edit, time.perf_counter(), writer)
    assert await registry.flush()
    room.apply_update(pending_edit, time.perf_counter(), writer)  # applied, not yet stored
    room.apply_awareness(awareness_update(7, 1, {"user": "reader"}), reader)
    broken_doc = room.doc

    with pytest.raises(InvalidUpdate) as raised:
        room.apply_update(YRS_PANIC_UPDATE, time.perf_counter(), attacker)
    assert raised.value.kind == "decoder_panic"
    assert room.rebuilding is not None
    # An update arriving during the rebuild waits and is applied afterwards, in order.
    room.apply_update(later_edit, time.perf_counter(), writer)

    await asyncio.wait_for(room.wait_usable(), 10)
    assert room.doc is not broken_doc
    assert registry.rooms["panic"] is room
    assert str(room.doc.get("t", type=Text)) == "stored;pending;later;"
    assert set(room.peers) == {writer, reader, attacker}  # closing the attacker is the caller's job
    assert 7 in room.awareness.states
    assert registry.metrics.registry.get_sample_value("item_socket_document_rebuilds_total") == 1
    # The deferred update reached the peers; the rebuilt document serves fresh clients and edits.
    assert text_of([stored_edit, pending_edit, *reader.updates[-1:]]) == "stored;pending;later;"
    assert text_of([room.diff_since(b"\x00")]) == "stored;pending;later;"
    more = Doc()
    more.apply_update(room.diff_since(b"\x00"))
    before = more.get_state()
    more.get("t", type=Text).insert(0, ">")
    room.apply_update(more.get_update(before), time.perf_counter(), reader)
    assert str(room.doc.get("t", type=Text)) == ">stored;pending;later;"
    registry.release(room)

    # Everything is stored, and loads into the same text.
    assert await registry.flush()
    assert text_of(await registry.store.load("panic")) == ">stored;pending;later;"


async def test_a_rebuild_uses_the_pending_updates_the_store_refused(tmp_path: Path) -> None:
    store = FlakyStore()
    registry = RoomRegistry(store, Metrics(), flush_interval=3600, unload_grace=3600)
    await registry.start()
    try:
        room = await registry.acquire("unstored")
        peer = RecordingPeer()
        room.add_peer(peer)
        first, second = edits(61, "one;", "two;")
        room.apply_update(first, time.perf_counter(), peer)
        assert await registry.flush()
        store.fail_writes = True
        room.apply_update(second, time.perf_counter(), peer)

        with pytest.raises(InvalidUpdate):
            room.apply_update(YRS_PANIC_UPDATE, time.perf_counter(), peer)
        await asyncio.wait_for(room.wait_usable(), 10)
        assert str(room.doc.get("t", type=Text)) == "one;two;"
        assert len(room.pending) == 1  # still waiting for the store, not lost

        store.fail_writes = False
        assert await registry.flush()
        assert text_of(store.docs["unstored"]) == "one;two;"
        registry.release(room)
    finally:
        await registry.stop()


async def test_a_crashing_update_replayed_after_a_rebuild_closes_its_sender(registry: RoomRegistry) -> None:
    room = await registry.acquire("twice")
    first_attacker, second_attacker, writer = RecordingPeer(), RecordingPeer(), RecordingPeer()
    for peer in (first_attacker, second_attacker, writer):
        room.add_peer(peer)
    (edit,) = edits(71, "survives")
    room.apply_update(edit, time.perf_counter(), writer)
    with pytest.raises(InvalidUpdate):
        room.apply_update(YRS_PANIC_UPDATE, time.perf_counter(), first_attacker)
    room.apply_update(YRS_PANIC_UPDATE, time.perf_counter(), second_attacker)  # deferred

    await asyncio.wait_for(room.wait_usable(), 10)
    await wait_until(lambda: second_attacker.closed_for is not None, what="the second attacker to be closed")
    assert "crashed the decoder" in (second_attacker.closed_for or "")
    assert errors(registry.metrics, "decoder_panic") == 1  # the replayed one; callers count the first
    assert registry.metrics.registry.get_sample_value("item_socket_document_rebuilds_total") == 2
    assert str(room.doc.get("t", type=Text)) == "survives"
    registry.release(room)


async def test_a_client_joining_during_a_rebuild_waits_for_it(tmp_path: Path) -> None:
    store: DocumentStore = FlakyStore()
    registry = RoomRegistry(store, Metrics(), flush_interval=3600, unload_grace=3600)
    await registry.start()
    try:
        room = await registry.acquire("joining")
        (edit,) = edits(81, "here")
        room.apply_update(edit, time.perf_counter())
        assert isinstance(store, FlakyStore)
        store.load_gate.clear()  # hold the rebuild's load
        with pytest.raises(InvalidUpdate):
            room.apply_update(YRS_PANIC_UPDATE, time.perf_counter())
        joining = asyncio.create_task(registry.acquire("joining"))
        await wait_until(lambda: store.loads == 2, what="the rebuild to start loading")
        assert not joining.done()
        store.load_gate.set()
        joined = await asyncio.wait_for(joining, 10)
        assert joined is room and room.rebuilding is None
        assert text_of([joined.diff_since(b"\x00")]) == "here"
        registry.release(room)
        registry.release(joined)
    finally:
        await registry.stop()


async def test_a_document_that_cannot_be_rebuilt_closes_its_clients_and_is_refused(tmp_path: Path) -> None:
    store = FlakyStore()
    registry = RoomRegistry(store, Metrics(), flush_interval=3600, unload_grace=0.05)
    await registry.start()
    try:
        room = await registry.acquire("rotten")
        peer = RecordingPeer()
        room.add_peer(peer)
        (edit,) = edits(91, "fine")
        room.apply_update(edit, time.perf_counter(), peer)
        assert await registry.flush()
        store.docs["rotten"].append(edit[:-3])  # the stored log went bad behind our back

        with pytest.raises(InvalidUpdate):
            room.apply_update(YRS_PANIC_UPDATE, time.perf_counter(), peer)
        with pytest.raises(RoomUnavailable):
            await asyncio.wait_for(room.wait_usable(), 10)
        assert peer.closed_for is not None and "cannot be rebuilt" in peer.closed_for
        assert errors(registry.metrics, "store_corrupt") == 1

        room.remove_peer(peer)
        registry.release(room)
        await wait_until(lambda: "rotten" not in registry.rooms, what="the abandoned room to unload")
        with pytest.raises(RoomLoadError):
            await registry.acquire("rotten")
    finally:
        await registry.stop()


# --- G: awareness in large rooms goes out in batches -----------------------------------------


class AwarenessPeer(RecordingPeer):
    """A peer that also keeps the awareness updates the room sends it."""

    def __init__(self) -> None:
        super().__init__()
        self.awareness: list[bytes] = []

    def send_broadcast(self, message: Broadcast) -> int:
        if message.event == "awareness-update":
            self.awareness.append(message.payload)
        return super().send_broadcast(message)


def test_merged_awareness_updates_hold_every_entry_in_order() -> None:
    first = awareness_update(7, 1, {"x": 1})
    second = awareness_update(8, 4, None)
    third = awareness_update(7, 2, {"x": 2})
    merged = merge_awareness_updates([first, second, third])
    assert awareness_entries(merged) == [(7, 1, False), (8, 4, True), (7, 2, False)]
    assert merge_awareness_updates([first]) is first
    assert decode_awareness(merged) == {7: {"x": 2}, 8: None}  # the later entry of 7 wins


async def test_a_large_room_sends_awareness_changes_together_and_a_small_one_at_once(
    registry: RoomRegistry,
) -> None:
    small = await registry.acquire("small-presence")
    pair = [AwarenessPeer(), AwarenessPeer()]
    for peer in pair:
        small.add_peer(peer)
    small.apply_awareness(awareness_update(7, 1, {"x": 1}), pair[0])
    assert [len(p.awareness) for p in pair] == [1, 1]  # synchronously, as before

    large = await registry.acquire("large-presence")
    crowd = [AwarenessPeer() for _ in range(AWARENESS_BATCH_PEERS)]
    for peer in crowd:
        large.add_peer(peer)
    large.apply_awareness(awareness_update(10, 1, {"x": 1}), crowd[0])
    large.apply_awareness(awareness_update(11, 1, {"x": 2}), crowd[1])
    large.apply_awareness(awareness_update(10, 2, {"x": 3}), crowd[0])
    assert all(not p.awareness for p in crowd)  # held for the batch window
    await wait_until(lambda: all(p.awareness for p in crowd), what="the awareness batch")
    assert all(len(p.awareness) == 1 for p in crowd)
    assert decode_awareness(crowd[5].awareness[0]) == {10: {"x": 3}, 11: {"x": 2}}
    # A departure while a batch is pending joins it: nothing overtakes the earlier changes.
    large.apply_awareness(awareness_update(11, 2, {"x": 4}), crowd[1])
    large.remove_peer(crowd[1])
    await wait_until(lambda: len(crowd[2].awareness) == 2, what="the second batch")
    assert decode_awareness(crowd[2].awareness[1]) == {11: None}
    assert [c for c, _, _ in awareness_entries(crowd[2].awareness[1])] == [11, 11]
