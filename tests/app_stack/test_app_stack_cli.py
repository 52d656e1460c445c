"""The `spaced` CLI as a user runs it: a subprocess, its output and its one error format."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import yaml

from infra.app_stack.environments import settings_for_environment

REPO_ROOT = Path(__file__).resolve().parents[2]
NO_ENGINE = "unix:///nonexistent/spaced-test/docker.sock"


def spaced(*args: str, docker_host: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACED_")}
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )


def test_render_local_prints_the_compose_yaml() -> None:
    result = spaced("render", "local")
    assert result.returncode == 0, result.stderr
    compose = yaml.safe_load(result.stdout)
    assert compose["services"]["traefik"]["ports"][0]["published"] == 8080
    assert "cadvisor" in compose["services"]


def test_render_switches() -> None:
    compose = yaml.safe_load(spaced("render", "local", "--no-cadvisor", "--http-port", "8099").stdout)
    assert "cadvisor" not in compose["services"]
    assert compose["services"]["traefik"]["ports"][0]["published"] == 8099


def test_render_out_writes_configs(tmp_path: Path) -> None:
    result = spaced("render", "local", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "docker-stack.yml").is_file() and (tmp_path / "traefik/traefik.yml").is_file()


def test_no_engine_error_names_the_fix() -> None:
    for args in (("status",), ("up", "local"), ("down", "local")):
        result = spaced(*args, docker_host=NO_ENGINE)
        assert result.returncode == 1, args
        assert result.stderr.startswith("ERROR (DockerUnavailable): "), result.stderr
        assert "make services" in result.stderr and "Traceback" not in result.stderr


def test_debug_adds_the_traceback() -> None:
    result = spaced("--debug", "status", docker_host=NO_ENGINE)
    assert "Traceback" in result.stderr and "ERROR (DockerUnavailable)" in result.stderr


def test_up_cloud_points_to_pulumi() -> None:
    result = spaced("up", "prod")
    assert result.returncode == 1
    assert "ERROR (CloudEnvironment)" in result.stderr and "pulumi up --stack prod" in result.stderr


def test_bad_settings_are_one_error_line() -> None:
    result = spaced("render", "local", "--http-port", "70000")
    assert result.returncode == 1
    assert result.stderr.strip() == "ERROR (BadSettings): http_port: 70000 is not a TCP port (1-65535)"


def test_unknown_environment() -> None:
    result = spaced("render", "nowhere")
    assert (
        result.returncode == 1
        and "ERROR (BadSettings)" in result.stderr
        and "known environments" in result.stderr
    )


def test_deploy_reads_the_settings_the_pulumi_component_hands_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACED_")}
    env["DOCKER_HOST"] = NO_ENGINE
    run = functools.partial(
        subprocess.run,
        [sys.executable, "-m", "infra.cli", "deploy", "--settings", "-"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=60,
    )
    bad = run(input='{"environment": "prod"')
    assert bad.returncode == 1, bad.stderr
    assert bad.stderr.startswith("ERROR (BadSettings): stack settings JSON"), bad.stderr
    settings = settings_for_environment("prod", domain="example.org", acme_email="ops@example.org", env={})
    # Good settings get as far as the engine: the error is about the engine, not the settings.
    good = run(input=settings.to_json())
    assert good.returncode == 1 and good.stderr.startswith("ERROR (DockerUnavailable): "), good.stderr
    assert "Traceback" not in good.stderr


def test_deploy_without_environment_or_settings_is_one_error_line() -> None:
    result = spaced("deploy")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("ERROR (BadArguments): spaced deploy needs an environment")


def test_restore_without_yes_is_refused_before_anything_runs() -> None:
    # No engine at all: the refusal comes first, nothing is stopped or contacted.
    result = spaced("restore", "local", "spaced-20260101T000000Z-manual.dump", docker_host=NO_ENGINE)
    assert result.returncode == 1
    assert result.stderr.startswith("ERROR (ConfirmationNeeded): "), result.stderr
    assert "--yes" in result.stderr and "stops item_socket" in result.stderr


def test_restore_of_a_path_is_refused() -> None:
    result = spaced("restore", "local", "../../etc/passwd", "--yes", docker_host=NO_ENGINE)
    assert result.returncode == 1
    assert result.stderr.startswith("ERROR (BadArguments): backup '../../etc/passwd'"), result.stderr


def test_backup_and_restore_say_when_no_engine_answers() -> None:
    for args in (("backup", "local"), ("restore", "local", "x.dump", "--yes")):
        result = spaced(*args, docker_host=NO_ENGINE)
        assert result.returncode == 1, args
        assert result.stderr.startswith("ERROR (DockerUnavailable): "), result.stderr
