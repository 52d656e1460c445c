"""The y-socket.io protocol (namespace /yjs|<doc>), driven by python-socketio's AsyncClient."""

from __future__ import annotations

import aiohttp
import pytest
import socketio
from pycrdt import Doc, Text

from item_socket.keys import CONNECTIONS

from .conftest import RunningServer, ServerFactory
from .support import RawSocketIOClient, SocketIOClient, YWebsocketClient, awareness_update, wait_until


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_clients_converge_over_each_transport(server: RunningServer, transport: str) -> None:
    a = await SocketIOClient(server.http_url, f"sio-{transport}", transports=(transport,)).connect()
    b = await SocketIOClient(server.http_url, f"sio-{transport}", transports=(transport,)).connect()
    a.text += "left "
    b.text += "right"
    await wait_until(lambda: len(str(a.text)) == 10 and str(a.text) == str(b.text), what="convergence")
    late = await SocketIOClient(server.http_url, f"sio-{transport}", transports=(transport,)).connect()
    await wait_until(lambda: str(late.text) == str(a.text), what="late joiner state")
    assert {peer.transport for peer in server.app[CONNECTIONS].peers} == {transport}
    for client in (a, b, late):
        await client.close()


async def test_server_sync_step_1_ack_diff_is_applied(server: RunningServer) -> None:
    # The client's answer to the server's sync-step-1 carries what the server is missing.
    a = SocketIOClient(server.http_url, "ackdiff")
    a.text += "offline edit"
    await a.connect()
    b = await SocketIOClient(server.http_url, "ackdiff").connect()
    await wait_until(lambda: str(b.text) == "offline edit", what="ack diff applied")
    await a.close()
    await b.close()


async def test_both_protocols_share_the_document(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    sio = await SocketIOClient(server.http_url, "cross").connect()
    yws = await YWebsocketClient(session, server.ws_url("cross")).connect()
    sio.text += "socket.io "
    yws.text += "y-websocket"
    await wait_until(lambda: len(str(sio.text)) == 21 and str(sio.text) == str(yws.text), what="cross sync")
    await yws.send_awareness(55, 1, {"from": "yws"})
    await wait_until(lambda: sio.awareness_seen.get(55) == {"from": "yws"}, what="cross awareness")
    await sio.close()
    await yws.close()


async def test_awareness_of_a_departed_client_is_removed_at_once(server: RunningServer) -> None:
    a = await SocketIOClient(server.http_url, "aw-sio").connect()
    b = await SocketIOClient(server.http_url, "aw-sio").connect()
    await a.emit("awareness-update", awareness_update(99, 1, {"name": "a"}))
    await wait_until(lambda: b.awareness_seen.get(99) == {"name": "a"}, what="awareness relayed")
    await a.close()
    await wait_until(lambda: 99 in b.awareness_seen and b.awareness_seen[99] is None, what="removal")
    await b.close()


@pytest.mark.parametrize("ending", ["websocket close", "DISCONNECT packet then close"])
async def test_burst_then_immediate_close_loses_nothing(
    server: RunningServer, session: aiohttp.ClientSession, ending: str
) -> None:
    # A raw client: python-socketio's own client aborts its send queue on disconnect.
    source: Doc = Doc()
    text = source.get("t", type=Text)
    client = RawSocketIOClient(session, server.http_url, "sio-burst")
    assert (await client.connect()).startswith("40/yjs|sio-burst,")
    for i in range(300):
        before = source.get_state()
        text += f"{i};"
        await client.emit_binary("sync-update", source.get_update(before))
    if ending.startswith("DISCONNECT"):
        await client.send_text("41/yjs|sio-burst,")
    await client.close()
    reader = await SocketIOClient(server.http_url, "sio-burst").connect()
    await wait_until(lambda: str(reader.text) == str(text), what="all 300 updates")
    await reader.close()


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("sync-update", b"\x07\x99garbage"),
        ("sync-update", "text instead of bytes"),
        ("sync-step-1", b"\xff\xff\xff"),
        ("awareness-update", b"\x01\x05"),
    ],
)
async def test_malformed_event_closes_only_that_connection(
    server: RunningServer, event: str, payload: object
) -> None:
    good = await SocketIOClient(server.http_url, "sio-victim").connect()
    good.text += "safe"
    bad = await SocketIOClient(server.http_url, "sio-victim").connect()
    await bad.emit(event, payload)
    await wait_until(lambda: bad.disconnected.is_set(), what="bad client disconnected")
    good.text += "!"
    other = await SocketIOClient(server.http_url, "sio-victim").connect()
    await wait_until(lambda: str(other.text) == "safe!", what="document intact")
    assert not good.disconnected.is_set()
    await good.close()
    await other.close()


async def test_other_namespaces_are_refused(server: RunningServer) -> None:
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.http_url, namespaces=["/chat"], transports=["websocket"], wait_timeout=5)
    await client.disconnect()


async def test_large_document_syncs_over_polling_and_websocket(server_factory: ServerFactory) -> None:
    server = await server_factory()
    writer = await SocketIOClient(server.http_url, "sio-large").connect()
    writer.text += "z" * (5 * 1024 * 1024)
    await wait_until(
        lambda: (
            server.app[CONNECTIONS].peers
            and all(
                len(str(p.room.doc.get("t", type=Text))) == 5 * 1024 * 1024
                for p in server.app[CONNECTIONS].peers
            )
        ),
        what="writer's update applied",
    )
    for transport in ("websocket", "polling"):
        reader = await SocketIOClient(server.http_url, "sio-large", transports=(transport,)).connect()
        await wait_until(lambda r=reader: len(str(r.text)) == 5 * 1024 * 1024, what=f"5 MiB over {transport}")
        await reader.close()
    await writer.close()


async def test_permessage_deflate_is_never_negotiated(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    # Pre-encoded broadcast frames are shared by all peers: no per-connection compressor allowed.
    engineio_url = server.http_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    for url in (engineio_url, server.ws_url("deflate")):
        ws = await session.ws_connect(url, compress=15)
        assert ws.compress == 0, url
        await ws.close()


async def test_document_names_match_across_protocols(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    sio = await SocketIOClient(server.http_url, "with space/ü").connect()
    sio.text += "same doc"
    yws = await YWebsocketClient(session, server.ws_url("with%20space/%C3%BC")).connect()
    await wait_until(lambda: str(yws.text) == "same doc", what="the same document by both names")
    await sio.close()
    await yws.close()


async def test_mixed_transports_in_one_document_all_receive_every_update(server: RunningServer) -> None:
    clients = [
        await SocketIOClient(server.http_url, "mixed", transports=(transport,)).connect()
        for transport in ("websocket", "polling", "websocket", "polling")
    ]
    for i in range(50):
        clients[i % 4].text += f"{i};"
    await wait_until(
        lambda: all(str(c.text) == str(clients[0].text) and str(c.text).count(";") == 50 for c in clients),
        what="every client has all 50 edits",
    )
    for client in clients:
        await client.close()


async def test_a_request_on_a_polling_session_its_client_closed_is_a_client_error(
    server: RunningServer,
) -> None:
    url = f"{server.http_url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(url) as resp:
            opened = await resp.text()
        sid = opened[opened.index('"sid":"') + 7 :].split('"', 1)[0]
        statuses = []
        for body in ("1", "40", "1"):  # CLOSE, then packets on the closed session
            async with session.post(f"{url}&sid={sid}", data=body) as resp:
                statuses.append(resp.status)
        async with session.get(f"{url}&sid={sid}") as resp:
            statuses.append(resp.status)
    assert statuses[0] == 200
    assert statuses[1:] == [400, 400, 400], statuses


async def test_binary_events_with_and_without_ack_ids_are_all_handled(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    # Events without an ack id take the server's receive fast path, those with one take
    # python-socketio's path (which answers the ack): interleaved, every update is applied.
    source: Doc = Doc()
    text = source.get("t", type=Text)
    client = RawSocketIOClient(session, server.http_url, "sio-acks")
    assert (await client.connect()).startswith("40/yjs|sio-acks,")
    assert client.ws is not None
    acked_ids = list(range(1, 40, 2))
    for i in range(40):
        before = source.get_state()
        text += f"{i};"
        update = source.get_update(before)
        if i in acked_ids:
            await client.send_text(f'451-/yjs|sio-acks,{i}["sync-update",{{"_placeholder":true,"num":0}}]')
            await client.ws.send_bytes(update)
        else:
            await client.emit_binary("sync-update", update)
    answered: list[int] = []
    while len(answered) < len(acked_ids):
        frame = await client.ws.receive(timeout=10)
        assert frame.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), frame
        if frame.type == aiohttp.WSMsgType.TEXT and frame.data.startswith("43/yjs|sio-acks,"):
            answered.append(int(frame.data.split(",", 1)[1].split("[", 1)[0]))
    assert answered == acked_ids
    reader = await SocketIOClient(server.http_url, "sio-acks").connect()
    await wait_until(lambda: str(reader.text) == str(text), what="all 40 updates")
    await client.close()
    await reader.close()


async def test_a_binary_event_header_followed_by_text_closes_only_that_connection(
    server: RunningServer, session: aiohttp.ClientSession
) -> None:
    # The attachment the header announces is missing: the text frame in its place is python-socketio's
    # to judge (it becomes the event's argument, a malformed sync-update), not silently dropped.
    good = await SocketIOClient(server.http_url, "sio-noattach").connect()
    good.text += "safe"
    bad = RawSocketIOClient(session, server.http_url, "sio-noattach")
    assert (await bad.connect()).startswith("40/yjs|sio-noattach,")
    assert bad.ws is not None
    await bad.send_text('451-/yjs|sio-noattach,["sync-update",{"_placeholder":true,"num":0}]')
    await bad.send_text('42/yjs|sio-noattach,["sync-update","text"]')
    while True:
        frame = await bad.ws.receive(timeout=10)
        if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            break
    other = await SocketIOClient(server.http_url, "sio-noattach").connect()
    await wait_until(lambda: str(other.text) == "safe", what="document intact")
    assert not good.disconnected.is_set()
    await good.close()
    await other.close()


async def test_updates_and_awareness_are_handled_as_they_are_parsed(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the aiohttp versions it was verified on, binary Yjs events skip python-engineio's loop."""
    from item_socket import connection, socketio_ns

    direct: list[str] = []
    receive = socketio_ns.YjsNamespace.receive_directly

    def counting(
        handler: socketio_ns.YjsNamespace, event: str, namespace: str, sid: str, data: bytes
    ) -> bool:
        handled = receive(handler, event, namespace, sid, data)
        if handled:
            direct.append(event)
        return handled

    monkeypatch.setattr(socketio_ns.YjsNamespace, "receive_directly", counting)
    a = await SocketIOClient(server.http_url, "sio-direct").connect()
    b = await SocketIOClient(server.http_url, "sio-direct").connect()
    for i in range(5):
        a.text += f"{i}"
    await a.emit("awareness-update", awareness_update(4321, 1, {"user": "a"}))
    await wait_until(lambda: str(b.text) == "01234" and 4321 in b.awareness_seen, what="relayed")
    if aiohttp.__version__.startswith(connection.DIRECT_READING_AIOHTTP):
        assert direct.count("sync-update") >= 5 and direct.count("awareness-update") >= 1, direct
    else:
        assert direct == []  # another aiohttp: read through its public API only
    await a.close()
    await b.close()
