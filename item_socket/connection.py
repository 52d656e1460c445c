"""The life of one client connection, whatever its wire format.

A ``Session`` owns what both protocols share: admission (draining, ``--max-connections``),
authorization, joining the document, the per-connection rate limit, waiting for a rebuilding
document, the error metrics and logs, the slow-consumer check, and cutting a large first sync
into parts; ``LimitedWebSocketResponse`` makes the close for an oversized message final, and
``wait_until_sent`` paces by what the client received. The protocol handlers
(``ywebsocket.py``, ``socketio_ns.py``) only translate their wire format to and from it, as
pycrdt-websocket's shared websocket abstraction does; a scale-out (Redis) adds to this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, web
from aiohttp._websocket.reader import WebSocketDataQueue, WebSocketReader
from aiohttp.helpers import _EXC_SENTINEL, DEFAULT_CHUNK_SIZE
from aiohttp.http import WebSocketError

from .auth import Access, Authorizer, Unauthorized
from .connections import Connections
from .limits import TokenBucket
from .logs import log_event
from .metrics import Metrics
from .names import document_name_error
from .rooms import InvalidUpdate, Peer, Room, RoomLoadError, RoomRegistry, RoomUnavailable
from .settings import Settings
from .yprotocol import ProtocolError
from .ysplit import SplitError, split_update

logger = logging.getLogger(__name__)
# Largest part of a large first sync (see Session.sync_parts): 1.7 s at 150 KB/s, so each part
# arrives well within y-websocket's 30 s no-message watchdog on links down to ~10 KB/s, and a
# ping queued behind one part still arrives in time.
SYNC_PART_BYTES = 256 * 1024


class Refusal(Exception):
    """A connection is not admitted.

    ``reason`` is logged (and sent to y-websocket clients refused by authorization); ``public`` is
    what a Socket.IO client is told. ``final`` is True when retrying cannot help (a bad document
    name, authorization); otherwise the condition is temporary (draining, full, store failing).
    """

    def __init__(self, reason: str, *, final: bool, public: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.final = final
        self.public = public or reason


@dataclass(frozen=True)
class Services:
    """The application-wide objects every connection uses (one set per app)."""

    settings: Settings
    registry: RoomRegistry
    connections: Connections
    authorizer: Authorizer
    metrics: Metrics


def transport_error_kind(error: object) -> str:
    """The ``item_socket_errors_total`` kind of a WebSocket read error: message_too_big or transport.

    aiohttp reports an oversized frame as ``WebSocketError(1009, "Message size N exceeds limit M")``.
    """
    if isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG:
        return "message_too_big"
    return "transport"


# aiohttp versions whose WebSocketResponse._post_start LimitedWebSocketResponse reproduces to read
# directly (see DirectQueue). On any other version every message is read through aiohttp's public
# ``receive`` only (same behaviour, slower).
DIRECT_READING_AIOHTTP = ("3.14.",)


class DirectQueue(WebSocketDataQueue):
    """aiohttp's WebSocket message queue, which first offers each parsed message to ``on_message``.

    aiohttp queues every parsed message for the connection's task, which wakes once per message:
    a future, a task step and a WSMessage per update, about a tenth of a delivery's CPU
    (docs/benchmarks.md). The protocol handlers take the messages that arrive by the thousand
    (updates, awareness changes) right here, as the parser produces them. ``on_message(message,
    size)`` gets aiohttp's ``WSMessage`` (type, data, extra) and returns False to leave it to the
    task; while the task still has queued messages, nothing is offered (order is kept).
    ``on_message`` runs inside aiohttp's parser: it must not raise.
    """

    on_message: Callable[[Any, int], bool] | None = None
    # Set once the connection runs without a handler task (ywebsocket._Detached): what is not
    # handled here is offered to its ``take_control`` (pings, pongs), else queued and ``wake()``
    # starts a task to read it; ``task`` is that task while it runs (nothing overtakes it).
    detached: Any = None

    def feed_data(self, data: Any, size: int) -> None:
        on_message = self.on_message
        detached = self.detached
        if detached is None:
            if on_message is None or self._buffer or not on_message(data, size):
                super().feed_data(data, size)
            return
        if on_message is not None and not self._buffer and detached.task is None and on_message(data, size):
            return
        if detached.take_control(data):
            return
        super().feed_data(data, size)
        detached.wake()

    def feed_eof(self) -> None:
        super().feed_eof()
        if self.detached is not None:
            self.detached.wake()

    def set_exception(self, exc: BaseException, exc_cause: BaseException = _EXC_SENTINEL) -> None:
        super().set_exception(exc, exc_cause)
        if self.detached is not None:
            self.detached.wake()

    def queue_for_task(self, message: Any, size: int) -> None:
        """Queue ``message`` for the task as the parser would (one ``on_message`` held back)."""
        super().feed_data(message, size)


class LimitedWebSocketResponse(web.WebSocketResponse):
    """aiohttp's WebSocketResponse that tells a client whose message exceeds the limit not to return.

    aiohttp closes such a connection itself, with 1009, which both npm clients retry: they
    reconnected and re-uploaded the same oversized document several times a second. Here that
    close first awaits ``on_too_big`` (Socket.IO: the namespace DISCONNECT after which
    socket.io-client stays away) and uses ``too_big_code`` (y-websocket: a 4400-4499 code).

    ``direct_queue`` is the connection's ``DirectQueue`` once prepared, on the aiohttp versions of
    ``DIRECT_READING_AIOHTTP`` (it reaches into aiohttp's ``_post_start``); None on others.
    """

    direct_queue: DirectQueue | None = None

    def __init__(
        self,
        *,
        too_big_code: int = WSCloseCode.MESSAGE_TOO_BIG,
        on_too_big: Callable[[], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._too_big_code = too_big_code
        self._on_too_big = on_too_big
        self._told_too_big = False

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        if not aiohttp.__version__.startswith(DIRECT_READING_AIOHTTP):
            super()._post_start(request, protocol, writer)
            return
        # aiohttp 3.14's _post_start, with our queue in place of WebSocketDataQueue.
        self._ws_protocol = protocol
        self._writer = writer
        self._reset_heartbeat()
        assert self._loop is not None
        self._reader = self.direct_queue = DirectQueue(request._protocol, DEFAULT_CHUNK_SIZE, loop=self._loop)
        self._parser = WebSocketReader(
            self._reader, self._max_msg_size, compress=bool(self._compress), decode_text=self._decode_text
        )
        callback = None if self._heartbeat is None else self._on_data_received
        request.protocol.set_parser(self._parser, data_received_cb=callback)
        request.protocol.keep_alive(False)

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        """Close; a close for an oversized message (1009, from aiohttp's reader) says it is final."""
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self._told_too_big:
            self._told_too_big = True
            if self._on_too_big is not None:
                with contextlib.suppress(Exception):  # the client may be gone already
                    await self._on_too_big()
            code, message = self._too_big_code, b"message too big"
        return await super().close(code=code, message=message, drain=drain)


class Session:
    """One client connection to one document, from admission to departure.

    Use: ``admit()``, ``authorize(token)``, ``await join()`` (each raises ``Refusal``), then
    ``attach(peer)``; per received message ``accept_message(n)`` and ``await usable()``; always
    ``leave()`` at the end (idempotent).
    """

    # One per connection for its whole life: no per-instance dict.
    __slots__ = ("_bucket", "access", "buffer_limit", "document", "peer", "protocol", "room", "services")

    def __init__(self, services: Services, protocol: str, document: str) -> None:
        self.services = services
        self.protocol = protocol
        self.document = document
        self.access = Access.NONE
        self.room: Room | None = None
        self.peer: Peer | None = None
        settings = services.settings
        self._bucket = TokenBucket(settings.rate_limit, settings.rate_burst)
        # Bytes a client may leave unread before it is dropped as a slow consumer.
        self.buffer_limit = 2 * settings.max_message_bytes

    # --- admission ---------------------------------------------------------------------------

    def admit(self) -> None:
        """Check the document name (final refusal) and the server's capacity (temporary refusal)."""
        name_error = document_name_error(self.document)
        if name_error:
            raise self._refuse(name_error, final=True)
        capacity_error = self.services.connections.admission_error()
        if capacity_error:
            raise self._refuse(capacity_error, final=False)

    def authorize(self, token: str | None) -> Access:
        """The access ``token`` grants to the document; a final Refusal when it grants none."""
        try:
            self.access = self.services.authorizer.access(token, self.document)
        except Unauthorized as exc:
            raise self._refuse(str(exc), final=True, public="Unauthorized", kind="unauthorized") from None
        return self.access

    async def join(self) -> Room:
        """Load (or share) the document and hold it; a temporary Refusal when it cannot be loaded now.

        Capacity is checked again once the document is loaded: a drain that began during the load
        has already closed every attached connection, and would never close this one.
        """
        try:
            room = await self.services.registry.acquire(self.document)
        except RoomLoadError as exc:
            raise self._refuse(
                str(exc), final=False, public="Document unavailable", kind="load_failed"
            ) from None
        capacity_error = self.services.connections.admission_error()
        if capacity_error:
            self.services.registry.release(room)
            raise self._refuse(capacity_error, final=False)
        self.room = room
        return room

    def _refuse(
        self, reason: str, *, final: bool, public: str | None = None, kind: str | None = None
    ) -> Refusal:
        if kind is not None:
            self.services.metrics.errors.labels(kind).inc()
        log_event(
            logger,
            logging.WARNING,
            "connection_refused",
            "refused %s connection to %r: %s",
            self.protocol,
            self.document,
            reason,
            protocol=self.protocol,
            document=self.document,
            reason=reason,
        )
        return Refusal(reason, final=final, public=public)

    @property
    def can_write(self) -> bool:
        """Whether the connection's writes are applied (read-only writes are dropped)."""
        return self.access >= Access.WRITE

    # --- attached ----------------------------------------------------------------------------

    def attach(self, peer: Peer) -> None:
        """Start relaying the document to ``peer`` and count it as an open connection."""
        assert self.room is not None, "join() first"
        self.peer = peer
        self.services.connections.add(peer)
        self.room.add_peer(peer)

    def leave(self) -> None:
        """Detach the peer (its awareness states go) and release the document; safe to repeat."""
        room, self.room = self.room, None
        if room is None:
            return
        if self.peer is not None:
            room.remove_peer(self.peer)
            self.services.connections.discard(self.peer)
        self.services.registry.release(room)

    def accept_message(self, nbytes: int) -> bool:
        """Count one received message; False (and the connection is closing) when over the rate limit."""
        self.services.metrics.count_in(self.protocol, nbytes)
        if self._bucket.allow():
            return True
        self.fail(
            "rate_limited",
            f"rate limit exceeded ({self.services.settings.rate_limit:g} messages/s)",
            WSCloseCode.POLICY_VIOLATION,
        )
        return False

    async def usable(self) -> bool:
        """Wait while the document is rebuilt (almost never); False if it could not be (it closes us)."""
        room = self.room
        if room is None:
            return False
        if room.rebuilding is None:
            return True
        try:
            await room.wait_usable()
        except RoomUnavailable:
            return False
        return True

    async def sync_parts(self, diff: bytes) -> list[bytes]:
        """``diff`` (a Yjs update) as valid updates of about ``SYNC_PART_BYTES`` each, to send in order.

        Sent as one message, a multi-megabyte first sync outlasted the clients' watchdogs on slow
        links and started over forever. Large updates are cut in a worker thread (pure bytes, no
        pycrdt object crosses threads); an update that cannot be cut goes whole, with a warning.
        """
        if len(diff) <= SYNC_PART_BYTES:
            return [diff]
        # Clients joining together get the same answer object (Room.diff_since caches it): cut
        # it once for all of them.
        answers = self.room.split_answers if self.room is not None else {}
        task = answers.get(diff)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(split_update, diff, SYNC_PART_BYTES))
            if len(answers) >= 4:
                answers.pop(next(iter(answers)))
            answers[diff] = task
        try:
            return await asyncio.shield(task)
        except SplitError as exc:
            log_event(
                logger,
                logging.WARNING,
                "sync_not_split",
                "first sync of %r (%d bytes) goes as one message: %s",
                self.document,
                len(diff),
                exc,
                protocol=self.protocol,
                document=self.document,
            )
            return [diff]

    def count_out(self, messages: int, nbytes: int) -> None:
        """Count messages sent to this client outside the room's broadcasts."""
        self.services.metrics.count_out(self.protocol, messages, nbytes)

    # --- ending ------------------------------------------------------------------------------

    def fail(self, kind: str, reason: str, code: int = WSCloseCode.GOING_AWAY) -> None:
        """Count an error of ``kind`` and start closing the connection with ``reason``."""
        self.services.metrics.errors.labels(kind).inc()
        if self.peer is not None:
            self.peer.close_soon(reason, code)

    def rejected(self, exc: InvalidUpdate | ProtocolError, what: str) -> None:
        """The client sent a malformed ``what``: count it under its kind and close the connection."""
        kind = exc.kind if isinstance(exc, InvalidUpdate) else "malformed"
        self.fail(kind, f"malformed {what}: {exc}", WSCloseCode.UNSUPPORTED_DATA)

    def transport_failed(self, error: object) -> None:
        """The connection's WebSocket failed while reading (``error`` from aiohttp): count and log it."""
        transport_failed(self.services.metrics, self.protocol, error, self.document)

    def slow_consumer(self, waiting: int, limit: int, unit: str = "bytes") -> bool:
        """True (and the connection is closing) when more than ``limit`` ``unit`` wait to be sent."""
        if waiting <= limit:
            return False
        if self.peer is not None:
            self.peer.close_soon(f"slow consumer: more than {limit} {unit} waiting to be sent")
        return True


def unacknowledged_bytes(transport: asyncio.BaseTransport) -> int:
    """Bytes written to ``transport`` that its peer has not acknowledged yet: kernel queue + buffer.

    Linux ``SIOCOUTQ`` (= ``TIOCOUTQ``) on a TCP socket; 0 where it cannot be read.
    """
    sock = transport.get_extra_info("socket")
    queued = 0
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            queued = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    write_buffer = transport.get_write_buffer_size() if isinstance(transport, asyncio.WriteTransport) else 0
    return queued + write_buffer


async def wait_until_sent(transport: asyncio.BaseTransport, limit: int, seconds: float) -> bool:
    """Wait until at most ``limit`` written bytes are unacknowledged; False after ``seconds`` or on close.

    Why: the kernel takes megabytes into a socket's send buffer at once (autotuned), so "drained"
    says nothing about a slow link; what the peer acknowledged does. Polled every 50 ms: there is
    no event for it.
    """
    for _ in range(max(1, int(seconds / 0.05))):
        if transport.is_closing():
            return False
        if unacknowledged_bytes(transport) <= limit:
            return True
        await asyncio.sleep(0.05)
    return False


def transport_failed(metrics: Metrics, protocol: str, error: object, document: str | None = None) -> None:
    """Count and log a WebSocket read error (``error`` from aiohttp) of a ``protocol`` connection."""
    kind = transport_error_kind(error)
    metrics.errors.labels(kind).inc()
    if kind == "message_too_big":
        log_event(
            logger,
            logging.WARNING,
            "message_too_big",
            "%s client of %r sent a message too big for --max-message-bytes (%s); "
            "closed and told not to reconnect",
            protocol,
            document,
            error,
            protocol=protocol,
            document=document,
            reason=f"message too big: {error}",
        )
        return
    log_event(
        logger,
        logging.WARNING,
        "connection_error",
        "%s connection to %r failed: %s",
        protocol,
        document,
        error,
        protocol=protocol,
        document=document,
        reason=str(error),
    )
