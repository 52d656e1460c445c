"""Fixtures of the item_socket unit tests: an in-process server on an ephemeral port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from item_socket.app import create_app
from item_socket.settings import Settings


class RunningServer:
    """An item_socket app served on 127.0.0.1 by aiohttp's TestServer."""

    def __init__(self, app: web.Application, server: TestServer) -> None:
        self.app = app
        self.server = server

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def ws_url(self, document: str, token: str | None = None) -> str:
        query = f"?token={token}" if token else ""
        return f"ws://127.0.0.1:{self.server.port}/ws/{document}{query}"


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test server: a data dir under tmp_path, fast flushes, given overrides."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 1,
            "data_dir": tmp_path / "data",
            "flush_interval": 0.05,
            "unload_grace": 0.2,
            "shutdown_grace": 5,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def server_factory(settings_factory: Callable[..., Settings]) -> AsyncIterator[ServerFactory]:
    """Start servers (each stopped at teardown) from settings overrides or an explicit app."""
    servers: list[TestServer] = []

    async def start(app: web.Application | None = None, **overrides: Any) -> RunningServer:
        app = app if app is not None else create_app(settings_factory(**overrides))
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return RunningServer(app, server)

    try:
        yield start
    finally:
        for server in reversed(servers):
            await server.close()


@pytest.fixture
async def server(server_factory: ServerFactory) -> RunningServer:
    """A server with default test settings."""
    return await server_factory()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session, closed at teardown."""
    async with aiohttp.ClientSession() as client_session:
        yield client_session
