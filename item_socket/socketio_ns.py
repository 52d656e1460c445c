"""The Socket.IO protocol of npm ``y-socket.io``: one namespace ``/yjs|<document>`` per document.

python-socketio does the handshake, namespaces, acks and long-polling. Broadcasts take a fast
path of our own (see ``SocketIOPeer.send_broadcast``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import engineio
import socketio
from aiohttp import StreamReader, WSCloseCode, WSMsgType, web
from engineio import packet as eio_packet
from engineio.async_drivers.aiohttp import WebSocket as EngineIOWebSocket
from engineio.async_drivers.aiohttp import translate_request as translate_aiohttp_request
from engineio.payload import Payload
from socketio import packet as sio_packet
from socketio.exceptions import ConnectionRefusedError as SocketIORefusal

from .connection import (
    SYNC_PART_BYTES,
    LimitedWebSocketResponse,
    Refusal,
    Services,
    Session,
    transport_failed,
    wait_until_sent,
)
from .logs import log_event
from .metrics import Metrics
from .rooms import Broadcast, InvalidUpdate, Peer, Room
from .settings import Settings
from .yprotocol import server_ws_frame

logger = logging.getLogger(__name__)
PROTOCOL = "socketio"
NAMESPACE_PREFIX = "/yjs|"
LIBRARY_LOGGERS = ("item_socket.lib.socketio", "item_socket.lib.engineio")
VERIFIED_LIBRARIES = {"python-socketio": "5.18.1", "python-engineio": "4.15.1"}
"""The versions the receive and broadcast fast paths (which read the libraries' internals) were
verified against, the ones requirements/item-socket.lock pins. On any other version item_socket
uses the libraries' own receive loop and `emit` instead: slower, still correct."""


def fast_paths_verified(installed: Mapping[str, str] | None = None) -> bool:
    """Whether the installed python-socketio/python-engineio are VERIFIED_LIBRARIES.

    `installed` (name -> version) defaults to the installed distributions. Logs one warning naming
    the versions when they differ.
    """
    if installed is None:
        installed = {name: importlib.metadata.version(name) for name in VERIFIED_LIBRARIES}
    different = {
        name: installed.get(name)
        for name, version in VERIFIED_LIBRARIES.items()
        if installed.get(name) != version
    }
    if different:
        log_event(
            logger,
            logging.WARNING,
            "socketio_fast_paths_off",
            "python-socketio/python-engineio %s were not verified with item_socket's fast paths "
            "(verified: %s): using the libraries' own receive and emit paths (slower, still correct)",
            different,
            VERIFIED_LIBRARIES,
        )
    return not different


class WebSockets:
    """The aiohttp WebSocketResponse behind each Engine.IO session that uses the WebSocket transport
    (what the broadcast fast path writes to), and whether the fast paths are on at all."""

    def __init__(self, fast_paths: bool = True) -> None:
        self.by_eio_sid: dict[str, tuple[web.WebSocketResponse, asyncio.Transport]] = {}
        self.closing_tasks: set[asyncio.Future[Any]] = set()
        self.fast_paths = fast_paths


@dataclass(frozen=True)
class _DriverContext:
    """What the WebSocket driver needs besides python-engineio's handler and server."""

    sio: socketio.AsyncServer
    websockets: WebSockets
    metrics: Metrics


class WebSocketDriver(EngineIOWebSocket):
    """python-engineio's aiohttp WebSocket driver, replaced on our server only.

    The library's driver opens ``WebSocketResponse(max_msg_size=...)`` with aiohttp's default
    ``compress=True`` (permessage-deflate: CPU per frame, and per-connection compressor state that
    rules out sharing pre-encoded frames), keeps the response to itself, closes it after a failed
    send (dropping frames the client sent just before closing), and goes through a task per
    received frame. This one is uncompressed, registered in ``WebSockets`` for the broadcast fast
    path, never closes under a reader, and reads binary Yjs events itself (see ``wait``).
    """

    def __init__(self, context: _DriverContext, handler: Any, server: engineio.AsyncServer) -> None:
        super().__init__(handler, server)
        self._context = context
        self._held: bytes | str | None = None
        # A binary event's header read directly, waiting for its attachment: (message, size, target).
        self._header: tuple[Any, int, tuple[str, str, str, YjsNamespace]] | None = None

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request: web.Request = environ["aiohttp.request"]
        eio_socket = self.handler.__self__
        eio_sid: str = eio_socket.sid
        self._sock = LimitedWebSocketResponse(
            max_msg_size=self.server.max_http_buffer_size,
            compress=False,
            on_too_big=functools.partial(self._tell_too_big, eio_sid),
        )
        await self._sock.prepare(request)
        self.environ = environ
        self._eio_socket = eio_socket
        websockets = self._context.websockets
        entry = (self._sock, request.transport)
        websockets.by_eio_sid[eio_sid] = entry
        direct = self._sock.direct_queue if websockets.fast_paths else None
        if direct is not None:
            direct.on_message = self._on_message
        try:
            await self.handler(self)
        finally:
            if direct is not None:
                direct.on_message = None  # no event reaches a session that ended
            if websockets.by_eio_sid.get(eio_sid) is entry:
                del websockets.by_eio_sid[eio_sid]
            if not eio_socket.closed and not eio_socket.closing:
                # The handler was cancelled (aiohttp's handler_cancellation, used by its test
                # server) before python-engineio closed the session: without this, no
                # disconnect event ever fires and the client's room is never released.
                task = asyncio.ensure_future(
                    eio_socket.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
                )
                websockets.closing_tasks.add(task)
                task.add_done_callback(websockets.closing_tasks.discard)
        return self._sock

    async def _tell_too_big(self, eio_sid: str) -> None:
        """Before the 1009 close: DISCONNECT every namespace, so socket.io-client stays away.

        Written straight to the socket: packets queued for python-engineio's writer would come
        after the close frame and never be read. The close then waits ``_TOLD_GRACE_S``:
        socket.io-client acts on a decoded packet on its next tick but on a close at once, so a
        close right behind the DISCONNECT overtook it (2 runs in 5) and the client reconnected.
        A fixed grace, because the client's own close frame cannot be read once aiohttp's reader
        failed on the oversized frame.
        """
        sio = self._context.sio
        namespaces = _namespaces_of(sio, eio_sid)
        for namespace in namespaces:
            disconnect = sio.packet_class(sio_packet.DISCONNECT, namespace=namespace).encode()
            await self._sock.send_str(eio_packet.Packet(eio_packet.MESSAGE, disconnect).encode())
        if namespaces:
            await asyncio.sleep(_TOLD_GRACE_S)

    async def close(self) -> None:
        # python-engineio's writer calls this when it stops, also after a failed send because
        # the client already closed its end. Closing the response then would make the reader
        # drop the frames the client sent before closing (updates lost at disconnect); with
        # the transport already going, the reader reaches those frames and then the EOF.
        transport = self.environ["aiohttp.request"].transport
        if transport is None or transport.is_closing():
            return
        await self._sock.close()

    async def wait(self) -> bytes | str:
        # Why a receive fast path: python-engineio's WebSocket loop creates an asyncio task (and
        # a wait_for timer) per incoming frame, then python-socketio decodes the header and
        # reassembles the binary event through several layers of coroutines. With two frames
        # per update that was about as much CPU as the rest of the server put together. Here
        # the two frames of a client's binary ``sync-update``/``awareness-update`` (the text
        # header, then its attachment) are read and handed to YjsNamespace.trigger_event
        # (same checks, rate limit and metrics) without returning to python-engineio, in
        # order, from the same reader. Everything else (pings, connects, acks, other events,
        # polling) returns to python-engineio/python-socketio as before.
        if self._held is not None:
            data, self._held = self._held, None
            return data
        started = time.monotonic()
        while True:
            data = await self._receive()
            if not self._context.websockets.fast_paths:
                return data
            # Return to python-engineio at least every ping interval: its read loop times out
            # (and drops the connection) after ping_interval + ping_timeout without a frame.
            if (
                type(data) is not str
                or not data.startswith(_BINARY_EVENT_HEADER)
                or time.monotonic() - started > self.server.ping_interval
            ):
                return data
            target = self._fast_event_target(data)
            if target is None:
                return data
            attachment = await self._receive()
            if type(attachment) is not bytes:
                self._held = attachment  # not the attachment: python-socketio reports it
                return data
            event, namespace, sid, handler = target
            try:
                await handler.trigger_event(event, namespace, sid, attachment)
            except Exception:
                # As python-engineio does for a failing handler: log, keep the connection.
                self.server.logger.exception("Unknown receive error")

    def _on_message(self, message: Any, size: int) -> bool:
        """``DirectQueue.on_message``: take a client's binary Yjs event as aiohttp parses it.

        The sibling of ``wait``'s fast path without the task wake-ups: a ``sync-update`` or
        ``awareness-update`` header (text) is held until the next message; if that is its binary
        attachment, the event goes to ``YjsNamespace.receive_directly`` here, in the parser's
        call. Otherwise the header is queued first and the message after it, in order, for
        python-engineio's loop (and ``wait``). Never raises into aiohttp's parser.
        """
        held = self._header
        if held is not None:
            self._header = None
            if message[0] is WSMsgType.BINARY:
                event, namespace, sid, handler = held[2]
                try:
                    if handler.receive_directly(event, namespace, sid, message[1]):
                        return True
                except Exception:
                    # As python-engineio does for a failing handler: log, keep the connection.
                    self.server.logger.exception("Unknown receive error")
                    return True
            if self._sock.direct_queue is not None:
                self._sock.direct_queue.queue_for_task(held[0], held[1])
            return False
        if message[0] is not WSMsgType.TEXT or not message[1].startswith(_BINARY_EVENT_HEADER):
            return False
        target = self._fast_event_target(message[1])
        if target is None:
            return False
        self._header = (message, size, target)
        return True

    def _fast_event_target(self, header: str) -> tuple[str, str, str, YjsNamespace] | None:
        """(event, namespace, sid, handler) if ``header`` starts a binary event we handle here."""
        comma = header.find(",", len(_BINARY_EVENT_HEADER))
        event = _FAST_EVENT_ARGUMENTS.get(header[comma + 1 :]) if comma > 0 else None
        if event is None:
            return None
        namespace = header[len(_BINARY_EVENT_HEADER) : comma]
        eio_socket = self._eio_socket
        sio = self._context.sio
        handler = sio.namespace_handlers.get("*")
        # A binary packet still waiting for attachments in python-socketio owns the next frames.
        if (
            not namespace.startswith(NAMESPACE_PREFIX)
            or not isinstance(handler, YjsNamespace)
            or not eio_socket.upgraded
            or eio_socket.upgrading
            or eio_socket.sid in sio._binary_packet
        ):
            return None
        sid = sio.manager.sid_from_eio_sid(eio_socket.sid, namespace)
        if sid is None or not sio.manager.is_connected(sid, namespace):
            return None
        peer = handler.peers.get((namespace, sid))
        # A rebuilding room makes the handler wait; that wait belongs to python-engineio's
        # loop (no read timeout there), not to this read.
        if peer is None or peer.room.rebuilding is not None:
            return None
        return event, namespace, sid, handler

    async def _receive(self) -> bytes | str:
        msg = await self._sock.receive()
        if msg.type == WSMsgType.ERROR:
            documents = [
                ns[len(NAMESPACE_PREFIX) :] for ns in _namespaces_of(self._context.sio, self._eio_socket.sid)
            ]
            transport_failed(self._context.metrics, PROTOCOL, msg.data, ",".join(documents) or None)
        if not isinstance(msg.data, bytes | str):
            raise OSError(f"websocket closed ({msg.type.name})")
        return msg.data


def _namespaces_of(sio: socketio.AsyncServer, eio_sid: str) -> list[str]:
    """The document namespaces the Engine.IO session ``eio_sid`` is attached to."""
    handler = sio.namespace_handlers.get("*")
    if not isinstance(handler, YjsNamespace):
        return []
    return [namespace for (namespace, _sid), peer in handler.peers.items() if peer.eio_sid == eio_sid]


def _translate_request(request: web.Request) -> dict[str, Any]:
    """python-engineio's aiohttp request translation, with a body that reads whole (``_ExactBody``)."""
    environ: dict[str, Any] = translate_aiohttp_request(request)
    environ["wsgi.input"] = _ExactBody(request.content)
    return environ


def install_websocket_driver(sio: socketio.AsyncServer, websockets: WebSockets, metrics: Metrics) -> None:
    """Use ``WebSocketDriver`` and ``_translate_request`` on this server's Engine.IO instance only.

    Set on the instance, never on python-engineio's module-level table shared by every server.
    Without `websockets.fast_paths` the driver keeps its fixes but hands every frame to
    python-engineio.
    """
    context = _DriverContext(sio, websockets, metrics)
    sio.eio._async = {
        **sio.eio._async,
        "websocket": functools.partial(WebSocketDriver, context),
        "translate_request": _translate_request,
    }


class _ExactBody:
    """Request body whose ``read(n)`` returns n bytes.

    python-engineio reads a long-polling POST with one ``read(CONTENT_LENGTH)``, but aiohttp's
    ``StreamReader.read(n)`` returns what has arrived so far: large POSTs were cut short
    ("Invalid base64-encoded string") and their updates lost.
    """

    def __init__(self, content: StreamReader) -> None:
        self._content = content

    async def read(self, length: int = -1) -> bytes:
        if length < 0:
            return await self._content.read()
        try:
            return await self._content.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            return exc.partial


# Seconds an oversized long-polling POST waits for its client to act on the DISCONNECT (it then
# closes its session), and the grace between that DISCONNECT and the close over WebSocket.
_TOLD_WAIT_S = 5.0
_TOLD_GRACE_S = 1.0
# A part of a large first sync may wait this long (in _PART_WAIT_S steps) for the previous one to go.
_PART_WAIT_S = 30.0
_PART_WAITS = 10
# Packets queued for one polling (or upgrading) client before it is dropped as a slow consumer.
_MAX_QUEUED_PACKETS = 10_000
# An Engine.IO MESSAGE holding a Socket.IO BINARY_EVENT with one attachment, in a namespace.
_BINARY_EVENT_HEADER = "451-"
# The rest of the header after "<namespace>," as socket.io-client writes it (no ack id).
_FAST_EVENTS = ("sync-update", "awareness-update")
_FAST_EVENT_ARGUMENTS = {f'["{event}",{{"_placeholder":true,"num":0}}]': event for event in _FAST_EVENTS}


def _attachment_packet(message: Broadcast) -> eio_packet.Packet:
    return eio_packet.Packet(eio_packet.MESSAGE, message.payload)


async def close_engineio_session(
    sio: socketio.AsyncServer, websockets: WebSockets, eio_sid: str, code: int
) -> None:
    """Close an Engine.IO session at the transport level, so the client reconnects by itself.

    Not a Socket.IO DISCONNECT, after which clients stay away: the client sees its transport close
    and reconnects with its backoff, possibly to another replica. Over WebSocket the client ignores
    an Engine.IO CLOSE packet, so the WebSocket itself is closed (with ``code``); a long-polling
    session gets the CLOSE packet in its pending poll. Bounded: aiohttp's close waits at most 10 s.
    """
    entry = websockets.by_eio_sid.get(eio_sid)
    with contextlib.suppress(Exception):
        if entry is not None:
            await entry[0].close(code=code)
        else:
            await sio.eio.disconnect(eio_sid)


class SocketIOPeer(Peer):
    """One client of one ``/yjs|<document>`` namespace."""

    __slots__ = (
        "_buffer_limit",
        "_closing",
        "_eio_socket",
        "_websockets",
        "_ws_transport",
        "eio_sid",
        "namespace",
        "room",
        "session",
        "sid",
        "sio",
        "tasks",
    )

    protocol = PROTOCOL

    def __init__(
        self,
        sio: socketio.AsyncServer,
        websockets: WebSockets,
        session: Session,
        *,
        sid: str,
        eio_sid: str,
        namespace: str,
        room: Room,
    ) -> None:
        super().__init__(session.can_write)
        self.sio = sio
        self.session = session
        self.sid = sid
        self.eio_sid = eio_sid
        self.namespace = namespace
        self.room = room
        self._websockets = websockets
        self._buffer_limit = session.buffer_limit
        self._closing = False
        self.tasks: set[asyncio.Task[Any]] = set()
        # Looked up once, on the first broadcast that finds them: the Engine.IO socket of a
        # session never changes, nor its WebSocket once upgraded (a closed one: see send_broadcast).
        self._eio_socket: Any = None
        self._ws_transport: asyncio.Transport | None = None

    @property
    def transport(self) -> str:
        socket = self.sio.eio.sockets.get(self.eio_sid)
        return "websocket" if socket is not None and socket.upgraded else "polling"

    def _header(self, event: str) -> tuple[eio_packet.Packet, bytes]:
        """The text part of a binary ``event`` in this namespace: constant, so built once per room.

        A Socket.IO binary event is a text header whose argument is a placeholder
        (``451-/yjs|doc,["sync-update",{"_placeholder":true,"num":0}]``) followed by the binary
        attachment; python-socketio builds the header, we only reuse it.
        """
        key = ("socketio-header", event)
        cached = self.room.protocol_cache.get(key)
        if cached is None:
            encoded = self.sio.packet_class(
                sio_packet.EVENT, namespace=self.namespace, data=[event, b""]
            ).encode()
            header = eio_packet.Packet(eio_packet.MESSAGE, encoded[0])
            cached = self.room.protocol_cache[key] = (header, server_ws_frame(header.encode()))
        return cached

    def _websocket_frames(self, message: Broadcast) -> bytes:
        """The header frame and the attachment frame of ``message``, as one buffer."""
        return self._header(message.event)[1] + server_ws_frame(message.payload)

    def send_broadcast(self, message: Broadcast) -> int:
        # Why a fast path: python-socketio's emit to a room creates one asyncio task per recipient
        # per frame, and each Engine.IO socket then passes the packet through its own queue and
        # writer task. At 100 rooms x 4 clients that saturates a core at ~3.5k deliveries/s and
        # loses updates. Here each broadcast is encoded once (the header once per room, the
        # attachment frame once per update, shared by all peers). WebSocket clients whose
        # Engine.IO queue is empty (so nothing queued can be overtaken) get the prepared frames
        # written straight to their socket: no task, no queue. Other clients (polling, upgrading,
        # with a backlog) get the same packets through their Engine.IO queue, without a task.
        socket = self._eio_socket
        if socket is None:
            socket = self._eio_socket = self.sio.eio.sockets.get(self.eio_sid)
        if self._closing or socket is None or socket.closed or socket.closing:
            return 0
        transport = self._ws_transport
        # ``queue._queue`` is asyncio.Queue's deque: its emptiness without Queue.empty()'s call.
        if transport is not None and not socket.queue._queue:
            # The common case, inlined: upgraded, nothing queued. A closed WebSocket ends the
            # session (Engine.IO cannot fall back to polling), so dropping is all that is left.
            if transport.is_closing():
                return 0
            waiting = transport.get_write_buffer_size()
            if waiting > self._buffer_limit:
                self.session.slow_consumer(waiting, self._buffer_limit)
                return 0
            frames: bytes | None = message.cache.get("socketio-ws")
            if frames is None:
                frames = message.cache["socketio-ws"] = self._websocket_frames(message)
            transport.write(frames)
            return len(frames)
        if not self._websockets.fast_paths:
            # python-socketio's own emit (a task per recipient; tasks run in creation order).
            task = asyncio.ensure_future(
                self.sio.emit(message.event, message.payload, to=self.sid, namespace=self.namespace)
            )
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return len(message.payload)
        entry = self._websockets.by_eio_sid.get(self.eio_sid)
        if entry is not None and socket.upgraded and not socket.upgrading and socket.queue.empty():
            transport = entry[1]
            if transport is None or transport.is_closing():
                return 0
            self._ws_transport = transport
            waiting = transport.get_write_buffer_size()
            if waiting > self._buffer_limit:  # compared here: this runs once per delivery
                self.session.slow_consumer(waiting, self._buffer_limit)
                return 0
            # Both frames in one buffer, built once per broadcast: one write (one send) per peer.
            frames = message.encoded("socketio-ws", self._websocket_frames)
            transport.write(frames)
            return len(frames)
        queued = socket.queue.qsize()
        if queued > _MAX_QUEUED_PACKETS:
            self.session.slow_consumer(queued, _MAX_QUEUED_PACKETS, "packets")
            return 0
        socket.queue.put_nowait(self._header(message.event)[0])
        # One packet object per transport kind: Packet.encode() caches its first encoding
        # whatever the b64 argument, and polling needs base64 where WebSocket sends raw bytes.
        key = "socketio-eio-websocket" if socket.upgraded else "socketio-eio-polling"
        socket.queue.put_nowait(message.encoded(key, _attachment_packet))
        return len(message.payload)

    def send_in_parts(self, parts: list[bytes]) -> None:
        """Emit ``parts`` (Yjs updates) as ``sync-update`` events, in the background, paced.

        Each part is queued once the client has about received the previous one, so the server's
        pings go out between parts instead of behind all of them (socket.io-client drops a
        connection that gets no ping for ping interval + ping timeout: 45 s by default).
        """
        if parts:
            task = asyncio.create_task(self._send_parts(parts))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _send_parts(self, parts: list[bytes]) -> None:
        for index, part in enumerate(parts):
            socket = self.sio.eio.sockets.get(self.eio_sid)
            if self._closing or self.session.room is None or socket is None or socket.closed:
                return
            if index and not await self._previous_part_sent(socket):
                return
            await self.sio.emit("sync-update", part, to=self.sid, namespace=self.namespace)
            self.session.count_out(1, len(part))

    async def _previous_part_sent(self, socket: Any) -> bool:
        """Wait until the client has about received what was queued; False (closing it) if stalled."""
        for _ in range(_PART_WAITS):  # bounded: a stalled client is closed
            try:
                # Taken by Engine.IO's writer, or by the client's poll (polling then paces itself).
                await asyncio.wait_for(socket.queue.join(), _PART_WAIT_S)
                break
            except TimeoutError:
                if socket.closed or self._closing:
                    return False
        else:
            self.close_soon(f"first sync stalled: a part waited {_PART_WAITS * _PART_WAIT_S:g} s")
            return False
        # Over WebSocket, "taken by the writer" is not "received": the kernel buffers megabytes.
        # Wait until the client acknowledged all but about one part.
        entry = self._websockets.by_eio_sid.get(self.eio_sid)
        transport = entry[1] if entry is not None else None
        if transport is not None and not await wait_until_sent(
            transport, SYNC_PART_BYTES, _PART_WAITS * _PART_WAIT_S
        ):
            if not transport.is_closing():
                self.close_soon("first sync stalled: a part was not received in time")
            return False
        return True

    def close_soon(self, reason: str, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Close the whole Engine.IO connection, so the client reconnects by itself (``code`` unused)."""
        if self._closing:
            return
        self._closing = True
        log_event(
            logger,
            logging.INFO,
            "connection_closed_by_server",
            "closing Socket.IO connection: %s",
            reason,
            protocol=PROTOCOL,
            document=self.room.name,
            reason=reason,
        )
        task = asyncio.create_task(self._close())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _close(self) -> None:
        await close_engineio_session(self.sio, self._websockets, self.eio_sid, WSCloseCode.GOING_AWAY)


class YjsNamespace(socketio.AsyncNamespace):
    """Catch-all namespace handler serving every ``/yjs|<document>`` namespace."""

    def __init__(self, services: Services, websockets: WebSockets) -> None:
        super().__init__("*")
        self.services = services
        self.websockets = websockets
        self.peers: dict[tuple[str, str], SocketIOPeer] = {}

    async def trigger_event(self, event: str, *args: Any) -> Any:
        """Route events by their names (``sync-step-1`` is no valid method name)."""
        if event == "connect":
            return await self.on_connect(*args[:3], args[3] if len(args) > 3 else None)
        if event == "disconnect":
            namespace, sid = args[0], args[1]
            # python-engineio runs each received message in a task of its own (outside our
            # WebSocket fast path) but a transport close inline: frames read in one go before
            # the close have their tasks queued, not yet run. One turn of the loop lets them
            # run (each finishes without suspending), so a client's last edits are applied
            # before its session leaves the document instead of finding no peer.
            await asyncio.sleep(0)
            return self.on_disconnect(namespace, sid)
        namespace, sid, *data = args
        peer = self.peers.get((namespace, sid))
        if peer is None:
            return None
        session = peer.session
        received_at = time.perf_counter()
        if not session.accept_message(sum(len(d) for d in data if isinstance(d, bytes | str))):
            return None
        # The rebuild check is inline (no coroutine per message): this runs for every update.
        if peer.room.rebuilding is not None and not await session.usable():
            return None  # the room closes this connection with its reason
        if event in _FAST_EVENTS:
            self._apply(peer, event, data, received_at)
            return None
        try:
            if event == "sync-step-1":
                diff = peer.room.diff_since(_one_binary(event, data))
                if len(diff) > SYNC_PART_BYTES:
                    # The ack is one message: it carries the first part, sync-update events the rest.
                    parts = await session.sync_parts(diff)
                    diff = parts[0]
                    peer.send_in_parts(parts[1:])
                session.count_out(1, len(diff))
                return diff
        except InvalidUpdate as exc:
            session.rejected(exc, event)
            return None
        self.services.metrics.errors.labels("unknown_event").inc()
        log_event(
            logger,
            logging.DEBUG,
            "unknown_event",
            "ignored unknown event %r",
            event,
            protocol=PROTOCOL,
            document=peer.room.name,
        )
        return None

    def receive_directly(self, event: str, namespace: str, sid: str, attachment: bytes) -> bool:
        """Handle a ``sync-update``/``awareness-update`` as it is parsed (see ``WebSocketDriver``).

        Returns False, leaving the event to python-engineio's loop, while the document is rebuilt
        (that waits). Does what ``trigger_event`` does for the event, errors included.
        """
        peer = self.peers.get((namespace, sid))
        if peer is None:
            return True  # the client left its document: as trigger_event, nothing to do
        if peer.room.rebuilding is not None:
            return False
        received_at = time.perf_counter()
        if peer.session.accept_message(len(attachment)):
            self._apply(peer, event, [attachment], received_at)
        return True

    @staticmethod
    def _apply(peer: SocketIOPeer, event: str, data: list[Any], received_at: float) -> None:
        """Apply a client's ``sync-update`` or ``awareness-update`` (one binary argument)."""
        try:
            if event == "sync-update":
                update = _one_binary(event, data)
                if peer.can_write:
                    peer.room.apply_update(update, received_at, peer)
            else:
                peer.room.apply_awareness(_one_binary(event, data), peer)
        except InvalidUpdate as exc:
            peer.session.rejected(exc, event)

    async def on_connect(self, namespace: str, sid: str, environ: dict[str, Any], auth: Any) -> bool:
        """Admit (or refuse with ConnectionRefusedError) a client joining ``/yjs|<document>``."""
        if not namespace.startswith(NAMESPACE_PREFIX):
            log_event(
                logger,
                logging.WARNING,
                "connection_refused",
                "refused Socket.IO connection to %r: %s",
                namespace,
                "unknown namespace",
                protocol=PROTOCOL,
                namespace=namespace,
                reason="unknown namespace (expected /yjs|<document>)",
            )
            raise SocketIORefusal("Unknown namespace")
        session = Session(self.services, PROTOCOL, namespace[len(NAMESPACE_PREFIX) :])
        token = auth.get("token") if isinstance(auth, dict) else None
        try:
            session.admit()
            session.authorize(token if isinstance(token, str) else None)
            room = await session.join()
        except Refusal as refusal:
            if not refusal.final:
                # socket.io-client never retries a namespace connect_error. Closing the
                # Engine.IO session instead (before python-socketio can send the connect_error)
                # makes it reconnect with its backoff, and send its offline edits once admitted.
                eio_sid = self.server.manager.eio_sid_from_sid(sid, namespace)
                if eio_sid is not None:
                    await close_engineio_session(
                        self.server, self.websockets, eio_sid, WSCloseCode.TRY_AGAIN_LATER
                    )
            raise SocketIORefusal(refusal.public) from None
        eio_sid = self.server.manager.eio_sid_from_sid(sid, namespace)
        if eio_sid is None or eio_sid not in self.server.eio.sockets:
            session.leave()  # the client left while the document was loading
            raise SocketIORefusal("Connection closed")
        peer = SocketIOPeer(
            self.server, self.websockets, session, sid=sid, eio_sid=eio_sid, namespace=namespace, room=room
        )
        self.peers[(namespace, sid)] = peer
        session.attach(peer)
        # The initial sync must follow the CONNECT packet, which python-socketio queues only
        # after this handler returns.
        task = asyncio.create_task(self._initial_sync(peer))
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)
        return True

    def on_disconnect(self, namespace: str, sid: str) -> None:
        """Detach the client; its awareness states are removed for everyone at once."""
        peer = self.peers.pop((namespace, sid), None)
        if peer is not None:
            peer.session.leave()

    async def _initial_sync(self, peer: SocketIOPeer) -> None:
        room = peer.room

        def on_client_diff(*args: Any) -> None:
            # The client's ack to our sync-step-1: the updates we are missing.
            if (peer.namespace, peer.sid) not in self.peers or not peer.can_write:
                return
            try:
                room.apply_update(_one_binary("sync-step-1 ack", list(args)), time.perf_counter(), peer)
            except InvalidUpdate as exc:
                peer.session.rejected(exc, "sync-step-1 ack")

        try:
            await room.wait_usable()  # RoomUnavailable: logged below, the room closes the connection
            state = room.doc.get_state()
            await self.server.emit(
                "sync-step-1", state, to=peer.sid, namespace=peer.namespace, callback=on_client_diff
            )
            snapshot = room.awareness_snapshot() or room.awareness.encode_awareness_update([])
            await self.server.emit("awareness-update", snapshot, to=peer.sid, namespace=peer.namespace)
            peer.session.count_out(2, len(state) + len(snapshot))
        except Exception as exc:
            log_event(
                logger,
                logging.WARNING,
                "initial_sync_failed",
                "initial sync of %r failed: %s",
                room.name,
                exc,
                protocol=PROTOCOL,
                document=room.name,
            )


def _one_binary(event: str, data: list[Any]) -> bytes:
    if len(data) < 1 or not isinstance(data[0], bytes | bytearray):
        raise InvalidUpdate(f"{event} expects one binary argument, got {[type(d).__name__ for d in data]}")
    return bytes(data[0])


def oversized_polling_guard(sio: socketio.AsyncServer, metrics: Metrics, max_bytes: int) -> Any:
    """aiohttp middleware answering an oversized long-polling POST itself, and ending its session.

    python-engineio refuses such a body but then waits, inside the request, for the session's
    queued packets to be polled, which never happens while the client waits for the POST: the
    request hung until the ping timeout. The client is told with a namespace DISCONNECT (after
    which socket.io-client stays away; it reconnected and re-uploaded forever after a plain
    close), and the POST is answered once the client has closed its session, or after
    ``_TOLD_WAIT_S``: answered earlier, the failed POST would make it reconnect first.
    """

    @web.middleware
    def guard(request: web.Request, handler: Any) -> Awaitable[web.StreamResponse]:
        # Not a coroutine for the requests it passes on: no frame of it lives as long as a WebSocket.
        length = request.content_length
        if (
            request.method == "POST"
            and length is not None
            and length > max_bytes
            and request.path.startswith("/socket.io/")
        ):
            return refuse(request, length)
        return cast("Awaitable[web.StreamResponse]", handler(request))

    async def refuse(request: web.Request, length: int) -> web.StreamResponse:
        """Tell the client not to come back, close its session, answer 413."""
        metrics.errors.labels("message_too_big").inc()
        eio_sid = request.query.get("sid", "")
        socket = sio.eio.sockets.get(eio_sid)
        log_event(
            logger,
            logging.WARNING,
            "message_too_big",
            "long-polling POST of %d bytes exceeds --max-message-bytes %d; closing the session, "
            "the client is told not to reconnect",
            length,
            max_bytes,
            protocol=PROTOCOL,
            reason=f"message too big: {length} bytes",
        )
        if socket is not None and not socket.closed and not socket.closing:
            namespaces = _namespaces_of(sio, eio_sid)
            for namespace in namespaces:
                sid = sio.manager.sid_from_eio_sid(eio_sid, namespace)
                if sid is not None:
                    await sio.disconnect(sid, namespace=namespace)
            if namespaces:
                for _ in range(int(_TOLD_WAIT_S / 0.05)):  # bounded wait for the client's CLOSE
                    if socket.closed:
                        break
                    await asyncio.sleep(0.05)
            if not socket.closed and not socket.closing:
                await socket.close(wait=False, abort=False, reason=sio.eio.reason.TRANSPORT_ERROR)
        raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=length)

    return guard


def closed_session_guard(sio: socketio.AsyncServer) -> Any:
    """aiohttp middleware forgetting a closed Engine.IO session before python-engineio sees it.

    A long-polling session closed by its client (a POST holding the CLOSE packet) stays in
    ``eio.sockets`` with ``closed`` set; python-engineio's next request on it raises KeyError
    ("Session is disconnected") out of its POST path: a 500 instead of "Invalid session" (400).
    """

    @web.middleware
    def guard(request: web.Request, handler: Any) -> Awaitable[web.StreamResponse]:
        # Not a coroutine: it hands back the handler's awaitable, so no frame of it lives as long
        # as the WebSocket (memory per idle connection).
        if request.path.startswith("/socket.io/"):
            sid = request.query.get("sid")
            socket = sio.eio.sockets.get(sid) if sid else None
            if socket is not None and socket.closed:
                sio.eio.sockets.pop(sid, None)
        return cast("Awaitable[web.StreamResponse]", handler(request))

    return guard


class _EngineIOServer(engineio.AsyncServer):
    """python-engineio's server, not hanging requests on the close of a long-polling session."""

    async def disconnect(self, sid: str | None = None) -> None:
        socket = self.sockets.get(sid) if sid is not None else None
        if socket is not None and not socket.upgraded:
            # python-engineio waits for the queued CLOSE packet to be polled, but no client polls
            # a session whose request has just failed: that request (a malformed or oversized
            # POST) hung until the ping timeout.
            await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)
            self.sockets.pop(sid, None)
            return
        await super().disconnect(sid)


class SocketIOServer(socketio.AsyncServer):
    """python-socketio's server, releasing long-polls of closed sessions at once."""

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return _EngineIOServer

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and not socket.upgraded:
            # python-engineio leaves a pending long-poll GET of a closed session hanging until
            # the ping timeout (25-45 s of a held request, and a client waiting on it); end it now.
            socket.queue.put_nowait(None)


def create_socketio_server(
    settings: Settings, metrics: Metrics, websockets: WebSockets
) -> socketio.AsyncServer:
    """A python-socketio server configured for y-socket.io clients and real document sizes."""
    sio = SocketIOServer(
        async_mode="aiohttp",
        namespaces="*",
        cors_allowed_origins=settings.allowed_origins(),
        # Handle each client's events in order, inline: with a task per event, packets read just
        # before a disconnect are handled after it and dropped ("updates lost at disconnect").
        async_handlers=False,
        max_http_buffer_size=settings.max_message_bytes,
        ping_interval=settings.ping_interval,
        # Loggers of our own: given False, the libraries attach a plain-text handler of their own,
        # which breaks the one-JSON-object-per-line stderr.
        logger=logging.getLogger(LIBRARY_LOGGERS[0]),
        engineio_logger=logging.getLogger(LIBRARY_LOGGERS[1]),
    )
    websockets.fast_paths = websockets.fast_paths and fast_paths_verified()
    install_websocket_driver(sio, websockets, metrics)
    # python-engineio refuses long-polling POSTs of more than 16 packets ("Too many packets in
    # payload") and drops them whole; socket.io-client batches everything queued during a poll,
    # so a typing burst over polling would lose updates. The limit is a class attribute (the
    # knob the maintainer documents); the body size stays bounded by max_http_buffer_size.
    Payload.max_decode_packets = max(Payload.max_decode_packets, settings.max_message_bytes // 2)
    return sio
