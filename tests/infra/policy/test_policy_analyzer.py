"""The policy pack as the Pulumi CLI runs it: `__main__.py` in a process, over the Analyzer gRPC API.

There is no Pulumi CLI here; this drives the same protocol the CLI uses (start the pack, read its
port from stdout, call GetAnalyzerInfo / Analyze / AnalyzeStack), with the stack config handed over
in PULUMI_CONFIG as the CLI does.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from infra.policy import pack, rules

PACK_DIR = Path(__file__).resolve().parents[3] / "infra" / "policy"
STARTUP_DEADLINE_S = 120.0
RPC_TIMEOUT_S = 30.0


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    env = {
        **os.environ,
        "PULUMI_CONFIG": json.dumps({"spaced:topology": json.dumps({"domain": "spaced.fun"})}),
    }
    process = subprocess.Popen(
        [sys.executable, str(PACK_DIR / "__main__.py")],
        cwd=PACK_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + STARTUP_DEADLINE_S
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or process.poll() is not None:
                raise AssertionError(f"policy pack did not report its port: {process.stderr.read1(4096)!r}")
            if selector.select(timeout=remaining):
                line += process.stdout.read1(64)
        port = int(line.strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT_S)
            yield analyzer_pb2_grpc.AnalyzerStub(channel)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def analyze(
    stub: analyzer_pb2_grpc.AnalyzerStub, type_: str, props: dict[str, Any], aso: tuple[str, ...] = ()
):
    request = analyzer_pb2.AnalyzeRequest(
        type=type_,
        properties=_struct(props),
        urn=f"urn:pulumi:prod::spaced::{type_}::r",
        name="r",
        options=analyzer_pb2.AnalyzerResourceOptions(additionalSecretOutputs=list(aso)),
    )
    return stub.Analyze(request, timeout=RPC_TIMEOUT_S).diagnostics


def test_pack_describes_its_mandatory_policies(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=RPC_TIMEOUT_S)
    assert info.name == pack.PACK_NAME
    assert {p.name for p in info.policies} == {
        pack.NO_OPEN_ADMIN_PORTS,
        pack.SERVERS_BEHIND_FIREWALL,
        pack.DNS_IN_ZONE,
        pack.SECRETS_MARKED,
    }
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}


def test_open_swarm_port_is_a_mandatory_violation(analyzer):
    props = {"inboundRules": [{"protocol": "tcp", "portRange": "2377", "sourceAddresses": ["0.0.0.0/0"]}]}
    [diagnostic] = analyze(analyzer, rules.DO_FIREWALL, props)
    assert diagnostic.policyName == pack.NO_OPEN_ADMIN_PORTS
    assert diagnostic.enforcementLevel == analyzer_pb2.MANDATORY
    assert "2377 (Swarm management)" in diagnostic.message


def test_dns_zone_from_the_stack_config_and_unmarked_key(analyzer):
    props = {"zone": "other.example", "record_name": "www", "api_key": "p.s", "type": "A"}
    diagnostics = analyze(analyzer, rules.IONOS_HOSTING_RECORD, props)
    assert {d.policyName for d in diagnostics} == {pack.DNS_IN_ZONE, pack.SECRETS_MARKED}

    props["zone"] = "spaced.fun"
    assert list(analyze(analyzer, rules.IONOS_HOSTING_RECORD, props, aso=("api_key",))) == []


def test_stack_analysis_names_the_unprotected_server(analyzer):
    def resource(
        type_: str, name: str, props: dict[str, Any], **deps: list[str]
    ) -> analyzer_pb2.AnalyzerResource:
        return analyzer_pb2.AnalyzerResource(
            type=type_,
            name=name,
            urn=f"urn:pulumi:prod::spaced::{type_}::{name}",
            properties=_struct(props),
            dependencies=[u for urns in deps.values() for u in urns],
            propertyDependencies={
                k: analyzer_pb2.AnalyzerPropertyDependencies(urns=v) for k, v in deps.items()
            },
        )

    protected = resource(rules.HCLOUD_SERVER, "hetzner-1", {"name": "hetzner-1"})
    naked = resource(rules.HCLOUD_SERVER, "hetzner-2", {"name": "hetzner-2"})
    attachment = resource(
        rules.HCLOUD_FIREWALL_ATTACHMENT, "fw", {"firewallId": 1, "serverIds": [1]}, serverIds=[protected.urn]
    )
    request = analyzer_pb2.AnalyzeStackRequest(resources=[protected, naked, attachment])

    diagnostics = analyzer.AnalyzeStack(request, timeout=RPC_TIMEOUT_S).diagnostics

    assert [(d.policyName, d.urn) for d in diagnostics] == [(pack.SERVERS_BEHIND_FIREWALL, naked.urn)]
