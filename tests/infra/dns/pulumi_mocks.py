"""Pulumi mocks that record every registration and every lookup, and helpers to wait for them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pulumi

LookupHandler = Callable[[dict[str, Any]], dict[str, Any]]


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers lookups from `lookups` (token -> handler) and records resources and calls."""

    def __init__(self) -> None:
        self.lookups: dict[str, LookupHandler] = {}
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.calls: list[pulumi.runtime.MockCallArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append(args)
        handler = self.lookups.get(args.token)
        if handler is None:
            raise AssertionError(f"unexpected lookup {args.token} {dict(args.args)}")
        return handler(dict(args.args))

    def of_type(self, token: str) -> list[pulumi.runtime.MockResourceArgs]:
        return [resource for resource in self.resources if resource.typ == token]

    def calls_to(self, token: str) -> list[dict[str, Any]]:
        return [dict(call.args) for call in self.calls if call.token == token]


def settle(resources: list[pulumi.Resource]) -> None:
    """Wait until every registration of `resources` reached the mocks."""
    ids = [resource.id for resource in resources if isinstance(resource, pulumi.CustomResource)]
    if ids:
        _resolve(pulumi.Output.all(*ids))


def _resolve(output: pulumi.Output) -> Any:
    # Outputs resolve on the runtime's event loop; run it until this one has a value.
    loop = asyncio.get_event_loop()
    return loop.run_until_complete(output.future())


def resolve(output: Any) -> Any:
    """The plain value of an Output (or the value itself)."""
    if isinstance(output, pulumi.Output):
        return _resolve(output)
    return output
