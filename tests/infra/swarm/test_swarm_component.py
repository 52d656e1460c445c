"""The Swarm component under Pulumi mocks: which commands run where, secrets, deletion order."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from google.protobuf import json_format

from infra.host import Host
from infra.plans import swarm as plan

from .conftest import (
    MANAGER_TOKEN,
    WORKER_TOKEN,
    CommandMocks,
    RecordingMonitor,
    fake_node_id,
    is_secret,
    resolve,
)

SECRET_SIG = "4dabf18193072939515e22adb298388d"
COMMAND = "command:remote:Command"


class Dependency(pulumi.CustomResource):
    """Stands for a server or the mesh: something the swarm commands must wait for."""

    def __init__(self, name: str) -> None:
        super().__init__("test:index:Dependency", name, {})


HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsAv6Gu3peoqR+hx8LYO3CIRaglqPFuXSwT0C1/nnSh"


def make_hosts(server: pulumi.Resource | None = None) -> list[Host]:
    return [
        Host(
            "worker-a",
            "hetzner",
            "fsn1",
            "203.0.113.2",
            "10.210.0.2",
            "deploy",
            labels={"tier": "app"},
            host_key=HOST_KEY,
        ),
        Host(
            "apex",
            "existing",
            "de",
            "203.0.113.1",
            "10.210.0.1",
            "deploy",
            manager=True,
            edge=True,
            host_key=HOST_KEY,
        ),
        Host(
            "mgr-b",
            "aws",
            "eu-central-1",
            pulumi.Output.from_input("203.0.113.3"),
            "10.210.0.3",
            "admin",
            manager=True,
            resources=(server,) if server else (),
            host_key=HOST_KEY,
        ),
    ]


def build(mesh: pulumi.Resource | None = None, server: pulumi.Resource | None = None) -> Any:
    # Imported after set_mocks, as Pulumi's unit-test guide asks.
    from infra.components.swarm import Swarm, SwarmArgs

    swarm = Swarm(
        "swarm",
        SwarmArgs(make_hosts(server), pulumi.Output.from_input("-----BEGIN KEY-----")),
        opts=pulumi.ResourceOptions(depends_on=[mesh]) if mesh else None,
    )
    settle(swarm)
    return swarm


def settle(swarm: Any) -> None:
    """Wait until every command of `swarm` is registered."""
    resolve(pulumi.Output.all(*(command.id for command in swarm.commands.values())))


def inputs(monitor: RecordingMonitor, name: str) -> dict[str, Any]:
    return json_format.MessageToDict(monitor.requests[name].object)


def unwrap(value: Any) -> tuple[Any, bool]:
    """(value, was it sent as a secret)."""
    if isinstance(value, dict) and SECRET_SIG in value:
        return value["value"], True
    return value, False


def test_commands_per_host(pulumi_mocks: tuple[CommandMocks, RecordingMonitor]) -> None:
    mocks, monitor = pulumi_mocks
    build()
    commands = sorted(name for name, args in mocks.resources.items() if args.typ == COMMAND)
    assert commands == sorted(
        [
            "swarm-apex-init",
            "swarm-join-tokens",
            "swarm-apex-labels",
            "swarm-mgr-b-manager-probe",  # the other manager offers itself to a replaced first manager
            *(
                f"swarm-{node}-{role}"
                for node in ("worker-a", "mgr-b")
                for role in ("remove", "join", "labels")
            ),
        ]
    )
    assert monitor.requests["swarm"].type == "spaced:swarm:Swarm"
    for name in commands:
        assert monitor.requests[name].parent.endswith("spaced:swarm:Swarm::swarm")


def test_init_and_tokens_run_on_the_first_manager_over_its_mesh_address(
    pulumi_mocks: tuple[CommandMocks, RecordingMonitor],
) -> None:
    _, monitor = pulumi_mocks
    build()
    init = inputs(monitor, "swarm-apex-init")
    connection, _ = unwrap(init["connection"])
    assert (connection["host"], connection["user"]) == ("203.0.113.1", "deploy")
    assert init["create"] == plan.bash_command(plan.init_script("10.210.0.1", node_name="apex"))
    assert "--advertise-addr 10.210.0.1 --listen-addr 10.210.0.1:2377" in init["create"]
    assert init["delete"] == plan.bash_command(plan.leave_script(force=True))
    tokens = inputs(monitor, "swarm-join-tokens")
    assert tokens["create"] == plan.bash_command(plan.print_join_tokens_script())
    assert unwrap(tokens["connection"])[0]["host"] == "203.0.113.1"


def test_join_tokens_are_secret_everywhere(pulumi_mocks: tuple[CommandMocks, RecordingMonitor]) -> None:
    _, monitor = pulumi_mocks
    build()
    tokens_request = monitor.requests["swarm-join-tokens"]
    assert "stdout" in tokens_request.additionalSecretOutputs
    assert inputs(monitor, "swarm-join-tokens")["logging"] == "none"
    for node, token in (("worker-a", WORKER_TOKEN), ("mgr-b", MANAGER_TOKEN)):
        join = inputs(monitor, f"swarm-{node}-join")
        stdin, secret = unwrap(join["stdin"])
        assert secret, f"the join token of {node} went to the engine in clear"
        assert stdin == token + "\n"
        assert token not in join["create"] and token not in join["delete"]
        assert "stdin" in monitor.requests[f"swarm-{node}-join"].additionalSecretOutputs
    # No other input of any command carries a token.
    for name in monitor.requests:
        if name.endswith("-join"):
            continue
        text = json_format.MessageToJson(monitor.requests[name].object)
        assert WORKER_TOKEN not in text and MANAGER_TOKEN not in text, name
    # The ssh private key is a secret input of every connection.
    assert unwrap(inputs(monitor, "swarm-apex-init")["connection"])[1]


def test_outputs_derived_from_tokens_are_secret(pulumi_mocks: tuple[CommandMocks, RecordingMonitor]) -> None:
    swarm = build()
    assert is_secret(swarm.join_tokens)
    assert resolve(swarm.join_tokens) == {"worker": WORKER_TOKEN, "manager": MANAGER_TOKEN}
    # Node ids are not secrets: they appear in diffs and logs on purpose.
    assert not is_secret(swarm.node_ids["worker-a"])


def test_join_commands_use_the_right_token_addresses_and_delete_by_leaving(
    pulumi_mocks: tuple[CommandMocks, RecordingMonitor],
) -> None:
    _, monitor = pulumi_mocks
    build()
    worker = inputs(monitor, "swarm-worker-a-join")
    assert unwrap(worker["connection"])[0]["host"] == "203.0.113.2"
    assert worker["create"] == plan.bash_command(plan.join_script("10.210.0.1", "10.210.0.2"))
    assert "--advertise-addr 10.210.0.2" in worker["create"] and "10.210.0.1:2377" in worker["create"]
    assert worker["delete"] == plan.bash_command(plan.leave_script())
    assert worker["triggers"] == ["10.210.0.1", "10.210.0.2", "worker"]
    manager = inputs(monitor, "swarm-mgr-b-join")
    assert unwrap(manager["connection"])[0] == {
        "host": "203.0.113.3",
        "user": "admin",
        "privateKey": "-----BEGIN KEY-----",
        "port": 22.0,
        "dialErrorLimit": 30.0,
        "perDialTimeout": 30.0,
        "hostKey": HOST_KEY,
    }
    assert manager["triggers"] == ["10.210.0.1", "10.210.0.3", "manager"]


def test_labels_and_drain_target_the_joined_node_id(
    pulumi_mocks: tuple[CommandMocks, RecordingMonitor],
) -> None:
    _, monitor = pulumi_mocks
    swarm = build()
    worker_id = fake_node_id("swarm-worker-a-join")
    assert resolve(swarm.node_ids["worker-a"]) == worker_id
    labels = inputs(monitor, "swarm-worker-a-labels")
    assert unwrap(labels["connection"])[0]["host"] == "203.0.113.1"  # manager-side
    for label in (
        "provider=hetzner",
        "region=fsn1",
        "role=worker",
        "edge=false",
        "spaced.node=worker-a",
        "tier=app",
    ):
        assert f"--label-add {label}" in labels["create"]
    assert f"{worker_id} >/dev/null" in labels["create"]
    assert labels["delete"] == plan.bash_command(plan.drain_script(worker_id, manager=False))
    manager_labels = inputs(monitor, "swarm-mgr-b-labels")
    assert "dk node promote" in manager_labels["create"]
    assert "dk node demote" in manager_labels["delete"]
    apex_labels = inputs(monitor, "swarm-apex-labels")
    assert (
        "--label-add edge=true" in apex_labels["create"]
        and "--label-add role=manager" in apex_labels["create"]
    )
    assert fake_node_id("swarm-apex-init") in apex_labels["create"]
    remove = inputs(monitor, "swarm-worker-a-remove")
    assert remove["create"] == "true"
    assert remove["delete"] == plan.bash_command(plan.remove_node_script("worker-a"))


def test_removal_order_is_drain_then_leave_then_rm(
    pulumi_mocks: tuple[CommandMocks, RecordingMonitor],
) -> None:
    """Pulumi deletes dependents before their dependencies: labels(drain) -> join(leave) -> remove(rm)."""
    _, monitor = pulumi_mocks
    build()

    def depends_on(name: str) -> set[str]:
        return {urn.rsplit("::", 1)[-1] for urn in monitor.requests[name].dependencies}

    for node in ("worker-a", "mgr-b"):
        assert f"swarm-{node}-join" in depends_on(f"swarm-{node}-labels")
        assert {f"swarm-{node}-remove", "swarm-join-tokens"} <= depends_on(f"swarm-{node}-join")
        assert "swarm-apex-init" in depends_on(f"swarm-{node}-remove")
        for role in ("remove", "join", "labels"):
            assert monitor.requests[f"swarm-{node}-{role}"].deleteBeforeReplace


def test_commands_wait_for_the_callers_dependencies_and_the_servers(
    pulumi_mocks: tuple[CommandMocks, RecordingMonitor],
) -> None:
    _, monitor = pulumi_mocks
    mesh = Dependency("mesh")
    server = Dependency("mgr-b-server")
    build(mesh=mesh, server=server)
    for name, request in monitor.requests.items():
        if request.type == COMMAND:
            deps = {urn.rsplit("::", 1)[-1] for urn in request.dependencies}
            assert "mesh" in deps, name
    assert "mgr-b-server" in {
        urn.rsplit("::", 1)[-1] for urn in monitor.requests["swarm-mgr-b-join"].dependencies
    }


def test_outputs(pulumi_mocks: tuple[CommandMocks, RecordingMonitor]) -> None:
    swarm = build()
    assert resolve(swarm.manager_ip) == "10.210.0.1"
    assert resolve(swarm.docker_host) == "ssh://deploy@203.0.113.1"
    assert not is_secret(swarm.docker_host)


def test_a_second_run_registers_identical_inputs() -> None:
    """Stable inputs: the same topology yields byte-identical command inputs (so `up` twice is a no-op)."""
    import logging

    from infra.components.swarm import Swarm, SwarmArgs

    from .conftest import CommandMocks as Mocks
    from .conftest import RecordingMonitor as Monitor

    runs = []
    for _ in range(2):
        mocks = Mocks()
        monitor = Monitor(mocks)
        pulumi.runtime.set_mocks(
            mocks,
            project="spaced",
            stack="test",
            preview=False,
            monitor=monitor,
            logger=logging.getLogger("m"),
        )
        swarm = Swarm("swarm", SwarmArgs(make_hosts(), "-----BEGIN KEY-----"))
        settle(swarm)
        runs.append({name: json_format.MessageToJson(req.object) for name, req in monitor.requests.items()})
    assert runs[0] == runs[1]


def test_no_manager_is_a_clear_error(pulumi_mocks: tuple[CommandMocks, RecordingMonitor]) -> None:
    from infra.components.swarm import Swarm, SwarmArgs

    hosts = [Host("w", "aws", "eu", "203.0.113.9", "10.210.0.9", "deploy")]
    with pytest.raises(plan.SwarmPlanError, match="no node has manager: true"):
        Swarm("swarm", SwarmArgs(hosts, "key"))
