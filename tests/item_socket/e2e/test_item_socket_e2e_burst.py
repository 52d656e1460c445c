"""Every update a client sent before closing is applied, even when the close follows at once."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import AgentFactory
from .harness import JS_DIR, NODE, ServerProcess

BURST = 300  # below the default per-connection rate-limit burst, so the limiter is not what is tested
BURST_SESSIONS = 4  # the loss is a race with the document load: repeat it on fresh documents


def run_burst(
    server: ServerProcess, protocol: str, doc: str, count: int, sessions: int = 0
) -> dict[str, int]:
    """Run js/burst.mjs: send `count` updates and close the connection immediately.

    With `sessions`, one burst each on the documents <doc>-0 .. <doc>-(sessions-1).
    """
    done = subprocess.run(
        [NODE, str(JS_DIR / "burst.mjs"), protocol, server.url, doc, str(count)],
        cwd=JS_DIR,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "BURST_DOCS": str(sessions)},
    )
    assert done.returncode == 0, f"burst.mjs failed ({done.returncode}): {done.stderr.decode()[-2000:]}"
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


@pytest.mark.parametrize("protocol", ["ws", "sio", "sio-polling"])
def test_updates_sent_in_a_burst_right_before_close_are_all_applied(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    result = run_burst(server, protocol, doc_name, BURST, sessions=BURST_SESSIONS)
    assert result["sent"] == BURST * BURST_SESSIONS
    expected = "".join(f"{i}," for i in range(BURST))
    agent = agent_factory()
    for session in range(BURST_SESSIONS):
        reader = agent.open(f"reader{session}", "ws", server, f"{doc_name}-{session}")
        reader.wait_state(
            lambda st: st["synced"] and st["text"] == expected,
            15,
            f"all {BURST} updates of {protocol} burst #{session}",
            digest_only=False,
        )


def test_bursts_from_many_closing_clients_at_once(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str
) -> None:
    # Three bursts close at the same moment on one document; a watcher is connected throughout.
    watcher = agent_factory().open("watcher", "sio", server, doc_name)
    watcher.wait_synced()
    procs = [
        subprocess.Popen(
            [NODE, str(JS_DIR / "burst.mjs"), p, server.url, doc_name, "100"],
            cwd=JS_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in ("ws", "sio", "sio-polling")
    ]
    try:
        for proc in procs:
            _out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    one = "".join(f"{i}," for i in range(100))
    # Each burst comes from its own Yjs client appending to its own chain, so each stays whole.
    state = watcher.wait_state(lambda st: st["text"] == one * 3, 15, "all three bursts")
    fresh = agent_factory().open("fresh", "sio-polling", server, doc_name)
    fresh.wait_state(
        lambda st: st["synced"] and st["text"] == state["text"], 15, "the same text from the store"
    )


SHORT_SESSIONS = 40


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ws", "sio", "sio-polling"])
def test_many_short_sessions_each_writing_then_closing_lose_nothing(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    # One update, then an immediate close, on a document that is not loaded yet: the update races
    # the document load and the close. Repeated over many fresh documents to catch the race.
    done = subprocess.run(
        [NODE, str(JS_DIR / "burst.mjs"), protocol, server.url, doc_name, "1"],
        cwd=JS_DIR,
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "BURST_DOCS": str(SHORT_SESSIONS)},
    )
    assert done.returncode == 0, f"burst.mjs failed: {done.stderr.decode()[-2000:]}"
    agent = agent_factory()
    missing = []
    for index in range(SHORT_SESSIONS):
        reader = agent.open(f"r{index}", "ws", server, f"{doc_name}-{index}")
        state = reader.wait_synced()
        if state["textLength"] != len("0,"):
            missing.append(index)
        reader.destroy()
    assert not missing, f"{len(missing)} of {SHORT_SESSIONS} sessions lost their update: documents {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["ws", "sio"])
def test_updates_sent_right_before_an_abrupt_disconnect_are_applied(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    # The client's TCP connection ends right after its data (no WebSocket close frame, no Socket.IO
    # disconnect): an app killed or a network cut right after typing. Every byte was delivered.
    done = subprocess.run(
        [NODE, str(JS_DIR / "burst.mjs"), protocol, server.url, doc_name, "3"],
        cwd=JS_DIR,
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "BURST_DOCS": str(SHORT_SESSIONS), "BURST_CLOSE": "abrupt"},
    )
    assert done.returncode == 0, f"burst.mjs failed: {done.stderr.decode()[-2000:]}"
    agent = agent_factory()
    missing = []
    for index in range(SHORT_SESSIONS):
        reader = agent.open(f"r{index}", "ws", server, f"{doc_name}-{index}")
        state = reader.wait_synced()
        if state["textLength"] != len("0,1,2,"):
            missing.append((index, state["textLength"]))
        reader.destroy()
    assert not missing, (
        f"{len(missing)} of {SHORT_SESSIONS} abruptly closed sessions lost updates "
        f"(doc, text length): {missing}"
    )
