"""The policy rules over the resources the real program registers for the prod and dev stacks.

The program runs under the shared cloud mocks; a recording monitor keeps each registration (inputs,
additional_secret_outputs, property dependencies) so every rule sees what the Pulumi CLI would hand
the policy pack. The stacks as committed must pass every rule.
"""

from __future__ import annotations

import json
import runpy
from dataclasses import dataclass
from typing import Any

import pulumi
import pytest
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.settings import ROOT

from infra.policy import rules
from tests.infra.fixtures.pulumi_mocks import CloudMocks
from tests.infra.fixtures.topologies import REPO_ROOT, stack_topology

PROGRAM = str(REPO_ROOT / "infra" / "__main__.py")
TEST_CONFIG = {
    "spaced:sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-only\n"
    "-----END OPENSSH PRIVATE KEY-----\n",
    "hcloud:token": "test-token",
    "digitalocean:token": "test-token",
    "aws:accessKey": "AKIATEST",
    "gcp:project": "spaced-test",
    "ionoscloud:token": "test-token",
    "spaced:ionosHostingApiKey": "prefix.secret",
    "spaced:ionosHostingBaseUrl": "http://127.0.0.1:9/dns",  # never the real API from a test
}


@dataclass
class Registration:
    urn: str
    type: str
    inputs: dict[str, Any]
    additional_secret_outputs: list[str]
    property_dependencies: dict[str, tuple[str, ...]]
    dependencies: tuple[str, ...]


class RecordingMonitor(MockMonitor):
    """MockMonitor that also keeps what a policy pack would see of each registration."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.registrations: list[Registration] = []

    def RegisterResource(self, request: Any) -> Any:
        if request.type != "pulumi:pulumi:Stack":
            self.registrations.append(
                Registration(
                    urn=self.make_urn(request.parent, request.type, request.name),
                    type=request.type,
                    inputs=rpc.deserialize_properties(request.object),
                    additional_secret_outputs=list(request.additionalSecretOutputs),
                    property_dependencies={k: tuple(v.urns) for k, v in request.propertyDependencies.items()},
                    dependencies=tuple(request.dependencies),
                )
            )
        return super().RegisterResource(request)


def run_program(env: str) -> tuple[RecordingMonitor, dict[str, dict[str, Any]]]:
    """Run infra/__main__.py for a stack; returns the monitor and each resource's outputs by URN."""
    mocks = CloudMocks()
    monitor = RecordingMonitor(mocks)
    ROOT.set(None)
    config = {"spaced:topology": json.dumps(stack_topology(env)), **TEST_CONFIG}
    pulumi.runtime.set_all_config(config, ["spaced:sshPrivateKey", "spaced:ionosHostingApiKey"])
    pulumi.runtime.set_mocks(mocks, project="spaced", stack=env, preview=False, monitor=monitor)
    try:
        pulumi.runtime.test(lambda: runpy.run_path(PROGRAM, run_name="__main__"))()
    finally:
        pulumi.runtime.set_all_config({})
    outputs = {urn: dict(registration.state) for urn, registration in monitor.resources.items()}
    return monitor, outputs


@pytest.fixture(scope="module", params=["prod", "dev"])
def program(request: pytest.FixtureRequest) -> tuple[str, RecordingMonitor, dict[str, dict[str, Any]]]:
    monitor, outputs = run_program(request.param)
    return request.param, monitor, outputs


def test_the_program_registers_what_the_rules_cover(program):
    _, monitor, _ = program
    types = {r.type for r in monitor.registrations}
    assert types & set(rules.SERVER_TYPES), "no servers: the stack rule would have nothing to check"
    assert rules.IONOS_HOSTING_RECORD in types  # both stacks publish DNS with the ionos-hosting backend
    assert rules.REMOTE_COMMAND in types


def test_no_ssh_or_swarm_port_is_open_to_the_internet(program):
    _, monitor, _ = program
    found = {r.urn: rules.exposed_admin_ports(r.type, r.inputs) for r in monitor.registrations}
    assert {urn: m for urn, m in found.items() if m} == {}


def test_every_dns_record_is_inside_the_stacks_domain(program):
    env, monitor, _ = program
    zone = stack_topology(env)["domain"]
    checked = [r for r in monitor.registrations if r.type in rules.DNS_TYPES]
    assert checked
    found = {r.urn: rules.dns_record_outside_zone(r.type, r.inputs, zone) for r in checked}
    assert {urn: m for urn, m in found.items() if m} == {}
    # The same records checked against a zone they are not in are all reported.
    assert all(
        rules.dns_record_outside_zone(r.type, r.inputs, "elsewhere.example")
        for r in checked
        if r.type == rules.IONOS_HOSTING_RECORD
    )


def test_secrets_are_marked_secret(program):
    _, monitor, _ = program
    found = {
        r.urn: rules.unmarked_secrets(r.type, r.inputs, r.additional_secret_outputs)
        for r in monitor.registrations
    }
    assert {urn: m for urn, m in found.items() if m} == {}


def test_every_server_is_behind_a_firewall(program):
    _, monitor, outputs = program
    resources = [
        rules.StackResource(
            urn=r.urn,
            type=r.type,
            props=outputs.get(r.urn, r.inputs),
            dependencies=r.dependencies,
            property_dependencies=r.property_dependencies,
        )
        for r in monitor.registrations
    ]
    assert rules.servers_without_firewall(resources) == []
    # Without the firewalls, every server is reported.
    servers = [r for r in resources if r.type in rules.SERVER_TYPES]
    bare = [
        rules.StackResource(
            r.urn,
            r.type,
            {k: v for k, v in r.props.items() if k not in ("vpcSecurityGroupIds", "firewallIds", "nic")},
        )
        for r in servers
    ]
    assert {urn for urn, _ in rules.servers_without_firewall(bare)} == {r.urn for r in servers}
