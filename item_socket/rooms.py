"""The room registry: one in-memory document per name, its peers, its awareness, its persistence.

Every pycrdt object here lives on the event-loop thread. Updates are applied once per update
(never per peer) and the resulting broadcast is encoded at most once per protocol.

What is relayed and stored is never the bytes a client sent but what the server's document
integrated (yrs' re-encoding of the transaction): yrs accepts some corrupt updates that the npm
Yjs decoder throws on, and relaying those verbatim crashed every JS client of the room.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Protocol

from pycrdt import Awareness, Doc, TransactionEvent

from .logs import log_event
from .metrics import Metrics
from .store import DocumentStore, StoreError

if TYPE_CHECKING:
    from .streams import DocumentStreams
from .yprotocol import EMPTY_UPDATE, awareness_entries, check_declared_count, merge_awareness_updates

logger = logging.getLogger(__name__)
# Updates held while a room's document is rebuilt (normally for milliseconds).
MAX_DEFERRED_UPDATES = 10_000
# Updates held in memory while the log (store or Redis) fails; beyond it, edits are refused.
MAX_BACKLOG_UPDATES = 200_000
# First-sync answers kept per document state (clients rejoining together send the same vector).
MAX_CACHED_DIFFS = 16
# Awareness fan-out grows with the square of a room's size (every cursor move goes to every peer):
# 500 users moving at 1 Hz are 250,000 frames/s, more than a core can write. Rooms with at least
# AWARENESS_BATCH_PEERS peers send the awareness changes of AWARENESS_BATCH_S seconds as one message
# per peer instead (20 frames/s per peer); smaller rooms send each change at once.
AWARENESS_BATCH_PEERS = 32
AWARENESS_BATCH_S = 0.05
# Seconds between two pings of the shared store in the scale-out (one ``SELECT 1`` per replica):
# while healthy nothing else asks PostgreSQL between loads and compactions, so without the ping
# /readyz would learn of an outage only when a document is opened or compacted.
STORE_PROBE_SECONDS = 2.0


class UpdateLog(Protocol):
    """Where a registry reads documents from and writes integrated updates to.

    The embedded DocumentStore (SQLite), or DocumentStreams (Redis streams + a shared store).
    """

    async def load(self, name: str) -> list[bytes]: ...

    async def append_many(self, updates: Mapping[str, Sequence[bytes]]) -> None: ...

    def opened(self, name: str) -> None: ...

    def closed(self, name: str) -> None: ...


class RoomLoadError(Exception):
    """A document could not be loaded; connections to it are refused instead of starting empty."""


class InvalidUpdate(ValueError):
    """A client sent bytes that are not a valid Yjs update (or awareness update).

    ``kind`` is the label of the ``item_socket_errors`` metric the caller counts it under.
    """

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


class RoomUnavailable(RoomLoadError):
    """The room's document is being rebuilt (wait for ``Room.wait_usable()``) or could not be."""


# The origin of what other replicas sent through Redis (never published back).
REMOTE = "remote"


class Broadcast:
    """One message for every peer of a room, encoded lazily and at most once per wire format.

    ``event`` is the Socket.IO event name (``sync-update`` or ``awareness-update``).
    """

    __slots__ = ("cache", "event", "payload")

    def __init__(self, event: str, payload: bytes) -> None:
        self.event = event
        self.payload = payload
        self.cache: dict[str, Any] = {}

    def encoded(self, key: str, encode: Callable[[Broadcast], Any]) -> Any:
        """Return ``encode(self)``, computed on first use for ``key`` and reused for the next peers."""
        value = self.cache.get(key)
        if value is None:
            value = self.cache[key] = encode(self)
        return value


# The awareness IDs of a connection that owns none (most of them): shared, never mutated.
_NO_AWARENESS_IDS: frozenset[int] = frozenset()


class Peer(abc.ABC):
    """One client connection attached to a room (a y-websocket socket or a Socket.IO namespace).

    Slotted, as its subclasses should be: a server holds one per connection, most of them idle.
    """

    __slots__ = ("awareness_announced", "awareness_ids", "can_write")

    protocol: str = ""

    def __init__(self, can_write: bool) -> None:
        self.can_write = can_write
        # Awareness client IDs this connection owns: removed for everyone when it leaves. A set
        # of its own only once it owns one (an empty set is 216 bytes per connection).
        self.awareness_ids: AbstractSet[int] = _NO_AWARENESS_IDS
        self.awareness_announced = False

    def own_awareness(self, client_id: int) -> None:
        """Record that this connection owns awareness ``client_id``."""
        ids = self.awareness_ids
        if isinstance(ids, set):
            ids.add(client_id)
        else:
            self.awareness_ids = {client_id}

    def disown_awareness(self, client_id: int) -> None:
        """Forget awareness ``client_id`` (another connection took it, or it was removed)."""
        ids = self.awareness_ids
        if isinstance(ids, set):
            ids.discard(client_id)

    @property
    @abc.abstractmethod
    def transport(self) -> str:
        """``websocket`` or ``polling``."""

    @abc.abstractmethod
    def send_broadcast(self, message: Broadcast) -> int:
        """Queue ``message`` for this client without awaiting; return the bytes written (0 if dropped)."""

    @abc.abstractmethod
    def close_soon(self, reason: str, code: int = 1001) -> None:
        """Start closing the connection (never synchronously removes the peer from its room).

        ``code`` is the WebSocket close code (1001 going away: the client reconnects).
        """


class Room:
    """A loaded document: its pycrdt Doc and Awareness, its peers, and updates not yet stored."""

    def __init__(
        self,
        name: str,
        doc: Doc,
        metrics: Metrics,
        on_crash: Callable[[Room], None] | None = None,
        on_pending: Callable[[Room], None] | None = None,
        on_awareness: Callable[[str, bytes], None] | None = None,
        refusal: Callable[[], str | None] | None = None,
    ) -> None:
        self.name = name
        # Hooks of the registry: new pending updates, a local client's presence change (both for
        # the scale-out), and why edits are refused right now (None: accepted).
        self._on_pending = on_pending
        self._on_awareness = on_awareness
        self._refusal = refusal
        # First-sync answers for this document state, by the client's state vector.
        self._diffs: dict[bytes, bytes] = {}
        # Those answers cut into parts for sending (item_socket.ysplit), shared by concurrent
        # joins: a task per answer, cleared with the answers.
        self.split_answers: dict[bytes, asyncio.Future[list[bytes]]] = {}
        # The parts framed for one wire format, by (protocol, answer): framed once for every client.
        self.framed_answers: dict[tuple[str, bytes], list[bytes]] = {}
        self.doc = doc
        # What each transaction integrated (pycrdt's TransactionEvent.update), collected by the
        # observer during apply_update. Measured against get_state() + get_update(state_before):
        # ~1.5 us more per update than a bare apply versus ~80 us, and get_update(state) carries
        # the document's whole delete set, not just this transaction's.
        self._integrated: list[bytes] = []
        self._doc_subscription = doc.observe(self._on_transaction)
        # Set while the document is rebuilt after yrs panicked on it (see RoomRegistry._rebuild):
        # updates received meanwhile wait in _deferred, in arrival order.
        # An Event, not a Future: it needs no running loop until someone waits on it.
        self.rebuilding: asyncio.Event | None = None
        self._deferred: list[tuple[bytes, float, Peer | None, bool]] = []
        self._on_crash = on_crash
        self.abandoned = False
        self.awareness = Awareness(doc)
        # The server has no presence of its own; only clients' states are relayed.
        self.awareness.set_local_state(None)
        self._awareness_subscription = self.awareness.observe(self._on_awareness_change)
        self.peers: dict[Peer, None] = {}
        self.holders = 0
        self.pending: list[bytes] = []
        self.unload_timer: asyncio.TimerHandle | None = None
        self._awareness_owner: dict[int, Peer] = {}
        self._metrics = metrics
        # Per-room constants of the wire formats (e.g. Socket.IO event headers); freed with the room.
        self.protocol_cache: dict[Any, Any] = {}
        # Awareness updates waiting to be sent together (large rooms only, see _broadcast).
        self._awareness_batch: list[bytes] = []

    def add_peer(self, peer: Peer) -> None:
        """Start relaying this room's updates and awareness to ``peer``."""
        self.peers[peer] = None

    def remove_peer(self, peer: Peer) -> None:
        """Stop relaying to ``peer`` and remove the awareness states it announced, for everyone."""
        self.peers.pop(peer, None)
        if peer.awareness_ids:
            self.awareness.remove_awareness_states(sorted(peer.awareness_ids), peer)
            peer.awareness_ids = _NO_AWARENESS_IDS

    def apply_update(
        self, update: bytes, received_at: float, origin: Peer | None = None, from_log: bool = False
    ) -> None:
        """Apply a client's Yjs update; queue and relay to every peer what the document integrated.

        An update that integrates nothing (already known, or only structs still waiting for
        missing dependencies) is neither stored nor relayed. Raises InvalidUpdate when ``update``
        cannot be decoded (the document is left unchanged) or when it crashed the decoder (the
        document is then rebuilt from valid bytes; ``origin`` should be disconnected).
        ``from_log``: the update came from another replica's stream; it is relayed to this
        replica's peers but not queued (it is in the log already).
        """
        if update == EMPTY_UPDATE:
            return
        if origin is not None and self._refusal is not None:
            refusal = self._refusal()
            if refusal is not None:
                # Refused, never dropped: the client keeps the edit and sends it again on reconnect.
                origin.close_soon(refusal)
                return
        if self.rebuilding is not None:
            if self.abandoned:
                return  # every peer is being closed; nothing can apply it
            if len(self._deferred) >= MAX_DEFERRED_UPDATES:
                # Bounded memory while the store is slow: the client resends what it has on reconnect.
                if origin is not None:
                    origin.close_soon("document is being rebuilt and too many updates wait; reconnect")
                return
            self._deferred.append((update, received_at, origin, from_log))
            return
        integrated = self._integrated
        try:
            # An update starts with its number of client blocks, each of 3 bytes at least.
            check_declared_count(update, 3, "update")
            self.doc.apply_update(update)
        except Exception as exc:
            integrated.clear()
            raise InvalidUpdate(f"invalid Yjs update ({len(update)} bytes): {exc}") from exc
        except BaseException as exc:
            # pyo3 turns a Rust panic into PanicException, a BaseException. yrs can panic in the
            # middle of a commit, after which every use of this Doc panics too: never touch it again.
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            integrated.clear()
            self._crashed(f"{len(update)}-byte update crashed the decoder: {exc!r}")
            raise InvalidUpdate(
                f"Yjs update ({len(update)} bytes) crashed the decoder: {exc!r}", kind="decoder_panic"
            ) from exc
        if not integrated:
            return
        self._diffs.clear()
        self.split_answers.clear()
        self.framed_answers.clear()
        queued = False
        for part in integrated:
            if part != EMPTY_UPDATE:
                if not from_log:
                    self.pending.append(part)
                    queued = True
                self._broadcast(Broadcast("sync-update", part))
        integrated.clear()
        self._metrics.propagation.observe(time.perf_counter() - received_at)
        if queued and self._on_pending is not None:
            self._on_pending(self)

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._integrated.append(event.update)

    def _crashed(self, reason: str) -> None:
        """Stop using the Doc and have the registry rebuild it; updates wait until then."""
        self.rebuilding = asyncio.Event()
        log_event(
            logger,
            logging.ERROR,
            "document_crashed",
            "document %r is rebuilt from its stored and pending updates: %s",
            self.name,
            reason,
            document=self.name,
            reason=reason,
        )
        if self._on_crash is not None:
            self._on_crash(self)

    def replace_doc(self, doc: Doc) -> None:
        """Swap in a rebuilt Doc (same state as the broken one), then apply the deferred updates.

        Peers stay connected: they already hold this state. Awareness only needs a client ID
        from its Doc, so the Awareness object (and every client's state) is kept.
        """
        with contextlib.suppress(BaseException):
            self.doc.unobserve(self._doc_subscription)
        self.doc = doc
        self._diffs.clear()
        self.split_answers.clear()
        self.framed_answers.clear()
        self._integrated.clear()
        self._doc_subscription = doc.observe(self._on_transaction)
        done, self.rebuilding = self.rebuilding, None
        deferred, self._deferred = self._deferred, []
        for update, received_at, origin, from_log in deferred:
            # Applied in arrival order; if one crashes the decoder again, the rest are deferred
            # again by apply_update (self.rebuilding is set anew).
            try:
                self.apply_update(update, received_at, origin, from_log)
            except InvalidUpdate as exc:
                self._metrics.errors.labels(exc.kind).inc()
                if origin is not None:
                    origin.close_soon(f"malformed update: {exc}")
        if done is not None:
            done.set()

    def abandon(self, reason: str) -> None:
        """The document cannot be rebuilt: close every peer, fail every waiter, defer nothing more.

        The room stays registered until its pending updates are stored, then unloads; the next
        client then gets what a fresh load gives (a refusal while the store cannot load it).
        """
        self.abandoned = True
        self._deferred.clear()
        if self.rebuilding is not None:
            self.rebuilding.set()
        for peer in list(self.peers):
            peer.close_soon(reason)

    async def wait_usable(self) -> None:
        """Return once the document is not being rebuilt (at once, almost always).

        Raises RoomUnavailable when the rebuild was abandoned.
        """
        while self.rebuilding is not None:
            if self.abandoned:
                raise RoomUnavailable(f"document {self.name!r} is unavailable")
            await self.rebuilding.wait()

    def apply_awareness(self, update: bytes, origin: Peer) -> None:
        """Apply a client's awareness update; changes are relayed to every peer.

        A client ID belongs to the connection that announced it last: with a newer clock (see
        ``_on_awareness_change``), or, even at the same clock, as the only entry of the
        connection's first awareness message. A client that reconnected while its old connection
        lingers re-announces its ID at the same clock (y-websocket issue 126); closing the old
        connection must not remove it. Other same-clock entries claim nothing: clients relay every
        awareness change they receive back to the server (the npm providers do), and those echoes
        carry other clients' IDs at known clocks. The npm providers announce themselves on
        connect, alone (``[doc.clientID]``), before they can relay anything.
        """
        try:
            entries = awareness_entries(update)
            self.awareness.apply_awareness_update(update, origin)
        except Exception as exc:
            raise InvalidUpdate(f"invalid awareness update ({len(update)} bytes): {exc}") from exc
        if not origin.awareness_announced:
            origin.awareness_announced = True
            if len(entries) == 1:
                client_id, _clock, removed = entries[0]
                if not removed and client_id in self.awareness.states:
                    self._own(client_id, origin)

    def _own(self, client_id: int, peer: Peer) -> None:
        """Make ``peer`` the owner of awareness ``client_id`` (removed when ``peer`` leaves)."""
        previous = self._awareness_owner.get(client_id)
        if previous is peer:
            return
        if previous is not None:
            previous.disown_awareness(client_id)
        self._awareness_owner[client_id] = peer
        peer.own_awareness(client_id)

    def diff_since(self, state_vector: bytes) -> bytes:
        """The update a client with ``state_vector`` is missing (call ``wait_usable`` first).

        Computed once per document state and state vector: after a deploy every client of a
        document rejoins at once with the same state vector, and a large document's diff costs
        milliseconds to seconds each.
        """
        if self.rebuilding is not None:
            raise RoomUnavailable(f"document {self.name!r} is being rebuilt")
        diff = self._diffs.get(state_vector)
        if diff is not None:
            return diff
        try:
            # A state vector starts with its number of (client, clock) pairs, 2 bytes at least.
            check_declared_count(state_vector, 2, "state vector")
            diff = self.doc.get_update(state_vector)
        except Exception as exc:
            raise InvalidUpdate(f"invalid state vector ({len(state_vector)} bytes): {exc}") from exc
        if len(self._diffs) >= MAX_CACHED_DIFFS:
            self._diffs.pop(next(iter(self._diffs)))
        self._diffs[state_vector] = diff
        return diff

    def awareness_snapshot(self) -> bytes | None:
        """All known client awareness states, encoded; None when there are none."""
        client_ids = list(self.awareness.states)
        if not client_ids:
            return None
        return self.awareness.encode_awareness_update(client_ids)

    def _on_awareness_change(self, topic: str, change: tuple[dict[str, list[int]], Any]) -> None:
        if topic != "update":
            return
        changes, origin = change
        if isinstance(origin, Peer):
            for client_id in (*changes["added"], *changes["updated"]):
                self._own(client_id, origin)
        for client_id in changes["removed"]:
            owner = self._awareness_owner.pop(client_id, None)
            if owner is not None:
                owner.disown_awareness(client_id)
        changed = changes["added"] + changes["updated"] + changes["removed"]
        encoded = self.awareness.encode_awareness_update(changed)
        self._broadcast(Broadcast("awareness-update", encoded))
        if self._on_awareness is not None and isinstance(origin, Peer):
            self._on_awareness(self.name, encoded)

    def apply_remote_awareness(self, update: bytes) -> None:
        """Apply a presence update another replica's client made (relayed here, never published)."""
        try:
            self.awareness.apply_awareness_update(update, REMOTE)
        except Exception as exc:
            raise InvalidUpdate(f"invalid awareness update from Redis ({len(update)} bytes): {exc}") from exc

    def expire_remote_awareness(self, timeout: float) -> None:
        """Remove presence states of other replicas' clients not renewed for ``timeout`` seconds."""
        now_ms = time.time() * 1000
        expired = [
            client_id
            for client_id, meta in self.awareness.meta.items()
            if client_id in self.awareness.states
            and client_id not in self._awareness_owner
            and now_ms - meta["lastUpdated"] >= timeout * 1000
        ]
        if expired:
            self.awareness.remove_awareness_states(expired, REMOTE)

    def _broadcast(self, message: Broadcast) -> None:
        batch = self._awareness_batch
        if message.event == "awareness-update" and (batch or len(self.peers) >= AWARENESS_BATCH_PEERS):
            # While a batch waits, every awareness change joins it: nothing overtakes it.
            if not batch:
                try:
                    asyncio.get_running_loop().call_later(AWARENESS_BATCH_S, self._flush_awareness)
                except RuntimeError:  # no loop (closing): send at once
                    self._send_to_peers(message)
                    return
            batch.append(message.payload)
            return
        self._send_to_peers(message)

    def _flush_awareness(self) -> None:
        """Send the awareness changes batched since the first one, as one message per peer."""
        updates = self._awareness_batch[:]
        self._awareness_batch.clear()
        if updates and self.peers:
            self._send_to_peers(Broadcast("awareness-update", merge_awareness_updates(updates)))

    def _send_to_peers(self, message: Broadcast) -> None:
        by_protocol: dict[str, list[int]] = {}
        for peer in self.peers:
            written = peer.send_broadcast(message)
            if written:
                counts = by_protocol.get(peer.protocol)
                if counts is None:
                    by_protocol[peer.protocol] = [1, written]
                else:
                    counts[0] += 1
                    counts[1] += written
        for protocol, (messages, size) in by_protocol.items():
            self._metrics.count_out(protocol, messages, size)

    def close(self) -> None:
        """Drop references so the document is freed at once."""
        self.awareness.unobserve(self._awareness_subscription)
        with contextlib.suppress(BaseException):
            self.doc.unobserve(self._doc_subscription)
        if self.rebuilding is not None:
            self.abandoned = True
            self.rebuilding.set()
        self._deferred.clear()
        self.peers.clear()
        self._awareness_owner.clear()


class RoomRegistry:
    """Loads, shares, persists and unloads rooms.

    - Several clients joining a not-yet-loaded document share one load (one Room).
    - A failed load raises RoomLoadError: nothing empty is ever created in its place.
    - Updates reach the store within ``flush_interval`` (one transaction per flush for all rooms).
    - A room without clients is flushed then unloaded after ``unload_grace``; it stays registered
      until its flush has finished, so it is never re-loaded while being saved.
    - With ``streams`` (the scale-out), documents load from and updates go to the Redis streams
      (at once, not every ``flush_interval``), and what other replicas append is applied here.
    """

    def __init__(
        self,
        store: DocumentStore,
        metrics: Metrics,
        *,
        flush_interval: float,
        unload_grace: float,
        streams: DocumentStreams | None = None,
        awareness_timeout: float = 30.0,
        max_backlog: int = MAX_BACKLOG_UPDATES,
    ) -> None:
        self.store = store
        self.max_backlog = max_backlog
        self.streams = streams
        self.log: UpdateLog = streams if streams is not None else store
        self.awareness_timeout = awareness_timeout
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.unload_grace = unload_grace
        self.rooms: dict[str, Room] = {}
        self.store_healthy = True
        self._loading: dict[str, asyncio.Task[Room]] = {}
        self._flush_lock = asyncio.Lock()
        self._in_flight = 0
        self._closing = False
        self._stop_flushing = asyncio.Event()
        # Set when updates wait and the log wants them at once (the scale-out), or to stop.
        self._flush_wanted = asyncio.Event()
        # Rooms with updates queued since the last flush, by name.
        self._dirty: dict[str, Room] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the periodic flush (and, in the scale-out, apply what other replicas append)."""
        self._flusher = asyncio.create_task(self._flush_periodically(), name="item-socket-flush")
        if self.streams is not None:
            self.streams.on_updates = self.apply_from_stream
            self.streams.on_awareness = self.apply_awareness_from_stream
            self.streams.on_store_health = self._store_health
            self.streams.on_lost = self.append_again
            for coro, what in (
                (self._expire_presence(), "presence-expiry"),
                (self._probe_store(), "store-probe"),
            ):
                task = asyncio.create_task(coro, name=f"item-socket-{what}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Flush everything and unload every room (called once no client is attached)."""
        self._closing = True
        self._stop_flushing.set()
        self._flush_wanted.set()
        for task in list(self._tasks):
            if task.get_name() in ("item-socket-presence-expiry", "item-socket-store-probe"):
                task.cancel()
        if self._flusher is not None:
            await self._flusher
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        for attempt in range(3):
            if await self.flush():
                break
            await asyncio.sleep(0.1 * (attempt + 1))
        lost = self.backlog()
        if lost:
            log_event(
                logger,
                logging.ERROR,
                "updates_not_stored",
                "%d updates could not be written to the store before exit",
                lost,
                updates=lost,
            )
        for room in self.rooms.values():
            if room.unload_timer is not None:
                room.unload_timer.cancel()
            room.close()
        self.rooms.clear()

    def backlog(self) -> int:
        """Updates applied in memory and not yet durably stored."""
        return self._in_flight + sum(len(room.pending) for room in self.rooms.values())

    # --- acquire / release ------------------------------------------------------------------

    async def acquire(self, name: str) -> Room:
        """Return the loaded room ``name`` (loading it once for all concurrent callers) and hold it.

        Every successful acquire must be paired with one ``release``.
        """
        while True:
            if self._closing:
                raise RoomLoadError("server is shutting down")
            room = self.rooms.get(name)
            if room is None:
                task = self._loading.get(name)
                if task is None:
                    task = asyncio.create_task(self._load(name), name=f"item-socket-load:{name}")
                    self._loading[name] = task
                    task.add_done_callback(lambda _t, n=name: self._loading.pop(n, None))
                room = await asyncio.shield(task)
                if self.rooms.get(name) is not room:
                    continue  # unloaded between the load and our turn: take the current one
            room.holders += 1
            if room.unload_timer is not None:
                room.unload_timer.cancel()
                room.unload_timer = None
            if room.rebuilding is not None:
                try:
                    await room.wait_usable()
                except BaseException:
                    self.release(room)
                    raise
            return room

    def release(self, room: Room) -> None:
        """Drop one hold on ``room``; the last one schedules the unload after the grace period."""
        room.holders -= 1
        if room.holders == 0 and not self._closing:
            loop = asyncio.get_running_loop()
            room.unload_timer = loop.call_later(self.unload_grace, self._start_unload, room)

    async def _load(self, name: str) -> Room:
        try:
            updates = await self.log.load(name)
        except StoreError as exc:
            self._log_failed("store_read")
            log_event(logger, logging.ERROR, "load_failed", "cannot load %r: %s", name, exc, document=name)
            raise RoomLoadError(f"document {name!r} cannot be loaded") from exc
        doc = self._doc_from(name, updates)
        if self._closing:
            raise RoomLoadError("server is shutting down")
        room = Room(
            name,
            doc,
            self.metrics,
            on_crash=self._start_rebuild,
            on_pending=self._queued,
            on_awareness=self.streams.publish_awareness if self.streams is not None else None,
            refusal=self._refusal,
        )
        self.rooms[name] = room
        # Follow from where the load ended: nothing appended since is missed.
        self.log.opened(name)
        self.metrics.loads.inc()
        log_event(
            logger,
            logging.DEBUG,
            "document_loaded",
            "loaded %r (%d stored updates)",
            name,
            len(updates),
            document=name,
        )
        return room

    def _doc_from(self, name: str, updates: list[bytes]) -> Doc:
        """A Doc holding ``updates``; RoomLoadError (counted, logged) if one cannot be applied."""
        doc: Doc = Doc()
        for index, update in enumerate(updates):
            try:
                doc.apply_update(update)
            except BaseException as exc:  # PanicException included (a BaseException)
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                self.metrics.errors.labels("store_corrupt").inc()
                log_event(
                    logger,
                    logging.ERROR,
                    "load_failed",
                    "stored update %d of %r is unreadable: %r",
                    index,
                    name,
                    exc,
                    document=name,
                )
                raise RoomLoadError(f"document {name!r} cannot be loaded") from exc
        return doc

    def _start_rebuild(self, room: Room) -> None:
        task = asyncio.create_task(self._rebuild(room), name=f"item-socket-rebuild:{room.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _rebuild(self, room: Room) -> None:
        """Replace the Doc of ``room`` that yrs panicked on with one rebuilt from valid bytes.

        Everything the broken Doc integrated is either in the store or in ``room.pending`` (both
        hold only what a sound Doc integrated), so store + pending is exactly the state the
        connected clients already have: they stay connected. Applying every update to a scratch
        copy first would avoid this, but would double the CPU and memory of every write.
        """
        started = time.perf_counter()
        for attempt in itertools.count(1):
            if self._closing or self.rooms.get(room.name) is not room:
                return
            # Store what was integrated before the crash; pending cannot grow while rebuilding.
            await self.flush()
            try:
                stored = await self.log.load(room.name)
                doc = self._doc_from(room.name, [*stored, *room.pending])
            except RoomLoadError as exc:
                # Unreadable stored bytes do not heal: retrying would hold the clients forever.
                log_event(
                    logger,
                    logging.ERROR,
                    "rebuild_failed",
                    "cannot rebuild %r: %s",
                    room.name,
                    exc,
                    document=room.name,
                )
                room.abandon(f"document {room.name!r} is unavailable (cannot be rebuilt)")
                return
            except StoreError as exc:
                self._log_failed("store_read")
                log_event(
                    logger,
                    logging.ERROR,
                    "rebuild_failed",
                    "cannot rebuild %r (attempt %d): %s",
                    room.name,
                    attempt,
                    exc,
                    document=room.name,
                )
                await asyncio.sleep(min(0.1 * 2**attempt, 5.0))
                continue
            if self._closing or self.rooms.get(room.name) is not room:
                return
            count = len(stored) + len(room.pending)
            room.replace_doc(doc)
            self.metrics.rebuilds.inc()
            log_event(
                logger,
                logging.WARNING,
                "document_rebuilt",
                "rebuilt %r in %.3f s (%d updates)",
                room.name,
                time.perf_counter() - started,
                count,
                document=room.name,
            )
            return

    def _start_unload(self, room: Room) -> None:
        room.unload_timer = None
        task = asyncio.create_task(self._unload(room))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unload(self, room: Room) -> None:
        if room.holders:
            return
        stored = await self.flush()
        if room.holders or self.rooms.get(room.name) is not room:
            return
        if not stored or room.pending or (room.rebuilding is not None and not room.abandoned):
            # Keep it in memory rather than lose updates; try again after another grace period.
            room.unload_timer = asyncio.get_running_loop().call_later(
                max(self.unload_grace, 1.0), self._start_unload, room
            )
            return
        del self.rooms[room.name]
        room.close()
        self.log.closed(room.name)
        self.metrics.unloads.inc()
        log_event(logger, logging.DEBUG, "document_unloaded", "unloaded %r", room.name, document=room.name)

    # --- persistence ------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Write every room's pending updates to the store in one batch; False if the store failed."""
        async with self._flush_lock:
            # Only the rooms that queued something since the last flush: with thousands of rooms
            # loaded and a flush per update (the scale-out), a scan of every room cost O(rooms).
            dirty, self._dirty = self._dirty, {}
            batch = {
                name: room for name, room in dirty.items() if room.pending and self.rooms.get(name) is room
            }
            if not batch:
                return True
            updates = {name: room.pending for name, room in batch.items()}
            for room in batch.values():
                room.pending = []
            self._in_flight = sum(len(u) for u in updates.values())
            started = time.perf_counter()
            try:
                await self.log.append_many(updates)
            except Exception as exc:
                for name, room in batch.items():
                    room.pending[:0] = updates[name]
                    self._dirty[name] = room
                self._log_failed("store_write")
                log_event(
                    logger,
                    logging.ERROR,
                    "flush_failed",
                    "cannot write %d updates: %s",
                    self._in_flight,
                    exc,
                    updates=self._in_flight,
                )
                return False
            finally:
                self._in_flight = 0
            self.metrics.flush_seconds.observe(time.perf_counter() - started)
            if self.streams is None:
                self.store_healthy = True
            return True

    def _log_failed(self, kind: str) -> None:
        """The log failed a read or write (``kind``: the ``item_socket_errors_total`` kind).

        Alone, the log is the store: it is failing. In the scale-out the log is Redis (then
        ``streams.healthy`` says so, and ``streams`` counted the error) or, for a load, PostgreSQL
        behind it (``streams`` reported that through ``on_store_health``): marking the store failing
        here would blame PostgreSQL for Redis, and a later append to Redis would mark it healthy
        again while the store probe finds it down.
        """
        if self.streams is None:
            self.store_healthy = False
            self.metrics.errors.labels(kind).inc()

    async def _flush_periodically(self) -> None:
        failures = 0
        while not self._stop_flushing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wanted.wait(), self.flush_interval)
            self._flush_wanted.clear()
            if await self.flush():
                failures = 0
            else:
                # Retry backoff while the log fails (updates are held, bounded by MAX_BACKLOG_UPDATES).
                failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_flushing.wait(), min(0.05 * 2**failures, 2.0))

    def _queued(self, room: Room) -> None:
        """``room`` queued updates: the next flush writes them (at once in the scale-out)."""
        self._dirty[room.name] = room
        if self.streams is not None:
            self._flush_wanted.set()

    def _refusal(self) -> str | None:
        """Why edits are refused now (too many held while the log fails), or None."""
        if self.store_healthy and (self.streams is None or self.streams.healthy):
            return None  # the common case, on every update: no sum over the rooms
        if self.backlog() < self.max_backlog:
            return None
        return "edits cannot be stored right now; reconnect later (your edits are kept)"

    # --- the scale-out ----------------------------------------------------------------------

    def apply_from_stream(self, name: str, updates: list[bytes]) -> None:
        """Apply updates another replica appended to ``name``'s stream and relay them to local peers."""
        room = self.rooms.get(name)
        if room is None:
            return
        received_at = time.perf_counter()
        for update in updates:
            try:
                room.apply_update(update, received_at, None, from_log=True)
            except InvalidUpdate as exc:
                self.metrics.errors.labels("stream_update").inc()
                log_event(logger, logging.ERROR, "stream_update_invalid", "%s: %s", name, exc, document=name)

    def append_again(self, names: list[str]) -> None:
        """Queue the whole state of each loaded room of ``names`` for its stream (Redis lost entries).

        Other replicas apply it as any update: what they have already changes nothing.
        """
        for name in names:
            room = self.rooms.get(name)
            if room is None or room.rebuilding is not None:
                continue  # unloaded (stored already) or being rebuilt from store + pending
            room.pending.append(room.doc.get_update())
            self._queued(room)

    def apply_awareness_from_stream(self, name: str, update: bytes) -> None:
        """Apply a presence change of another replica's client to ``name`` and relay it locally."""
        room = self.rooms.get(name)
        if room is None or room.rebuilding is not None:
            return
        try:
            room.apply_remote_awareness(update)
        except InvalidUpdate:
            self.metrics.errors.labels("stream_awareness").inc()

    def _store_health(self, healthy: bool, reason: str = "") -> None:
        """Record whether the shared store answers (scale-out); log and count a change once.

        ``reason``: why it failed (the probe's error), for the ``store_failed`` log line; loads,
        compactions and catch-ups log their own errors and give none.
        """
        if healthy == self.store_healthy:
            return
        self.store_healthy = healthy
        if healthy:
            log_event(logger, logging.INFO, "store_recovered", "the document store answers again")
            return
        self.metrics.errors.labels("store_read").inc()
        log_event(
            logger,
            logging.ERROR,
            "store_failed",
            "the document store fails (documents that must be loaded are refused): %s",
            reason or "an operation failed",
            reason=reason,
        )

    async def _probe_store(self) -> None:
        """Every STORE_PROBE_SECONDS, ask the shared store whether it answers (``ping``).

        In the scale-out nothing else reaches PostgreSQL between loads and compactions: without
        this probe readiness would neither turn false when it goes away nor true when it returns.
        ``ping`` is bounded by the store's own timeout; one probe runs at a time.
        """
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_flushing.wait(), STORE_PROBE_SECONDS)
            if self._closing:
                return
            try:
                await self.store.ping()
            except StoreError as exc:
                self._store_health(False, str(exc))
                continue
            self._store_health(True)

    async def _expire_presence(self) -> None:
        """Every tenth of the timeout, drop other replicas' presence states nobody renewed."""
        interval = max(0.5, self.awareness_timeout / 10)
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_flushing.wait(), interval)
            for room in list(self.rooms.values()):
                if room.rebuilding is None:
                    room.expire_remote_awareness(self.awareness_timeout)
