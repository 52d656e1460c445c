"""Scale-out: three replicas, one Redis, one PostgreSQL, real npm clients on both protocols.

Each test counts lost updates instead of sampling: every writer sets numbered keys of a Y.Map, and
at the end every client (and a fresh one) must hold every key any writer set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.item_socket.e2e.harness import Agent, ServerProcess, YClient, agents
from tests.servers import RedisServer
from tests.support import wait_until

from .conftest import Cluster, Front

PROTOCOLS = ("ws", "sio")


def new_doc(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def two_agents() -> Iterator[list[Agent]]:
    with agents(2) as started:
        yield started


def readyz_problems(replica: ServerProcess) -> list[str]:
    """The problems /readyz lists (empty when ready)."""
    try:
        with urllib.request.urlopen(replica.url + "/readyz", timeout=5) as response:
            return list(json.load(response).get("problems", []))
    except urllib.error.HTTPError as error:
        return list(json.load(error).get("problems", []))


def keys_of(client: YClient) -> set[str]:
    return set(client.state()["map"])


def wait_all_hold(clients: list[YClient], expected: set[str], timeout: float = 30) -> None:
    """Wait until every client's map holds every expected key; fail naming what each one misses."""
    for client in clients:
        try:
            client.wait_state(lambda st: expected <= set(st["map"]), timeout, f"all {len(expected)} keys")
        except AssertionError as exc:
            missing = {str(c): sorted(expected - keys_of(c))[:8] for c in clients}
            raise AssertionError(f"{exc}\nmissing now: {missing}") from None


def test_clients_spread_over_three_replicas_converge(replicas: Cluster, two_agents: list[Agent]) -> None:
    doc = new_doc("spread")
    clients = [
        two_agents[index % 2].open(f"c{index}", protocol, replica, doc)
        for index, (replica, protocol) in enumerate(
            (replica, protocol) for replica in replicas.replicas for protocol in PROTOCOLS
        )
    ]
    for client in clients:
        client.wait_synced()
    expected = set()
    for round_ in range(10):
        for index, client in enumerate(clients):
            client.map_set(f"{index}-{round_}", round_)
            expected.add(f"{index}-{round_}")
    wait_all_hold(clients, expected)
    maps = [client.state(digest_only=True)["map"] for client in clients]
    assert all(m == maps[0] for m in maps), "clients hold different maps"
    for replica in replicas.replicas:
        assert replica.metric("item_socket_documents_followed") >= 1
        assert replica.metric("item_socket_compaction_overlaps_total") == 0
        assert replica.metric("item_socket_redis_memory_used_bytes") > 0


def test_concurrent_text_edits_on_two_replicas_converge(replicas: Cluster, two_agents: list[Agent]) -> None:
    a, c = replicas.replicas[0], replicas.replicas[2]
    doc = new_doc("text")
    left = two_agents[0].open("left", "ws", a, doc)
    right = two_agents[1].open("right", "sio", c, doc)
    left.wait_synced()
    right.wait_synced()
    for i in range(30):
        left.insert(0, f"L{i} ")
        right.insert(0, f"R{i} ")
    pieces = {f"{side}{i} " for side in "LR" for i in range(30)}

    def missing() -> dict[str, list[str]]:
        return {str(client): sorted(p for p in pieces if p not in client.text()) for client in (left, right)}

    try:
        wait_until(lambda: left.text() == right.text() and not any(missing().values()), 20, "texts equal")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; missing: {missing()}") from None
    text = left.text()
    # A fresh client on the third replica, which never had the document open, loads the same.
    late = two_agents[0].open("late", "ws", replicas.replicas[1], doc)
    late.wait_text(text)


def _edit_rounds(writers: list[YClient], rounds: range, expected: set[str]) -> None:
    for round_ in rounds:
        for index, writer in enumerate(writers):
            key = f"w{index}-{round_}"
            writer.map_set(key, round_)
            expected.add(key)


def test_replica_killed_mid_edit_loses_no_update(
    front: Front, replicas: Cluster, two_agents: list[Agent]
) -> None:
    doc = new_doc("kill")
    # Through nginx: round robin puts two clients on each replica.
    writers = [
        two_agents[i % 2].open(f"w{i}", PROTOCOLS[i % 2], front.url, doc)
        for i in range(2 * len(replicas.replicas))
    ]
    for writer in writers:
        writer.wait_synced()
    victim = replicas.replicas[1]
    wait_until(lambda: victim.metric("item_socket_connections") >= 1, 10, "clients on the victim replica")
    on_victim = victim.metric("item_socket_connections")
    expected: set[str] = set()
    _edit_rounds(writers, range(0, 20), expected)
    victim.stop(sig=signal.SIGKILL)
    _edit_rounds(writers, range(20, 40), expected)
    # The victim's clients reconnect through nginx to a surviving replica and resync.
    wait_all_hold(writers, expected, timeout=45)
    fresh = two_agents[0].open("fresh", "ws", replicas.replicas[0], doc)
    wait_all_hold([fresh], expected)
    lost = len(expected - keys_of(fresh))
    print(f"\nSIGKILL of a replica ({on_victim:.0f} clients) mid-edit: {len(expected)} updates, {lost} lost")
    assert lost == 0


def test_what_other_replicas_saw_survives_a_replica_killed_with_its_writers(
    replicas: Cluster, two_agents: list[Agent]
) -> None:
    """SIGKILL of a replica and, at the same moment, of the clients writing through it.

    Unlike the test above, no writer survives to send its edits again: every edit that clients on
    other replicas saw must be kept by the servers alone (loaded afresh from Redis and PostgreSQL by
    the restarted replica), while both protocols write continuously until the kill.
    """
    doc = new_doc("kill-writers")
    a, victim, c = replicas.replicas
    observers = [two_agents[0].open("oa", "ws", a, doc), two_agents[1].open("oc", "sio", c, doc)]
    with agents(1) as (doomed,):
        writers = [doomed.open(f"w-{p}", p, victim, doc) for p in PROTOCOLS]
        for client in observers + writers:
            client.wait_synced()
        stop = threading.Event()

        def write(writer: YClient, prefix: str) -> None:
            for i in range(5000):  # bounded; the kill ends it long before
                if stop.is_set():
                    return
                try:
                    writer.map_set(f"{prefix}-{i}", i)
                except Exception:  # the agent was killed mid-request
                    return

        threads = [
            threading.Thread(target=write, args=(writer, f"w{n}"), daemon=True)
            for n, writer in enumerate(writers)
        ]
        for thread in threads:
            thread.start()
        wait_until(lambda: all(len(keys_of(o)) >= 60 for o in observers), 30, "edits reaching both observers")
        os.kill(doomed.proc.pid, signal.SIGKILL)
        victim.stop(sig=signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    # What reached Redis before the kill reaches both observers; they agree once it has.
    wait_until(lambda: keys_of(observers[0]) == keys_of(observers[1]), 20, "observers agree")
    seen = keys_of(observers[0]) | keys_of(observers[1])
    victim.start()
    fresh = two_agents[0].open("fresh", "ws", victim, doc)  # the restarted replica loads it from storage
    fresh.wait_synced()
    wait_all_hold([fresh], seen, timeout=20)
    lost = len(seen - keys_of(fresh))
    print(f"\nSIGKILL of a replica with its writers: other replicas saw {len(seen)} updates, {lost} lost")
    assert lost == 0
    assert replicas.metric_sum("item_socket_compaction_overlaps_total") == 0


def test_a_replica_that_lagged_behind_a_compaction_catches_up(
    replicas: Cluster, two_agents: list[Agent]
) -> None:
    """A follower that has not read entries a compaction trims reloads the snapshot covering them.

    Replica B is stopped (SIGSTOP) while clients of A and C write more than --compact-after
    updates, so the stream is compacted and trimmed past B's follow position before B reads it.
    """
    doc = new_doc("lagged")
    a, b, c = replicas.replicas
    writers = [two_agents[0].open("wa", "ws", a, doc), two_agents[1].open("wc", "sio", c, doc)]
    readers = [two_agents[0].open("rb-ws", "ws", b, doc), two_agents[1].open("rb-sio", "sio", b, doc)]
    for client in writers + readers:
        client.wait_synced()
    key = f"item_socket:{{{doc}}}:u"

    def compactions() -> float:  # B, stopped, cannot answer a scrape
        return sum(r.metric("item_socket_compactions_total", outcome="compacted") for r in (a, c))

    compacted = compactions()
    expected: set[str] = set()
    os.kill(b.pid, signal.SIGSTOP)
    try:
        _edit_rounds(writers, range(0, 40), expected)  # 80 updates against --compact-after 50
        wait_all_hold(writers, expected)
        wait_until(
            lambda: compactions() > compacted and int(replicas.redis.cli("XLEN", key)) < 50,
            20,
            "the stream compacted and trimmed while replica B is stopped",
        )
    finally:
        os.kill(b.pid, signal.SIGCONT)
    _edit_rounds(writers, range(40, 45), expected)
    wait_all_hold(readers, expected)
    assert b.metric("item_socket_stream_gaps_total") >= 1
    assert '"event":"stream_gap"' in b.stderr_text()


def test_redis_restart_during_edits_loses_nothing(replicas: Cluster, two_agents: list[Agent]) -> None:
    doc = new_doc("redis-restart")
    writers = [
        two_agents[i % 2].open(f"w{i}", PROTOCOLS[i % 2], replica, doc)
        for i, replica in enumerate(replicas.replicas)
    ]
    for writer in writers:
        writer.wait_synced()
    expected: set[str] = set()
    _edit_rounds(writers, range(0, 15), expected)
    replicas.redis.restart()
    _edit_rounds(writers, range(15, 30), expected)
    wait_all_hold(writers, expected, timeout=30)
    for replica in replicas.replicas:
        wait_until(
            lambda r=replica: replicas.ready(r), 20, f"replica :{replica.port} ready after Redis restart"
        )
    fresh = two_agents[0].open("fresh", "sio", replicas.replicas[2], doc)
    wait_all_hold([fresh], expected)
    print(f"\nRedis restarted during edits: {len(expected)} updates, {len(expected - keys_of(fresh))} lost")


def test_redis_away_holds_edits_and_says_not_ready(replicas: Cluster, two_agents: list[Agent]) -> None:
    doc = new_doc("redis-away")
    a, b = replicas.replicas[0], replicas.replicas[1]
    left = two_agents[0].open("left", "ws", a, doc)
    right = two_agents[1].open("right", "ws", b, doc)
    left.wait_synced()
    right.wait_synced()
    replicas.redis.stop()
    try:
        expected = {f"held-{i}" for i in range(10)}
        for key in sorted(expected):
            left.map_set(key, 1)
        wait_until(lambda: a.http_status("/readyz") == 503, 15, "replica A not ready while Redis is away")
        assert "redis unreachable" in readyz_problems(a)
        wait_until(lambda: a.metric("item_socket_outbox_updates") >= 1, 15, "edits held in the outbox")
        assert a.metric("item_socket_redis_healthy") == 0
        assert '"event":"redis_failed"' in a.stderr_text()
    finally:
        replicas.redis.start()
    wait_until(lambda: replicas.ready(a) and replicas.ready(b), 20, "replicas ready once Redis is back")
    wait_all_hold([right], expected)
    wait_until(lambda: a.metric("item_socket_outbox_updates") == 0, 10, "outbox empty")


def test_postgres_away_refuses_new_documents_and_says_not_ready(
    replicas: Cluster, two_agents: list[Agent]
) -> None:
    a = replicas.replicas[0]
    doc = new_doc("pg-open")
    opened = two_agents[0].open("opened", "ws", a, doc)
    opened.wait_synced()
    replicas.postgres.stop()
    try:
        refused = two_agents[1].open("refused", "ws", a, new_doc("pg-new"))
        with pytest.raises(AssertionError, match="to sync"):
            refused.wait_synced(timeout=3)
        wait_until(lambda: a.http_status("/readyz") == 503, 10, "not ready while PostgreSQL is away")
        assert "store failing" in readyz_problems(a)
        # A document already open keeps working through Redis.
        opened.map_set("still", 1)
        peer = two_agents[1].open("peer", "sio", replicas.replicas[1], doc)
        with pytest.raises(AssertionError, match="to sync"):
            peer.wait_synced(timeout=2)  # replica B must load it from PostgreSQL: refused
    finally:
        replicas.postgres.start()
    wait_until(lambda: replicas.ready(a), 20, "ready once PostgreSQL is back")
    refused.wait_synced(timeout=30)
    peer.wait_state(lambda st: st["map"].get("still") == 1, 30, "the edit made while PostgreSQL was away")


def test_presence_crosses_replicas_and_leaves_with_its_client(
    replicas: Cluster, two_agents: list[Agent]
) -> None:
    doc = new_doc("presence")
    here = two_agents[0].open("here", "ws", replicas.replicas[0], doc)
    there = two_agents[1].open("there", "sio", replicas.replicas[2], doc)
    here.wait_synced()
    there.wait_synced()
    there.set_awareness({"cursor": 7})
    wait_until(lambda: here.awareness().get(there.client_id) == {"cursor": 7}, 10, "remote cursor seen")
    # A client joining later on a third replica sees it at once (not after the 15 s renewal).
    late = two_agents[0].open("late", "ws", replicas.replicas[1], doc)
    late.wait_synced()
    wait_until(
        lambda: late.awareness().get(there.client_id) == {"cursor": 7}, 10, "late joiner sees the cursor"
    )
    there.destroy()
    wait_until(lambda: there.client_id not in here.awareness(), 10, "cursor removed when its client left")
    wait_until(lambda: there.client_id not in late.awareness(), 10, "cursor removed on every replica")


def test_presence_of_a_killed_replica_expires(replicas: Cluster, two_agents: list[Agent]) -> None:
    doc = new_doc("presence-kill")
    victim = replicas.replicas[2]
    here = two_agents[0].open("here", "ws", replicas.replicas[0], doc)
    gone = two_agents[1].open("gone", "ws", victim, doc)
    here.wait_synced()
    gone.wait_synced()
    gone.set_awareness({"user": "gone"})
    wait_until(lambda: gone.client_id in here.awareness(), 10, "presence seen")
    victim.stop(sig=signal.SIGKILL)
    two_agents[1].kill()
    # --awareness-timeout 4: removed within the timeout plus one sweep (0.5 s) plus slack.
    wait_until(lambda: gone.client_id not in here.awareness(), 12, "a dead replica's presence expired")


def test_compaction_bounds_the_stream_and_never_overlaps(replicas: Cluster, two_agents: list[Agent]) -> None:
    doc = new_doc("compact")
    writers = [
        two_agents[i % 2].open(f"w{i}", "ws", replica, doc) for i, replica in enumerate(replicas.replicas)
    ]
    for writer in writers:
        writer.wait_synced()
    expected: set[str] = set()
    _edit_rounds(writers, range(0, 150), expected)  # 450 updates against --compact-after 50
    wait_all_hold(writers, expected)
    key = f"item_socket:{{{doc}}}:u"
    wait_until(lambda: int(replicas.redis.cli("XLEN", key)) < 50, 15, "stream trimmed by compaction")
    assert replicas.metric_sum("item_socket_compactions_total", outcome="compacted") >= 3
    assert replicas.metric_sum("item_socket_compaction_overlaps_total") == 0
    snapshot = replicas.postgres.psql(f"SELECT length(snapshot) FROM documents WHERE name = '{doc}'")
    assert int(snapshot) > 0
    for writer in writers:
        writer.destroy()
    # Once nobody has it open, what the stream still holds is compacted too: only the notice of
    # the last trim stays.
    wait_until(
        lambda: (
            int(replicas.redis.cli("XLEN", key)) == 1
            and "t" in replicas.redis.cli("XRANGE", key, "-", "+").split()
        ),
        20,
        "stream emptied after the last client left",
    )
    fresh = two_agents[0].open("fresh", "sio", replicas.replicas[0], doc)
    wait_all_hold([fresh], expected)


def test_refuses_a_redis_that_may_evict_streams(tmp_path: Path, replicas: Cluster) -> None:
    evicting = RedisServer(tmp_path / "redis", maxmemory_policy="allkeys-lru").start()
    try:
        args = list(replicas.args)
        args[args.index("--redis-url") + 1] = evicting.url
        result = subprocess.run(
            [sys.executable, "-m", "item_socket", "--host", "127.0.0.1", "--port", "1", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        evicting.stop()
    assert result.returncode == 1, result.stderr
    assert "maxmemory-policy allkeys-lru" in result.stderr
    assert "maxmemory-policy noeviction" in result.stderr
