"""The swarm scripts against the real local Docker engine (127.0.0.1 stands in for the mesh address).

The first test gets an engine in no swarm (tests/conftest.py orders it first and restores the
engine afterwards) and runs init, join, label, drain and leave; the second gets a swarm manager and
runs the idempotent paths, removing the labels it added.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from infra.plans import swarm as plan
from tests import support
from tests.support import DockerEngine, swarm_info

pytestmark = pytest.mark.docker

MESH_IP = "127.0.0.1"
TEST_LABEL_PREFIX = f"spaced-test-{os.getpid()}"


def docker(*args: str) -> str:
    return support.docker(*args, timeout=60).stdout.strip()


def run_script(script: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    # Exactly the command line the remote Command sends over SSH.
    return subprocess.run(
        ["bash", "-c", plan.bash_command(script)], input=stdin, capture_output=True, text=True, timeout=180
    )


def node_spec(node_id: str) -> dict:
    return json.loads(docker("node", "inspect", "--format", "{{json .Spec}}", node_id))


def test_init_label_drain_and_leave_on_a_real_engine(engine_outside_swarm: DockerEngine) -> None:
    assert swarm_info()["LocalNodeState"] == "inactive"
    try:
        first = run_script(plan.init_script(MESH_IP, cloud_init_timeout_s=60, docker_timeout_s=30))
        assert first.returncode == 0, first.stderr
        info = swarm_info()
        assert info["LocalNodeState"] == "active" and info["ControlAvailable"] is True
        assert info["NodeAddr"] == MESH_IP
        node_id = plan.parse_node_id(first.stdout)
        assert node_id == info["NodeID"]
        assert "SWMTKN" not in first.stdout + first.stderr

        again = run_script(plan.init_script(MESH_IP, cloud_init_timeout_s=60, docker_timeout_s=30))
        assert again.returncode == 0, again.stderr
        assert "already active" in again.stderr
        assert plan.parse_node_id(again.stdout) == node_id

        tokens_run = run_script(plan.print_join_tokens_script(docker_timeout_s=30))
        assert tokens_run.returncode == 0, tokens_run.stderr
        tokens = plan.parse_join_tokens(tokens_run.stdout)
        assert tokens == {
            "worker": docker("swarm", "join-token", "-q", "worker"),
            "manager": docker("swarm", "join-token", "-q", "manager"),
        }

        # A node already in the swarm does not join again.
        join = run_script(
            plan.join_script(MESH_IP, MESH_IP, cloud_init_timeout_s=60), stdin=tokens["worker"] + "\n"
        )
        assert join.returncode == 0, join.stderr
        assert "already in a swarm" in join.stderr
        assert plan.parse_node_id(join.stdout) == node_id
        assert tokens["worker"] not in join.stdout + join.stderr

        labels = {
            "provider": "local",
            "region": "here and there",
            "role": "manager",
            "edge": "true",
            plan.NODE_NAME_LABEL: "local-1",
            "note": "it's; $(not run)",
        }
        labelled = run_script(plan.label_script(node_id, labels, manager=True, docker_timeout_s=30))
        assert labelled.returncode == 0, labelled.stderr
        assert node_spec(node_id)["Labels"] == labels

        drained = run_script(plan.drain_script(node_id, manager=False, drain_timeout_s=30))
        assert drained.returncode == 0, drained.stderr
        assert node_spec(node_id)["Availability"] == "drain"
        # Labelling again (a node added back) makes it available again.
        assert run_script(plan.label_script(node_id, labels, manager=True)).returncode == 0
        assert node_spec(node_id)["Availability"] == "active"

        nobody = run_script(plan.remove_node_script("not-a-node", down_timeout_s=5))
        assert nobody.returncode == 0 and "nothing to remove" in nobody.stderr
        # A live node is never removed, even when its label matches.
        alive = run_script(plan.remove_node_script("local-1", down_timeout_s=4))
        assert alive.returncode == 0 and "still up" in alive.stderr
        assert docker("node", "ls", "--quiet") == node_id

        left = run_script(plan.leave_script(force=True))
        assert left.returncode == 0, left.stderr
        assert swarm_info()["LocalNodeState"] == "inactive"
        left_again = run_script(plan.leave_script(force=True))
        assert left_again.returncode == 0 and "nothing to leave" in left_again.stderr
        gone = run_script(plan.drain_script(node_id, manager=True))
        assert gone.returncode == 0 and "nothing to drain" in gone.stderr
    finally:
        if swarm_info()["LocalNodeState"] != "inactive":
            subprocess.run(["docker", "swarm", "leave", "--force"], capture_output=True, timeout=60)


def test_idempotent_paths_on_a_swarm_that_is_already_active(swarm_manager: DockerEngine) -> None:
    info = swarm_info()
    assert info["LocalNodeState"] == "active" and info["ControlAvailable"] is True
    node_id = info["NodeID"]
    spec_before = node_spec(node_id)
    assert spec_before.get("Availability") == "active", "the test swarm's only node must be available"
    init = run_script(plan.init_script(MESH_IP, cloud_init_timeout_s=60, docker_timeout_s=30))
    assert init.returncode == 0, init.stderr
    assert "already active" in init.stderr
    assert plan.parse_node_id(init.stdout) == node_id
    assert swarm_info()["Cluster"]["ID"] == info["Cluster"]["ID"]

    ours = {f"{TEST_LABEL_PREFIX}.role": "manager", f"{TEST_LABEL_PREFIX}.edge": "true"}
    try:
        labelled = run_script(plan.label_script(node_id, ours, manager=True, docker_timeout_s=30))
        assert labelled.returncode == 0, labelled.stderr
        labels_now = node_spec(node_id).get("Labels") or {}
        assert {key: labels_now.get(key) for key in ours} == ours
        # The labels others set are untouched.
        before = spec_before.get("Labels") or {}
        assert {key: labels_now.get(key) for key in before} == before
    finally:
        removed = run_script(plan.remove_labels_script(node_id, sorted(ours)))
        assert removed.returncode == 0, removed.stderr
    assert not {key for key in node_spec(node_id).get("Labels") or {} if key.startswith(TEST_LABEL_PREFIX)}
