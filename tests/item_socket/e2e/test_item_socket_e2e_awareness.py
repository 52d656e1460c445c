"""Awareness (presence) through item_socket with the real npm clients."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .conftest import AgentFactory
from .harness import ServerProcess, wait_until
from .rawpeers import background_loop

# The y-socket.io client sends no awareness goodbye; the server must drop a departed client's state
# itself. Issue 2 asks for "within 1 s of a disconnect".
REMOVAL_DEADLINE_S = 1.0


@pytest.mark.parametrize("protocol", ["ws", "sio", "sio-polling"])
def test_awareness_reaches_the_other_protocols(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    agent = agent_factory()
    watchers = [agent.open(f"watch-{p}", p, server, doc_name) for p in ("ws", "sio")]
    for watcher in watchers:
        watcher.wait_synced()
    person = agent_factory().open("person", protocol, server, doc_name, awareness={"user": "ann"})
    person.wait_synced()
    for watcher in watchers:
        wait_until(
            lambda w=watcher: w.awareness().get(person.client_id) == {"user": "ann"},
            10,
            f"{watcher} to see ann",
        )
    person.set_awareness({"user": "ann", "cursor": 7})
    for watcher in watchers:
        wait_until(
            lambda w=watcher: w.awareness().get(person.client_id) == {"user": "ann", "cursor": 7},
            10,
            f"{watcher} to see ann's cursor",
        )
    # A late joiner learns the states present before it came.
    late = agent_factory().open("late", "sio", server, doc_name)
    wait_until(
        lambda: late.awareness().get(person.client_id) == {"user": "ann", "cursor": 7},
        10,
        "the late joiner to see ann",
    )


@pytest.mark.parametrize(
    ("protocol", "how"),
    [
        ("sio", "disconnect"),  # the provider's own disconnect: no awareness goodbye is sent
        ("sio", "kill"),
        ("sio-polling", "disconnect"),
        ("ws", "kill"),  # y-websocket sends a goodbye on disconnect(); a killed process sends none
        ("ws", "disconnect"),
    ],
)
def test_awareness_of_a_departed_client_is_removed_within_a_second(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str, how: str
) -> None:
    watch_agent = agent_factory()
    watchers = [watch_agent.open(f"watch-{p}", p, server, doc_name) for p in ("ws", "sio", "sio-polling")]
    leaver_agent = agent_factory()
    leaver = leaver_agent.open("leaver", protocol, server, doc_name, awareness={"user": "leaving"})
    stayer = leaver_agent.open("stayer", "ws", server, doc_name, awareness={"user": "staying"})
    for watcher in watchers:
        wait_until(
            lambda w=watcher: (
                w.awareness().get(leaver.client_id) == {"user": "leaving"}
                and w.awareness().get(stayer.client_id) == {"user": "staying"}
            ),
            10,
            f"{watcher} to see both users",
        )

    if how == "kill":
        leaver_agent.kill()
    else:
        leaver.disconnect()
    left_at = time.monotonic()
    for watcher in watchers:
        remaining = max(0.05, REMOVAL_DEADLINE_S - (time.monotonic() - left_at))
        wait_until(
            lambda w=watcher: leaver.client_id not in w.awareness(),
            remaining,
            f"{watcher} to drop the departed client's awareness within {REMOVAL_DEADLINE_S}s",
        )
    if how != "kill":
        # Only the departed client is removed, not its neighbour on another connection.
        for watcher in watchers:
            assert watcher.awareness().get(stayer.client_id) == {"user": "staying"}


@pytest.mark.parametrize("protocol", ["ws", "sio"])
def test_an_awareness_client_id_belongs_to_the_connection_that_announced_it_last(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    # A client that reconnected while its old TCP connection lingers announces its awareness
    # client ID on two connections (y-websocket issue 126). Closing the old one must not remove
    # the live client for everyone: the ID moved to the connection that announced it last, even
    # at the same clock.
    agent = agent_factory()
    observers = [agent.open(f"watch-{p}", p, server, doc_name) for p in ("ws", "sio", "sio-polling")]
    for observer in observers:
        observer.wait_synced()

    def everyone_sees(what: str, expected: dict[int, Any]) -> None:
        for observer in observers:
            wait_until(
                lambda o=observer: all(o.awareness().get(cid) == st for cid, st in expected.items()),
                10,
                f"{observer} to see {what}",
            )

    with background_loop() as loop:
        old = loop.open_peer(protocol, server.url, doc_name)
        loop.run(old.announce(7, 1, {"user": "seven"}))
        everyone_sees("client 7", {7: {"user": "seven"}})
        new = loop.open_peer(protocol, server.url, doc_name)
        loop.run(new.announce(7, 1, {"user": "seven"}))
        # Barrier: client 8, announced after the re-announce on the same connection, is seen
        # only once the server has handled the re-announce.
        loop.run(new.announce(8, 1, {"user": "eight"}))
        everyone_sees("client 8", {8: {"user": "eight"}})

        connections = server.metric("item_socket_connections")
        loop.run(old.close())
        wait_until(
            lambda: server.metric("item_socket_connections") < connections, 10, "the old connection to go"
        )
        # Barrier: a change announced after the close is seen after anything the close caused.
        loop.run(new.announce(8, 2, {"user": "eight", "after": "close"}))
        everyone_sees("client 8's change", {8: {"user": "eight", "after": "close"}})
        for observer in observers:
            assert observer.awareness().get(7) == {"user": "seven"}, f"{observer} lost the live client 7"

        # Closing the connection that owns client 7 does remove it.
        loop.run(new.close())
        for observer in observers:
            wait_until(lambda o=observer: 7 not in o.awareness(), 10, f"{observer} to drop client 7")


@pytest.mark.parametrize("protocol", ["ws", "sio"])
def test_a_client_that_reconnected_while_its_old_connection_lingers_never_vanishes(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    # The same npm client (client ID 7, same clock) on a new connection while its old one
    # lingers; then the old TCP connection dies without a goodbye. Nobody may see 7 removed, not
    # even briefly (the live client would re-announce itself a moment later: a flicker).
    watch_agent = agent_factory()
    observers = [watch_agent.open(f"watch-{p}", p, server, doc_name) for p in ("ws", "sio", "sio-polling")]
    for observer in observers:
        observer.wait_synced()
    old_agent = agent_factory()
    old = old_agent.open("old", protocol, server, doc_name, clientID=7, awareness={"user": "seven"})
    old.wait_synced()
    for observer in observers:
        wait_until(lambda o=observer: o.awareness().get(7) == {"user": "seven"}, 10, f"{observer} to see 7")
    new = agent_factory().open("new", protocol, server, doc_name, clientID=7, awareness={"user": "seven"})
    new.wait_synced()
    # Barrier: an edit the new connection sends after its awareness announce.
    new.insert(0, "x")
    for observer in observers:
        observer.wait_text("x")

    connections = server.metric("item_socket_connections")
    old_agent.kill()
    wait_until(lambda: server.metric("item_socket_connections") < connections, 10, "the old connection to go")
    # Barrier: anything the close caused was broadcast before this edit.
    new.insert(1, "y")
    for observer in observers:
        observer.wait_text("xy")
        removals = [e for e in observer.events() if e["type"] == "awareness-removed" and 7 in e["ids"]]
        assert not removals, f"{observer} saw the live client 7 removed: {removals}"
        assert observer.awareness().get(7) == {"user": "seven"}
