"""`create_records` under Pulumi mocks: one dynamic resource per record, with the API key kept secret."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest
from google.protobuf import json_format
from pulumi.runtime.mocks import MockMonitor

from infra.dns.ionos_hosting import create_records
from infra.plans.dns import DnsRecord

from .ionos_hosting_env import ZONE

RECORD_TYPE = "pulumi-python:dynamic/spaced:IonosHostingRecord"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # pulumi.runtime.rpc's marker of a serialized secret
FAKE_URL = "http://127.0.0.1:9/dns"


class EchoMocks(pulumi.runtime.Mocks):
    """Resources echo their inputs as outputs; no calls are expected."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        raise AssertionError(f"unexpected call {args.token}")


class RecordingMonitor(MockMonitor):
    """Keeps the raw registration requests: they show what the engine would be told is secret."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Any] = []

    def RegisterResource(self, request: Any) -> Any:
        self.registrations.append(request)
        return super().RegisterResource(request)


@pytest.fixture
def monitor(api_key: str) -> Iterator[RecordingMonitor]:
    recording = RecordingMonitor(EchoMocks())
    pulumi.runtime.set_mocks(
        EchoMocks(),
        project="spaced",
        stack="test",
        preview=False,
        monitor=recording,
        logger=logging.getLogger("pulumi-mocks"),
    )
    pulumi.runtime.set_all_config(
        {"spaced:ionosHostingApiKey": api_key, "spaced:ionosHostingBaseUrl": FAKE_URL},
        secret_keys=["spaced:ionosHostingApiKey"],
    )
    yield recording
    pulumi.runtime.set_all_config({})


@pulumi.runtime.test
def test_create_records_registers_one_secret_keyed_resource_per_record(
    monitor: RecordingMonitor, api_key: str
):
    aws_address = pulumi.Output.from_input("203.0.113.20")  # addresses of new servers are Outputs
    records = [
        DnsRecord(ZONE, "@", "A", "203.0.113.10"),
        DnsRecord(ZONE, "aws", "A", aws_address, ttl=120),
        DnsRecord(ZONE, "@", "A", "203.0.113.11"),  # round robin: same name and type
    ]

    resources = create_records(ZONE, records, adopt_existing=True)

    assert len(resources) == 3

    async def check() -> None:
        for resource in resources:
            assert await resource.api_key.is_secret()
        ours = [r for r in monitor.registrations if r.type == RECORD_TYPE]
        assert len({r.name for r in ours}) == 3  # distinct logical names, also for the round-robin pair
        for request in ours:
            assert list(request.additionalSecretOutputs) == ["api_key"]
            inputs = json_format.MessageToDict(request.object)
            assert inputs["api_key"]["4dabf18193072939515e22adb298388d"] == SECRET_SIG
            assert inputs["api_key"]["value"] == api_key
            assert (inputs["zone"], inputs["base_url"], inputs["adopt_existing"]) == (ZONE, FAKE_URL, True)
        by_name = {
            json_format.MessageToDict(r.object)["record_name"]: json_format.MessageToDict(r.object)
            for r in ours
        }
        assert by_name["aws"]["content"] == "203.0.113.20" and by_name["aws"]["ttl"] == 120

    return pulumi.Output.from_input(None).apply(lambda _: check())


def test_records_of_another_zone_are_refused(monitor: RecordingMonitor):
    with pytest.raises(ValueError, match=r"belongs to zone 'elsewhere\.example'"):
        create_records(
            ZONE, [DnsRecord("elsewhere.example", "www", "A", "203.0.113.1")], adopt_existing=False
        )
