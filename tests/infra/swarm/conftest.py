"""Pulumi mocks for the Swarm component: fake command outputs, every registration request kept."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest
from pulumi.runtime.mocks import MockMonitor

WORKER_TOKEN = "SWMTKN-1-" + "w" * 50 + "-" + "x" * 25
MANAGER_TOKEN = "SWMTKN-1-" + "w" * 50 + "-" + "m" * 25


def fake_node_id(resource_name: str) -> str:
    """A 25-character swarm node id derived from the command's name (stable across runs)."""
    letters = "".join(ch for ch in resource_name.lower() if ch.isalnum())
    return (letters + "0" * 25)[:25]


class CommandMocks(pulumi.runtime.Mocks):
    """Remote commands "run" here: init and join print a node id, join-tokens prints the tokens."""

    def __init__(self) -> None:
        self.resources: dict[str, pulumi.runtime.MockResourceArgs] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources[args.name] = args
        state = dict(args.inputs)
        if args.typ == "command:remote:Command":
            if args.name.endswith("-join-tokens"):
                state["stdout"] = json.dumps({"worker": WORKER_TOKEN, "manager": MANAGER_TOKEN}) + "\n"
            elif args.name.endswith(("-init", "-join")):
                state["stdout"] = fake_node_id(args.name) + "\n"
            else:
                state["stdout"] = ""
            state["stderr"] = ""
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        raise AssertionError(f"the swarm makes no lookups, got {args.token}")


class RecordingMonitor(MockMonitor):
    """Keeps each RegisterResource request: options such as additionalSecretOutputs, dependencies
    and deleteBeforeReplace never reach `Mocks.new_resource`."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[str, Any] = {}

    def RegisterResource(self, request: Any) -> Any:
        self.requests[request.name] = request
        return super().RegisterResource(request)


@pytest.fixture
def pulumi_mocks() -> Iterator[tuple[CommandMocks, RecordingMonitor]]:
    mocks = CommandMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(
        mocks,
        project="spaced",
        stack="test",
        preview=False,
        monitor=monitor,
        logger=logging.getLogger("mocks"),
    )
    yield mocks, monitor


def resolve(output: Any) -> Any:
    """The plain value of an Output, waiting on the runtime's event loop."""
    if not isinstance(output, pulumi.Output):
        return output
    return asyncio.get_event_loop().run_until_complete(output.future())


def is_secret(output: pulumi.Output) -> bool:
    return asyncio.get_event_loop().run_until_complete(output.is_secret())
