"""Suite-wide rules and the Docker engine fixtures.

- In CI (`CI` set, as `.ci/run` does), a skipped test fails the run unless its reason matches the
  allow-list below: a skip proves nothing, so it has to be one we chose.
- Tests create the engine state they need: `docker_engine` (an engine that answers, started here if
  none runs), `swarm_manager` (that engine as a single-node swarm manager) and `engine_outside_swarm`
  (an engine in no swarm; such tests run first). At the end of the session the engine is put back
  in the swarm state it had at the start (in a swarm or not), and a dockerd started here is stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import PostgresServer, RedisServer
from tests.support import DockerEngine, docker, docker_answers, swarm_info, wait_until

# Skips that may stay skips in CI. Keep it short; each entry says why it cannot run there.
ALLOWED_SKIPS_IN_CI: tuple[tuple[str, str], ...] = (
    # Network-namespace tests need root; CI runs as root, a developer's unprivileged run may not.
    (r"^network namespaces need root$", "netns tests outside root"),
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI, turn a skip whose reason is not on ALLOWED_SKIPS_IN_CI into a failure."""
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    longrepr = report.longrepr
    reason = (longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)).removeprefix("Skipped: ")
    if any(re.search(pattern, reason) for pattern, _ in ALLOWED_SKIPS_IN_CI):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in CI: {reason}\n"
        "A skip proves nothing: make the test create what it needs, or add its reason to "
        "ALLOWED_SKIPS_IN_CI in tests/conftest.py with a comment saying why."
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need an engine outside any swarm run first, before any fixture makes one."""
    items.sort(key=lambda item: "engine_outside_swarm" not in getattr(item, "fixturenames", ()))


def _swarm_state() -> str:
    return str(swarm_info()["LocalNodeState"])


def _leave_swarm() -> None:
    info = swarm_info()
    if info["LocalNodeState"] == "inactive":
        return
    if int(info.get("Nodes") or 0) > 1:
        pytest.fail(
            f"the engine belongs to a swarm of {info['Nodes']} nodes; the tests only leave a "
            "single-node swarm of their own machine"
        )
    docker("swarm", "leave", "--force", timeout=120)
    wait_until(lambda: _swarm_state() == "inactive", 60, "the engine to leave the swarm", interval=0.5)


def _init_swarm() -> None:
    if _swarm_state() == "active":
        return
    docker("swarm", "init", "--advertise-addr", "127.0.0.1", timeout=120)
    wait_until(
        lambda: swarm_info().get("ControlAvailable") is True,
        60,
        "the swarm manager to be ready",
        interval=0.5,
    )


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """An engine that answers: the running one, or a dockerd started here and stopped at the end.

    Restores the engine's swarm state (in a swarm or not) at the end of the session.
    """
    if shutil.which("docker") is None or shutil.which("dockerd") is None:
        pytest.fail("docker/dockerd are not installed: run scripts/install-deps.sh (installs docker.io)")
    started: subprocess.Popen[bytes] | None = None
    if not docker_answers():
        log_path: Path = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        with log_path.open("ab") as log:
            started = subprocess.Popen(["dockerd"], stdout=log, stderr=log, start_new_session=True)
        wait_until(docker_answers, 60, f"dockerd to answer (log: {log_path})", interval=0.5)
    engine = DockerEngine(was_in_swarm=_swarm_state() != "inactive")
    try:
        yield engine
    finally:
        try:
            if engine.was_in_swarm:
                _init_swarm()
            else:
                _leave_swarm()
        finally:
            if started is not None:
                started.terminate()
                try:
                    started.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    started.kill()
                    started.wait(timeout=10)


@pytest.fixture(scope="session")
def swarm_manager(docker_engine: DockerEngine) -> DockerEngine:
    """The engine as a single-node swarm manager, advertising on 127.0.0.1 (made one if it is not)."""
    _init_swarm()
    return docker_engine


@pytest.fixture
def engine_outside_swarm(docker_engine: DockerEngine) -> DockerEngine:
    """The engine in no swarm. Such tests are ordered first; a single-node swarm found is left."""
    _leave_swarm()
    return docker_engine


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server (AOF on, noeviction) for the session; tests use their own key names."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL cluster for the session; ``reset()`` gives a test an empty database."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
