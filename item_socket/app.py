"""The aiohttp application factory: Socket.IO and y-websocket on one port, plus health and metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .auth import Authorizer
from .connection import Services
from .connections import Connections
from .keys import (
    AUTHORIZER,
    CONNECTIONS,
    DRAINED,
    METRICS,
    REGISTRY,
    SERVICES,
    SETTINGS,
    SOCKETIO,
    STORE,
    STREAMS,
)
from .logs import log_event
from .metrics import Metrics
from .rooms import RoomRegistry
from .settings import Settings
from .socketio_ns import (
    WebSockets,
    YjsNamespace,
    closed_session_guard,
    create_socketio_server,
    oversized_polling_guard,
)
from .store import DocumentStore, SQLiteStore, TimedStore
from .store_postgres import PostgresStore
from .streams import DocumentStreams
from .ywebsocket import handle_ywebsocket

logger = logging.getLogger(__name__)

# Room on top of the largest message for the HTTP/Engine.IO framing of a long-polling POST.
_POLLING_OVERHEAD = 1024 * 1024


def create_app(settings: Settings, store: DocumentStore | None = None) -> web.Application:
    """Build the item_socket application. Resources open in cleanup contexts, not here.

    ``store`` defaults to PostgreSQL at ``settings.store_url``, else SQLite under
    ``settings.data_dir``. With ``settings.redis_url`` documents are shared with other replicas
    through Redis streams (see item_socket.streams).
    """
    # Long-polling carries binary as base64: 4/3 of the payload.
    app = web.Application(client_max_size=settings.max_message_bytes * 4 // 3 + _POLLING_OVERHEAD)
    metrics = Metrics()
    connections = Connections(settings.max_connections)
    if store is None:
        store = _store_for(settings)
    # Timed at the store's boundary only: in the scale-out the registry's log is Redis, whose round
    # trips are item_socket_redis_seconds, not store operations.
    store = TimedStore(
        store, lambda operation, seconds: metrics.store_seconds.labels(operation).observe(seconds)
    )
    streams = None
    if settings.redis_url is not None:
        streams = DocumentStreams(
            settings.redis_url,
            store,
            metrics,
            password_file=settings.redis_password_file,
            compact_after=settings.compact_after,
            compact_max_age_s=settings.compact_max_age,
            awareness_timeout=settings.awareness_timeout,
        )
    registry = RoomRegistry(
        store,
        metrics,
        flush_interval=settings.flush_interval,
        unload_grace=settings.unload_grace,
        streams=streams,
        awareness_timeout=settings.awareness_timeout,
    )
    authorizer = Authorizer.from_file(settings.auth_secret_file)
    websockets = WebSockets()
    sio = create_socketio_server(settings, metrics, websockets)
    services = Services(
        settings=settings, registry=registry, connections=connections, authorizer=authorizer, metrics=metrics
    )
    sio.register_namespace(YjsNamespace(services, websockets))
    metrics.bind_live(
        connections=connections.counts,
        documents=lambda: len(registry.rooms),
        backlog=registry.backlog,
        store_healthy=lambda: registry.store_healthy,
        draining=lambda: not connections.accepting,
    )
    if streams is not None:
        metrics.bind_scale_out(
            redis_healthy=lambda: streams.healthy,
            outbox=registry.backlog,
            redis_memory=lambda: streams.memory,
        )

    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[AUTHORIZER] = authorizer
    app[CONNECTIONS] = connections
    app[STORE] = store
    app[STREAMS] = streams
    app[REGISTRY] = registry
    app[SOCKETIO] = sio
    app[SERVICES] = services
    app[DRAINED] = asyncio.Event()

    app.middlewares.append(_refuse_new_sessions_while_unavailable)
    app.middlewares.append(oversized_polling_guard(sio, metrics, settings.max_message_bytes))
    app.middlewares.append(closed_session_guard(sio))
    sio.attach(app)
    app.router.add_get("/ws/{doc:.+}", handle_ywebsocket)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_streams_ctx)
    app.cleanup_ctx.append(_registry_ctx)
    app.on_shutdown.append(_drain_on_shutdown)
    return app


async def drain(app: web.Application, seconds: float) -> None:
    """Stop admitting clients, disconnect every client (they reconnect elsewhere), flush documents.

    Bounded by ``seconds`` for the clients to go; safe to call more than once.
    """
    connections = app[CONNECTIONS]
    if app[DRAINED].is_set():
        return
    connections.accepting = False
    started = time.monotonic()
    count = len(connections.peers)
    log_event(logger, logging.INFO, "draining", "draining %d connections", count, connections=count)
    connections.close_all("server is shutting down")
    deadline = started + seconds
    try:
        await asyncio.wait_for(connections.wait_empty(), seconds)
    except TimeoutError:
        log_event(
            logger,
            logging.WARNING,
            "drain_incomplete",
            "%d connections did not close in %.1f s",
            len(connections.peers),
            seconds,
        )
    # Engine.IO sessions not (or no longer) in a document namespace.
    try:
        await asyncio.wait_for(app[SOCKETIO].shutdown(), max(0.1, deadline - time.monotonic()))
    except (TimeoutError, Exception) as exc:
        log_event(logger, logging.WARNING, "drain_incomplete", "Socket.IO shutdown: %r", exc)
    await app[REGISTRY].flush()
    app[DRAINED].set()
    log_event(
        logger,
        logging.INFO,
        "drained",
        "drained in %.3f s (%d connections left)",
        time.monotonic() - started,
        len(connections.peers),
        left=len(connections.peers),
    )


async def _drain_on_shutdown(app: web.Application) -> None:
    await drain(app, app[SETTINGS].shutdown_grace / 2)


@web.middleware
def _refuse_new_sessions_while_unavailable(
    request: web.Request, handler: web.Handler
) -> Awaitable[web.StreamResponse]:
    # A new Engine.IO session (no sid yet) is refused at the HTTP level while draining or full:
    # socket.io-client retries a failed handshake with its growing backoff. Refused later, in the
    # namespace, the client would get a final connect_error (see YjsNamespace.on_connect).
    # Not a coroutine: it hands back the handler's own awaitable, so a WebSocket does not keep a
    # frame of this middleware alive for its whole life (memory per idle connection).
    if request.path.startswith("/socket.io/") and "sid" not in request.query:
        refusal = request.app[CONNECTIONS].admission_error()
        if refusal:
            raise web.HTTPServiceUnavailable(text=f"{refusal}\n", headers={"Retry-After": "1"})
    return handler(request)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.start()
    yield
    await store.stop()


async def _streams_ctx(app: web.Application) -> AsyncIterator[None]:
    streams = app[STREAMS]
    if streams is None:
        yield
        return
    await streams.start()
    yield
    await streams.stop()


def _store_for(settings: Settings) -> DocumentStore:
    if settings.store_url is not None:
        return PostgresStore(
            settings.store_url,
            password_file=settings.store_password_file,
            compact_after=settings.compact_after,
        )
    return SQLiteStore(settings.data_dir, compact_after=settings.compact_after)


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    await registry.start()
    yield
    await registry.stop()


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def _readyz(request: web.Request) -> web.Response:
    problems = []
    if not request.app[CONNECTIONS].accepting:
        problems.append("draining")
    if not request.app[REGISTRY].store_healthy:
        problems.append("store failing")
    streams = request.app[STREAMS]
    if streams is not None and not streams.healthy:
        problems.append("redis unreachable")
    if problems:
        return web.json_response({"status": "not ready", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
