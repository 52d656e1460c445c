"""Deploy: the command builders, the parsers of docker's output, secrets and tokens."""

from __future__ import annotations

import json
import stat
import subprocess
import uuid
from pathlib import Path

import bcrypt
import pytest

from infra import docker_cli
from infra.app_stack import commands as c
from infra.app_stack import deploy as d
from infra.app_stack import errors, model, rollout
from infra.app_stack import stack_secrets as s
from infra.app_stack.local import check_local_ports, mint_token
from infra.app_stack.model import StackSettings
from infra.app_stack.services.item_socket import JWT_SECRET
from infra.app_stack.services.traefik import DASHBOARD_USERS
from item_socket.auth import Access, Authorizer, Unauthorized
from tests.support import DockerEngine


def test_stack_deploy_command_prunes_and_detaches() -> None:
    cmd = c.stack_deploy_command("spaced", Path("/b/docker-stack.yml"))
    assert cmd[:3] == ["docker", "stack", "deploy"]
    assert "--prune" in cmd and "--detach=true" in cmd
    assert cmd[cmd.index("-c") + 1] == "/b/docker-stack.yml" and cmd[-1] == "spaced"
    assert "--detach=true" not in c.stack_deploy_command("spaced", Path("f"), detach_flag=False)


def test_secret_create_reads_stdin_never_argv() -> None:
    cmd = c.secret_create_command("spaced", "spaced_x_0123456789ab")
    assert cmd[-1] == "-" and "spaced.stack=spaced" in cmd


def test_rollback_and_logs_commands() -> None:
    assert c.service_rollback_command("spaced_item_socket") == [
        "docker",
        "service",
        "rollback",
        "--detach",
        "spaced_item_socket",
    ]
    logs = c.service_logs_command("spaced_item_socket")
    assert logs[logs.index("--tail") + 1] == "50" and logs[-1] == "spaced_item_socket"


def test_docker_environment_sets_docker_host_only_when_given() -> None:
    assert (
        docker_cli.docker_environment("ssh://deploy@192.0.2.1", base={})["DOCKER_HOST"]
        == "ssh://deploy@192.0.2.1"
    )
    assert "DOCKER_HOST" not in docker_cli.docker_environment(None, base={})


def test_local_swarm_commands() -> None:
    assert c.swarm_init_command() == ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"]
    assert c.node_label_command("n1", {"edge": "true", "acme": "true"}) == [
        "docker",
        "node",
        "update",
        "--label-add",
        "acme=true",
        "--label-add",
        "edge=true",
        "n1",
    ]


def test_parse_service_list_counts_replicas() -> None:
    output = "\n".join(
        json.dumps(row)
        for row in [
            {"Name": "spaced_nginx", "Mode": "replicated", "Replicas": "1/1", "Image": "n"},
            {"Name": "spaced_item_socket", "Mode": "replicated", "Replicas": "0/1", "Image": "i"},
            {"Name": "spaced_node_exporter", "Mode": "global", "Replicas": "1/1", "Image": "e"},
            {"Name": "spaced_x", "Mode": "replicated", "Replicas": "2/2 (max 1 per node)", "Image": "x"},
        ]
    )
    states = {s.name: s for s in rollout.parse_service_list(output)}
    assert states["spaced_nginx"].converged and states["spaced_x"].converged
    assert not states["spaced_item_socket"].converged
    assert (states["spaced_x"].running, states["spaced_x"].desired) == (2, 2)


def test_parse_failed_tasks() -> None:
    rows = [
        {"ID": "a", "CurrentState": "Running 5 seconds ago", "DesiredState": "Running", "Error": ""},
        {
            "ID": "b",
            "CurrentState": "Failed 9 seconds ago",
            "DesiredState": "Shutdown",
            "Error": "task: non-zero exit (1)",
        },
        {"ID": "c", "CurrentState": "Rejected 1 second ago", "DesiredState": "Shutdown", "Error": ""},
    ]
    failures = rollout.parse_failed_tasks("\n".join(json.dumps(r) for r in rows))
    assert [(f.task_id, f.error) for f in failures] == [
        ("b", "task: non-zero exit (1)"),
        ("c", "Rejected 1 second ago"),
    ]


def test_secrets_are_generated_once_private_and_hash_named(tmp_path: Path) -> None:
    specs = [
        model.SecretSpec(key=JWT_SECRET, description=""),
        model.SecretSpec(key=DASHBOARD_USERS, description=""),
    ]
    env = {"SPACED_DASHBOARD_PASSWORD": "correct horse"}
    first = s.local_secret_contents(specs, tmp_path, env)
    again = s.local_secret_contents(specs, tmp_path, env)
    assert first == again, "a second deploy must reuse the secrets, not rotate them"
    for key in (JWT_SECRET, DASHBOARD_USERS, s.DASHBOARD_PASSWORD_FILE):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600
    user, hashed = first[DASHBOARD_USERS].decode().strip().split(":", 1)
    assert user == "admin" and bcrypt.checkpw(b"correct horse", hashed.encode())
    names = s.secret_docker_names("spaced", first)
    (tmp_path / JWT_SECRET).write_bytes(b"rotated")
    rotated = s.secret_docker_names("spaced", s.local_secret_contents(specs, tmp_path, env))
    assert names[JWT_SECRET] != rotated[JWT_SECRET]
    assert names[DASHBOARD_USERS] == rotated[DASHBOARD_USERS]


def test_minted_token_is_accepted_by_item_socket(tmp_path: Path) -> None:
    specs = [model.SecretSpec(key=JWT_SECRET, description="")]
    s.local_secret_contents(specs, tmp_path, {})
    secret_file = tmp_path / JWT_SECRET
    token = mint_token(secret_file.read_bytes(), {"board*": "write"}, 3600, now=__import__("time").time())
    authorizer = Authorizer.from_file(secret_file)
    assert authorizer.access(token, "board") is Access.WRITE
    with pytest.raises(Unauthorized):
        authorizer.access(token, "other")


def test_port_taken_by_another_program_is_reported(local_settings: StackSettings) -> None:
    import dataclasses
    import socket

    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = dataclasses.replace(local_settings, http_port=port)
        with pytest.raises(errors.PortInUseError, match=rf"port {port} .*--http-port"):
            check_local_ports(settings, ours=set())
        check_local_ports(settings, ours={port, 9090})  # held by our own stack: a redeploy


def test_unreachable_engine_says_start_dockerd() -> None:
    runner = docker_cli.DockerRunner(docker_host="unix:///nonexistent/docker.sock")
    with pytest.raises(docker_cli.DockerUnavailableError, match=r"make services"):
        d.ensure_swarm_manager(runner)


@pytest.mark.docker
def test_ensure_secrets_creates_each_secret_once(swarm_manager: DockerEngine) -> None:
    runner = docker_cli.DockerRunner()
    stack = f"spacedtest{uuid.uuid4().hex[:8]}"
    contents = {"jwt": uuid.uuid4().hex.encode()}
    messages: list[str] = []
    try:
        names = s.ensure_secrets(runner, stack, contents, messages.append)
        s.ensure_secrets(runner, stack, contents, messages.append)
        listed = runner.run(c.secret_list_command(stack)).stdout.split()
        assert listed == [names["jwt"]]
        assert len(messages) == 1, "the second call must find the secret and create nothing"
    finally:
        subprocess.run(
            ["docker", "secret", "rm", *runner.run(c.secret_list_command(stack)).stdout.split()],
            capture_output=True,
            check=False,
        )
