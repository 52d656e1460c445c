"""Python clients of both item_socket protocols, for the unit tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
import socketio
from pycrdt import Awareness, Doc, Text

from item_socket.store import DocumentStore, StoreError
from item_socket.yprotocol import (
    MESSAGE_AUTH,
    MESSAGE_AWARENESS,
    MESSAGE_SYNC,
    SYNC_STEP1,
    SYNC_STEP2,
    SYNC_UPDATE,
    awareness_message,
    read_var_bytes,
    read_var_uint,
    sync_message,
)

DEADLINE = 10.0


async def wait_until(
    predicate: Callable[[], bool], seconds: float = DEADLINE, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.01)


def awareness_update(client_id: int, clock: int, state: dict[str, Any] | None) -> bytes:
    """Encode one awareness entry the way y-protocols does."""
    from item_socket.yprotocol import write_var_uint

    text = json.dumps(state).encode()
    entry = write_var_uint(client_id) + write_var_uint(clock) + write_var_uint(len(text)) + text
    return write_var_uint(1) + entry


def decode_awareness(update: bytes) -> dict[int, Any]:
    """client ID -> state (None = removed) of an encoded awareness update."""
    count, pos = read_var_uint(update, 0)
    states: dict[int, Any] = {}
    for _ in range(count):
        client_id, pos = read_var_uint(update, pos)
        _clock, pos = read_var_uint(update, pos)
        text, pos = read_var_bytes(update, pos)
        states[client_id] = json.loads(text)
    return states


class YWebsocketClient:
    """A y-websocket client: aiohttp WebSocket + pycrdt Doc, answering the server like the npm one."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.doc: Doc = Doc()
        self.text = self.doc.get("t", type=Text)
        self.awareness_seen: dict[int, Any] = {}
        self.auth_denied: str | None = None
        self.synced = asyncio.Event()
        self.closed = asyncio.Event()
        self.received_frames: list[bytes] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._subscription = self.doc.observe(self._on_local_change)
        self._applying_remote = False

    async def connect(self, *, sync: bool = True) -> YWebsocketClient:
        """Open the socket, start reading, send SyncStep1; wait for the server's SyncStep2."""
        self.ws = await self.session.ws_connect(self.url, max_msg_size=0, autoping=True)
        self._reader = asyncio.create_task(self._read())
        await self.ws.send_bytes(sync_message(SYNC_STEP1, self.doc.get_state()))
        if sync:
            await asyncio.wait_for(self.synced.wait(), DEADLINE)
        return self

    def _on_local_change(self, event: Any) -> None:
        if self._applying_remote or self.ws is None or self.ws.closed:
            return
        update = event.update
        asyncio.get_running_loop().create_task(self.ws.send_bytes(sync_message(SYNC_UPDATE, update)))

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    continue
                data: bytes = msg.data
                self.received_frames.append(data)
                kind, pos = read_var_uint(data, 0)
                if kind == MESSAGE_SYNC:
                    subtype, pos = read_var_uint(data, pos)
                    payload, _ = read_var_bytes(data, pos)
                    if subtype == SYNC_STEP1:
                        await self.ws.send_bytes(sync_message(SYNC_STEP2, self.doc.get_update(payload)))
                    else:
                        self._applying_remote = True
                        try:
                            self.doc.apply_update(payload)
                        finally:
                            self._applying_remote = False
                        if subtype == SYNC_STEP2:
                            self.synced.set()
                elif kind == MESSAGE_AWARENESS:
                    payload, _ = read_var_bytes(data, pos)
                    self.awareness_seen.update(decode_awareness(payload))
                elif kind == MESSAGE_AUTH:
                    _, pos = read_var_uint(data, pos)
                    reason, _ = read_var_bytes(data, pos)
                    self.auth_denied = reason.decode()
        finally:
            self.closed.set()

    async def send_raw(self, data: bytes) -> None:
        """Send one binary frame as-is."""
        assert self.ws is not None
        await self.ws.send_bytes(data)

    async def send_awareness(self, client_id: int, clock: int, state: dict[str, Any] | None) -> None:
        """Announce an awareness state."""
        await self.send_raw(awareness_message(awareness_update(client_id, clock, state)))

    @property
    def close_code(self) -> int | None:
        """The close code the server sent, once closed."""
        return self.ws.close_code if self.ws is not None else None

    async def close(self) -> None:
        """Close the socket and stop reading."""
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, DEADLINE)


class SocketIOClient:
    """A y-socket.io client built on python-socketio's AsyncClient and a pycrdt Doc."""

    def __init__(
        self,
        base_url: str,
        document: str,
        *,
        token: str | None = None,
        transports: tuple[str, ...] = ("websocket",),
    ) -> None:
        self.base_url = base_url
        self.namespace = f"/yjs|{document}"
        self.token = token
        self.transports = list(transports)
        self.doc: Doc = Doc()
        self.text = self.doc.get("t", type=Text)
        self.awareness = Awareness(self.doc)
        self.awareness_seen: dict[int, Any] = {}
        self.synced = asyncio.Event()
        self.disconnected = asyncio.Event()
        # aiohttp clients refuse frames over 4 MiB by default; a first sync can be bigger.
        self.client = socketio.AsyncClient(reconnection=False, websocket_extra_options={"max_msg_size": 0})
        self._applying_remote = False
        self._subscription = self.doc.observe(self._on_local_change)
        ns = self.namespace
        self.client.on("sync-step-1", self._on_sync_step_1, namespace=ns)
        self.client.on("sync-update", self._on_sync_update, namespace=ns)
        self.client.on("awareness-update", self._on_awareness, namespace=ns)
        self.client.on("disconnect", self._on_disconnect, namespace=ns)
        self.client.on("connect_error", self._on_connect_error, namespace=ns)
        self.connect_error: Any = None

    async def connect(self, *, sync: bool = True) -> SocketIOClient:
        """Connect to the document's namespace (raises socketio.exceptions.ConnectionError if refused)."""
        await self.client.connect(
            self.base_url,
            namespaces=[self.namespace],
            transports=self.transports,
            auth={"token": self.token} if self.token else None,
            wait_timeout=DEADLINE,
        )
        diff = await self.client.call(
            "sync-step-1", self.doc.get_state(), namespace=self.namespace, timeout=DEADLINE
        )
        self._apply(diff)
        if sync:
            await asyncio.wait_for(self.synced.wait(), DEADLINE)
        return self

    def _apply(self, update: bytes) -> None:
        self._applying_remote = True
        try:
            self.doc.apply_update(update)
        finally:
            self._applying_remote = False

    def _on_local_change(self, event: Any) -> None:
        if self._applying_remote or not self.client.connected:
            return
        asyncio.get_running_loop().create_task(
            self.client.emit("sync-update", event.update, namespace=self.namespace)
        )

    async def _on_sync_step_1(self, state_vector: bytes) -> bytes:
        self.synced.set()
        return self.doc.get_update(state_vector)

    async def _on_sync_update(self, update: bytes) -> None:
        self._apply(update)

    async def _on_awareness(self, update: bytes) -> None:
        self.awareness_seen.update(decode_awareness(update))

    async def _on_connect_error(self, data: Any) -> None:
        self.connect_error = data

    async def _on_disconnect(self, *args: Any) -> None:
        self.disconnected.set()

    async def emit(self, event: str, *data: Any) -> None:
        """Emit a raw event in the document namespace."""
        await self.client.emit(event, data if len(data) != 1 else data[0], namespace=self.namespace)

    async def close(self) -> None:
        """Disconnect."""
        with contextlib.suppress(Exception):
            await self.client.disconnect()


class RawSocketIOClient:
    """Engine.IO v4 / Socket.IO v5 over a bare WebSocket: nothing buffered or dropped client-side.

    Used where the exact bytes on the wire matter (bursts right before a close, malformed packets).
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, document: str) -> None:
        self.session = session
        self.url = base_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.namespace = f"/yjs|{document}"
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, auth: dict[str, Any] | None = None) -> str:
        """Open the session and join the namespace; return the CONNECT or CONNECT_ERROR packet."""
        self.ws = await self.session.ws_connect(self.url)
        opened = await self.ws.receive_str(timeout=DEADLINE)
        assert opened.startswith("0{"), opened
        await self.ws.send_str(f"40{self.namespace}," + (json.dumps(auth) if auth else ""))
        while True:
            reply = await self.ws.receive(timeout=DEADLINE)
            if reply.type == aiohttp.WSMsgType.TEXT and reply.data.startswith(("40", "44")):
                return str(reply.data)
            if reply.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                raise ConnectionError("closed during connect")

    async def emit_binary(self, event: str, payload: bytes) -> None:
        """Send a binary event: text header with placeholder, then the attachment frame."""
        assert self.ws is not None
        await self.ws.send_str(f'451-{self.namespace},["{event}",{{"_placeholder":true,"num":0}}]')
        await self.ws.send_bytes(payload)

    async def send_text(self, text: str) -> None:
        """Send one raw Engine.IO text frame."""
        assert self.ws is not None
        await self.ws.send_str(text)

    async def close(self) -> None:
        """Close the WebSocket right away (no Socket.IO DISCONNECT first)."""
        if self.ws is not None:
            await self.ws.close()


class FlakyStore(DocumentStore):
    """An in-memory store whose loads and writes can be made to fail or to stall."""

    def __init__(self) -> None:
        self.docs: dict[str, list[bytes]] = {}
        self.fail_loads = False
        self.fail_writes = False
        self.loads = 0
        self.load_gate = asyncio.Event()
        self.load_gate.set()
        self.write_gate = asyncio.Event()
        self.write_gate.set()
        self.events: list[str] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def load(self, name: str) -> list[bytes]:
        self.loads += 1
        self.events.append(f"load-start {name}")
        await self.load_gate.wait()
        if self.fail_loads:
            raise StoreError(f"disk on fire while loading {name}")
        self.events.append(f"load-end {name}")
        return list(self.docs.get(name, []))

    async def append_many(self, updates: Mapping[str, Sequence[bytes]]) -> None:
        self.events.append("write-start")
        await self.write_gate.wait()
        if self.fail_writes:
            raise StoreError("disk full")
        for name, batch in updates.items():
            self.docs.setdefault(name, []).extend(batch)
        self.events.append("write-end")
