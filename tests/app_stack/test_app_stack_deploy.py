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


def test_stale_secrets_keep_the_current_and_the_previous_of_each_key() -> None:
    current = {"jwt": "spaced_jwt_" + "c" * 12, "users": "spaced_users_" + "1" * 12}
    listed = [
        ("spaced_jwt_" + "a" * 12, "2026-01-01T00:00:00Z"),
        ("spaced_jwt_" + "b" * 12, "2026-02-01T00:00:00Z"),
        ("spaced_jwt_" + "c" * 12, "2026-03-01T00:00:00Z"),
        ("spaced_jwt_" + "d" * 12, "2025-12-01T00:00:00Z"),
        ("spaced_users_" + "1" * 12, "2026-01-01T00:00:00Z"),
        ("spaced_users_" + "0" * 12, "2025-01-01T00:00:00Z"),
        ("spaced_jwt_extra_" + "e" * 12, "2020-01-01T00:00:00Z"),  # another key: not this one's
    ]
    assert d.stale_secrets(listed, current) == ["spaced_jwt_" + "a" * 12, "spaced_jwt_" + "d" * 12]


@pytest.mark.docker
def test_a_deploy_prunes_secrets_older_than_the_previous(swarm_manager: DockerEngine) -> None:
    runner = docker_cli.DockerRunner()
    stack = f"spacedtest{uuid.uuid4().hex[:8]}"
    made: list[str] = []
    try:
        for _ in range(4):  # four rotations of one key, oldest first
            names = s.ensure_secrets(runner, stack, {"jwt": uuid.uuid4().hex.encode()}, lambda _: None)
            made.append(names["jwt"])
        d.prune_old_secrets(runner, stack, {"jwt": made[-1]})
        left = sorted(runner.run(c.secret_list_command(stack)).stdout.split())
        assert left == sorted(made[-2:]), left
    finally:
        subprocess.run(["docker", "secret", "rm", *made], capture_output=True, check=False, timeout=60)


BACKUP_SPEC = {
    "Name": "spaced_backup",
    "Mode": {"Replicated": {"Replicas": 1}},
    "TaskTemplate": {
        "ContainerSpec": {
            "Image": "spaced/postgres:abc@sha256:" + "0" * 64,
            "Args": ["spaced-backup", "schedule"],
            "Env": ["PGHOST=postgres", "BACKUP_DIR=/backups"],
            "Secrets": [
                {
                    "File": {"Name": "postgres_password", "UID": "0", "GID": "0", "Mode": 292},
                    "SecretID": "s1",
                    "SecretName": "spaced_postgres_password_0123456789ab",
                }
            ],
            "Mounts": [
                {"Type": "volume", "Source": "spaced_postgres_backups", "Target": "/backups"},
                {"Type": "volume", "Source": "spaced_backup_metrics", "Target": "/metrics"},
            ],
        },
        "Placement": {"Constraints": ["node.labels.data == true"]},
        "Networks": [{"Target": "net123", "Aliases": ["backup"]}],
    },
}


def test_a_backup_job_is_the_backup_service_running_another_command() -> None:
    cmd = c.job_from_service_command(
        BACKUP_SPEC, "spaced_backup_job_1", {"spaced.stack": "spaced"}, ["x", "y"]
    )
    assert cmd[:3] == ["docker", "service", "create"]
    assert cmd[cmd.index("--mode") + 1] == "replicated-job"
    assert cmd[cmd.index("--restart-condition") + 1] == "none"
    assert (
        cmd[cmd.index("--secret") + 1]
        == "source=spaced_postgres_password_0123456789ab,target=postgres_password,mode=0444"
    )
    mounts = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--mount"]
    assert mounts == [
        "type=volume,source=spaced_postgres_backups,target=/backups",
        "type=volume,source=spaced_backup_metrics,target=/metrics",
    ]
    assert cmd[cmd.index("--network") + 1] == "net123"
    assert cmd[cmd.index("--constraint") + 1] == "node.labels.data == true"
    assert [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--env"] == [
        "PGHOST=postgres",
        "BACKUP_DIR=/backups",
    ]
    # The image by its tag (a local image has no registry digest to pin), then the job's command.
    assert cmd[-3:] == ["spaced/postgres:abc", "x", "y"]


def test_the_result_line_is_read_from_a_jobs_output() -> None:
    from infra.app_stack.backups import parse_result

    output = (
        "2026-01-01T00:00:00Z spaced-backup: pg_dump ...\n"
        'SPACED_BACKUP_RESULT {"ok": true, "file": "spaced-1-manual.dump", "size": 2674, "documents": 25, '
        '"error": ""}\n'
    )
    assert parse_result(output) == {
        "ok": True,
        "file": "spaced-1-manual.dump",
        "size": 2674,
        "documents": 25,
        "error": "",
    }
    assert parse_result("nothing here\nSPACED_BACKUP_RESULT {broken\n") is None
