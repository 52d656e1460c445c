"""The plain y-websocket protocol (npm ``y-websocket`` WebsocketProvider) at ``/ws/<document>``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.helpers import DEFAULT_CHUNK_SIZE

from .connection import (
    SYNC_PART_BYTES,
    LimitedWebSocketResponse,
    Refusal,
    Services,
    Session,
    wait_until_sent,
)
from .keys import SERVICES
from .logs import log_event
from .rooms import Broadcast, InvalidUpdate, Peer, Room
from .yprotocol import (
    MESSAGE_AUTH,
    MESSAGE_AWARENESS,
    MESSAGE_QUERY_AWARENESS,
    MESSAGE_SYNC,
    SYNC_STEP1,
    SYNC_STEP2,
    SYNC_UPDATE,
    ProtocolError,
    auth_denied_message,
    awareness_message,
    read_var_bytes,
    read_var_uint,
    sync_message,
    write_var_uint,
)

logger = logging.getLogger(__name__)
PROTOCOL = "ywebsocket"
# Close codes y-websocket clients (3.x) treat as final: 4400-4499 mirror HTTP 4xx and stop their
# reconnecting (``defaultShouldReconnect`` in y-websocket.js); every other code is retried.
CLOSE_FORBIDDEN = 4403
CLOSE_MESSAGE_TOO_BIG = 4413
# How long one part of a large first sync may take to be received before the client counts as stalled.
_PART_WAIT_S = 300.0


_UPDATE_PREFIX = bytes((MESSAGE_SYNC, SYNC_UPDATE))
_AWARENESS_PREFIX = bytes((MESSAGE_AWARENESS,))


def _encode_frame(message: Broadcast) -> bytes:
    """The whole WebSocket frame of a broadcast: what ``server_ws_frame(sync_message(...))`` makes.

    Built in one join (no intermediate message bytes, no enum arithmetic): it runs once per update.
    """
    payload = message.payload
    size = len(payload)
    prefix = _UPDATE_PREFIX if message.event == "sync-update" else _AWARENESS_PREFIX
    var_size = bytes((size,)) if size < 0x80 else write_var_uint(size)
    length = len(prefix) + len(var_size) + size
    if length < 126:
        header = bytes((0x82, length))  # FIN + binary opcode, unmasked
    else:
        header = b"\x82" + _extended_length(length)
    return b"".join((header, prefix, var_size, payload))


def _extended_length(length: int) -> bytes:
    """The length bytes of a frame header for a payload of 126 bytes or more (RFC 6455 5.2)."""
    if length < 65536:
        return bytes((126,)) + length.to_bytes(2, "big")
    return bytes((127,)) + length.to_bytes(8, "big")


# aiohttp versions whose WebSocketResponse._post_start the direct reading below reproduces. On any
# other version /ws reads through aiohttp's public ``async for`` only (same behaviour, slower).
_DIRECT_READING_AIOHTTP = ("3.14.",)


class _DirectQueue(WebSocketDataQueue):
    """aiohttp's WebSocket message queue, which first offers each binary message to ``on_binary``.

    aiohttp queues every parsed message for the handler task, which ``async for`` wakes once per
    message: a future, a task step and a WSMessage per update, about a tenth of a delivery's CPU
    (docs/benchmarks.md). Updates and awareness changes, the messages that arrive by the thousand,
    are handled right here as the parser produces them; anything else, or a message while the
    task still has queued ones (order), goes to the queue as before. ``on_binary`` returns False
    for a message it leaves to the task.
    """

    on_binary: Callable[[bytes], bool] | None = None

    def feed_data(self, data: Any, size: int) -> None:
        on_binary = self.on_binary
        if on_binary is None or data[0] is not WSMsgType.BINARY or self._buffer or not on_binary(data[1]):
            super().feed_data(data, size)


class YWebsocketResponse(LimitedWebSocketResponse):
    """The WebSocket of a y-websocket connection: ``direct_queue`` takes the hot messages directly.

    Reaches into aiohttp's internals (``_post_start``): verified on the versions of
    ``_DIRECT_READING_AIOHTTP``; on others ``direct_queue`` stays None and all reading is public.
    """

    direct_queue: _DirectQueue | None = None

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        if not aiohttp.__version__.startswith(_DIRECT_READING_AIOHTTP):
            super()._post_start(request, protocol, writer)
            return
        # aiohttp 3.14's _post_start, with our queue in place of WebSocketDataQueue.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        assert self._loop is not None
        self._reader = self.direct_queue = _DirectQueue(
            request._protocol, DEFAULT_CHUNK_SIZE, loop=self._loop
        )
        self._parser = WebSocketReader(
            self._reader, self._max_msg_size, compress=bool(self._compress), decode_text=self._decode_text
        )
        callback = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=callback)
        request.protocol.keep_alive(False)


class YWebsocketPeer(Peer):
    """A y-websocket connection. Broadcasts are written as one pre-encoded frame per message."""

    __slots__ = (
        "_buffer_limit",
        "_closing",
        "_transport",
        "close_task",
        "document",
        "session",
        "tasks",
        "ws",
    )

    protocol = PROTOCOL

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport, session: Session) -> None:
        super().__init__(session.can_write)
        self.ws = ws
        self.session = session
        self.document = session.document
        self._transport = transport
        self._buffer_limit = session.buffer_limit
        self._closing = False
        self.close_task: asyncio.Task[Any] | None = None
        # Tasks sending a large first sync in parts; a set of its own only when there is one.
        self.tasks: set[asyncio.Task[None]] | None = None

    @property
    def transport(self) -> str:
        return "websocket"

    @property
    def closing(self) -> bool:
        """True once the server started closing this connection."""
        return self._closing

    def send_broadcast(self, message: Broadcast) -> int:
        # Fast path: the frame is encoded once per broadcast (shared by every peer) and written
        # straight to the socket, with no coroutine or task per recipient. Safe because we never
        # negotiate permessage-deflate (no per-connection compressor state) and aiohttp writes
        # each frame of its own with a single synchronous transport.write as well.
        transport = self._transport
        if self._closing or transport.is_closing():
            return 0
        waiting = transport.get_write_buffer_size()
        if waiting > self._buffer_limit:  # compared here: this runs once per delivery
            self.session.slow_consumer(waiting, self._buffer_limit)
            return 0
        frame: bytes | None = message.cache.get(PROTOCOL)  # Broadcast.encoded, inlined
        if frame is None:
            frame = message.cache[PROTOCOL] = _encode_frame(message)
        transport.write(frame)
        return len(frame)

    def send_in_parts(self, diff: bytes) -> None:
        """Send a large SyncStep2 body as several messages, in the background, paced by the socket.

        Updates first, SyncStep2 last: y-websocket counts itself synced on SyncStep2. Meanwhile
        the connection keeps reading (the client's own edits are not held up) and broadcasts
        interleave between parts (whole frames; updates apply in any order).
        """
        task = asyncio.create_task(self._send_parts(diff))
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send_parts(self, diff: bytes) -> None:
        room = self.session.room
        messages = room.framed_answers.get((PROTOCOL, diff)) if room is not None else None
        if messages is None:
            parts = await self.session.sync_parts(diff)
            last = len(parts) - 1
            messages = [
                sync_message(SYNC_STEP2 if i == last else SYNC_UPDATE, p) for i, p in enumerate(parts)
            ]
            if room is not None and len(room.framed_answers) < 4:
                room.framed_answers[PROTOCOL, diff] = messages
        for index, message in enumerate(messages):
            # About one part in flight: a ping or a broadcast never waits behind the whole sync.
            if index and not await wait_until_sent(self._transport, SYNC_PART_BYTES, _PART_WAIT_S):
                if not self._transport.is_closing():
                    self.close_soon(f"first sync stalled: a part was not received within {_PART_WAIT_S:g} s")
                return
            if self._closing or self.ws.closed:
                return
            try:
                await self.ws.send_bytes(message)
            except (ConnectionError, RuntimeError):
                return  # the connection is going; its reader ends it
            self.session.count_out(1, len(message))

    def receive_directly(self, room: Room, data: bytes) -> bool:
        """Handle an update or awareness message as it is parsed (see ``_DirectQueue``).

        Returns False, leaving the message to the handler task, for every other message and while
        the document is rebuilt. Does what the task's loop does for the message, errors included.
        """
        if len(data) < 2 or room.rebuilding is not None:
            return False
        kind = data[0]
        if not (kind == MESSAGE_AWARENESS or (kind == MESSAGE_SYNC and data[1] in (SYNC_STEP2, SYNC_UPDATE))):
            return False
        if self._closing:
            return True  # closing: nothing more is applied
        received_at = time.perf_counter()
        session = self.session
        if session.accept_message(len(data)):
            try:
                handle_message(room, self, data, received_at)
            except (ProtocolError, InvalidUpdate) as exc:
                session.rejected(exc, "message")
            except Exception:
                # Raised here it would reach aiohttp's parser, not this connection's task.
                logger.exception("y-websocket message from %s failed", self.document)
                session.fail("internal", "internal error", WSCloseCode.INTERNAL_ERROR)
        return True

    def close_soon(self, reason: str, code: int = WSCloseCode.GOING_AWAY) -> None:
        if self._closing:
            return
        self._closing = True
        log_event(
            logger,
            logging.INFO,
            "connection_closed_by_server",
            "closing y-websocket connection: %s",
            reason,
            protocol=PROTOCOL,
            document=self.document,
            reason=reason,
        )
        self.close_task = asyncio.create_task(self.ws.close(code=code, message=reason[:120].encode()))


def handle_message(room: Room, peer: YWebsocketPeer, data: bytes, received_at: float) -> bytes | None:
    """Process one client message; return the reply to send, if any.

    Raises ProtocolError or InvalidUpdate on bad input (the caller closes the connection).
    """
    message_type, pos = read_var_uint(data, 0)
    if message_type == MESSAGE_SYNC:
        subtype, pos = read_var_uint(data, pos)
        if subtype == SYNC_STEP1:
            state_vector, _ = read_var_bytes(data, pos)
            diff = room.diff_since(state_vector)
            if len(diff) > SYNC_PART_BYTES:
                # Never framed whole: the answer object is shared by every client joining now.
                peer.send_in_parts(diff)
                return None
            return sync_message(SYNC_STEP2, diff)
        if subtype in (SYNC_STEP2, SYNC_UPDATE):
            if not peer.can_write:
                return None  # read-only: writes are dropped, the connection stays
            update, _ = read_var_bytes(data, pos)
            room.apply_update(update, received_at, peer)
            return None
        raise ProtocolError(f"unknown sync message subtype {subtype}")
    if message_type == MESSAGE_AWARENESS:
        update, _ = read_var_bytes(data, pos)
        room.apply_awareness(update, peer)
        return None
    if message_type == MESSAGE_QUERY_AWARENESS:
        snapshot = room.awareness_snapshot()
        return awareness_message(snapshot) if snapshot is not None else None
    if message_type == MESSAGE_AUTH:
        return None  # only meaningful server -> client
    raise ProtocolError(f"unknown message type {message_type}")


async def _send(ws: web.WebSocketResponse, data: bytes) -> bool:
    """Send one message; False if the client is gone.

    A failed send must not stop the reading: a client that wrote and then closed its end at once
    (an app killed right after typing) has messages still waiting to be read and applied.
    """
    try:
        await ws.send_bytes(data)
    except ConnectionResetError:
        return False
    return True


async def handle_ywebsocket(request: web.Request) -> web.StreamResponse:
    """aiohttp handler of ``/ws/{doc}``: one y-websocket connection to one document."""
    services: Services = request.app[SERVICES]
    session = Session(services, PROTOCOL, request.match_info["doc"])
    try:
        session.admit()
    except Refusal as refusal:
        if refusal.final:
            raise web.HTTPBadRequest(text=f"{refusal.reason}\n") from None
        raise web.HTTPServiceUnavailable(text=f"{refusal.reason}\n", headers={"Retry-After": "1"}) from None
    transport = request.transport
    if transport is None:
        raise web.HTTPBadRequest(text="connection already closed\n")

    ws = YWebsocketResponse(
        too_big_code=CLOSE_MESSAGE_TOO_BIG,  # final: the same upload would fail again
        compress=False,  # never permessage-deflate: see YWebsocketPeer.send_broadcast
        max_msg_size=services.settings.max_message_bytes,
        heartbeat=services.settings.ping_interval,
    )
    await ws.prepare(request)
    try:
        session.authorize(request.query.get("token"))
    except Refusal as refusal:
        await ws.send_bytes(auth_denied_message(refusal.reason))
        await ws.close(code=CLOSE_FORBIDDEN, message=b"Unauthorized")
        return ws
    try:
        room = await session.join()
    except Refusal:
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"document unavailable")
        return ws

    peer = YWebsocketPeer(ws, transport, session)
    session.attach(peer)
    try:
        await _send(ws, sync_message(SYNC_STEP1, room.doc.get_state()))
        snapshot = room.awareness_snapshot()
        if snapshot is not None:
            await _send(ws, awareness_message(snapshot))
        if ws.direct_queue is not None:
            ws.direct_queue.on_binary = lambda data: peer.receive_directly(room, data)
        async for msg in ws:
            if peer.closing:
                break  # closed from the direct path (a rejected message, the rate limit)
            if msg.type == WSMsgType.BINARY:
                received_at = time.perf_counter()
                data: bytes = msg.data
                if not session.accept_message(len(data)):
                    break
                # The rebuild check is inline (no coroutine per message): this runs for every update.
                if room.rebuilding is not None and not await session.usable():
                    break
                try:
                    reply = handle_message(room, peer, data, received_at)
                except (ProtocolError, InvalidUpdate) as exc:
                    session.rejected(exc, "message")
                    break
                if reply is None:
                    continue
                if await _send(ws, reply):
                    session.count_out(1, len(reply))
            elif msg.type == WSMsgType.TEXT:
                session.fail(
                    "malformed",
                    "text frame received; y-websocket messages are binary",
                    WSCloseCode.UNSUPPORTED_DATA,
                )
                break
            elif msg.type == WSMsgType.ERROR:
                session.transport_failed(msg.data)
                break
    finally:
        if ws.direct_queue is not None:
            ws.direct_queue.on_binary = None  # no message reaches a session that left
        session.leave()
        for task in list(peer.tasks or ()):
            task.cancel()
    if peer.close_task is not None:
        with contextlib.suppress(Exception):
            await peer.close_task
    return ws
