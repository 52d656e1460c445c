"""Offline edits, server restarts and document unloading with the real npm clients."""

from __future__ import annotations

import signal

import pytest

from .conftest import AgentFactory, ServerFactory
from .harness import ServerProcess, wait_until

PROTOCOLS = ["ws", "sio", "sio-polling"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_edits_made_while_disconnected_arrive_after_reconnect(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    traveller = agent_factory().open("traveller", protocol, server, doc_name)
    stay = agent_factory().open("stay", "ws" if protocol != "ws" else "sio", server, doc_name)
    traveller.wait_synced()
    stay.wait_synced()
    traveller.insert(0, "base;")
    stay.wait_text("base;")

    traveller.disconnect()
    wait_until(lambda: traveller.state(digest_only=True)["status"] == "disconnected", 10, "the disconnect")
    traveller.insert(5, "offline-1;")
    traveller.map_set("offline", True)
    stay.insert(0, "online;")
    traveller.insert(0, "offline-2;")
    # Nothing leaks while the traveller is away.
    stay.wait_text("online;base;")

    traveller.connect()
    expected_map = {"offline": True}
    for client in (traveller, stay):
        client.wait_state(
            lambda st: (
                st["map"] == expected_map
                and sorted(st["text"].split(";")) == sorted(["offline-2", "online", "base", "offline-1", ""])
            ),
            15,
            "offline and online edits to merge",
        )
    assert traveller.text() == stay.text()


def test_edits_made_while_the_server_is_down_arrive_after_it_returns(
    server_factory: ServerFactory, agent_factory: AgentFactory, doc_name: str
) -> None:
    server = server_factory().start()
    clients = [agent_factory().open(f"c-{p}", p, server, doc_name) for p in PROTOCOLS]
    for client in clients:
        client.wait_synced()
    clients[0].insert(0, "before;")
    for client in clients:
        client.wait_text("before;")

    assert server.stop() == 0, "SIGTERM should end the server cleanly"
    for client in clients:
        wait_until(
            # y-websocket reports "connecting" between its reconnect attempts.
            lambda c=client: c.state(digest_only=True)["status"] != "connected",
            10,
            f"{client} to notice the server is gone",
        )
    for client in clients:
        client.insert(0, f"{client.protocol};")
        client.map_set(client.protocol, "offline")

    server.start()
    words = {"before", "ws", "sio", "sio-polling", ""}
    for client in clients:
        client.wait_state(
            lambda st: (
                set(st["text"].split(";")) == words
                and len(st["text"]) == len("before;ws;sio;sio-polling;")
                and st["map"] == {p: "offline" for p in PROTOCOLS}
            ),
            30,
            "every offline edit after the restart",
        )
    fresh = agent_factory().open("fresh", "ws", server, doc_name)
    fresh.wait_state(lambda st: st["text"] == clients[0].text(), 15, "a fresh client to see the merged state")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_state_survives_a_server_restart(
    server_factory: ServerFactory, agent_factory: AgentFactory, doc_name: str, stop_signal: int
) -> None:
    server = server_factory().start()
    agent = agent_factory()
    writer = agent.open("writer", "sio", server, doc_name)
    other = agent.open("other", "ws", server, f"{doc_name}-2")
    writer.wait_synced()
    other.wait_synced()
    # The last edit is made right before the signal: the shutdown must save it.
    writer.insert(0, "persisted text")
    writer.map_set("n", 1)
    other.insert(0, "second document")
    witness = agent.open("witness", "ws", server, doc_name)
    witness.wait_state(lambda st: st["text"] == "persisted text" and st["map"] == {"n": 1}, 10, "the edits")
    writer.insert(0, "last ")
    witness.wait_text("last persisted text")
    assert server.stop(stop_signal) == 0, f"server exit code after {stop_signal!r}"
    agent.close()

    server.start()
    reader = agent_factory()
    for protocol in PROTOCOLS:
        fresh = reader.open(f"fresh-{protocol}", protocol, server, doc_name)
        fresh.wait_state(
            lambda st: st["synced"] and st["text"] == "last persisted text" and st["map"] == {"n": 1},
            15,
            f"the stored state over {protocol}",
        )
    second = reader.open("second", "sio-polling", server, f"{doc_name}-2")
    second.wait_state(lambda st: st["synced"] and st["text"] == "second document", 15, "the second document")


def test_document_reloads_after_it_was_unloaded(
    server_factory: ServerFactory, agent_factory: AgentFactory, doc_name: str
) -> None:
    # SERVER_ARGS unload idle documents after 1 s.
    server = server_factory().start()
    agent = agent_factory()
    writer = agent.open("writer", "ws", server, doc_name)
    writer.wait_synced()
    writer.insert(0, "kept across unload")
    witness = agent.open("witness", "sio", server, doc_name)
    witness.wait_text("kept across unload")
    assert server.metric("item_socket_documents") == 1
    loads_before = server.metric("item_socket_document_loads_total")
    agent.close()
    wait_until(lambda: server.metric("item_socket_documents") == 0, 10, "the idle document to be unloaded")
    assert server.metric("item_socket_document_unloads_total") >= 1

    reader_agent = agent_factory()
    expected = "kept across unload"
    for round_index, protocol in enumerate(PROTOCOLS):
        fresh = reader_agent.open(f"fresh{round_index}", protocol, server, doc_name)
        fresh.wait_state(lambda st, text=expected: st["synced"] and st["text"] == text, 15, "the stored text")
        # Edited right before the close: saved with the unload.
        fresh.insert(0, f"{round_index}")
        expected = f"{round_index}{expected}"
        fresh.destroy()
        wait_until(
            lambda: server.metric("item_socket_documents") == 0, 10, "the document to be unloaded again"
        )
    assert server.metric("item_socket_document_loads_total") >= loads_before + len(PROTOCOLS)
    last = reader_agent.open("last", "ws", server, doc_name)
    last.wait_state(
        lambda st: st["synced"] and st["text"] == "210kept across unload", 15, "every reload's edit"
    )
