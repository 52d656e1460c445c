"""Fixtures of the item_socket fuzz tests: one live server, a target document, real npm guardians."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

_HARNESS_PATH = Path(__file__).resolve().parents[1] / "e2e" / "harness.py"


def load_harness() -> ModuleType:
    """Import tests/item_socket/e2e/harness.py by path (independent of how pytest names packages)."""
    name = "item_socket_e2e_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _HARNESS_PATH)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


harness = load_harness()

TARGET_DOC = "fuzz-target"
EXPECTED_TEXT = "fuzz target: this text must stay intact"
# A small limit so oversized inputs stay cheap; real deployments use the default.
MAX_MESSAGE_BYTES = 256 * 1024
FUZZ_SERVER_ARGS = (
    "--max-message-bytes",
    str(MAX_MESSAGE_BYTES),
    "--shutdown-grace",
    "5",
    "--log-level",
    "WARNING",
)


class FuzzTarget:
    """The live server under fuzzing, the document it must keep intact, and tallies of inputs."""

    def __init__(self, server: object, guardians: list[object]) -> None:
        self.server = server
        self.guardians = guardians
        self.inputs: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.checks = 0

    def check_guardians(self) -> None:
        """The real npm clients still exchange edits through the server."""
        self.checks += 1
        writer, reader = self.guardians
        writer.map_set("heartbeat", self.checks)
        reader.wait_state(
            lambda st: st["map"].get("heartbeat") == self.checks,
            10,
            "a real client's edit after the fuzz inputs",
        )
        assert reader.text() == EXPECTED_TEXT


@pytest.fixture(scope="package")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    base = tmp_path_factory.mktemp("fuzz")
    server = harness.ServerProcess(base / "data", log_dir=base, extra_args=FUZZ_SERVER_ARGS)
    server.start()
    agent = harness.Agent("fuzz-guardians")
    target: FuzzTarget | None = None
    try:
        writer = agent.open("guardian-ws", "ws", server, TARGET_DOC)
        reader = agent.open("guardian-sio", "sio", server, TARGET_DOC)
        writer.wait_synced()
        reader.wait_synced()
        writer.insert(0, EXPECTED_TEXT)
        reader.wait_text(EXPECTED_TEXT)
        target = FuzzTarget(server, [writer, reader])
        yield target
        target.check_guardians()
        assert server.alive(), f"server died:\n{server.stderr_text()}"
    finally:
        agent.close()
        server.stop()
        if target is not None:
            report = {
                "inputs": dict(target.inputs),
                "outcomes": dict(target.outcomes),
                "guardian_checks": target.checks,
                "total_inputs": sum(target.inputs.values()),
            }
            print(f"\n===== fuzz tally =====\n{json.dumps(report, indent=2)}")
            if os.environ.get("ITEM_SOCKET_FUZZ_REPORT"):
                Path(os.environ["ITEM_SOCKET_FUZZ_REPORT"]).write_text(json.dumps(report, indent=2))
        print(f"\n===== item_socket (fuzz) stderr tail =====\n{server.stderr_text(20000)}")
