"""A client whose document exceeds --max-message-bytes is told once, with a close it treats as final.

Issue 9, fault 3: y-websocket clients synced, uploaded, were closed with 1009 and reconnected about
five times a second (49 connections in 10 s; y-socket.io 11), re-uploading each time, and the
oversized frame was counted as a `transport` error.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import AgentFactory, ServerFactory
from .harness import YClient, holds_for, wait_until

LIMIT = 65536
DOCUMENT_BYTES = 70 * 1024
PROTOCOLS = ["ws", "sio", "sio-polling"]
# The old code reconnected every ~200 ms: a few seconds show whether the client stays away.
OBSERVE_S = 3.0


def final_close(client: YClient) -> dict[str, Any] | None:
    """The event by which the client learnt not to reconnect, if any.

    y-websocket 3.x stops reconnecting on close codes 4400-4499 and emits `closed`; socket.io-client
    stops after a server-side namespace DISCONNECT ("io server disconnect").
    """
    for event in client.events():
        if client.protocol == "ws" and event["type"] == "closed":
            return event
        if client.protocol != "ws" and event.get("reason") == "io server disconnect":
            return event
    return None


def connections_made(client: YClient) -> int:
    """How many times the client's connection opened."""
    return sum(1 for e in client.events() if e["type"] == "status" and e["status"] == "connected")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_document_over_the_message_limit_is_refused_once_and_the_client_stays_away(
    server_factory: ServerFactory, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    server = server_factory(extra_args=("--max-message-bytes", str(LIMIT))).start()
    client = agent_factory().open("big", protocol, server, doc_name, connect=False)
    client.insert(0, "0123456789abcdef", repeat=DOCUMENT_BYTES // 16)
    client.connect()
    event = wait_until(lambda: final_close(client), 15, f"{client} to be told its message is too big")
    if protocol == "ws":
        assert event["code"] == 4413, event
    wait_until(
        lambda: server.metric("item_socket_errors_total", kind="message_too_big") >= 1,
        10,
        "the oversized message to be counted as message_too_big",
    )
    holds_for(
        lambda: (
            connections_made(client) == 1
            and server.metric("item_socket_errors_total", kind="message_too_big") == 1
        ),
        OBSERVE_S,
        f"{client} staying away after the final close",
    )
    assert server.metric("item_socket_errors_total", kind="transport") == 0
    assert "message too big" in server.stderr_text(20000).lower()
    # Other clients of the server are unaffected.
    other = agent_factory().open("other", protocol, server, f"{doc_name}-small")
    other.wait_synced()
