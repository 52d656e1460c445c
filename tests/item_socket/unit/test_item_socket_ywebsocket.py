"""The y-websocket protocol at /ws/<doc>, driven by a Python client (aiohttp + pycrdt)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from pycrdt import Doc, Text

from item_socket import ywebsocket
from item_socket.keys import CONNECTIONS, METRICS, REGISTRY
from item_socket.yprotocol import (
    MESSAGE_QUERY_AWARENESS,
    SYNC_STEP2,
    SYNC_UPDATE,
    sync_message,
    write_var_uint,
)

from .conftest import RunningServer, ServerFactory
from .support import YWebsocketClient, awareness_update, wait_until


async def test_two_clients_converge_and_a_new_client_gets_the_state(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    a = await YWebsocketClient(session, server.ws_url("conv")).connect()
    b = await YWebsocketClient(session, server.ws_url("conv")).connect()
    a.text += "hello "
    b.text += "world"
    await wait_until(lambda: len(str(a.text)) == 11 and str(a.text) == str(b.text), what="convergence")
    late = await YWebsocketClient(session, server.ws_url("conv")).connect()
    assert str(late.text) == str(a.text)
    for client in (a, b, late):
        await client.close()


async def test_every_frame_carries_exactly_one_message(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    a = await YWebsocketClient(session, server.ws_url("frames")).connect()
    await a.send_awareness(1234, 1, {"user": "a"})
    b = await YWebsocketClient(session, server.ws_url("frames")).connect()
    a.text += "x"
    await wait_until(lambda: str(b.text) == "x" and 1234 in b.awareness_seen, what="update + awareness")
    from item_socket.yprotocol import read_var_bytes, read_var_uint

    for frame in b.received_frames:
        kind, pos = read_var_uint(frame, 0)
        if kind == 0:
            _, pos = read_var_uint(frame, pos)
        _, end = read_var_bytes(frame, pos)
        assert end == len(frame), f"frame carries more than one message: {frame!r}"
    await a.close()
    await b.close()


async def test_awareness_is_relayed_and_removed_when_its_connection_closes(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    a = await YWebsocketClient(session, server.ws_url("aw")).connect()
    b = await YWebsocketClient(session, server.ws_url("aw")).connect()
    await a.send_awareness(777, 3, {"cursor": 5})
    await wait_until(lambda: b.awareness_seen.get(777) == {"cursor": 5}, what="awareness relayed")
    await a.close()  # no goodbye message: the server must remove 777 by itself
    await wait_until(lambda: 777 in b.awareness_seen and b.awareness_seen[777] is None, what="removal")
    await b.close()


async def test_awareness_ownership_moves_with_a_newer_clock_and_echoes_do_not_take_it(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    old = await YWebsocketClient(session, server.ws_url("own")).connect()
    new = await YWebsocketClient(session, server.ws_url("own")).connect()
    echo = await YWebsocketClient(session, server.ws_url("own")).connect()
    watch = await YWebsocketClient(session, server.ws_url("own")).connect()
    await old.send_awareness(9, 1, {"v": 1})
    await new.send_awareness(10, 1, {"self": True})  # its own ID first, as the npm clients do
    await echo.send_awareness(11, 1, {"self": True})
    await wait_until(lambda: watch.awareness_seen.get(11) == {"self": True}, what="three clients")
    await new.send_awareness(9, 2, {"v": 2})  # a newer clock: 9 now belongs to `new`
    await echo.send_awareness(9, 2, {"v": 2})  # a relayed copy (same clock): not a claim
    await echo.send_awareness(11, 2, {"self": "barrier"})
    await wait_until(lambda: watch.awareness_seen.get(11) == {"self": "barrier"}, what="the barrier")
    await old.close()
    await echo.close()
    await wait_until(lambda: watch.awareness_seen.get(11, {}) is None, what="the echoing client's removal")
    assert watch.awareness_seen[9] == {"v": 2}, "closing a former owner or an echoer removed client 9"
    await new.close()
    await wait_until(lambda: watch.awareness_seen.get(9, {}) is None, what="client 9 to leave with its owner")
    await watch.close()


async def test_a_relayed_snapshot_as_first_awareness_message_takes_nothing_over(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    # A client without presence of its own (local state null) sends, as its first awareness
    # message, the npm providers' echo of the server's snapshot: several IDs at known clocks.
    a = await YWebsocketClient(session, server.ws_url("echo")).connect()
    b = await YWebsocketClient(session, server.ws_url("echo")).connect()
    await a.send_awareness(20, 1, {"a": 1})
    await b.send_awareness(21, 1, {"b": 1})
    viewer = await YWebsocketClient(session, server.ws_url("echo")).connect()
    await wait_until(lambda: {20, 21} <= set(viewer.awareness_seen), what="the snapshot")
    assert viewer.ws is not None
    two = write_var_uint(2) + awareness_update(20, 1, {"a": 1})[1:] + awareness_update(21, 1, {"b": 1})[1:]
    await viewer.send_raw(b"\x01" + write_var_uint(len(two)) + two)
    watch = await YWebsocketClient(session, server.ws_url("echo")).connect()
    await b.send_awareness(21, 2, {"b": "barrier"})
    await wait_until(lambda: watch.awareness_seen.get(21) == {"b": "barrier"}, what="the barrier")
    await viewer.close()
    await b.send_awareness(21, 3, {"b": "after"})
    await wait_until(lambda: watch.awareness_seen.get(21) == {"b": "after"}, what="a change after the close")
    assert watch.awareness_seen.get(20) == {"a": 1}, "the viewer's echo took client 20 over"
    for client in (a, b, watch):
        await client.close()


async def test_query_awareness_is_answered(server: RunningServer, session: aiohttp.ClientSession) -> None:
    a = await YWebsocketClient(session, server.ws_url("query")).connect()
    await a.send_awareness(42, 1, {"name": "q"})
    b = await YWebsocketClient(session, server.ws_url("query")).connect()
    b.awareness_seen.clear()
    await b.send_raw(bytes([MESSAGE_QUERY_AWARENESS]))
    await wait_until(lambda: b.awareness_seen.get(42) == {"name": "q"}, what="awareness answer")
    await a.close()
    await b.close()


async def test_document_survives_unload_and_server_restart(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    first = await server_factory()
    a = await YWebsocketClient(session, first.ws_url("persist")).connect()
    a.text += "durable"
    await wait_until(
        lambda: first.app[REGISTRY].backlog() == 0 and len(first.app[REGISTRY].rooms) == 1, what="flush"
    )
    await a.close()
    await wait_until(lambda: "persist" not in first.app[REGISTRY].rooms, what="unload")
    again = await YWebsocketClient(session, first.ws_url("persist")).connect()
    assert str(again.text) == "durable"
    await again.close()
    await first.server.close()
    second = await server_factory()
    b = await YWebsocketClient(session, second.ws_url("persist")).connect()
    assert str(b.text) == "durable"
    await b.close()


async def test_burst_then_immediate_close_loses_nothing(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    source: Doc = Doc()
    text = source.get("t", type=Text)
    updates = []
    for i in range(300):
        before = source.get_state()
        text += f"{i};"
        updates.append(source.get_update(before))
    ws = await session.ws_connect(server.ws_url("burst"))
    for update in updates:
        await ws.send_bytes(sync_message(SYNC_UPDATE, update))
    await ws.close()
    reader = await YWebsocketClient(session, server.ws_url("burst")).connect()
    await wait_until(lambda: str(reader.text) == str(text), what="all 300 updates")
    await reader.close()


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"\x00\x02\xff\xff\xff", "truncated varUint"),
        (b"\x00\x02\x10abc", "byte array runs past the end"),
        (sync_message(SYNC_UPDATE, b"\x07\x99garbage-update"), "garbage update"),
        (b"\x09\x00", "unknown message type"),
        (b"\x00\x07\x00", "unknown sync subtype"),
        (b"\x01\x05\x01\x02", "truncated awareness"),
        (b"", "empty frame"),
        (sync_message(SYNC_UPDATE, bytes.fromhex("bff9fffb00")), "update declaring 2^28 clients"),
        (sync_message(0, bytes.fromhex("bff9fffb00")), "state vector declaring 2^28 clients"),
        (b"\x01\x09\x01\x05\x01\x05{bad]", "awareness state that is not JSON"),
    ],
)
async def test_malformed_frame_closes_only_that_connection(
    server: RunningServer, session: aiohttp.ClientSession, frame: bytes, why: str
) -> None:
    good = await YWebsocketClient(session, server.ws_url("victim")).connect()
    good.text += "safe"
    bad = await YWebsocketClient(session, server.ws_url("victim")).connect()
    await bad.send_raw(frame)
    await bad.closed.wait()
    assert bad.close_code in (1003, 1007), why
    # Everyone else is still served, and the document is intact.
    good.text += "!"
    other = await YWebsocketClient(session, server.ws_url("victim")).connect()
    await wait_until(lambda: str(other.text) == "safe!", what="document intact after " + why)
    await good.close()
    await other.close()


async def test_text_frame_closes_the_connection(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    bad = await YWebsocketClient(session, server.ws_url("text")).connect()
    assert bad.ws is not None
    await bad.ws.send_str("hello")
    await bad.closed.wait()
    assert bad.close_code == 1003


async def test_oversized_message_closes_the_connection(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    server = await server_factory(max_message_bytes=64 * 1024)
    bad = await YWebsocketClient(session, server.ws_url("big")).connect()
    await bad.send_raw(sync_message(SYNC_UPDATE, b"\x00" * (65 * 1024)))
    await bad.closed.wait()
    assert bad.close_code == 4413  # final for y-websocket clients: the same upload would fail again
    errors = server.app[METRICS].errors
    assert errors.labels("message_too_big")._value.get() == 1
    assert errors.labels("transport")._value.get() == 0
    good = await YWebsocketClient(session, server.ws_url("big")).connect()
    good.text += "still here"
    await good.close()


@pytest.mark.parametrize("kind", ["query-awareness", "update"])
async def test_rate_limit_closes_a_flooding_connection(
    server_factory: ServerFactory, session: aiohttp.ClientSession, kind: str
) -> None:
    # Queries are read by the connection's task, updates as they are parsed: both are limited.
    server = await server_factory(rate_limit=5, rate_burst=10)
    flood = await YWebsocketClient(session, server.ws_url("flood")).connect()
    source: Doc = Doc()
    text = source.get("t", type=Text)
    for i in range(40):
        if flood.closed.is_set():
            break
        if kind == "update":
            before = source.get_state()
            text += f"{i},"
            await flood.send_raw(sync_message(SYNC_UPDATE, source.get_update(before)))
        else:
            await flood.send_raw(bytes([MESSAGE_QUERY_AWARENESS]))
    await flood.closed.wait()
    assert flood.close_code == 1008


async def test_updates_and_awareness_are_handled_as_they_are_parsed(
    server: RunningServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the aiohttp versions it was verified on, the hot messages skip the connection's task."""
    from item_socket import connection, ywebsocket

    direct: list[int] = []
    receive = ywebsocket.YWebsocketPeer.receive_directly

    def counting(peer: ywebsocket.YWebsocketPeer, room: object, data: bytes) -> bool:
        handled = receive(peer, room, data)  # type: ignore[arg-type]
        if handled:
            direct.append(data[0])
        return handled

    monkeypatch.setattr(ywebsocket.YWebsocketPeer, "receive_directly", counting)
    a = await YWebsocketClient(session, server.ws_url("direct")).connect()
    b = await YWebsocketClient(session, server.ws_url("direct")).connect()
    for i in range(5):
        a.text += f"{i}"
    await a.send_awareness(4321, 1, {"user": "a"})
    await wait_until(lambda: str(b.text) == "01234" and 4321 in b.awareness_seen, what="relayed")
    if aiohttp.__version__.startswith(connection.DIRECT_READING_AIOHTTP):
        assert direct.count(0) >= 5 and direct.count(1) >= 1, direct  # 0: sync, 1: awareness
    else:
        assert direct == []  # another aiohttp: read through its public API only
    await a.close()
    await b.close()


async def test_large_document_syncs_to_a_fresh_client(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    writer = await YWebsocketClient(session, server.ws_url("large")).connect()
    writer.text += "y" * (5 * 1024 * 1024)
    reader = await YWebsocketClient(session, server.ws_url("large")).connect()
    await wait_until(lambda: len(str(reader.text)) == 5 * 1024 * 1024, what="5 MiB document")
    await writer.close()
    await reader.close()


async def test_sync_step2_from_the_client_is_applied(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    source: Doc = Doc()
    source.get("t", type=Text).insert(0, "from step 2")
    ws = await session.ws_connect(server.ws_url("step2"))
    await ws.send_bytes(sync_message(SYNC_STEP2, source.get_update()))
    await ws.close()
    reader = await YWebsocketClient(session, server.ws_url("step2")).connect()
    await wait_until(lambda: str(reader.text) == "from step 2", what="step 2 applied")
    await reader.close()


def test_awareness_helper_encodes_like_y_protocols() -> None:
    # varUint(1 entry), client 300 (two bytes), clock 1, JSON string
    assert awareness_update(300, 1, None) == b"\x01" + write_var_uint(300) + b"\x01\x04null"


async def test_a_rejoin_storm_cuts_the_first_sync_once_per_document_state(
    server: RunningServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Clients that join together with the same state vector share one answer: computed, cut into
    # parts and framed once, not once per client (a 20 MB document costs seconds per cut).
    import item_socket.connection as connection

    cuts: list[int] = []
    real_split = connection.split_update

    def counting_split(update: bytes, budget: int) -> list[bytes]:
        cuts.append(len(update))
        return real_split(update, budget)

    monkeypatch.setattr(connection, "split_update", counting_split)
    writer = await YWebsocketClient(session, server.ws_url("storm")).connect()
    writer.text += "z" * (2 * 1024 * 1024)
    size = 2 * 1024 * 1024

    def server_length() -> int:
        room = server.app[REGISTRY].rooms.get("storm")
        return len(str(room.doc.get("t", type=Text))) if room is not None else -1

    await wait_until(lambda: server_length() == size, what="the writer's document on the server")
    readers = [YWebsocketClient(session, server.ws_url("storm")) for _ in range(12)]
    await asyncio.gather(*(reader.connect() for reader in readers))
    for reader in readers:
        assert len(str(reader.text)) == size
    assert len(cuts) == 1, f"the answer was cut {len(cuts)} times for 12 clients"
    # A change makes a new answer: the next client gets the new state, cut anew.
    writer.text += "!"
    late = YWebsocketClient(session, server.ws_url("storm"))
    await wait_until(lambda: server_length() == size + 1, what="the change on the server")
    await late.connect()
    assert str(late.text).endswith("!")
    assert len(cuts) == 2
    for client in (writer, late, *readers):
        await client.close()


async def test_an_idle_connection_keeps_no_request_or_handler_task(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    """Memory per idle connection: once set up, a /ws connection holds neither aiohttp's request
    nor a task (aiohttp 3.14, whose internals the detaching was verified against); it keeps
    working, and leaves its document when the client goes."""
    from item_socket import connection

    verified = aiohttp.__version__.startswith(connection.DIRECT_READING_AIOHTTP)
    a = await YWebsocketClient(session, server.ws_url("detached")).connect()
    b = await YWebsocketClient(session, server.ws_url("detached")).connect()
    peers = list(server.app[CONNECTIONS].peers)
    assert len(peers) == 2
    for peer in peers:
        assert isinstance(peer, ywebsocket.YWebsocketPeer)
        assert not hasattr(peer, "__dict__") and not hasattr(peer.session, "__dict__")
        assert isinstance(peer.ws._req, ywebsocket._RequestStandIn) == verified
    handlers = [t for t in asyncio.all_tasks() if "handle_ywebsocket" in repr(t.get_coro())]
    assert len(handlers) == (0 if verified else 2)  # another aiohttp: each keeps its handler task
    a.text += "still relayed"
    await wait_until(lambda: str(b.text) == "still relayed", what="relayed after detaching")
    await a.close()
    await wait_until(lambda: len(server.app[CONNECTIONS].peers) == 1, what="a left")
    await b.close()
    await wait_until(lambda: not server.app[CONNECTIONS].peers, what="b left")


async def test_a_client_that_stops_answering_pings_is_dropped_and_leaves_its_document(
    server_factory: ServerFactory, session: aiohttp.ClientSession
) -> None:
    """A vanished client (no TCP close) is found by the server's ping, also once its connection runs
    without a handler task: its session leaves the document and its awareness goes."""
    server = await server_factory(ping_interval=2.0)  # pongs are due within 1 s
    watcher = await YWebsocketClient(session, server.ws_url("silent")).connect()
    silent = await session.ws_connect(server.ws_url("silent"), autoping=False)
    presence = awareness_update(777, 1, {"u": 1})
    await silent.send_bytes(b"\x01" + write_var_uint(len(presence)) + presence)  # 1: awareness
    await wait_until(lambda: 777 in watcher.awareness_seen, what="the silent client's presence")
    assert len(server.app[CONNECTIONS].peers) == 2
    # The silent client reads nothing (its pings stay unanswered) and sends nothing from here on.
    peers = server.app[CONNECTIONS].peers
    await wait_until(lambda: len(peers) == 1, seconds=15, what="the silent client dropped")
    await wait_until(lambda: watcher.awareness_seen.get(777, "") is None, seconds=10, what="presence gone")
    await silent.close()
    await watcher.close()
