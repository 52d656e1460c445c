"""Real npm Yjs clients editing through item_socket: sync, late joiners, convergence, isolation."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import AgentFactory
from .harness import Agent, ServerProcess, wait_until

PROTOCOLS = ["ws", "sio", "sio-polling"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_two_clients_sync_both_ways(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    alice = agent_factory().open("alice", protocol, server, doc_name)
    bob = agent_factory().open("bob", protocol, server, doc_name)
    alice.wait_synced()
    bob.wait_synced()

    alice.insert(0, "hello")
    bob.wait_text("hello")
    bob.insert(5, " world")
    bob.map_set("color", "red")
    alice.wait_state(
        lambda st: st["text"] == "hello world" and st["map"] == {"color": "red"},
        10,
        "bob's text and map edit",
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_late_joiner_gets_the_full_state(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol: str
) -> None:
    writer_agent = agent_factory()
    writer = writer_agent.open("writer", "ws", server, doc_name)
    writer.wait_synced()
    # Many small updates plus deletions, so the joiner needs the merged history, not one update.
    for index in range(50):
        writer.insert(index, chr(ord("a") + index % 26))
    writer.delete(10, 5)
    for index in range(20):
        writer.map_set(f"k{index}", {"n": index, "tags": ["x"] * (index % 3)})
    expected = writer.state()
    helper = writer_agent.open("observer", "sio", server, doc_name)
    helper.wait_state(
        lambda st: st["text"] == expected["text"] and st["map"] == expected["map"],
        10,
        "the writer's edits to reach the server",
    )

    joiner = agent_factory().open("joiner", protocol, server, doc_name)
    state = joiner.wait_state(
        lambda st: st["synced"] and st["text"] == expected["text"],
        15,
        "the late joiner to receive the full text",
    )
    assert state["map"] == expected["map"]
    assert len(state["text"]) == 45


def test_four_clients_editing_concurrently_converge(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str
) -> None:
    protocols = ["ws", "sio", "sio-polling", "ws"]
    agents: list[Agent] = [agent_factory() for _ in protocols]
    clients = [
        a.open(f"c{i}", p, server, doc_name) for i, (a, p) in enumerate(zip(agents, protocols, strict=True))
    ]
    for client in clients:
        client.wait_synced()

    rng = random.Random(20260101)
    # Each client's ops are one request to its own Node process; the four run at the same time.
    scripts = []
    for index, _client in enumerate(clients):
        ops = []
        for step in range(60):
            letters = "ABCD"[index] * 3  # each client's own letters: counted in the final text
            ops.append({"op": "insert", "index": rng.randrange(0, 200), "content": f"<{letters}{step}>"})
            if step % 7 == 3:
                ops.append({"op": "delete", "index": rng.randrange(0, 200), "length": rng.randrange(1, 4)})
            ops.append({"op": "map_set", "key": f"shared{step % 5}", "value": f"{index}:{step}"})
        scripts.append(ops)
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(lambda pair: pair[0].ops(pair[1]), zip(clients, scripts, strict=True)))

    def converged() -> dict[str, object] | None:
        states = [c.state() for c in clients]
        first = states[0]
        same = all(st["text"] == first["text"] and st["map"] == first["map"] for st in states)
        return first if same else None

    final = wait_until(converged, 20, "four clients to converge")
    # Inserts land anywhere, inside earlier ones too, and any delete (of any client, concurrent
    # with any step) may hit any of them: what survives for sure is each client's letters less
    # the most all deletes can remove (3 characters each).
    text = str(final["text"])
    deleted_at_most = 3 * sum(1 for ops in scripts for op in ops if op["op"] == "delete")
    inserted = sum(len(op["content"]) for ops in scripts for op in ops if op["op"] == "insert")
    assert inserted - deleted_at_most <= len(text) <= inserted
    for index, letter in enumerate("ABCD"):
        assert text.count(letter) >= 3 * 60 - deleted_at_most, f"client {index}'s inserts missing"
    assert set(final["map"]) == {f"shared{k}" for k in range(5)}


@pytest.mark.parametrize(("protocol_a", "protocol_b"), [("ws", "sio"), ("sio-polling", "ws"), ("sio", "sio")])
def test_documents_are_isolated(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str, protocol_a: str, protocol_b: str
) -> None:
    agent = agent_factory()
    a1 = agent.open("a1", protocol_a, server, f"{doc_name}-A")
    a2 = agent.open("a2", protocol_b, server, f"{doc_name}-A")
    b1 = agent.open("b1", protocol_b, server, f"{doc_name}-B")
    b2 = agent.open("b2", protocol_a, server, f"{doc_name}-B")
    for client in (a1, a2, b1, b2):
        client.wait_synced()

    a1.insert(0, "only in A")
    a1.map_set("doc", "A")
    b1.insert(0, "only in B")
    a2.wait_state(lambda st: st["text"] == "only in A" and st["map"] == {"doc": "A"}, 10, "A's edits")
    b2.wait_state(lambda st: st["text"] == "only in B" and st["map"] == {}, 10, "B's edit only")
    # A barrier on B: once B's second edit arrives, any leak from A would have arrived before it.
    b1.insert(0, "!")
    b2.wait_text("!only in B")
    assert a1.text() == "only in A"
    assert a2.text() == "only in A"
    # A name that is a prefix of another is its own document too.
    c = agent.open("c", protocol_a, server, doc_name)
    c.wait_synced()
    assert c.text() == ""


def test_cross_protocol_editing(server: ServerProcess, agent_factory: AgentFactory, doc_name: str) -> None:
    clients = [agent_factory().open(f"{p}-client", p, server, doc_name) for p in ("ws", "sio", "sio-polling")]
    for client in clients:
        client.wait_synced()
    for index, client in enumerate(clients):
        client.insert(0, f"[{client.protocol}]")
        client.map_set(client.protocol, index)
        # Each edit must reach both other protocols before the next client writes.
        for other in clients:
            other.wait_state(
                lambda st, p=client.protocol: f"[{p}]" in st["text"], 10, f"{client.protocol}'s edit"
            )
    expected = clients[0].state()
    assert expected["text"] == "[sio-polling][sio][ws]"
    for client in clients[1:]:
        client.wait_state(lambda st: st["map"] == {"ws": 0, "sio": 1, "sio-polling": 2}, 10, "all map keys")


def test_long_polling_only_clients_collaborate(
    server: ServerProcess, agent_factory: AgentFactory, doc_name: str
) -> None:
    first = agent_factory().open("first", "sio-polling", server, doc_name, awareness={"name": "first"})
    second = agent_factory().open("second", "sio-polling", server, doc_name, awareness={"name": "second"})
    first.wait_synced()
    second.wait_synced()
    # Several round trips in both directions over HTTP long-polling.
    expected = ""
    for round_index in range(10):
        writer, reader = (first, second) if round_index % 2 == 0 else (second, first)
        writer.insert(len(expected), str(round_index))
        expected += str(round_index)
        reader.wait_text(expected)
    wait_until(
        lambda: {st.get("name") for st in first.awareness().values()} >= {"first", "second"},
        10,
        "the other polling client's awareness",
    )


def test_simultaneous_joiners_of_an_unloaded_document_share_it(
    server_factory, agent_factory: AgentFactory, doc_name: str
) -> None:
    server = server_factory().start()
    seed_agent = agent_factory()
    seed = seed_agent.open("seed", "ws", server, doc_name)
    seed.wait_synced()
    seed.insert(0, "stored")
    check = seed_agent.open("check", "sio", server, doc_name)
    check.wait_text("stored")
    server.stop()
    seed_agent.close()
    server.start()

    # Four clients hit the not-yet-loaded document at once; edits must reach all of them.
    protocols = ["ws", "sio", "ws", "sio-polling"]
    agents = [agent_factory() for _ in protocols]
    with ThreadPoolExecutor(len(agents)) as pool:
        clients = list(
            pool.map(
                lambda ip: agents[ip[0]].open(f"j{ip[0]}", ip[1], server, doc_name), enumerate(protocols)
            )
        )
    for client in clients:
        client.wait_state(lambda st: st["synced"] and st["text"] == "stored", 15, "the stored text")
    for index, client in enumerate(clients):
        client.map_set(f"j{index}", index)
    expected = {f"j{i}": i for i in range(len(clients))}
    for client in clients:
        client.wait_state(
            lambda st: st["map"] == expected and st["text"] == "stored", 15, "every joiner's edit"
        )
