"""A drain that starts while a client is being admitted: the real npm clients retry and get in later.

The server runs in-process (its store can hold a load open); the npm clients run in a Node agent
(tests/item_socket/js/agent.mjs) driven from a thread, so the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pycrdt import Text

from item_socket.app import create_app
from item_socket.keys import CONNECTIONS, SOCKETIO
from item_socket.settings import Settings
from tests.item_socket.e2e.harness import Agent

from .conftest import RunningServer, ServerFactory
from .support import FlakyStore, YWebsocketClient, wait_until

REFUSAL_EVENTS = {"connection-error", "connection-close"}


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    """A Node agent hosting real npm clients; closed at teardown."""
    started = await asyncio.to_thread(Agent, "agent")
    try:
        yield started
    finally:
        await asyncio.to_thread(started.close)


async def call(agent: Agent, cmd: str, **args: Any) -> dict[str, Any]:
    """One agent request, off the event loop (the server under test runs on it)."""
    return await asyncio.to_thread(agent.request, cmd, **args)


@pytest.mark.parametrize("protocol", ["ws", "sio", "sio-polling"])
async def test_a_client_refused_because_a_drain_began_during_its_load_retries_and_gets_in_later(
    server_factory: ServerFactory,
    settings_factory: Callable[..., Settings],
    session: aiohttp.ClientSession,
    agent: Agent,
    protocol: str,
) -> None:
    store = FlakyStore()
    server = await server_factory(create_app(settings_factory(), store=store))
    connections = server.app[CONNECTIONS]
    store.load_gate.clear()
    await call(
        agent, "open", client="c", protocol=protocol, url=server.http_url, doc="drained", connect=False
    )
    await call(agent, "insert", client="c", index=0, content="offline edit")
    await call(agent, "connect", client="c")
    await wait_until(lambda: "load-start drained" in store.events, what="the client's document load")
    # The drain begins (drain() stops admitting first, then closes every attached connection)
    # while the document is still loading; the connection must not be attached after it.
    connections.accepting = False
    store.load_gate.set()
    await _refused_then_admitted(agent, server.app, session, server.ws_url("drained"))


async def _refused_then_admitted(
    agent: Agent, app: web.Application, session: aiohttp.ClientSession, ws_url: str
) -> None:
    """Client "c" is refused and keeps retrying; once admission reopens its offline edit arrives."""
    connections = app[CONNECTIONS]

    async def refused() -> int:
        events = (await call(agent, "state", client="c", digestOnly=True))["events"]
        return sum(1 for event in events if event["type"] in REFUSAL_EVENTS)

    for _ in range(150):  # bounded: 15 s
        if await refused() >= 3:
            break
        await asyncio.sleep(0.1)
    assert await refused() >= 3, "the client should be refused and keep retrying"
    assert not connections.peers

    # The condition clears (as when another replica admits it): the client gets in by itself.
    connections.accepting = True
    observer = await YWebsocketClient(session, ws_url).connect()
    text = observer.doc.get("text", type=Text)  # the agent's clients edit Y.Text "text"
    await wait_until(lambda: str(text) == "offline edit", 15, "the client's offline edit")
    await observer.close()


@pytest.mark.parametrize("protocol", ["sio", "sio-polling"])
async def test_a_socketio_client_whose_namespace_connect_meets_a_drain_retries_and_gets_in_later(
    server: RunningServer, session: aiohttp.ClientSession, agent: Agent, protocol: str
) -> None:
    # The Engine.IO session is open, then the drain begins just as the namespace CONNECT arrives:
    # a connect_error here was final for socket.io-client (issue 9, fault 2).
    namespace = server.app[SOCKETIO].namespace_handlers["*"]
    original = namespace.on_connect
    drains = []

    async def drain_first(*args: Any) -> bool:
        if not drains:
            drains.append(True)
            server.app[CONNECTIONS].accepting = False
        return await original(*args)

    namespace.on_connect = drain_first
    await call(
        agent, "open", client="c", protocol=protocol, url=server.http_url, doc="drained", connect=False
    )
    await call(agent, "insert", client="c", index=0, content="offline edit")
    await call(agent, "connect", client="c")
    await _refused_then_admitted(agent, server.app, session, server.ws_url("drained"))
