"""Raw protocol connections for end-to-end tests that need exact bytes (e.g. a chosen awareness clock).

The e2e tests are synchronous and drive the npm clients through blocking calls, so these raw
connections live on an asyncio loop in a background thread (``BackgroundLoop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")
DEADLINE = 10.0


def var_uint(value: int) -> bytes:
    """lib0 varUint: 7 bits per byte, low group first."""
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def var_bytes(payload: bytes) -> bytes:
    """lib0 byte array: varUint length, then the bytes."""
    return var_uint(len(payload)) + payload


def awareness_update(client_id: int, clock: int, state: Any) -> bytes:
    """One awareness entry encoded as y-protocols does (``state`` None = removed)."""
    return var_uint(1) + var_uint(client_id) + var_uint(clock) + var_bytes(json.dumps(state).encode())


class BackgroundLoop:
    """An asyncio loop in a daemon thread; ``run(coro)`` waits for its result (bounded)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._peers: list[RawPeer] = []

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and return its result; raise TimeoutError after ``timeout`` s."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open_peer(self, protocol: str, base_url: str, document: str) -> RawPeer:
        """Open a RawPeer on this loop; it is closed with the loop at the latest."""
        peer = RawPeer(protocol, base_url, document)
        self._peers.append(peer)
        return self.run(peer.open())

    def close(self) -> None:
        """Close the peers still open, then stop the loop and its thread."""
        for peer in self._peers:
            with contextlib.suppress(Exception):
                self.run(peer.close(), timeout=DEADLINE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


@contextlib.contextmanager
def background_loop() -> Iterator[BackgroundLoop]:
    """A BackgroundLoop, always stopped."""
    loop = BackgroundLoop()
    try:
        yield loop
    finally:
        loop.close()


class RawPeer:
    """One raw connection to a document: y-websocket (``ws``) or Socket.IO over WebSocket (``sio``).

    It answers Engine.IO pings and reads (and drops) everything else, so the server sees a live client.
    """

    def __init__(self, protocol: str, base_url: str, document: str) -> None:
        if protocol not in ("ws", "sio"):
            raise ValueError(f"unknown raw protocol {protocol!r}; use 'ws' or 'sio'")
        self.protocol = protocol
        self.base_url = base_url.replace("http://", "ws://")
        self.document = document
        self.namespace = f"/yjs|{document}"
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> RawPeer:
        """Connect (and, for Socket.IO, join the document's namespace)."""
        self._session = aiohttp.ClientSession()
        if self.protocol == "ws":
            self._ws = await self._session.ws_connect(f"{self.base_url}/ws/{self.document}")
        else:
            self._ws = await self._session.ws_connect(f"{self.base_url}/socket.io/?EIO=4&transport=websocket")
            opened = await self._ws.receive_str(timeout=DEADLINE)
            assert opened.startswith("0{"), opened
            await self._ws.send_str(f"40{self.namespace},")
            while True:
                reply = await self._ws.receive(timeout=DEADLINE)
                if reply.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"no CONNECT answer: {reply.type.name}")
                if reply.data.startswith("40"):
                    break
                if reply.data.startswith("44"):
                    raise ConnectionError(f"refused: {reply.data}")
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "2":
                await self._ws.send_str("3")  # Engine.IO pong

    async def announce(self, client_id: int, clock: int, state: Any) -> None:
        """Send an awareness update for ``client_id`` at ``clock``."""
        assert self._ws is not None
        update = awareness_update(client_id, clock, state)
        if self.protocol == "ws":
            await self._ws.send_bytes(b"\x01" + var_bytes(update))
        else:
            await self._ws.send_str(
                f'451-{self.namespace},["awareness-update",{{"_placeholder":true,"num":0}}]'
            )
            await self._ws.send_bytes(update)

    async def close(self) -> None:
        """Close the connection (a WebSocket close, no protocol goodbye); safe to repeat."""
        ws, session, reader = self._ws, self._session, self._reader
        self._ws = self._session = self._reader = None
        if ws is not None:
            await ws.close()
        if reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, DEADLINE)
        if session is not None:
            await session.close()
