"""Document persistence: an abstract store and the embedded SQLite implementation.

A document is stored as one snapshot (a merged Yjs update) plus a log of updates appended since.
Only bytes cross the store boundary: no pycrdt ``Doc`` ever leaves the event-loop thread.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pycrdt import merge_updates

from .logs import log_event

logger = logging.getLogger(__name__)

T = TypeVar("T")


class StoreError(Exception):
    """The store could not read or write a document; the message says which and why."""


ZERO_POSITION = "0-0"


def stream_position(entry_id: str) -> tuple[int, int]:
    """A Redis stream entry ID (``"<ms>-<seq>"``) as a comparable ``(ms, seq)`` pair.

    Raises ValueError for anything else. Source: https://redis.io/docs/latest/develop/data-types/streams/
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Snapshot:
    """A document's compacted state in a shared store (scale-out).

    ``data`` is one merged Yjs update (``b""``: none yet); ``position`` the ID of the last entry of
    the document's Redis stream it covers (``"0-0"``: none); ``fence`` the fencing token of the
    compaction that wrote it (later compactions carry larger tokens).
    """

    data: bytes
    position: str = ZERO_POSITION
    fence: int = 0


class DocumentStore(abc.ABC):
    """Where documents live between two loads. All methods are coroutines and take bytes only."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the store (create files and schema as needed)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Close the store once every pending write has finished."""

    @abc.abstractmethod
    async def load(self, name: str) -> list[bytes]:
        """Return the updates that rebuild document ``name`` (empty for a new document).

        Raises StoreError when the document exists but cannot be read: never treat that as "new".
        """

    @abc.abstractmethod
    async def append_many(self, updates: Mapping[str, Sequence[bytes]]) -> None:
        """Durably append, for each document name, its updates (already applied in memory).

        All or nothing: on StoreError none of them is stored.
        """

    async def load_snapshot(self, name: str) -> Snapshot:
        """Return the compacted snapshot of ``name`` (an empty Snapshot for a new document).

        Only stores that several replicas share implement it; raises StoreError otherwise.
        """
        raise StoreError(f"{type(self).__name__} cannot be shared by replicas (use PostgreSQL)")

    async def save_snapshot(self, name: str, snapshot: Snapshot) -> bool:
        """Replace the snapshot of ``name`` unless a compaction with a larger fence wrote one.

        Returns False (nothing written) when ``snapshot.fence`` is not larger than the stored fence
        or its position is behind the stored one. Raises StoreError on failure.
        """
        raise StoreError(f"{type(self).__name__} cannot be shared by replicas (use PostgreSQL)")

    async def ping(self) -> None:  # noqa: B027 - a store without a server has nothing to ask
        """Check that the store answers; raises StoreError if not (readiness probes)."""

    def opened(self, name: str) -> None:  # noqa: B027 - a hook stores may leave empty
        """A room of ``name`` was loaded from this store (nothing to do for a store alone)."""

    def closed(self, name: str) -> None:  # noqa: B027 - a hook stores may leave empty
        """The room of ``name`` was unloaded (nothing to do for a store alone)."""

    async def append(self, name: str, updates: Sequence[bytes]) -> None:
        """Durably append ``updates`` to document ``name``."""
        if updates:
            await self.append_many({name: updates})

    async def __aenter__(self) -> DocumentStore:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class TimedStore(DocumentStore):
    """``store`` with the duration of each call that succeeds reported to ``observe``.

    ``observe(operation, seconds)``: operation is ``load``, ``append``, ``load_snapshot``,
    ``save_snapshot`` or ``ping`` (wall-clock seconds of the awaited call). The calls are timed here,
    at the store's boundary and nowhere else, so ``item_socket_store_operation_seconds`` means the
    store alone (PostgreSQL, or SQLite with one replica) and never includes Redis round trips.
    Failed calls are not observed (as Redis' are not): they show as the store's health.
    """

    def __init__(self, store: DocumentStore, observe: Callable[[str, float], None]) -> None:
        self.inner = store
        self._observe = observe

    async def start(self) -> None:
        await self.inner.start()

    async def stop(self) -> None:
        await self.inner.stop()

    async def load(self, name: str) -> list[bytes]:
        started = time.perf_counter()
        updates = await self.inner.load(name)
        self._observe("load", time.perf_counter() - started)
        return updates

    async def append_many(self, updates: Mapping[str, Sequence[bytes]]) -> None:
        started = time.perf_counter()
        await self.inner.append_many(updates)
        self._observe("append", time.perf_counter() - started)

    async def load_snapshot(self, name: str) -> Snapshot:
        started = time.perf_counter()
        snapshot = await self.inner.load_snapshot(name)
        self._observe("load_snapshot", time.perf_counter() - started)
        return snapshot

    async def save_snapshot(self, name: str, snapshot: Snapshot) -> bool:
        started = time.perf_counter()
        saved = await self.inner.save_snapshot(name, snapshot)
        self._observe("save_snapshot", time.perf_counter() - started)
        return saved

    async def ping(self) -> None:
        started = time.perf_counter()
        await self.inner.ping()
        self._observe("ping", time.perf_counter() - started)

    def opened(self, name: str) -> None:
        self.inner.opened(name)

    def closed(self, name: str) -> None:
        self.inner.closed(name)


def merge_log(name: str, parts: Sequence[bytes]) -> bytes | None:
    """One update merging a document's snapshot and log (``parts``, in order), or None if it fails.

    A failure is logged (``compaction_failed``) and the log must be kept as it is: every update in
    it was applied successfully in memory, so a merge failure is a pycrdt limitation, not bad data.
    The store retries at a later append.
    """
    try:
        return merge_updates(*parts)
    except Exception as exc:
        log_event(
            logger, logging.WARNING, "compaction_failed", "cannot compact %r: %s", name, exc, document=name
        )
        return None


def coalesce(name: str, updates: list[bytes]) -> list[bytes]:
    """``updates`` of one document as one merged Yjs update (one row or stream entry per flush).

    Storing a flush's updates of a document as one merged row instead of one row each takes most
    of the store's per-update cost off the write path (profiled in docs/benchmarks.md): a merge of
    32 small updates costs about 0.8 µs per update, and later compactions merge fewer, larger rows.
    If the merge fails, the updates are kept as they are (see ``merge_log``).
    """
    if len(updates) < 2:
        return updates
    merged = merge_log(name, updates)
    return updates if merged is None else [merged]


class SQLiteStore(DocumentStore):
    """SQLite file ``<data_dir>/documents.sqlite3``, used from one dedicated thread.

    Schema version is kept in ``PRAGMA user_version``. When a document's log holds more than
    ``compact_after`` updates, the log is merged into the snapshot in the same transaction as the
    append, so log growth is bounded. Each flush stores a document's updates as one merged row.
    """

    SCHEMA_VERSION = 1
    FILENAME = "documents.sqlite3"

    def __init__(self, data_dir: Path, *, compact_after: int = 500) -> None:
        self.path = Path(data_dir) / self.FILENAME
        self.compact_after = compact_after
        # One thread owns the connection: SQLite calls are serialized in submission order, so a
        # load submitted after an append always sees that append.
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            raise StoreError(f"store {self.path} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="item-socket-store")
        try:
            await self._run(self._open)
        except (sqlite3.Error, OSError) as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        log_event(logger, logging.INFO, "store_opened", "store opened at %s", self.path, path=str(self.path))

    async def stop(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    async def load(self, name: str) -> list[bytes]:
        try:
            return await self._run(self._load, name)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot load document {name!r} from {self.path}: {exc}") from exc

    async def append_many(self, updates: Mapping[str, Sequence[bytes]]) -> None:
        batch = {name: list(u) for name, u in updates.items() if u}
        if not batch:
            return
        try:
            await self._run(self._append_many, batch)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {len(batch)} documents to {self.path}: {exc}") from exc

    # --- the store thread -------------------------------------------------------------------

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            db.executescript(
                """
                BEGIN;
                CREATE TABLE IF NOT EXISTS documents (
                    name TEXT PRIMARY KEY,
                    snapshot BLOB NOT NULL,
                    log_length INTEGER NOT NULL DEFAULT 0,
                    updated_at REAL NOT NULL
                );
                CREATE TABLE IF NOT EXISTS updates (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    name TEXT NOT NULL,
                    data BLOB NOT NULL
                );
                CREATE INDEX IF NOT EXISTS updates_by_name ON updates (name, id);
                PRAGMA user_version = 1;
                COMMIT;
                """
            )
        elif version != self.SCHEMA_VERSION:
            db.close()
            raise sqlite3.DatabaseError(
                f"schema version {version} is not supported (expected {self.SCHEMA_VERSION})"
            )
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("store is closed")
        return self._db

    def _load(self, name: str) -> list[bytes]:
        db = self._conn()
        row = db.execute("SELECT snapshot FROM documents WHERE name = ?", (name,)).fetchone()
        updates = [r[0] for r in db.execute("SELECT data FROM updates WHERE name = ? ORDER BY id", (name,))]
        return ([row[0]] if row is not None and row[0] else []) + updates

    def _append_many(self, batch: dict[str, list[bytes]]) -> None:
        db = self._conn()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            for name, updates in batch.items():
                rows = [(name, u) for u in coalesce(name, updates)]
                db.executemany("INSERT INTO updates (name, data) VALUES (?, ?)", rows)
                db.execute(
                    "INSERT INTO documents (name, snapshot, log_length, updated_at) VALUES (?, x'', ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET log_length = log_length + excluded.log_length, "
                    "updated_at = excluded.updated_at",
                    (name, len(updates), now),
                )
                (log_length,) = db.execute(
                    "SELECT log_length FROM documents WHERE name = ?", (name,)
                ).fetchone()
                if log_length > self.compact_after:
                    self._compact(db, name)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _compact(self, db: sqlite3.Connection, name: str) -> None:
        """Merge the log of ``name`` into its snapshot (inside the caller's transaction)."""
        (snapshot,) = db.execute("SELECT snapshot FROM documents WHERE name = ?", (name,)).fetchone()
        rows = db.execute("SELECT id, data FROM updates WHERE name = ? ORDER BY id", (name,)).fetchall()
        merged = merge_log(name, ([snapshot] if snapshot else []) + [r[1] for r in rows])
        if merged is None:
            return
        db.execute("UPDATE documents SET snapshot = ?, log_length = 0 WHERE name = ?", (merged, name))
        db.execute("DELETE FROM updates WHERE name = ? AND id <= ?", (name, rows[-1][0]))
        log_event(
            logger,
            logging.DEBUG,
            "compacted",
            "compacted %r: %d updates merged",
            name,
            len(rows),
            document=name,
        )

    async def stats(self, name: str) -> tuple[int, int]:
        """(stored log length, snapshot size in bytes) of ``name``; for tests and diagnostics."""

        def query() -> tuple[int, int]:
            db = self._conn()
            row = db.execute("SELECT length(snapshot) FROM documents WHERE name = ?", (name,)).fetchone()
            (count,) = db.execute("SELECT count(*) FROM updates WHERE name = ?", (name,)).fetchone()
            return count, (row[0] if row else 0)

        return await self._run(query)
