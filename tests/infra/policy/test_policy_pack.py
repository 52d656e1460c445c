"""The pulumi_policy wiring: policies built by `build_policies`, called the way the analyzer calls them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy import pack, rules

ZONE = "spaced.fun"


def options(additional_secret_outputs: list[str] | None = None) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=additional_secret_outputs or [],
    )


def policy(name: str) -> Any:
    [found] = [p for p in pack.build_policies() if p.name == name]
    return found


def run_resource_policy(
    name: str,
    type_: str,
    props: dict[str, Any],
    *,
    config: dict[str, Any] | None = None,
    aso: list[str] | None = None,
) -> list[str]:
    messages: list[str] = []
    args = ResourceValidationArgs(
        type_, props, f"urn:pulumi:test::spaced::{type_}::r", "r", options(aso), None, config
    )
    policy(name).validate(args, lambda message, urn=None: messages.append(message))
    return messages


@pytest.fixture
def no_stack_config() -> Iterator[None]:
    pulumi.runtime.set_all_config({})
    yield
    pulumi.runtime.set_all_config({})


def test_every_policy_is_mandatory_and_of_the_right_kind():
    policies = {p.name: p for p in pack.build_policies()}
    assert set(policies) == {
        pack.NO_OPEN_ADMIN_PORTS,
        pack.SERVERS_BEHIND_FIREWALL,
        pack.DNS_IN_ZONE,
        pack.SECRETS_MARKED,
    }
    assert all(p.enforcement_level is EnforcementLevel.MANDATORY for p in policies.values())
    assert isinstance(policies[pack.SERVERS_BEHIND_FIREWALL], StackValidationPolicy)
    assert all(
        isinstance(p, ResourceValidationPolicy)
        for n, p in policies.items()
        if n != pack.SERVERS_BEHIND_FIREWALL
    )


def test_open_ssh_is_reported_through_the_policy():
    props = {"rules": [{"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": ["0.0.0.0/0"]}]}
    [message] = run_resource_policy(pack.NO_OPEN_ADMIN_PORTS, rules.HCLOUD_FIREWALL, props)
    assert "22 (SSH)" in message
    props["rules"][0]["sourceIps"] = ["198.51.100.0/24"]
    assert run_resource_policy(pack.NO_OPEN_ADMIN_PORTS, rules.HCLOUD_FIREWALL, props) == []


def test_dns_zone_comes_from_the_policy_config(no_stack_config):
    props = {"zone": "other.example", "record_name": "www"}
    assert run_resource_policy(pack.DNS_IN_ZONE, rules.IONOS_HOSTING_RECORD, props, config={"zone": ZONE})
    assert (
        run_resource_policy(
            pack.DNS_IN_ZONE, rules.IONOS_HOSTING_RECORD, props, config={"zone": "other.example"}
        )
        == []
    )


def test_dns_zone_falls_back_to_the_stacks_topology_domain():
    pulumi.runtime.set_all_config({"spaced:topology": json.dumps({"domain": ZONE, "environment": "prod"})})
    try:
        assert pack.configured_zone(None) == ZONE
        bad = {"domain": "other.example", "name": "www"}
        assert run_resource_policy(pack.DNS_IN_ZONE, rules.DO_DNS_RECORD, bad)
        assert (
            run_resource_policy(pack.DNS_IN_ZONE, rules.DO_DNS_RECORD, {"domain": ZONE, "name": "www"}) == []
        )
    finally:
        pulumi.runtime.set_all_config({})


def test_dns_without_any_zone_says_how_to_configure_it(no_stack_config):
    [message] = run_resource_policy(pack.DNS_IN_ZONE, rules.CLOUDFLARE_DNS_RECORD, {"name": f"www.{ZONE}"})
    assert "--policy-pack-config" in message and "spaced:topology domain" in message
    # Resources that are not DNS records need no zone at all.
    assert run_resource_policy(pack.DNS_IN_ZONE, rules.HCLOUD_SERVER, {"name": "x"}) == []


def test_secret_policy_reads_additional_secret_outputs_from_the_options():
    props = {"zone": ZONE, "api_key": "prefix.secret"}
    assert run_resource_policy(pack.SECRETS_MARKED, rules.IONOS_HOSTING_RECORD, props)
    assert run_resource_policy(pack.SECRETS_MARKED, rules.IONOS_HOSTING_RECORD, props, aso=["api_key"]) == []


def test_stack_policy_reports_the_unprotected_server_by_urn():
    def resource(type_: str, name: str, props: dict[str, Any]) -> PolicyResource:
        return PolicyResource(
            type_, props, f"urn:pulumi:prod::spaced::{type_}::{name}", name, options(), None, None, [], {}
        )

    droplet = resource(rules.DO_DROPLET, "do-1", {"tags": []})
    covered = resource(rules.DO_DROPLET, "do-2", {"tags": []})
    fw = resource(rules.DO_FIREWALL, "do-fw", {"dropletIds": [2]})
    fw.dependencies.append(covered)
    fw.property_dependencies["dropletIds"] = [covered]

    reported: list[tuple[str, str | None]] = []
    policy(pack.SERVERS_BEHIND_FIREWALL).validate(
        StackValidationArgs([droplet, covered, fw]), lambda message, urn=None: reported.append((message, urn))
    )

    assert [urn for _, urn in reported] == [droplet.urn]
    assert "do-1" in reported[0][0]
