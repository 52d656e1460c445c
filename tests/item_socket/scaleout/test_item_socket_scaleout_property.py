"""Property: random edits, random replica kills (amid edits), client reconnects -> every client identical.

Clients connect through nginx (conftest ``front``), so a client of a killed replica reconnects to
another one. A killed replica starts again at once (a new process on the same port), as Swarm
would restart a task. Raise the number of examples with ITEM_SOCKET_SCALEOUT_EXAMPLES.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.item_socket.e2e.harness import YClient, agents
from tests.support import wait_until

from .conftest import Cluster, Front

EXAMPLES = int(os.environ.get("ITEM_SOCKET_SCALEOUT_EXAMPLES", "8"))
CLIENTS = 4

step = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, CLIENTS - 1), st.integers(1, 8)),
    # A kill while a client edits: `count` edits from client `count % CLIENTS` run beside it.
    st.tuples(st.just("kill"), st.integers(0, 2), st.integers(0, 8)),
    st.tuples(st.just("reconnect"), st.integers(0, CLIENTS - 1), st.just(0)),
)


def _edit(client: YClient, keys: list[str]) -> None:
    for key in keys:
        client.map_set(key, int(key[1:]))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=6, max_size=14))
def test_random_edits_kills_and_reconnects_converge(
    steps: list[tuple[str, int, int]], front: Front, replicas: Cluster
) -> None:
    doc = f"prop-{uuid.uuid4().hex[:8]}"
    with agents(2) as pair:
        clients = [pair[i % 2].open(f"c{i}", ("ws", "sio")[i % 2], front.url, doc) for i in range(CLIENTS)]
        for client in clients:
            client.wait_synced()
        expected: dict[str, int] = {}
        counter = 0
        for action, target, count in steps:
            if action == "edit":
                for _ in range(count):
                    counter += 1
                    clients[target].map_set(f"k{counter}", counter)
                    expected[f"k{counter}"] = counter
            elif action == "kill":
                editor = clients[count % CLIENTS]
                keys = [f"k{counter + i}" for i in range(1, count + 1)]
                counter += count
                expected.update({key: int(key[1:]) for key in keys})
                edits = threading.Thread(target=_edit, args=(editor, keys))
                edits.start()
                victim = replicas.replicas[target]
                victim.stop(sig=signal.SIGKILL)
                edits.join(timeout=60)
                victim.start()
            else:
                clients[target].disconnect()
                clients[target].connect()
        for client in clients:
            client.wait_state(lambda st: st["map"] == expected, 45, f"the {len(expected)} keys, nothing more")
        fresh = pair[0].open("fresh", "ws", replicas.replicas[0], doc)
        fresh.wait_state(lambda st: st["map"] == expected, 30, "a fresh client loads the same map")
    for replica in replicas.replicas:
        wait_until(lambda r=replica: replicas.ready(r), 20, f"replica :{replica.port} ready")
    assert replicas.metric_sum("item_socket_compaction_overlaps_total") == 0
