"""A multi-megabyte document syncs to a fresh client over every transport."""

from __future__ import annotations

import hashlib

import pytest

from .conftest import AgentFactory
from .harness import ServerProcess

# 5 MB of text: well past Socket.IO's default 1,000,000-byte message limit.
PATTERN = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
REPEAT = 5 * 1024 * 1024 // len(PATTERN)
EXPECTED_LENGTH = len(PATTERN) * REPEAT
EXPECTED_SHA256 = hashlib.sha256((PATTERN * REPEAT).encode()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ws", "sio", "sio-polling"])
def test_five_megabyte_document_reaches_a_fresh_client(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    writer = agent_factory().open("writer", protocol, server, doc_name)
    writer.wait_synced()
    # One 5 MB update from the writer, then a small edit after it.
    writer.insert(0, PATTERN, repeat=REPEAT)
    writer.map_set("after", "big insert")

    reader = agent_factory().open("reader", protocol, server, doc_name)
    state = reader.wait_state(
        lambda st: (
            st["synced"] and st["textLength"] == EXPECTED_LENGTH and st["map"] == {"after": "big insert"}
        ),
        60,
        f"the 5 MB document over {protocol}",
        digest_only=True,
    )
    assert state["textSha256"] == EXPECTED_SHA256
    # The connection that carried 5 MB still works both ways.
    reader.insert(0, "!")
    writer.wait_state(
        lambda st: st["textLength"] == EXPECTED_LENGTH + 1, 30, "the reader's edit", digest_only=True
    )
