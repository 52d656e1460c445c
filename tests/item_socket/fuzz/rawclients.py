"""Raw protocol clients for fuzzing: they send exactly the bytes they are given.

`read_document` is the well-behaved check used after every fuzz input: a y-websocket SyncStep1 with
an empty state vector, answered by the server's SyncStep2 carrying the whole document.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

import aiohttp
from pycrdt import Doc, Text

MESSAGE_SYNC = 0
SYNC_STEP1 = 0
SYNC_STEP2 = 1


def var_uint(value: int) -> bytes:
    """Encode a varUint (lib0 encoding)."""
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def read_var_uint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def var_bytes(payload: bytes) -> bytes:
    return var_uint(len(payload)) + payload


@dataclass
class Outcome:
    """What the server did with one fuzz input."""

    frames_sent: int = 0
    frames_received: int = 0
    closed_by_server: bool = False
    close_code: int | None = None
    texts: list[str] = field(default_factory=list)


async def _drain(ws: aiohttp.ClientWebSocketResponse, outcome: Outcome, quiet: float, limit: float) -> None:
    """Read until the server closes, or nothing arrives for `quiet` s, or `limit` s pass."""
    deadline = time.monotonic() + limit
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=min(quiet, remaining))
        except TimeoutError:
            return
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.ERROR,
        ):
            outcome.closed_by_server = True
            outcome.close_code = ws.close_code
            return
        outcome.frames_received += 1
        if msg.type == aiohttp.WSMsgType.TEXT and len(outcome.texts) < 20:
            outcome.texts.append(msg.data[:200])


async def send_ywebsocket_frames(
    base_ws_url: str, doc: str, frames: list[bytes | str], quiet: float = 0.03
) -> Outcome:
    """Open /ws/<doc>, send `frames` (bytes = binary, str = text), read what comes back, close."""
    outcome = Outcome()
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{base_ws_url}/ws/{doc}", max_msg_size=0, autoping=True) as ws,
    ):
        for frame in frames:
            if ws.closed:
                break
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                if isinstance(frame, str):
                    await ws.send_str(frame)
                else:
                    await ws.send_bytes(frame)
                outcome.frames_sent += 1
        await _drain(ws, outcome, quiet, 1.0)
    return outcome


async def socketio_connect(
    session: aiohttp.ClientSession, base_ws_url: str, namespace: str, auth: dict[str, str] | None = None
) -> aiohttp.ClientWebSocketResponse:
    """Engine.IO v4 WebSocket handshake plus a Socket.IO CONNECT to `namespace`; return the socket."""
    ws = await session.ws_connect(f"{base_ws_url}/socket.io/?EIO=4&transport=websocket", max_msg_size=0)
    opened = await ws.receive(timeout=5)
    assert opened.type == aiohttp.WSMsgType.TEXT and opened.data.startswith("0"), (
        f"no Engine.IO open: {opened}"
    )
    await ws.send_str(f"40{namespace}," + (json.dumps(auth) if auth else ""))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = await ws.receive(timeout=5)
        if msg.type == aiohttp.WSMsgType.TEXT and msg.data.startswith(f"40{namespace},"):
            return ws
        if msg.type == aiohttp.WSMsgType.TEXT and msg.data.startswith(f"44{namespace},"):
            raise ConnectionRefusedError(msg.data)
        if msg.type != aiohttp.WSMsgType.TEXT and msg.type != aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"socket closed during the Socket.IO handshake: {msg}")
    raise TimeoutError("no Socket.IO CONNECT answer")


async def send_socketio_frames(
    base_ws_url: str, doc: str, frames: list[bytes | str], quiet: float = 0.03, limit: float = 1.0
) -> Outcome:
    """Connect to namespace `/yjs|<doc>`, then send `frames` raw (str = text, bytes = binary).

    Then read until the server closes, nothing arrives for `quiet` s, or `limit` s pass.
    """
    outcome = Outcome()
    async with aiohttp.ClientSession() as session:
        ws = await socketio_connect(session, base_ws_url, f"/yjs|{doc}")
        try:
            for frame in frames:
                if ws.closed:
                    break
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    if isinstance(frame, str):
                        await ws.send_str(frame)
                    else:
                        await ws.send_bytes(frame)
                    outcome.frames_sent += 1
            await _drain(ws, outcome, quiet, limit)
        finally:
            await ws.close()
    return outcome


async def send_polling_bodies(base_http_url: str, bodies: list[bytes], with_session: bool) -> list[int]:
    """POST `bodies` to the Engine.IO long-polling endpoint (inside a real session or without one)."""
    statuses: list[int] = []
    timeout = aiohttp.ClientTimeout(total=3)  # a well-behaved server answers at once
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = f"{base_http_url}/socket.io/?EIO=4&transport=polling"
        if with_session:
            async with session.get(url) as resp:
                body = await resp.text()
            sid = json.loads(body[body.index("{") :])["sid"]
            url += f"&sid={sid}"
        for body in bodies:
            async with session.post(
                url, data=body, headers={"Content-Type": "text/plain;charset=UTF-8"}
            ) as resp:
                statuses.append(resp.status)
                await resp.read()
    return statuses


async def read_document(base_ws_url: str, doc: str, within: float = 5.0) -> str:
    """Fetch `doc` as a well-behaved y-websocket client would and return its Y.Text 'text'."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{base_ws_url}/ws/{doc}", max_msg_size=0) as ws,
    ):
        await ws.send_bytes(bytes((MESSAGE_SYNC, SYNC_STEP1)) + var_bytes(b"\x00"))
        deadline = time.monotonic() + within
        while (remaining := deadline - time.monotonic()) > 0:
            msg = await ws.receive(timeout=remaining)
            if msg.type != aiohttp.WSMsgType.BINARY:
                raise ConnectionError(f"server ended the sync with {msg.type}: {msg.data!r}")
            data = msg.data
            if data[:2] == bytes((MESSAGE_SYNC, SYNC_STEP2)):
                update, _end = _var_bytes_at(data, 2)
                ydoc = Doc()
                ydoc.apply_update(update)
                return str(ydoc.get("text", type=Text))
        raise TimeoutError(f"no SyncStep2 for {doc} within {within}s")


def _var_bytes_at(data: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = read_var_uint(data, pos)
    return data[pos : pos + length], pos + length


def run(coro: object, timeout: float = 15.0) -> object:
    """Run one coroutine on a fresh loop with an overall deadline."""

    async def bounded() -> object:
        return await asyncio.wait_for(coro, timeout)  # type: ignore[arg-type]

    return asyncio.run(bounded())
