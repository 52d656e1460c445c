"""The scale-out: a Redis Stream per document carries updates between replicas.

Design (after y-redis / y/hub, https://github.com/yjs/y-redis, and Redis Streams,
https://redis.io/docs/latest/develop/data-types/streams/):

- Every update a replica's document integrates is appended (XADD) to the document's stream
  ``item_socket:{<name>}:u``; every replica with the document open follows the stream (one blocking
  XREAD per replica for all its documents) and applies what other replicas appended. Applying a Yjs
  update twice changes nothing, so a replay after a reconnect or a retried XADD is harmless.
- The shared store (PostgreSQL) holds each document's snapshot, tagged with the last stream entry
  it covers. Opening a document reads the stream first, then the snapshot: a compaction trims only
  what a durable snapshot covers, so the two reads together miss nothing, and the follow position
  (the later of the two) continues exactly where they ended.
- One compaction at a time per document: a Redis lock (SET NX PX, renewed while the compaction
  runs), then a fencing token (INCR) taken under it; the store refuses a snapshot whose token is not
  newer than the stored one, and the stream is trimmed (XTRIM MINID, exact) only after the snapshot
  covering it is durable. A refused (fenced) snapshot or a lock lost during a compaction can only
  mean two compactions overlapped: both are counted in ``item_socket_compaction_overlaps``.
- Redis at ``maxmemory`` (noeviction) refuses writes, so the compaction that would free memory must
  not be refused: the lock, the token and the trim are Lua scripts flagged ``allow-oom`` (Redis 7,
  https://redis.io/docs/latest/develop/programmability/lua-api/#script-flags). Appends are refused
  meanwhile, and the registry holds or refuses edits (never drops them).
- A stream left holding only the trim notice gets a TTL (``NOTICE_TTL_MS``): Redis does not keep a
  key for every document ever opened. Every append removes the TTL in the same MULTI.
- A follower may lag behind a compaction (a busy replica): entries it has not read yet can be
  trimmed. So the trim appends, in the same MULTI, a notice ``{t: <bound>}`` to the stream: every
  entry before ``bound`` is gone. A follower that reads the notice while its position is before the
  bound reloads the snapshot (which covers everything trimmed) and applies it; applying what it
  already had changes nothing. Loads and compactions skip notices.
- Presence (awareness) travels on ``item_socket:{<name>}:a``, capped (MAXLEN ~) and expiring
  after twice the awareness timeout without a change; states of clients on another replica expire
  after ``awareness_timeout`` without renewal, so a replica that dies takes its users' cursors.
- Redis may come back from a restart without (all of) its data (no AOF, a lost fsync window, a
  failover to a lagging replica). On reconnecting, a replica compares Redis' ``run_id``; if Redis
  restarted, every open document whose stream no longer reaches what this replica read or
  appended gets its whole state appended again, and a fencing counter found behind the store's
  fence is raised past it (otherwise every later compaction would be refused as stale).
- Redis must not evict the update streams: ``start`` accepts only ``noeviction`` and ``volatile-*``
  (the streams holding updates have no TTL) and refuses ``allkeys-*``, any policy it does not know,
  and a Redis it may not ask (y-redis' deployment guide warns that eviction silently loses unsaved
  updates).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pycrdt import Doc
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, RedisError
from redis.maint_notifications import MaintNotificationsConfig

from .logs import log_event
from .metrics import Metrics
from .store import ZERO_POSITION, DocumentStore, Snapshot, StoreError, coalesce, stream_position

logger = logging.getLogger(__name__)

KEY_PREFIX = "item_socket"
# Longest wait of the follower's XREAD (ms): the follower also wakes at once when a document opens.
FOLLOW_BLOCK_MS = 2000
FOLLOW_BATCH = 1000
# Presence entries kept per document stream (approximately). An idle presence stream expires after
# twice the awareness timeout: older entries are never replayed (see _replay_presence).
AWARENESS_MAXLEN = 1000
# Compaction lock lifetime (ms), renewed every third of it while the compaction runs: a replica
# that stops (SIGSTOP, a lost Redis) loses its lock within this time.
COMPACTION_LOCK_MS = 60_000
# A compaction after a document closed that found the lock taken or failed is tried again, after
# 1, 2, 4 ... 30 s (about 5 minutes in all: past a dead replica's lock and a short outage).
CLOSE_COMPACTION_ATTEMPTS = 14
# How often (s) Redis' memory use is read (item_socket_redis_memory_used_bytes) and documents whose
# oldest uncompacted update is older than ``compact_max_age_s`` are compacted.
HOUSEKEEPING_INTERVAL_S = 15.0
# Lifetime (ms) of a stream that holds only a trim notice: long past any follower's lag, so every
# replica still following it has read the notice; an append removes the TTL.
NOTICE_TTL_MS = 3_600_000
# Entries read per compaction (a stream is compacted again if it held more).
COMPACTION_BATCH = 100_000
# Fields of an update stream entry: a Yjs update and the appending replica, or a trim notice
# (entries before this ID were trimmed; see the module docstring).
UPDATE_FIELD = b"u"
REPLICA_FIELD = b"r"
# How many updates a merged entry holds (absent: 1); --compact-after counts updates, not entries.
COUNT_FIELD = b"n"
TRIMMED_FIELD = b"t"
# Attempts (backoff up to 2 s each) to reload a snapshot after a gap while the store fails.
CATCH_UP_ATTEMPTS = 600
# The maxmemory-policy values that never evict a key without a TTL (the update streams have none).
# Anything else (allkeys-lru/lfu/random, Redis 8.6's allkeys-lrm, a policy added later) is refused.
SAFE_POLICIES = ("noeviction",)
SAFE_POLICY_PREFIX = "volatile-"
# Script flags need Redis 7.0 (the compaction's scripts must run when Redis is out of memory).
MINIMUM_REDIS = (7, 0)

# Every script below runs at maxmemory too (allow-oom): it is how memory is freed. One key each.
_ALLOW_OOM = "#!lua flags=allow-oom\n"
# Takes lock KEYS[1] for owner ARGV[1] for ARGV[2] ms if it is free: 1 if taken.
_TAKE_LOCK = _ALLOW_OOM + "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0"
# The next fencing token.
_NEXT_TOKEN = _ALLOW_OOM + "return redis.call('INCR', KEYS[1])"
# Raises the fencing counter to at least ARGV[1], then takes the next token.
_RAISE_FENCE = (
    _ALLOW_OOM
    + """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('INCR', KEYS[1])
"""
)
# Extends lock KEYS[1] to ARGV[2] ms if owner ARGV[1] still holds it: 1 if it does.
_RENEW_LOCK = (
    _ALLOW_OOM
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
)
# Deletes the lock only if owner ARGV[1] still holds it (no one else's lock is ever released).
_RELEASE_LOCK = (
    _ALLOW_OOM
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)
# Trims stream KEYS[1] before ID ARGV[1] and appends the notice {t: ARGV[1], r: ARGV[2]}; a stream
# left with the notice only expires after ARGV[3] ms (an append removes the TTL).
_TRIM = (
    _ALLOW_OOM
    + """
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
redis.call('XADD', KEYS[1], '*', 't', ARGV[1], 'r', ARGV[2])
if redis.call('XLEN', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""
)


class ScaleOutError(StoreError):
    """Redis cannot be used for the scale-out (unreachable at start, or configured to evict)."""


def updates_key(name: str) -> str:
    """The Redis key of document ``name``'s update stream (hash tag: one cluster slot per document)."""
    return f"{KEY_PREFIX}:{{{name}}}:u"


def awareness_key(name: str) -> str:
    """The Redis key of document ``name``'s presence stream."""
    return f"{KEY_PREFIX}:{{{name}}}:a"


def lock_key(name: str) -> str:
    """The Redis key of document ``name``'s compaction lock (its value: the holder, unique per compaction)."""
    return f"{KEY_PREFIX}:{{{name}}}:compaction"


# One counter for every document's fencing tokens: tokens only need to grow per document, and a
# key per document would stay in Redis for every document ever opened.
FENCE_KEY = f"{KEY_PREFIX}:fence"
# Compactions one replica runs at once (each holds a Redis and a PostgreSQL connection).
COMPACTION_CONCURRENCY = 4
# Redis connections of one replica's command client (the follower has its own); a command waits
# for a free one up to the command timeout rather than failing.
REDIS_CONNECTIONS = 32


def _after(entry_id: str) -> str:
    """The smallest stream ID greater than ``entry_id`` (for XTRIM MINID: keep what follows it)."""
    ms, seq = stream_position(entry_id)
    return f"{ms}-{seq + 1}"


def _updates_in(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """The number of updates stream ``entries`` hold (a merged entry counts what it merged)."""
    return sum(int(fields.get(COUNT_FIELD, 1)) for _, fields in entries if UPDATE_FIELD in fields)


def _before(a: str, b: str) -> bool:
    return stream_position(a) < stream_position(b)


def _later(a: str, b: str) -> str:
    return a if stream_position(a) >= stream_position(b) else b


def merge_into_snapshot(parts: Sequence[bytes]) -> bytes:
    """One Yjs update equal to applying ``parts`` in order (a Doc built and dropped in the caller's thread).

    A Doc is used rather than ``merge_updates``: every part was already applied by a replica's
    Doc, so applying them again cannot fail where ``merge_updates`` might (the SQLite store logs
    such failures as ``compaction_failed``), and the result is the state clients load.
    """
    doc: Doc = Doc()
    for part in parts:
        if part:
            doc.apply_update(part)
    return doc.get_update()


def redis_refusal(server: Mapping[str, Any], memory: Mapping[str, Any]) -> str | None:
    """Why the scale-out cannot use a Redis with these ``INFO server`` / ``INFO memory`` fields, or None.

    Refused: a Redis before ``MINIMUM_REDIS`` (the compaction's scripts need flags), and a
    ``maxmemory-policy`` other than ``noeviction``/``volatile-*``, missing ones included: it may
    evict streams holding updates not yet stored. Each reason names the setting to change.
    """
    version = str(server.get("redis_version", ""))
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = ()
    if len(major_minor) < 2 or major_minor < MINIMUM_REDIS:
        return (
            f"version {version or 'unknown'}; the scale-out needs Redis "
            f"{'.'.join(map(str, MINIMUM_REDIS))} or later (its compaction scripts run at maxmemory)"
        )
    policy = memory.get("maxmemory_policy")
    if policy is None:
        return (
            "INFO memory does not say its maxmemory-policy, so item_socket cannot tell whether it "
            "may evict the streams that hold documents' updates. Use a Redis that reports it, with "
            "`maxmemory-policy noeviction`"
        )
    policy = str(policy)
    if policy in SAFE_POLICIES or policy.startswith(SAFE_POLICY_PREFIX):
        return None
    return (
        f"maxmemory-policy {policy}: it may evict the streams that hold documents' updates not yet "
        "stored. Set `maxmemory-policy noeviction` (redis.conf, or CONFIG SET maxmemory-policy "
        "noeviction); volatile-* policies are also safe"
    )


class DocumentStreams:
    """The update log of the scale-out: load, append, follow and compact documents' Redis streams.

    It is the registry's log in place of the store (same ``load`` / ``append_many`` shape) and calls
    back ``on_updates(name, updates)`` and ``on_awareness(name, update)`` with what other replicas
    appended. Every Redis command is bounded by ``timeout`` seconds; failures raise StoreError (the
    registry keeps the updates and retries) and set ``healthy`` False until a command succeeds.
    """

    def __init__(
        self,
        url: str,
        store: DocumentStore,
        metrics: Metrics,
        *,
        password_file: Path | None = None,
        compact_after: int = 500,
        compact_max_age_s: float = 600.0,
        awareness_timeout: float = 30.0,
        timeout: float = 5.0,
        replica_id: str | None = None,
        notice_ttl_ms: int = NOTICE_TTL_MS,
    ) -> None:
        self.url = url
        self.notice_ttl_ms = notice_ttl_ms
        self.store = store
        self.metrics = metrics
        self.password_file = password_file
        self.compact_after = compact_after
        self.compact_max_age_s = compact_max_age_s
        self.awareness_timeout = awareness_timeout
        self.timeout = timeout
        self.replica_id = (replica_id or uuid.uuid4().hex[:16]).encode()
        self.healthy = False
        self.on_updates: Callable[[str, list[bytes]], None] = lambda name, updates: None
        self.on_awareness: Callable[[str, bytes], None] = lambda name, update: None
        # Called when the shared store fails (readiness) and when it answers again.
        self.on_store_health: Callable[[bool], None] = lambda healthy: None
        # Called with the open documents whose recent entries a restarted Redis lost.
        self.on_lost: Callable[[list[str]], None] = lambda names: None
        self._run_id: str | None = None
        # Last entry this replica appended per followed document (see _after_reconnect).
        self._appended_at: dict[str, str] = {}
        # _last_known_entries() when the follower last lost Redis (checked by _after_reconnect).
        self._known: dict[str, str] = {}
        self._redis: Redis | None = None
        self._reader: Redis | None = None
        # Follow positions: document name -> last entry ID applied (updates and presence).
        self._updates_at: dict[str, str] = {}
        self._awareness_at: dict[str, str] = {}
        # Where the last load of a document ended, until ``opened`` starts following from there.
        self._loaded_at: dict[str, str] = {}
        # Updates seen per followed document since this replica last asked for a compaction, and
        # when (monotonic s) the first of them was seen: a document edited slowly is compacted
        # after compact_max_age_s, so PostgreSQL (and its backups) lag the stream by that at most.
        self._updates_since_compaction: dict[str, int] = {}
        self._pending_since: dict[str, float] = {}
        self._wake_key = f"{KEY_PREFIX}:replica:{self.replica_id.decode()}:wake"
        self._wake_at = ZERO_POSITION
        self._follower: asyncio.Task[None] | None = None
        self._stopping = False
        self._compacting: set[str] = set()
        # Documents whose snapshot is being reloaded after a gap -> another gap seen meanwhile.
        self._catching_up: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._awareness_queue: list[tuple[str, bytes]] = []
        self._awareness_wanted = asyncio.Event()
        self._awareness_sender: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        # Redis' (used_memory, maxmemory) in bytes, from the last INFO memory (None: not read yet).
        self.memory: tuple[int, int] | None = None
        self._scripts: dict[str, Any] = {}
        self._lock_owners = 0  # makes each compaction's lock value unique
        self._stopped = asyncio.Event()  # wakes the pauses between close-compaction attempts
        self._compaction_slots = asyncio.Semaphore(COMPACTION_CONCURRENCY)

    # --- lifecycle --------------------------------------------------------------------------

    def _client(self, socket_timeout: float) -> Redis:
        password = None
        if self.password_file is not None:
            try:
                password = self.password_file.read_text().strip()
            except OSError as exc:
                raise ScaleOutError(f"cannot read Redis' password file {self.password_file}: {exc}") from exc
        # No retries inside redis-py: a failure must reach us at once (readiness, held updates);
        # the follower and the flush loop retry on their own bounded schedules.
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=REDIS_CONNECTIONS,
            timeout=self.timeout,
            password=password,
            socket_timeout=socket_timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            client_name=f"item_socket-{self.replica_id.decode()}",
        )
        return Redis(
            connection_pool=pool,
            # Cluster maintenance push notifications (Redis Enterprise); plain Redis refuses them.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )

    async def start(self) -> None:
        """Connect, refuse a Redis that may evict or is too old, start following.

        Raises ScaleOutError naming the fix: Redis unreachable, a user without the INFO
        permission, a Redis before 7.0, or a ``maxmemory-policy`` that may evict the streams.
        """
        self._redis = self._client(self.timeout)
        self._reader = self._client(self.timeout + FOLLOW_BLOCK_MS / 1000)
        try:
            server = await self._redis.info("server")
            memory = await self._redis.info("memory")
        except NoPermissionError as exc:
            await self._close_clients()
            raise ScaleOutError(
                f"Redis at {self.url} refuses INFO to this user ({exc}): item_socket reads the "
                "maxmemory-policy and the server's run_id with it. Grant it: ACL SETUSER <user> +info"
            ) from exc
        except (RedisError, OSError) as exc:
            await self._close_clients()
            raise ScaleOutError(f"cannot reach Redis at {self.url}: {exc}") from exc
        refusal = redis_refusal(server, memory)
        if refusal is not None:
            await self._close_clients()
            raise ScaleOutError(f"Redis at {self.url}: {refusal}")
        policy = str(memory.get("maxmemory_policy"))
        for name, script in (
            ("take_lock", _TAKE_LOCK),
            ("next_token", _NEXT_TOKEN),
            ("release_lock", _RELEASE_LOCK),
            ("raise_fence", _RAISE_FENCE),
            ("renew_lock", _RENEW_LOCK),
            ("trim", _TRIM),
        ):
            self._scripts[name] = self._redis.register_script(script)
        self._run_id = str(server.get("run_id"))
        self._note_memory(memory)
        self.healthy = True
        self._follower = asyncio.create_task(self._follow(), name="item-socket-follow")
        self._awareness_sender = asyncio.create_task(self._send_awareness(), name="item-socket-presence")
        self._housekeeping = asyncio.create_task(self._housekeep(), name="item-socket-housekeeping")
        log_event(
            logger,
            logging.INFO,
            "scale_out_started",
            "following document streams on %s as replica %s",
            self.url,
            self.replica_id.decode(),
            replica=self.replica_id.decode(),
            maxmemory_policy=policy,
        )

    async def stop(self) -> None:
        """Stop following; wait (bounded) for running compactions; close the connections."""
        self._stopping = True
        self._stopped.set()
        await self._wake()
        for task in (self._follower, self._awareness_sender, self._housekeeping):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.timeout)
        await self._close_clients()

    def _note_memory(self, memory: Mapping[str, Any]) -> None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.memory = (int(memory["used_memory"]), int(memory.get("maxmemory", 0)))

    async def _housekeep(self) -> None:
        """Every HOUSEKEEPING_INTERVAL_S: compact documents edited long ago, read Redis' memory use."""
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), HOUSEKEEPING_INTERVAL_S)
            if self._stopping:
                return
            horizon = time.monotonic() - self.compact_max_age_s
            for name in [name for name, since in self._pending_since.items() if since <= horizon]:
                self._compact_followed_soon(name)
            with contextlib.suppress(RedisError, OSError, StoreError):  # a failed read keeps the last
                self._note_memory(await self._commands().info("memory"))

    def _compact_followed_soon(self, name: str) -> None:
        """Compact followed document ``name`` and start counting its updates again."""
        self._updates_since_compaction[name] = 0
        self._pending_since.pop(name, None)
        self.compact_soon(name)

    async def _close_clients(self) -> None:
        for client in (self._redis, self._reader):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
                    await client.connection_pool.disconnect()
        self._redis = self._reader = None

    def _commands(self) -> Redis:
        if self._redis is None:
            raise StoreError("Redis is not connected")
        return self._redis

    def _failed(self, what: str, exc: BaseException) -> StoreError:
        if self.healthy:
            log_event(logger, logging.ERROR, "redis_failed", "Redis %s: %s", what, exc, reason=str(exc))
        self.healthy = False
        self.metrics.errors.labels("redis").inc()
        return StoreError(f"Redis {what} failed: {exc}")

    def _succeeded(self, started: float) -> None:
        self.metrics.redis_seconds.observe(time.perf_counter() - started)
        if not self.healthy:
            log_event(logger, logging.INFO, "redis_recovered", "Redis answers again")
        self.healthy = True

    # --- the registry's log -----------------------------------------------------------------

    async def load(self, name: str) -> list[bytes]:
        """The updates that rebuild ``name``: its stored snapshot plus the stream entries after it.

        Reads the stream before the snapshot (see the module docstring). Raises StoreError.
        """
        started = time.perf_counter()
        try:
            entries = await self._commands().xrange(updates_key(name), "-", "+")
        except (RedisError, OSError) as exc:
            raise self._failed(f"read of {name!r}", exc) from exc
        self._succeeded(started)
        try:
            snapshot = await self.store.load_snapshot(name)
        except StoreError:
            self.on_store_health(False)
            raise
        self.on_store_health(True)
        covered = stream_position(snapshot.position)
        updates = [snapshot.data] if snapshot.data else []
        position = snapshot.position
        for entry_id, fields in entries:
            entry = entry_id.decode()
            position = _later(position, entry)
            update = fields.get(UPDATE_FIELD)
            if update is not None and stream_position(entry) > covered:
                updates.append(update)
        self._loaded_at[name] = position
        if _updates_in(entries) >= self.compact_after:
            self.compact_soon(name)
        return updates

    async def append_many(self, updates: Mapping[str, Sequence[bytes]]) -> None:
        """Append each document's updates to its stream, in order, in one pipeline.

        Raises StoreError when Redis fails: the caller keeps all of them and retries (entries that
        did land are appended again: harmless, see the module docstring).
        """
        if not updates:
            return
        started = time.perf_counter()
        names = [name for name, parts in updates.items() if parts]
        appended: list[str | None] = []  # per command: the document of an XADD, None for PERSIST
        try:
            # One MULTI: a trim that gives a notice-only stream its TTL cannot fall between an
            # XADD and the PERSIST that keeps the new entry from expiring with the notice.
            async with self._commands().pipeline(transaction=True) as pipe:
                for name in names:
                    key = updates_key(name)
                    originals = list(updates[name])
                    parts = coalesce(name, originals)
                    for part in parts:
                        fields = {UPDATE_FIELD: part, REPLICA_FIELD: self.replica_id}
                        if len(parts) == 1 and len(originals) > 1:
                            fields[COUNT_FIELD] = str(len(originals)).encode()
                        pipe.xadd(key, fields)
                        appended.append(name)
                    pipe.persist(key)
                    appended.append(None)
                results = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._failed(f"append to {len(names)} streams", exc) from exc
        self._succeeded(started)
        for name, result in zip(appended, results, strict=True):
            if name is not None and name in self._updates_at:
                self._appended_at[name] = result.decode()

    def opened(self, name: str) -> None:
        """Start following ``name`` from where its last ``load`` ended (call once its room exists)."""
        self._updates_at[name] = self._loaded_at.pop(name, ZERO_POSITION)
        self._awareness_at.setdefault(name, f"{int(time.time() * 1000) - 1}-0")
        self.metrics.documents_followed.set(len(self._updates_at))
        self._spawn(self._wake(), "wake")
        self._spawn(self._replay_presence(name), f"presence:{name}")

    def closed(self, name: str) -> None:
        """Stop following ``name`` (its room unloaded) and compact what its stream still holds."""
        self._updates_at.pop(name, None)
        self._appended_at.pop(name, None)
        self._awareness_at.pop(name, None)
        self._updates_since_compaction.pop(name, None)
        self._pending_since.pop(name, None)
        self._loaded_at.pop(name, None)
        self.metrics.documents_followed.set(len(self._updates_at))
        # Retried: what the stream still holds must reach the store (and its backups) even if
        # the lock is held by a replica that died, or PostgreSQL is away for a moment.
        self.compact_soon(name, CLOSE_COMPACTION_ATTEMPTS)

    def publish_awareness(self, name: str, update: bytes) -> None:
        """Queue a presence change of a local client for the other replicas (best effort, bounded)."""
        if len(self._awareness_queue) < 10_000:
            self._awareness_queue.append((name, update))
            self._awareness_wanted.set()

    # --- following --------------------------------------------------------------------------

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.create_task(coro, name=f"item-socket-{what}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wake(self) -> None:
        """Interrupt the follower's blocking XREAD so it picks up a changed set of documents."""
        if self._redis is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await self._redis.xadd(self._wake_key, {b"w": b"1"}, maxlen=1, approximate=False)
            await self._redis.expire(self._wake_key, 3600)

    async def _follow(self) -> None:
        reader = self._reader
        assert reader is not None
        failures = 0
        while not self._stopping:
            streams: dict[str, str] = {self._wake_key: self._wake_at}
            for name, position in self._updates_at.items():
                streams[updates_key(name)] = position
            for name, position in self._awareness_at.items():
                streams[awareness_key(name)] = position
            try:
                result = await reader.xread(streams, count=FOLLOW_BATCH, block=FOLLOW_BLOCK_MS)
            except (RedisError, OSError) as exc:
                self._failed("follow", exc)
                if not failures:
                    self._known = self._last_known_entries()
                failures += 1
                # Bounded backoff while Redis is away; the positions keep everything to replay.
                await asyncio.sleep(min(0.05 * 2**failures, 2.0))
                continue
            if failures:
                self._spawn(self._after_reconnect(), "reconnected")
            failures = 0
            if not self.healthy:
                self.healthy = True
                log_event(logger, logging.INFO, "redis_recovered", "Redis answers again")
            now_ms = time.time() * 1000
            for key, entries in result or ():
                self._dispatch(key.decode(), entries, now_ms)

    def _dispatch(self, key: str, entries: list[tuple[bytes, dict[bytes, bytes]]], now_ms: float) -> None:
        if key == self._wake_key:
            self._wake_at = entries[-1][0].decode()
            return
        name, kind = key[len(KEY_PREFIX) + 2 :].rsplit("}:", 1)
        last = entries[-1][0].decode()
        positions = self._updates_at if kind == "u" else self._awareness_at
        if name not in positions:
            return  # closed while the read was in flight
        read_until, positions[name] = positions[name], last
        mine = self.replica_id
        if kind == "u":
            # Every entry comes by here, ours too: count their updates to compact without asking.
            since = self._updates_since_compaction.get(name, 0) + _updates_in(entries)
            if since >= self.compact_after:
                self._compact_followed_soon(name)
            else:
                self._updates_since_compaction[name] = since
                if since:
                    self._pending_since.setdefault(name, time.monotonic())
            updates = []
            for entry_id, fields in entries:
                update = fields.get(UPDATE_FIELD)
                if update is None:
                    trimmed = fields.get(TRIMMED_FIELD)
                    # Entries between what we had read and the bound were trimmed unread.
                    if trimmed is not None and _before(_after(read_until), trimmed.decode()):
                        self._catch_up_soon(name)
                elif fields.get(REPLICA_FIELD) != mine:
                    updates.append(update)
                    appended_ms = stream_position(entry_id.decode())[0]
                    self.metrics.stream_lag.observe(max(0.0, now_ms - appended_ms) / 1000)
            if updates:
                self.on_updates(name, updates)
        else:
            for _entry_id, fields in entries:
                if fields.get(REPLICA_FIELD) != mine:
                    self.on_awareness(name, fields[b"a"])

    def _last_known_entries(self) -> dict[str, str]:
        """Per followed document, the newest entry this replica read or appended (none: left out).

        Taken when the connection to Redis is lost, before any append can reach a restarted Redis.
        """
        known = {
            name: _later(position, self._appended_at.get(name, ZERO_POSITION))
            for name, position in self._updates_at.items()
        }
        return {name: entry for name, entry in known.items() if entry != ZERO_POSITION}

    async def _after_reconnect(self) -> None:
        """After a lost connection: if Redis restarted, find the open documents whose streams lost
        entries this replica read or appended, and have their whole state appended again.

        A document lost entries when the last one this replica knew of is neither in the stream
        nor covered by the stored snapshot (a restart loses a suffix, so if that entry is there,
        so is everything before it). Best effort: a failure leaves the next reconnect to try again.
        """
        try:
            run_id = str((await self._commands().info("server")).get("run_id"))
            if run_id == self._run_id:
                return
            known = {name: entry for name, entry in self._known.items() if name in self._updates_at}
            async with self._commands().pipeline(transaction=False) as pipe:
                for name, entry in known.items():
                    pipe.xrange(updates_key(name), entry, entry, count=1)
                found = await pipe.execute()
        except (RedisError, OSError, StoreError):
            return
        self._run_id = run_id
        lost = []
        for (name, entry), present in zip(known.items(), found, strict=True):
            if present:
                continue
            try:
                covered = not _before((await self.store.load_snapshot(name)).position, entry)
            except StoreError:
                covered = False  # cannot tell: appending again is harmless
            if not covered:
                lost.append(name)
        log_event(
            logger,
            logging.WARNING if lost else logging.INFO,
            "redis_restarted",
            "Redis restarted; %d of %d open documents lost stream entries and are appended again",
            len(lost),
            len(self._updates_at),
            lost=len(lost),
        )
        if lost:
            self.on_lost(lost)

    def _catch_up_soon(self, name: str) -> None:
        """Reload ``name``'s snapshot in the background: the follower missed trimmed entries."""
        self.metrics.stream_gaps.inc()
        if name in self._catching_up:
            # The reload under way may have read the snapshot before this trim: read it again.
            self._catching_up[name] = True
            return
        self._catching_up[name] = False
        log_event(
            logger,
            logging.WARNING,
            "stream_gap",
            "entries of %r were trimmed before this replica read them; reloading its snapshot",
            name,
            document=name,
        )
        self._spawn(self._catch_up(name), f"catch-up:{name}")

    async def _catch_up(self, name: str) -> None:
        """Apply the stored snapshot of ``name`` (it covers every trimmed entry) while it is followed.

        Retries with bounded backoff while the store fails (CATCH_UP_ATTEMPTS); later entries keep
        flowing meanwhile (yrs holds those whose dependencies are missing until the snapshot comes).
        """
        try:
            for attempt in range(1, CATCH_UP_ATTEMPTS + 1):
                if self._stopping or name not in self._updates_at:
                    return
                self._catching_up[name] = False
                try:
                    snapshot = await self.store.load_snapshot(name)
                except StoreError as exc:
                    self.on_store_health(False)
                    if attempt == CATCH_UP_ATTEMPTS:
                        log_event(
                            logger,
                            logging.ERROR,
                            "catch_up_failed",
                            "cannot reload %r after a stream gap: %s",
                            name,
                            exc,
                            document=name,
                        )
                        return
                    await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
                    continue
                self.on_store_health(True)
                if name in self._updates_at and snapshot.data:
                    self.on_updates(name, [snapshot.data])
                if not self._catching_up.get(name):
                    return
        finally:
            self._catching_up.pop(name, None)

    async def _replay_presence(self, name: str) -> None:
        """Show a newly opened document's clients the presence of other replicas' clients at once.

        Entries older than the awareness timeout are skipped (their clients may be gone).
        """
        try:
            entries = await self._commands().xrevrange(awareness_key(name), "+", "-", count=AWARENESS_MAXLEN)
        except (RedisError, OSError, StoreError):
            return
        horizon = (time.time() - self.awareness_timeout) * 1000
        for entry_id, fields in reversed(entries):
            mine = fields.get(REPLICA_FIELD) == self.replica_id
            if stream_position(entry_id.decode())[0] >= horizon and not mine:
                self.on_awareness(name, fields[b"a"])

    async def _send_awareness(self) -> None:
        while not self._stopping:
            await self._awareness_wanted.wait()
            self._awareness_wanted.clear()
            batch, self._awareness_queue = self._awareness_queue, []
            if not batch:
                continue
            started = time.perf_counter()
            try:
                async with self._commands().pipeline(transaction=False) as pipe:
                    for name, update in batch:
                        fields = {b"a": update, REPLICA_FIELD: self.replica_id}
                        pipe.xadd(awareness_key(name), fields, maxlen=AWARENESS_MAXLEN)
                    for name in {name for name, _ in batch}:
                        pipe.expire(awareness_key(name), max(2, int(2 * self.awareness_timeout)))
                    await pipe.execute()
            except (RedisError, OSError, StoreError) as exc:
                # Presence is ephemeral: clients renew their state every 15 s, so what is dropped
                # while Redis is away comes back by itself.
                self._failed("presence append", exc)
                continue
            self._succeeded(started)

    # --- compaction -------------------------------------------------------------------------

    def compact_soon(self, name: str, attempts: int = 1) -> None:
        """Compact ``name`` in the background unless this replica already is.

        With ``attempts`` > 1, a compaction that found the lock taken or failed is tried again
        (see CLOSE_COMPACTION_ATTEMPTS) until it compacts, finds nothing, or this replica stops.
        """
        if name not in self._compacting and not self._stopping and self._redis is not None:
            self._compacting.add(name)
            self._spawn(self._compact(name, attempts), f"compact:{name}")

    async def compact(self, name: str) -> str:
        """Compact ``name`` now; returns the outcome: compacted, empty, busy, fenced or failed."""
        self._compacting.add(name)
        return await self._compact(name)

    async def _compact(self, name: str, attempts: int = 1) -> str:
        try:
            for attempt in range(attempts):
                if attempt:
                    # Woken early by stop(): the next replica to open the document compacts it.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopped.wait(), min(2 ** (attempt - 1), 30))
                    if self._stopping:
                        break
                async with self._compaction_slots:
                    outcome = await self._compact_locked(name)
                if outcome not in ("busy", "failed"):
                    break
            return outcome
        finally:
            self._compacting.discard(name)

    async def _compact_locked(self, name: str) -> str:
        redis = self._commands()
        lock = lock_key(name)
        self._lock_owners += 1
        owner = f"{self.replica_id.decode()}:{self._lock_owners}"
        try:
            # The lock first, then the token: a token taken before the lock could be overtaken by
            # a whole later compaction and then look like an overlap (fenced) where none was.
            if not await self._scripts["take_lock"](keys=[lock], args=[owner, COMPACTION_LOCK_MS]):
                self.metrics.compactions.labels("busy").inc()
                return "busy"  # another replica compacts it right now
            token = int(await self._scripts["next_token"](keys=[FENCE_KEY]))
        except (RedisError, OSError) as exc:
            self._failed(f"compaction lock of {name!r}", exc)
            self.metrics.compactions.labels("failed").inc()
            with contextlib.suppress(RedisError, OSError):
                await self._scripts["release_lock"](keys=[lock], args=[owner])
            return "failed"
        outcome = "failed"
        renewal = asyncio.create_task(self._keep_lock(lock, owner), name=f"item-socket-lock:{name}")
        try:
            outcome = await self._compact_under_lock(redis, name, owner, token)
            return outcome
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
            with contextlib.suppress(RedisError, OSError):
                await self._scripts["release_lock"](keys=[lock], args=[owner])
            if outcome != "empty":
                self.metrics.compactions.labels(outcome).inc()

    async def _keep_lock(self, lock: str, owner: str) -> None:
        """Renew the compaction lock every third of its lifetime while the compaction runs."""
        while True:
            await asyncio.sleep(COMPACTION_LOCK_MS / 3000)
            with contextlib.suppress(RedisError, OSError):
                if not await self._scripts["renew_lock"](keys=[lock], args=[owner, COMPACTION_LOCK_MS]):
                    return  # lost (expired): the compaction finds out before it trims

    async def _raised_token(self, redis: Redis, token: int, stored: int) -> int:
        """A token newer than the stored snapshot's ``stored`` fence when Redis' counter fell behind it.

        That happens only when Redis lost its data: a newer compaction raises the counter itself.
        Returns ``token`` when the counter is not behind (the stored snapshot is genuinely newer:
        ours will be fenced), else the new token.
        """
        if int(await redis.get(FENCE_KEY) or 0) >= stored:
            return token
        raised = int(await self._scripts["raise_fence"](keys=[FENCE_KEY], args=[stored]))
        log_event(
            logger,
            logging.WARNING,
            "fence_raised",
            "Redis' fencing counter was behind the store's fence %d (Redis lost its data?): now %d",
            stored,
            raised,
        )
        return raised

    async def _compact_under_lock(self, redis: Redis, name: str, owner: str, token: int) -> str:
        """Compact ``name`` holding its lock as ``owner``, with fencing ``token``; returns the outcome."""
        started = time.perf_counter()
        try:
            entries = await redis.xrange(updates_key(name), "-", "+", count=COMPACTION_BATCH)
            if not any(UPDATE_FIELD in fields for _, fields in entries):
                return "empty"  # nothing, or only the notice of the last trim
            snapshot = await self.store.load_snapshot(name)
            if snapshot.fence >= token:
                token = await self._raised_token(redis, token, snapshot.fence)
            covered = stream_position(snapshot.position)
            last = entries[-1][0].decode()
            parts = [snapshot.data]
            for entry_id, fields in entries:
                update = fields.get(UPDATE_FIELD)  # None: the notice of an earlier trim
                if update is not None and stream_position(entry_id.decode()) > covered:
                    parts.append(update)
            merged = await asyncio.to_thread(merge_into_snapshot, parts)
            if await redis.get(lock_key(name)) != owner.encode():
                # The lock expired during a slow compaction and someone else may be compacting.
                self.metrics.compaction_overlaps.inc()
            covering = Snapshot(merged, _later(last, snapshot.position), token)
            saved = await self.store.save_snapshot(name, covering)
            if not saved:
                self.metrics.compaction_overlaps.inc()
                return "fenced"
            # Only now that a durable snapshot covers them may the entries leave the stream; the
            # notice tells followers that lagged behind to reload that snapshot.
            bound = _after(last)
            trim_args = [bound, self.replica_id, self.notice_ttl_ms]
            await self._scripts["trim"](keys=[updates_key(name)], args=trim_args)
        except (RedisError, OSError, StoreError) as exc:
            if isinstance(exc, StoreError):
                self.on_store_health(False)
            log_event(
                logger,
                logging.WARNING,
                "compaction_failed",
                "cannot compact %r: %s",
                name,
                exc,
                document=name,
            )
            return "failed"
        except Exception as exc:  # a Yjs decoder error: keep the stream, the updates are safe there
            log_event(
                logger, logging.ERROR, "compaction_failed", "cannot merge %r: %r", name, exc, document=name
            )
            return "failed"
        self.on_store_health(True)
        self.metrics.compaction_seconds.observe(time.perf_counter() - started)
        log_event(
            logger,
            logging.DEBUG,
            "compacted",
            "compacted %r: %d entries into a %d-byte snapshot",
            name,
            len(entries),
            len(merged),
            document=name,
        )
        return "compacted"
