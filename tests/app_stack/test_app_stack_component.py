"""The AppStack Pulumi component under set_mocks: one deploy command, redeployed when the stack changes."""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi
import pytest

from infra.app_stack.environments import settings_for_environment
from infra.app_stack.model import StackSettings


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def _deploy_commands(domain: str) -> tuple[list[pulumi.runtime.MockResourceArgs], str]:
    mocks = _Mocks()
    pulumi.runtime.set_mocks(mocks, preview=False)
    from infra.components.app_stack import AppStack, AppStackArgs  # after set_mocks, as Pulumi documents

    settings = settings_for_environment("prod", domain=domain, acme_email="ops@" + domain, env={})
    stack = AppStack("app", AppStackArgs(settings, docker_host="ssh://deploy@192.0.2.10"))
    loop = asyncio.get_event_loop()
    digest = loop.run_until_complete(stack.digest.future())
    # The command's id resolves once its registration has reached the mocks.
    loop.run_until_complete(stack.command.id.future())
    return [r for r in mocks.resources if r.typ == "command:local:Command"], digest


@pytest.fixture(autouse=True)
def _event_loop() -> Any:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    loop.close()
    # Other set_mocks tests run on the thread's current loop: never leave a closed one behind.
    asyncio.set_event_loop(asyncio.new_event_loop())


def test_component_runs_the_deploy_function_against_the_manager() -> None:
    commands, digest = _deploy_commands("example.org")
    assert len(commands) == 1
    inputs = commands[0].inputs
    assert inputs["create"].endswith("-m infra.cli deploy --settings -")
    assert inputs["update"] == inputs["create"]
    # The settings the program built travel on stdin: the command reads no stack file again.
    settings = StackSettings.from_json(inputs["stdin"])
    assert (settings.environment, settings.domain) == ("prod", "example.org")
    assert inputs["delete"].endswith("--remove")
    assert inputs["environment"]["DOCKER_HOST"] == "ssh://deploy@192.0.2.10"
    assert inputs["environment"]["SPACED_STACK_DIGEST"] == digest


def test_changing_the_stack_changes_the_command_inputs() -> None:
    _, first = _deploy_commands("example.org")
    _, second = _deploy_commands("example.net")
    assert first != second
