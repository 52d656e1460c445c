"""The shared document store of the scale-out: PostgreSQL, through psycopg 3 and its async pool.

Same interface as the embedded SQLite store (``DocumentStore``), so one replica can also use it
without Redis. With Redis (``--redis-url``) the log lives in each document's Redis stream and this
store only holds compacted snapshots (``load_snapshot`` / ``save_snapshot``), each tagged with the
stream position it covers and the fencing token of the compaction that wrote it.

Tables (created at start under an advisory lock, so replicas starting together do not race):
``documents`` (one row per document: snapshot, covered stream position, fence, log length) and
``document_updates`` (the log of the Redis-less mode). ``SELECT count(*) FROM documents`` counts
documents (the backup verification uses it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import psycopg
from psycopg import conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .logs import log_event
from .settings import redact
from .store import DocumentStore, Snapshot, StoreError, coalesce, merge_log, stream_position

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Any constant of our own: serialises the schema creation of replicas that start at once.
_SCHEMA_LOCK_KEY = 0x5BACED
_SCHEMA = """
CREATE TABLE IF NOT EXISTS item_socket_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    name text PRIMARY KEY,
    snapshot bytea NOT NULL DEFAULT ''::bytea,
    position_ms bigint NOT NULL DEFAULT 0,
    position_seq bigint NOT NULL DEFAULT 0,
    fence bigint NOT NULL DEFAULT 0,
    log_length integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS document_updates (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    data bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS document_updates_by_name ON document_updates (name, id);
"""


class PostgresStore(DocumentStore):
    """Documents in PostgreSQL at ``url`` (``postgresql://user@host:port/db``).

    ``password_file`` (a Docker secret) holds the password, so it never sits in an environment
    variable or a command line. ``compact_after``: log length that triggers a compaction in the
    Redis-less mode. Every operation is bounded by ``timeout`` seconds (connect, pool wait and
    statement); failures raise StoreError naming the server without its password.
    """

    def __init__(
        self,
        url: str,
        *,
        password_file: Path | None = None,
        compact_after: int = 500,
        timeout: float = 10.0,
        pool_size: int = 4,
    ) -> None:
        self.url = url
        self.password_file = password_file
        self.compact_after = compact_after
        self.timeout = timeout
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None

    @property
    def where(self) -> str:
        """The server and database, for messages (never the password)."""
        return redact(self.url)

    def _conninfo(self) -> str:
        """libpq connection string: the URL's parameters, ours where it sets none, the password.

        ``options`` are merged: the URL's, then ``-c statement_timeout=<timeout ms>`` (the later
        setting wins, so this bound always holds; --store-url refuses a URL setting it). A keyword
        given to make_conninfo replaces the URL's, which silently dropped the user's options.
        """
        try:
            given = conninfo.conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"invalid PostgreSQL URL {self.where}: {exc}") from exc
        timeout_option = f"-c statement_timeout={int(self.timeout * 1000)}"
        extra: dict[str, str | int] = {
            "options": f"{given['options']} {timeout_option}" if given.get("options") else timeout_option
        }
        if "connect_timeout" not in given:
            extra["connect_timeout"] = max(1, int(self.timeout))
        if "application_name" not in given:
            extra["application_name"] = "item_socket"
        if self.password_file is not None:
            try:
                extra["password"] = self.password_file.read_text().strip()
            except OSError as exc:
                raise StoreError(
                    f"cannot read PostgreSQL's password file {self.password_file}: {exc}"
                ) from exc
        try:
            return conninfo.make_conninfo(self.url, **extra)
        except psycopg.ProgrammingError as exc:
            raise StoreError(f"invalid PostgreSQL URL {self.where}: {exc}") from exc

    async def start(self) -> None:
        pool = AsyncConnectionPool(
            self._conninfo(),
            min_size=1,
            max_size=self.pool_size,
            open=False,
            timeout=self.timeout,
            # No server-side prepared statements: they fail behind PgBouncer in transaction mode
            # (https://github.com/psycopg/psycopg/issues/280); our few statements gain little from them.
            kwargs={"prepare_threshold": None},
        )
        try:
            await pool.open(wait=True, timeout=self.timeout)
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                await conn.execute(_SCHEMA)
                row = await (await conn.execute("SELECT version FROM item_socket_schema")).fetchone()
                if row is None:
                    await conn.execute("INSERT INTO item_socket_schema VALUES (%s)", (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise StoreError(
                        f"schema version {row[0]} of {self.where} is not supported "
                        f"(expected {SCHEMA_VERSION})"
                    )
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            await pool.close()
            raise StoreError(f"cannot open the PostgreSQL store {self.where}: {exc}") from exc
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        log_event(logger, logging.INFO, "store_opened", "store opened at %s", self.where, path=self.where)

    async def stop(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close(timeout=self.timeout)

    def _open_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StoreError(f"store {self.where} is not open")
        return self._pool

    async def load(self, name: str) -> list[bytes]:
        try:
            async with self._open_pool().connection() as conn:
                query = "SELECT snapshot FROM documents WHERE name = %s"
                row = await (await conn.execute(query, (name,))).fetchone()
                cursor = await conn.execute(
                    "SELECT data FROM document_updates WHERE name = %s ORDER BY id", (name,)
                )
                updates = [bytes(r[0]) for r in await cursor.fetchall()]
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"cannot load document {name!r} from {self.where}: {exc}") from exc
        return ([bytes(row[0])] if row is not None and row[0] else []) + updates

    async def append_many(self, updates: Mapping[str, Sequence[bytes]]) -> None:
        batch = {name: list(u) for name, u in updates.items() if u}
        if not batch:
            return
        try:
            async with self._open_pool().connection() as conn, conn.transaction():
                for name, parts in batch.items():
                    async with conn.cursor() as cursor:
                        await cursor.executemany(
                            "INSERT INTO document_updates (name, data) VALUES (%s, %s)",
                            [(name, part) for part in coalesce(name, parts)],
                        )
                    row = await (
                        await conn.execute(
                            "INSERT INTO documents (name, log_length) VALUES (%s, %s) ON CONFLICT (name) "
                            "DO UPDATE SET log_length = documents.log_length + excluded.log_length, "
                            "updated_at = now() RETURNING log_length",
                            (name, len(parts)),
                        )
                    ).fetchone()
                    if row is not None and row[0] > self.compact_after:
                        await self._compact(conn, name)
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"cannot write {len(batch)} documents to {self.where}: {exc}") from exc

    async def _compact(self, conn: psycopg.AsyncConnection, name: str) -> None:
        """Merge the log of ``name`` into its snapshot, inside the caller's transaction."""
        row = await (
            await conn.execute("SELECT snapshot FROM documents WHERE name = %s FOR UPDATE", (name,))
        ).fetchone()
        rows = await (
            await conn.execute("SELECT id, data FROM document_updates WHERE name = %s ORDER BY id", (name,))
        ).fetchall()
        parts = ([bytes(row[0])] if row and row[0] else []) + [bytes(r[1]) for r in rows]
        merged = await asyncio.to_thread(merge_log, name, parts)
        if merged is None:
            return
        await conn.execute(
            "UPDATE documents SET snapshot = %s, log_length = 0 WHERE name = %s", (merged, name)
        )
        await conn.execute("DELETE FROM document_updates WHERE name = %s AND id <= %s", (name, rows[-1][0]))

    async def load_snapshot(self, name: str) -> Snapshot:
        try:
            async with self._open_pool().connection() as conn:
                row = await (
                    await conn.execute(
                        "SELECT snapshot, position_ms, position_seq, fence FROM documents WHERE name = %s",
                        (name,),
                    )
                ).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"cannot load document {name!r} from {self.where}: {exc}") from exc
        if row is None:
            return Snapshot(b"")
        return Snapshot(bytes(row[0]), f"{row[1]}-{row[2]}", int(row[3]))

    async def save_snapshot(self, name: str, snapshot: Snapshot) -> bool:
        ms, seq = stream_position(snapshot.position)
        try:
            async with self._open_pool().connection() as conn:
                row = await (
                    await conn.execute(
                        "INSERT INTO documents AS d (name, snapshot, position_ms, position_seq, fence) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                        "snapshot = excluded.snapshot, position_ms = excluded.position_ms, "
                        "position_seq = excluded.position_seq, fence = excluded.fence, updated_at = now() "
                        "WHERE d.fence < excluded.fence "
                        "AND (d.position_ms, d.position_seq) "
                        "<= (excluded.position_ms, excluded.position_seq) "
                        "RETURNING 1",
                        (name, snapshot.data, ms, seq, snapshot.fence),
                    )
                ).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"cannot write the snapshot of {name!r} to {self.where}: {exc}") from exc
        return row is not None

    async def ping(self) -> None:
        """One ``SELECT 1`` (the scale-out's readiness probe), within ``timeout`` seconds in all.

        The whole round trip is bounded here, not only the pool wait: statement_timeout is enforced
        by the server, so it cannot bound a server that stopped answering. Raises StoreError.
        """
        try:
            async with asyncio.timeout(self.timeout), self._open_pool().connection() as conn:
                await conn.execute("SELECT 1")
        except TimeoutError as exc:
            raise StoreError(f"PostgreSQL at {self.where} did not answer within {self.timeout:g} s") from exc
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"PostgreSQL at {self.where} does not answer: {exc}") from exc

    async def count_documents(self) -> int:
        """Number of stored documents (diagnostics, backup checks)."""
        try:
            async with self._open_pool().connection() as conn:
                row = await (await conn.execute("SELECT count(*) FROM documents")).fetchone()
        except (psycopg.Error, PoolTimeout) as exc:
            raise StoreError(f"cannot count documents in {self.where}: {exc}") from exc
        return int(row[0]) if row else 0
