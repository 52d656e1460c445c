"""A multi-megabyte document syncs to a fresh client over every transport."""

from __future__ import annotations

import hashlib
import time

import pytest

from .conftest import AgentFactory
from .harness import ServerProcess
from .rawpeers import SlowLinkProxy, background_loop

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


# Issue 9, fault 4: a 6 MB document through a slow link. Sent as one message, the first sync
# outlasted y-websocket's 30 s no-message watchdog (150 KB/s: 41 s) or, over Socket.IO, the 45 s
# within which Engine.IO expects the server's next ping, stuck behind it (100 KB/s: 61 s); the client
# closed the socket mid-transfer and started over, forever.
SLOW_DOC_BYTES = 6 * 1024 * 1024
SLOW_PATTERN = "0123456789abcdef"


# Both links at once: each transfer must outlast its client's watchdog, so each takes 40-60 s;
# side by side they cost the suite one of them, not both.
SLOW_LINKS = (("ws", 150), ("sio", 100))


@pytest.mark.slow
def test_a_large_first_sync_completes_over_a_slow_link(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str
) -> None:
    writer = agent_factory().open("writer", "ws", server, doc_name)
    writer.wait_synced()
    writer.insert(0, SLOW_PATTERN, repeat=SLOW_DOC_BYTES // len(SLOW_PATTERN))
    check = agent_factory().open("check", "ws", server, doc_name)
    check.wait_state(lambda st: st["textLength"] == SLOW_DOC_BYTES, 60, "the document on the server", True)

    with background_loop() as loop:
        proxies = [loop.run(SlowLinkProxy(server.port, kib * 1024).start()) for _, kib in SLOW_LINKS]
        try:
            started = time.monotonic()
            readers = [
                agent_factory().open(f"reader-{protocol}", protocol, proxy.url, doc_name)
                for (protocol, _), proxy in zip(SLOW_LINKS, proxies, strict=True)
            ]
            for (protocol, kib), reader in zip(SLOW_LINKS, readers, strict=True):
                ideal_s = SLOW_DOC_BYTES / (kib * 1024)
                reader.wait_state(
                    lambda st: st["textLength"] == SLOW_DOC_BYTES,
                    max(1.0, 3 * ideal_s - (time.monotonic() - started)),
                    f"the 6 MB first sync over a {kib} KB/s link ({protocol})",
                    digest_only=True,
                )
                elapsed = time.monotonic() - started
                print(
                    f"6 MB first sync over {protocol} at {kib} KB/s: {elapsed:.1f} s (ideal {ideal_s:.1f} s)"
                )
                closes = [e for e in reader.events() if e["type"] == "connection-close"]
                assert not closes, f"the first sync should finish on its first connection: {closes}"
        finally:
            for proxy in proxies:
                loop.run(proxy.stop())
