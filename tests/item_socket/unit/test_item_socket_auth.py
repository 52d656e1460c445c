"""JWT auth: refusals on both protocols, read-only connections whose writes are dropped."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jwt
import pytest
import socketio
from pycrdt import Doc, Text

from item_socket.auth import Access, Authorizer, Unauthorized
from item_socket.yprotocol import SYNC_UPDATE, sync_message

from .conftest import RunningServer, ServerFactory
from .support import RawSocketIOClient, SocketIOClient, YWebsocketClient, wait_until

SECRET = secrets.token_hex(32)  # throwaway, generated per run


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwt-secret"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
async def auth_server(server_factory: ServerFactory, secret_file: Path) -> RunningServer:
    return await server_factory(auth_secret_file=secret_file)


def token(docs: dict[str, str], secret: str = SECRET, **claims: object) -> str:
    return jwt.encode({"docs": docs, **claims}, secret, algorithm="HS256")


def test_globs_grant_the_strongest_matching_access() -> None:
    authorizer = Authorizer(SECRET.encode())
    tok = token({"team-*": "read", "team-a/*": "write"})
    assert authorizer.access(tok, "team-b/board") is Access.READ
    assert authorizer.access(tok, "team-a/board") is Access.WRITE
    with pytest.raises(Unauthorized, match="no access"):
        authorizer.access(tok, "other")


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda: None, "missing token"),
        (lambda: token({"*": "write"}, secret="wrong-secret-of-sufficient-length-000"), "Signature"),
        (lambda: token({"*": "write"}, exp=int(time.time()) - 60), "expired"),
        (lambda: jwt.encode({"sub": "x"}, SECRET, algorithm="HS256"), "docs"),
        (lambda: token({"elsewhere/*": "write"}), "no access"),
    ],
)
async def test_y_websocket_refusal_sends_the_auth_message_then_closes(
    auth_server: RunningServer,
    session: aiohttp.ClientSession,
    make_token: Callable[[], str | None],
    reason: str,
) -> None:
    client = YWebsocketClient(session, auth_server.ws_url("secret-doc", make_token()))
    await client.connect(sync=False)
    await client.closed.wait()
    assert client.auth_denied is not None and reason in client.auth_denied
    assert client.close_code == 4403  # final for y-websocket clients: no reconnect loop
    assert not client.synced.is_set()


async def test_socketio_refusal_is_unauthorized(auth_server: RunningServer) -> None:
    client = SocketIOClient(auth_server.http_url, "secret-doc", token=token({"other": "write"}))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()
    assert client.connect_error == {"message": "Unauthorized"}
    await client.close()


async def test_socketio_refusal_packet_on_the_wire(
    auth_server: RunningServer, session: aiohttp.ClientSession
) -> None:
    raw = RawSocketIOClient(session, auth_server.http_url, "secret-doc")
    reply = await raw.connect(auth={"token": "not-a-jwt"})
    assert reply.startswith("44/yjs|secret-doc,") and "Unauthorized" in reply
    await raw.close()


async def test_writers_write_and_read_only_writes_are_dropped_on_both_protocols(
    auth_server: RunningServer, session: aiohttp.ClientSession
) -> None:
    write = token({"board-*": "write"})
    read = token({"board-*": "read"})
    writer = await YWebsocketClient(session, auth_server.ws_url("board-1", write)).connect()
    writer.text += "by writer"
    yws_reader = await YWebsocketClient(session, auth_server.ws_url("board-1", read)).connect()
    sio_reader = await SocketIOClient(auth_server.http_url, "board-1", token=read).connect()
    await wait_until(
        lambda: str(yws_reader.text) == "by writer" and str(sio_reader.text) == "by writer",
        what="readers receive",
    )

    # Read-only clients try every write path; none reaches the document.
    stray: Doc = Doc()
    stray.get("t", type=Text).insert(0, "INTRUDER ")
    intrusion = stray.get_update()
    await yws_reader.send_raw(sync_message(SYNC_UPDATE, intrusion))
    await yws_reader.send_raw(sync_message(1, intrusion))
    await sio_reader.emit("sync-update", intrusion)
    late_reader = SocketIOClient(auth_server.http_url, "board-1", token=read)
    late_reader.doc.get("t", type=Text).insert(0, "OFFLINE ")  # offered through the ack diff
    await late_reader.connect()

    writer.text += "!"
    fresh = await YWebsocketClient(session, auth_server.ws_url("board-1", write)).connect()
    await wait_until(lambda: str(fresh.text) == "by writer!", what="writer's edit")
    assert "INTRUDER" not in str(fresh.text) and "OFFLINE" not in str(fresh.text)
    # The read-only connections stay open (dropped, not closed).
    assert not yws_reader.closed.is_set() and not sio_reader.disconnected.is_set()
    for client in (writer, yws_reader, fresh):
        await client.close()
    for sio_client in (sio_reader, late_reader):
        await sio_client.close()
