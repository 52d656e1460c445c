"""PostgresStore's connections against a real PostgreSQL: the URL's parameters and ours, merged."""

from __future__ import annotations

from pathlib import Path

from item_socket.store_postgres import PostgresStore
from tests.servers import PostgresServer


async def test_the_urls_options_are_kept_beside_the_stores_statement_timeout(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    password = tmp_path / "pw"
    password.write_text(postgres_server.password)
    # libpq's URI syntax: the options value percent-encoded ("-c search_path=docs,public").
    url = (
        f"{postgres_server.url_without_password}"
        "?application_name=replica-7&options=-c%20search_path%3Ddocs%2Cpublic"
    )
    async with PostgresStore(url, password_file=password, timeout=7.5) as store:
        await store.ping()
        async with store._open_pool().connection() as conn:
            shown = {}
            for setting in ("statement_timeout", "search_path", "application_name"):
                row = await (await conn.execute(f"SHOW {setting}")).fetchone()
                assert row is not None
                shown[setting] = row[0]
            # No server-side prepared statements (PgBouncer in transaction mode loses them).
            assert conn.prepare_threshold is None
    assert shown == {
        "statement_timeout": "7500ms",
        "search_path": "docs,public",
        "application_name": "replica-7",
    }


async def test_the_stores_own_parameters_apply_when_the_url_sets_none(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    password = tmp_path / "pw"
    password.write_text(postgres_server.password)
    async with PostgresStore(postgres_server.url_without_password, password_file=password) as store:
        async with store._open_pool().connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT current_setting('statement_timeout'), current_setting('application_name')"
                )
            ).fetchone()
    assert row == ("10s", "item_socket")
