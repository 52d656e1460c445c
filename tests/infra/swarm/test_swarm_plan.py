"""Swarm plan and scripts, tested whole as text and with `bash -n` (no engine needed)."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from infra.host import Host
from infra.plans import swarm as plan

NODE_ID = "x" * 25


def host(
    name: str,
    mesh_ip: str,
    *,
    manager: bool = False,
    edge: bool = False,
    labels: dict[str, str] | None = None,
) -> Host:
    return Host(
        name,
        "hetzner",
        "fsn1",
        "203.0.113.5",
        mesh_ip,
        "deploy",
        manager=manager,
        edge=edge,
        labels=labels or {},
    )


ALL_SCRIPTS = {
    "init": plan.init_script("10.210.0.1"),
    "tokens": plan.print_join_tokens_script(),
    "join": plan.join_script("10.210.0.1", "10.210.0.2"),
    "labels": plan.label_script(NODE_ID, {"provider": "aws", "role": "manager"}, manager=True),
    "worker-labels": plan.label_script(NODE_ID, {"role": "worker"}, manager=False),
    "remove-labels": plan.remove_labels_script(NODE_ID, ["tier", "spaced.node"]),
    "drain": plan.drain_script(NODE_ID, manager=True),
    "leave": plan.leave_script(),
    "leave-force": plan.leave_script(force=True),
    "remove": plan.remove_node_script("aws-1"),
}


@pytest.mark.parametrize("name", sorted(ALL_SCRIPTS))
def test_every_script_is_valid_strict_bash(name: str) -> None:
    script = ALL_SCRIPTS[name]
    assert script.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in script.split("\n\n")[0] + "\n"
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr
    # The command line actually sent over SSH parses too.
    wrapped = subprocess.run(["bash", "-n", "-c", plan.bash_command(script)], capture_output=True, text=True)
    assert wrapped.returncode == 0, wrapped.stderr


@pytest.mark.parametrize("name", sorted(ALL_SCRIPTS))
def test_every_wait_is_bounded(name: str) -> None:
    script = ALL_SCRIPTS[name]
    loops = re.findall(r"^\s*(?:while|until) .*$", script, flags=re.MULTILINE)
    # `while read` loops end with their input, not by waiting.
    waiting_loops = [loop for loop in loops if "for " not in loop and " read " not in loop]
    deadline_checks = re.findall(r'\[ "\$SECONDS" -ge "\$\w+_deadline" \]', script)
    assert len(deadline_checks) == len(waiting_loops)
    for waited in re.findall(r"^\s*timeout (\d+) ", script, flags=re.MULTILINE):
        assert 0 < int(waited) <= 3600


def test_init_waits_for_cloud_init_and_initialises_on_the_mesh_address_only_once() -> None:
    script = plan.init_script("10.210.0.1", cloud_init_timeout_s=600)
    assert "timeout 600 cloud-init status --wait" in script
    assert "dk swarm init --advertise-addr 10.210.0.1 --listen-addr 10.210.0.1:2377 >/dev/null" in script
    # Idempotence: init only in the `inactive` branch.
    branch = script[script.index("  inactive)") : script.index("  locked)")]
    assert "swarm init" in branch and script.count("swarm init") == 1
    assert script.rstrip().endswith("dk info --format '{{.Swarm.NodeID}}'")


def test_join_reads_the_token_from_stdin_and_joins_only_when_inactive() -> None:
    script = plan.join_script("10.210.0.1", "10.210.0.7")
    assert "IFS= read -r join_token" in script
    assert "SWMTKN-1" not in script
    assert (
        'swarm join --token "$join_token" \\\n      --advertise-addr 10.210.0.7 '
        "--listen-addr 10.210.0.7:2377 10.210.0.1:2377 >/dev/null" in script
    )
    branch = script[script.index("  inactive)") : script.index("  pending)")]
    assert "swarm join" in branch


def test_join_without_a_token_fails_before_touching_docker() -> None:
    ran = subprocess.run(
        ["bash", "-c", plan.bash_command(plan.join_script("10.210.0.1", "10.210.0.2"))],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ran.returncode == 1
    assert "expected the swarm join token on stdin" in ran.stderr
    assert ran.stdout == ""


def test_label_values_are_quoted_against_the_shell() -> None:
    hostile = {"note": "it's; rm -rf / $(reboot)", "zone": "a b"}
    script = plan.label_script(NODE_ID, hostile, manager=False)
    (update,) = [line for line in script.splitlines() if line.startswith("dk node update")]
    args = shlex.split(update.replace(">/dev/null", ""))
    assert args == [
        "dk", "node", "update", "--availability", "active",
        "--label-add", "note=it's; rm -rf / $(reboot)", "--label-add", "zone=a b", NODE_ID,
    ]  # fmt: skip


def test_manager_scripts_promote_and_demote_only_managers() -> None:
    assert "dk node promote" in plan.label_script(NODE_ID, {}, manager=True)
    assert "promote" not in plan.label_script(NODE_ID, {}, manager=False)
    drain = plan.drain_script(NODE_ID, manager=True)
    assert drain.index("dk node demote") < drain.index("--availability drain")
    assert "demote" not in plan.drain_script(NODE_ID, manager=False)


def test_removal_scripts() -> None:
    assert "dk swarm leave --force" in plan.leave_script(force=True)
    assert "--force" not in plan.leave_script()
    remove = plan.remove_node_script("it's-me")
    assert "'{{index .Spec.Labels \"spaced.node\"}}'" in remove
    assert "= 'it'\"'\"'s-me' ]" in remove
    assert 'dk node rm "$node_id"' in remove and "rm --force" not in remove.replace(
        "(docker node rm --force", ""
    )


def test_plan_orders_the_first_manager_first_and_labels_every_node() -> None:
    hosts = [
        host("w1", "10.210.0.2", labels={"tier": "app"}),
        host("m1", "10.210.0.1", manager=True, edge=True),
        host("m2", "10.210.0.3", manager=True),
    ]
    swarm = plan.plan_swarm(hosts)
    assert swarm.first_manager.name == "m1"
    assert [node.name for node in swarm.joining] == ["w1", "m2"]
    assert [node.role for node in swarm.nodes] == ["manager", "worker", "manager"]
    assert swarm.first_manager.labels == {
        "provider": "hetzner", "region": "fsn1", "role": "manager", "edge": "true", "acme": "true",
        "data": "true", "spaced.node": "m1",
    }  # fmt: skip
    assert swarm.joining[0].labels["tier"] == "app"
    assert swarm.joining[0].labels["edge"] == "false"
    # Only one node keeps Traefik's certificate store.
    assert [node.labels["acme"] for node in swarm.nodes] == ["true", "false", "false"]
    # Only one node keeps Redis' and PostgreSQL's volumes: the same one.
    assert [node.labels["data"] for node in swarm.nodes] == ["true", "false", "false"]


def test_acme_label_goes_to_the_first_edge_manager_only() -> None:
    hosts = [
        host("m1", "10.210.0.1", manager=True),
        host("e1", "10.210.0.2", edge=True),
        host("e2", "10.210.0.3", manager=True, edge=True),
        host("e3", "10.210.0.4", manager=True, edge=True),
    ]
    labels = {node.name: node.labels["acme"] for node in plan.plan_swarm(hosts).nodes}
    assert labels == {"m1": "false", "e1": "false", "e2": "true", "e3": "false"}


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([], "at least one node"),
        ([host("w1", "10.210.0.2")], "no node has manager: true"),
        (
            [host("m", "10.210.0.1", manager=True), host("m", "10.210.0.2")],
            r"nodes\[m\]: the name is used twice",
        ),
        (
            [host("m", "10.210.0.1", manager=True, labels={"role": "x"})],
            r"labels\.role: 'role' is set by the",
        ),
        ([host("m", "10.210.0.1", manager=True, labels={"a b": "x"})], r"labels\.a b: a label name is"),
        ([host("m", "10.210.0.1", manager=True, labels={"a": "x\ny"})], r"labels\.a: the value must be"),
    ],
)
def test_bad_topologies_name_the_field(hosts: list[Host], message: str) -> None:
    with pytest.raises(plan.SwarmPlanError, match=message):
        plan.plan_swarm(hosts)


def test_parsing_script_output() -> None:
    assert plan.parse_node_id("spaced-swarm: noise\n" + NODE_ID + "\n") == NODE_ID
    with pytest.raises(plan.SwarmPlanError, match="expected a swarm node id"):
        plan.parse_node_id("Error: permission denied\n")
    tokens = {"worker": "SWMTKN-1-abc-def", "manager": "SWMTKN-1-abc-ghi"}
    assert plan.parse_join_tokens('{"worker": "SWMTKN-1-abc-def", "manager": "SWMTKN-1-abc-ghi"}') == tokens
    with pytest.raises(plan.SwarmPlanError, match="did not print JSON"):
        plan.parse_join_tokens("nope")
    with pytest.raises(plan.SwarmPlanError, match="worker join token is not"):
        plan.parse_join_tokens('{"worker": "x", "manager": "SWMTKN-1-a"}')
