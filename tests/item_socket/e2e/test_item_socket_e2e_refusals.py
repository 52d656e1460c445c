"""Temporary refusals are retried by every real client; only authorization refusals are final.

A document the store cannot load right now, or a full server, must make the client back off and
reconnect by itself, and its offline edit must arrive once the condition clears (issue 9, fault 2:
y-socket.io clients got one connect_error and never retried). Draining is covered in
tests/item_socket/unit/test_item_socket_refusals.py, where the drain can start mid-connect.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import AgentFactory, ServerFactory
from .harness import YClient, wait_until

PROTOCOLS = ["ws", "sio", "sio-polling"]
# Events the agent records when a connection attempt fails or a connection ends.
REFUSAL_EVENTS = {"connection-error", "connection-close"}


def refusals(client: YClient) -> int:
    """How many failed attempts or closed connections ``client`` has seen."""
    return sum(1 for event in client.events() if event["type"] in REFUSAL_EVENTS)


@contextmanager
def store_unavailable(data_dir: Path) -> Iterator[None]:
    """Make the server's SQLite loads fail ("no such table") until the block ends."""
    path = data_dir / "documents.sqlite3"
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("ALTER TABLE documents RENAME TO documents_unavailable")
    try:
        yield
    finally:
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("ALTER TABLE documents_unavailable RENAME TO documents")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_client_refused_while_the_store_fails_retries_and_its_offline_edit_arrives(
    server_factory: ServerFactory, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    server = server_factory().start()
    client = agent_factory().open("client", protocol, server, doc_name, connect=False)
    client.insert(0, "offline edit")
    with store_unavailable(server.data_dir):
        client.connect()
        wait_until(lambda: refusals(client) >= 3, 15, f"{client} to be refused and to keep retrying")
        assert not client.state(digest_only=True)["synced"]
        assert server.metric("item_socket_errors_total", kind="load_failed") >= 1
    observer = agent_factory().open("observer", "ws", server, doc_name)
    observer.wait_text("offline edit", 20)
    client.wait_state(lambda st: st["status"] == "connected", 10, "the client to stay connected")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_client_refused_while_the_server_is_full_retries_and_its_offline_edit_arrives(
    server_factory: ServerFactory, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    server = server_factory(extra_args=("--max-connections", "2")).start()
    holders = agent_factory()
    observer = holders.open("observer", "ws", server, doc_name)
    filler = holders.open("filler", "ws", server, f"{doc_name}-other")
    observer.wait_synced()
    filler.wait_synced()
    client = agent_factory().open("client", protocol, server, doc_name, connect=False)
    client.insert(0, "offline edit")
    client.connect()
    wait_until(lambda: refusals(client) >= 3, 15, f"{client} to be refused and to keep retrying")
    assert observer.text() == ""
    filler.destroy()
    observer.wait_text("offline edit", 20)
