"""Fixtures of the item_socket end-to-end tests: a real server subprocess and real npm clients."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import Agent, ServerProcess

# Short unload grace so tests also exercise unloading and reloading documents; a short shutdown
# grace so a stuck drain cannot stall the suite.
SERVER_ARGS = ("--unload-grace", "1", "--shutdown-grace", "5", "--log-level", "INFO")

ServerFactory = Callable[..., ServerProcess]
AgentFactory = Callable[[], Agent]


def _report_server_logs(servers: list[ServerProcess]) -> None:
    # Printed at teardown: pytest shows it only for failing tests.
    for server in servers:
        print(f"\n===== item_socket :{server.port} stderr (tail) =====\n{server.stderr_text()}")


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the tests of a module that only need documents of their own."""
    base = tmp_path_factory.mktemp("item_socket")
    server = ServerProcess(base / "data", log_dir=base, extra_args=SERVER_ARGS)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(shared_server: ServerProcess) -> Iterator[ServerProcess]:
    """The module's shared server; its log tail is shown when the test fails."""
    assert shared_server.alive(), f"shared server died:\n{shared_server.stderr_text()}"
    yield shared_server
    _report_server_logs([shared_server])


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Make servers of the test's own (not started); every one is stopped at teardown."""
    servers: list[ServerProcess] = []

    def make(
        data_dir: Path | None = None, extra_args: tuple[str, ...] = (), **kwargs: object
    ) -> ServerProcess:
        server = ServerProcess(
            data_dir or tmp_path / "data",
            log_dir=tmp_path,
            extra_args=(*SERVER_ARGS, *extra_args),
            **kwargs,  # type: ignore[arg-type]
        )
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()
        _report_server_logs(servers)


@pytest.fixture
def agent_factory() -> Iterator[AgentFactory]:
    """Start client agents (Node processes); all are stopped at teardown."""
    started: list[Agent] = []

    def make() -> Agent:
        agent = Agent(f"agent{len(started)}")
        started.append(agent)
        return agent

    try:
        yield make
    finally:
        for agent in started:
            agent.close()
        for agent in started:
            if agent.stderr_text():
                print(f"\n===== {agent.name} stderr =====\n{agent.stderr_text()[-4000:]}")


@pytest.fixture
def agent(agent_factory: AgentFactory) -> Agent:
    """One client agent."""
    return agent_factory()


@pytest.fixture
def doc_name(request: pytest.FixtureRequest) -> str:
    """A document name no other test uses (the test's name plus a random suffix)."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
