"""Property: random concurrent edits from 3-4 real npm clients over mixed protocols converge.

Every client, and a fresh client joining afterwards, ends with the identical document. Raise the
number of examples with ITEM_SOCKET_CONVERGENCE_EXAMPLES.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from .harness import Agent, ServerProcess, YClient, wait_until

EXAMPLES = int(os.environ.get("ITEM_SOCKET_CONVERGENCE_EXAMPLES", "18"))
# Narrow with e.g. ITEM_SOCKET_CONVERGENCE_PROTOCOLS=ws,sio when chasing a transport-specific failure.
PROTOCOLS = os.environ.get("ITEM_SOCKET_CONVERGENCE_PROTOCOLS", "ws,sio,sio-polling").split(",")
MAP_KEYS = ["a", "b", "c", "d"]

insert_op = st.fixed_dictionaries(
    {
        "op": st.just("insert"),
        "index": st.integers(0, 60),
        "content": st.text(
            # BMP only: a JS client can split a surrogate pair at a random index, and a lone surrogate
            # has no UTF-8 form in the server's Rust (yrs) document.
            st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs", "Cc"]),
            min_size=1,
            max_size=6,
        ),
    }
)
delete_op = st.fixed_dictionaries(
    {"op": st.just("delete"), "index": st.integers(0, 60), "length": st.integers(1, 6)}
)
map_op = st.fixed_dictionaries(
    {
        "op": st.just("map_set"),
        "key": st.sampled_from(MAP_KEYS),
        "value": st.one_of(st.integers(-1000, 1000), st.text(max_size=5), st.booleans(), st.none()),
    }
)
client_script = st.fixed_dictionaries(
    {
        "protocol": st.sampled_from(PROTOCOLS),
        # Two rounds of edits; an offline client makes its second round while disconnected.
        "round1": st.lists(st.one_of(insert_op, insert_op, delete_op, map_op), max_size=15),
        "round2": st.lists(st.one_of(insert_op, delete_op, map_op), max_size=10),
        "offline": st.booleans(),
    }
)


@pytest.fixture(scope="module")
def convergence_agents() -> Iterator[list[Agent]]:
    started = [Agent(f"conv{i}") for i in range(5)]
    try:
        yield started
    finally:
        for agent in started:
            agent.close()


def _run_concurrently(jobs: list[Any]) -> None:
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    # No shrinking: every failing attempt waits out the convergence deadline, so shrinking would take
    # many minutes; the falsifying example is printed as generated.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scripts=st.lists(client_script, min_size=3, max_size=4))
def test_random_concurrent_edits_converge(
    server: ServerProcess, convergence_agents: list[Agent], scripts: list[dict[str, Any]]
) -> None:
    doc = f"convergence-{uuid.uuid4().hex[:10]}"
    clients: list[YClient] = [
        convergence_agents[i].open(f"{doc}-{i}", script["protocol"], server, doc)
        for i, script in enumerate(scripts)
    ]
    try:
        for client in clients:
            client.wait_synced()
        _run_concurrently(
            [lambda c=c, s=s: c.ops(s["round1"]) for c, s in zip(clients, scripts, strict=True)]
        )
        for client, script in zip(clients, scripts, strict=True):
            if script["offline"]:
                client.disconnect()
        _run_concurrently(
            [lambda c=c, s=s: c.ops(s["round2"]) for c, s in zip(clients, scripts, strict=True)]
        )
        for client, script in zip(clients, scripts, strict=True):
            if script["offline"]:
                client.connect()

        seen: list[str] = []

        def converged() -> dict[str, Any] | None:
            states = [c.state() for c in clients]
            seen[:] = [
                f"{c.protocol}: {s['status']} map={s['map']} text={s['text']!r}"
                for c, s in zip(clients, states, strict=True)
            ]
            first = states[0]
            return (
                first if all((s["text"], s["map"]) == (first["text"], first["map"]) for s in states) else None
            )

        try:
            final = wait_until(converged, 20, f"{len(clients)} clients to converge on {doc}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nclients:\n" + "\n".join(seen)) from None
        late = convergence_agents[4].open(f"{doc}-late", PROTOCOLS[len(doc) % len(PROTOCOLS)], server, doc)
        late.wait_state(
            lambda s: s["synced"] and (s["text"], s["map"]) == (final["text"], final["map"]),
            15,
            "the late joiner to get the converged state",
        )
        late.destroy()

        # Map: every key written ends with the last value one of the clients wrote to it.
        last_writes: dict[str, set[Any]] = {}
        for script in scripts:
            mine: dict[str, Any] = {}
            for op in script["round1"] + script["round2"]:
                if op["op"] == "map_set":
                    mine[op["key"]] = op["value"]
            for key, value in mine.items():
                last_writes.setdefault(key, set()).add(value)
        assert set(final["map"]) == set(last_writes)
        for key, value in final["map"].items():
            assert value in last_writes[key]
        # Text: without deletions, nothing inserted may be lost.
        all_ops = [op for s in scripts for op in s["round1"] + s["round2"]]
        if not any(op["op"] == "delete" for op in all_ops):
            inserted = sum(
                len(op["content"].encode("utf-16-le")) // 2 for op in all_ops if op["op"] == "insert"
            )
            assert len(final["text"].encode("utf-16-le")) // 2 == inserted
    finally:
        for client in clients:
            client.destroy()
