"""Raw protocol connections for end-to-end tests that need exact bytes (e.g. a chosen awareness clock).

The e2e tests are synchronous and drive the npm clients through blocking calls, so these raw
connections live on an asyncio loop in a background thread (``BackgroundLoop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
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


class _Bucket:
    """A token bucket shared by every connection of a proxy: one link of ``rate`` bytes/s."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def take(self, nbytes: int) -> None:
        """Wait until ``nbytes`` may pass (serialised: the link carries one packet at a time)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            now = loop.time()
            start = max(now, self._next)
            self._next = start + nbytes / self.rate
            # Rate shaping, not synchronisation: the bytes leave when the link has carried the last ones.
            await asyncio.sleep(self._next - now)


class SlowLinkProxy:
    """A TCP proxy on 127.0.0.1 that carries ``rate`` bytes/s each way, like a slow network link.

    Every client connection gets its own connection to ``target_port``; all share the link. The
    proxy reads from one side only as fast as it writes to the other, with small socket buffers,
    so the sender feels the slow link instead of filling a fast buffer.
    """

    SEGMENT = 8192  # bytes per read: 55 ms at 150 KB/s

    def __init__(self, target_port: int, rate: float) -> None:
        self.target_port = target_port
        self.port = 0
        self._down = _Bucket(rate)
        self._up = _Bucket(rate)
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """Base http URL of the proxy."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> SlowLinkProxy:
        """Listen on a free port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=self.SEGMENT)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * self.SEGMENT)
        upstream.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(upstream, ("127.0.0.1", self.target_port))
            server_reader, server_writer = await asyncio.open_connection(sock=upstream, limit=self.SEGMENT)
        except OSError:
            upstream.close()
            client_writer.close()
            return
        client_writer.transport.set_write_buffer_limits(high=self.SEGMENT)
        server_writer.transport.set_write_buffer_limits(high=self.SEGMENT)
        pumps = [
            asyncio.create_task(self._pump(server_reader, client_writer, self._down)),
            asyncio.create_task(self._pump(client_reader, server_writer, self._up)),
        ]
        for task in pumps:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for writer in (client_writer, server_writer):
                writer.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bucket: _Bucket
    ) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(self.SEGMENT):
                await bucket.take(len(data))
                writer.write(data)
                await writer.drain()

    async def stop(self) -> None:
        """Stop listening and cut every proxied connection."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
