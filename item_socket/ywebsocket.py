"""The plain y-websocket protocol (npm ``y-websocket`` WebsocketProvider) at ``/ws/<document>``."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.web_protocol import RequestHandler

from .connection import (
    SYNC_PART_BYTES,
    DirectQueue,
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


class YWebsocketResponse(LimitedWebSocketResponse):
    """The WebSocket of a y-websocket connection, which may outlive its handler (see _Detached)."""

    # True once the handler returned with the connection open.
    detached = False

    async def write_eof(self) -> None:  # type: ignore[override]
        """aiohttp's end of the response (a close), except for a detached connection: it stays open."""
        if self.detached:
            return
        await super().write_eof()


class YWebsocketPeer(Peer):
    """A y-websocket connection. Broadcasts are written as one pre-encoded frame per message."""

    __slots__ = (
        "_buffer_limit",
        "_closing",
        "_transport",
        "close_task",
        "document",
        "on_closed",
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
        # Called with the close task once it is done (a detached connection's end).
        self.on_closed: Callable[[asyncio.Task[Any]], None] | None = None
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
        """Handle an update or awareness message as it is parsed (see ``connection.DirectQueue``).

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
        if self.on_closed is not None:
            # Detached: no handler waits for the close, so its end is where the connection ends.
            self.close_task.add_done_callback(self.on_closed)


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
    """aiohttp handler of ``/ws/{doc}``: one y-websocket connection to one document.

    With aiohttp's internals verified (``connection.DIRECT_READING_AIOHTTP``) the handler returns once the
    connection is set up and the connection goes on without it (``_Detached``); otherwise it reads
    the connection until it ends.
    """
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
    detached = False
    try:
        await _send(ws, sync_message(SYNC_STEP1, room.doc.get_state()))
        snapshot = room.awareness_snapshot()
        if snapshot is not None:
            await _send(ws, awareness_message(snapshot))
        queue = ws.direct_queue
        if queue is not None:
            queue.on_message = functools.partial(_receive_directly, peer, room)
            if not peer.closing and not ws.closed and request.protocol.transport is transport:
                detached = _Detached.start(request.protocol, transport, ws, queue, peer, room)
                if detached:
                    return ws
        async for msg in ws:
            if not await _handle_queued(ws, peer, room, msg):
                break
    finally:
        if not detached:
            _leave(ws, peer)
    if peer.close_task is not None:
        with contextlib.suppress(Exception):
            await peer.close_task
    return ws


def _receive_directly(peer: YWebsocketPeer, room: Room, message: Any, _size: int) -> bool:
    """``DirectQueue.on_message``: binary messages go to ``YWebsocketPeer.receive_directly``."""
    return message[0] is WSMsgType.BINARY and peer.receive_directly(room, message[1])


async def _handle_queued(
    ws: YWebsocketResponse, peer: YWebsocketPeer, room: Room, msg: aiohttp.WSMessage
) -> bool:
    """Handle one message read from the connection's queue; False when the connection ends.

    The queue holds what the direct path (``YWebsocketPeer.receive_directly``) leaves: a first
    sync request, other message types, text frames, errors, and messages during a rebuild.
    """
    session = peer.session
    if peer.closing:
        return False  # closed from the direct path (a rejected message, the rate limit)
    if msg.type == WSMsgType.BINARY:
        received_at = time.perf_counter()
        data: bytes = msg.data
        if not session.accept_message(len(data)):
            return False
        # The rebuild check is inline (no coroutine per message): this runs for every update.
        if room.rebuilding is not None and not await session.usable():
            return False
        try:
            reply = handle_message(room, peer, data, received_at)
        except (ProtocolError, InvalidUpdate) as exc:
            session.rejected(exc, "message")
            return False
        if reply is not None and await _send(ws, reply):
            session.count_out(1, len(reply))
        return True
    if msg.type == WSMsgType.TEXT:
        session.fail(
            "malformed",
            "text frame received; y-websocket messages are binary",
            WSCloseCode.UNSUPPORTED_DATA,
        )
        return False
    if msg.type == WSMsgType.ERROR:
        session.transport_failed(msg.data)
        return False
    # CLOSE, CLOSING, CLOSED: the connection ended (aiohttp answered a close itself).
    return msg.type not in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)


def _leave(ws: YWebsocketResponse, peer: YWebsocketPeer) -> None:
    """The connection ended: no more messages reach the session, which leaves its document."""
    if ws.direct_queue is not None:
        ws.direct_queue.on_message = None  # no message reaches a session that left
        ws.direct_queue.detached = None
    peer.session.leave()
    for task in list(peer.tasks or ()):
        task.cancel()


# A detached connection's (empty, never fed) request queue; aiohttp only tests and measures it.
_NO_MESSAGES: tuple[()] = ()


class _RequestStandIn:
    """What a detached ``YWebsocketResponse`` still asks of its request (``_req``), and no more.

    aiohttp 3.14's WebSocketResponse uses ``_req.transport`` (closing, the heartbeat's timeout)
    and ``_req._protocol`` (the heartbeat's timer rounding); the real request, with its message,
    headers and URL (2-3 KiB), is released with it.
    """

    __slots__ = ("_protocol", "method", "path", "task", "transport")

    def __init__(self, protocol: RequestHandler, transport: asyncio.Transport, path: str) -> None:
        self._protocol = protocol
        self.transport: asyncio.Transport | None = transport
        self.method = "GET"
        self.path = path
        self.task = None


class _DetachedProtocol(asyncio.Protocol):
    """The transport's protocol for a detached connection: WebSocket bytes straight to the parser.

    What aiohttp's ``RequestHandler.data_received`` does once upgraded (which ignores all data once
    the handler is told to force-close, as a detached connection's must be), and the rest handed on.
    """

    __slots__ = ("_eof", "_handler", "_parser", "_ws")

    def __init__(self, handler: RequestHandler, parser: Any, ws: YWebsocketResponse) -> None:
        self._handler = handler
        self._parser = parser
        self._ws = ws
        self._eof = False

    def data_received(self, data: bytes) -> None:
        if self._eof or not data:
            return
        if self._ws._heartbeat is not None:
            self._ws._on_data_received()
        eof, _ = self._parser.feed_data(data)
        if eof:
            self._eof = True
            self._handler.close()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost follows

    def connection_lost(self, exc: BaseException | None) -> None:
        self._handler.connection_lost(exc)  # its parser's feed_eof ends the connection (_Detached.wake)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()


class _Detached:
    """A y-websocket connection that runs without a handler task once set up.

    A connection kept its aiohttp handler task for life: the HTTP request (message, headers, URL,
    match info), the request task and the handler task with their coroutine frames (middlewares,
    our handler, ``receive()``), 8-9 KiB per idle connection. Detached, updates and awareness are
    handled as they are parsed (as before), and a task is started only when something else is
    queued (a first sync request, a close, an error): it reads what is queued with aiohttp's
    ``receive()``, as the handler did, and ends. Pings are answered here, pongs dropped (what
    ``receive()`` does with them). The connection leaves its document when ``receive()`` reports
    its end or when the server's close completes.
    """

    __slots__ = ("_finished", "peer", "queue", "room", "task", "ws")

    def __init__(self, ws: YWebsocketResponse, queue: DirectQueue, peer: YWebsocketPeer, room: Room) -> None:
        self.ws = ws
        self.queue = queue
        self.peer = peer
        self.room = room
        self.task: asyncio.Task[None] | None = None
        self._finished = False

    @classmethod
    def start(
        cls,
        handler: RequestHandler,
        transport: asyncio.Transport,
        ws: YWebsocketResponse,
        queue: DirectQueue,
        peer: YWebsocketPeer,
        room: Room,
    ) -> bool:
        """Detach the connection from aiohttp's request handling; False if it cannot be (read it then).

        Only on the aiohttp versions whose internals this was verified against.
        """
        parser = ws._parser
        if parser is None or not hasattr(transport, "set_protocol"):
            return False
        detached = cls(ws, queue, peer, room)
        # aiohttp's request task ends without closing the transport once force-closing is set
        # (RequestHandler.start); data_received then ignores data, hence our protocol.
        handler._force_close = True
        handler.keep_alive(False)
        transport.set_protocol(_DetachedProtocol(handler, parser, ws))
        # What the handler kept for HTTP and for its task, unused from here on: the HTTP parser,
        # the request queue (a deque holds a 64-slot block), the data callback (ours calls it),
        # and the request task, done once we return (a done task keeps its coroutine).
        handler._parser = None
        handler._messages = _NO_MESSAGES  # type: ignore[assignment]
        handler._data_received_cb = None
        handler._task_handler = None
        ws._req = _RequestStandIn(handler, transport, ws._req.path if ws._req is not None else "")
        ws.detached = True
        peer.on_closed = detached.finish
        queue.detached = detached
        if queue._buffer or queue.is_eof():
            detached.wake()  # queued before we detached
        return True

    def take_control(self, message: Any) -> bool:
        """Handle a ping or a pong here (True); anything else is queued for the task (False)."""
        kind = message[0]
        if kind is WSMsgType.PONG:
            return True  # the heartbeat was reset by the data itself
        if kind is WSMsgType.PING:
            if not self.ws.closed:
                task = asyncio.ensure_future(self.ws.pong(message[1]))
                task.add_done_callback(_ignore_result)
            return True
        return False

    def wake(self) -> None:
        """Something was queued (or the connection ended): read it in a task, unless one does already.

        While the server's close is under way, its ``close()`` reads the queue (the client's close).
        """
        if self.task is not None or self._finished or self.peer.close_task is not None:
            return
        self.task = asyncio.create_task(self._read_queued())

    async def _read_queued(self) -> None:
        queue = self.queue
        try:
            while not self._finished and (queue._buffer or queue.is_eof()):
                msg = await self.ws.receive()
                if not await _handle_queued(self.ws, self.peer, self.room, msg):
                    self.finish()
                    return
        except Exception:
            logger.exception("y-websocket connection to %s failed", self.peer.document)
            self.finish()
            self.ws._close_transport()
        finally:
            self.task = None

    def finish(self, _task: asyncio.Task[Any] | None = None) -> None:
        """The connection ended: leave the document (once)."""
        if self._finished:
            return
        self._finished = True
        _leave(self.ws, self.peer)
        close_task = self.peer.close_task
        if close_task is not None:
            close_task.add_done_callback(_ignore_result)


def _ignore_result(task: asyncio.Future[Any]) -> None:
    """Retrieve a background close's or pong's outcome: failures of a closing connection are moot."""
    if not task.cancelled():
        task.exception()
