"""Thin pulumi_policy wiring around the plain rule functions of `infra.policy.rules`.

`build_policies()` returns the policy objects; `__main__.py` hands them to `PolicyPack` (which starts
the analyzer server and never returns), so tests can build and call the policies without serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from infra.policy import rules

PACK_NAME = "spaced-guardrails"
NO_OPEN_ADMIN_PORTS = "no-open-ssh-or-swarm-ports"
SERVERS_BEHIND_FIREWALL = "servers-behind-firewall"
DNS_IN_ZONE = "dns-records-in-zone"
SECRETS_MARKED = "secrets-marked-secret"


def configured_zone(policy_config: Mapping[str, Any] | None) -> str | None:
    """The zone to enforce: the policy config's `zone`, else the stack's spaced:topology `domain`.

    The Pulumi CLI hands the stack's configuration to policy packs (pulumi_policy loads it into the
    runtime config), so `--policy-pack-config` is only needed to override it.
    """
    zone = (policy_config or {}).get("zone")
    if zone:
        return str(zone)
    try:
        topology = pulumi.Config("spaced").get_object("topology")
    except Exception:  # a malformed stack config is the program's error to report, not the policy's
        return None
    if isinstance(topology, Mapping) and topology.get("domain"):
        return str(topology["domain"])
    return None


def _validate_admin_ports(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    for message in rules.exposed_admin_ports(args.resource_type, args.props):
        report_violation(message, None)


def _validate_dns(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    if args.resource_type not in rules.DNS_TYPES:
        return
    zone = configured_zone(args.get_config())
    if not zone:
        report_violation(
            f"no zone to check against: set spaced:topology domain in the stack or pass "
            f'--policy-pack-config with {{"{DNS_IN_ZONE}": {{"zone": "example.com"}}}}',
            None,
        )
        return
    for message in rules.dns_record_outside_zone(args.resource_type, args.props, zone):
        report_violation(message, None)


def _validate_secrets(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
    aso = list(args.opts.additional_secret_outputs or []) if args.opts is not None else []
    for message in rules.unmarked_secrets(args.resource_type, args.props, aso):
        report_violation(message, None)


def _validate_servers(args: StackValidationArgs, report_violation: ReportViolation) -> None:
    resources = [
        rules.StackResource(
            urn=r.urn,
            type=r.resource_type,
            props=r.props,
            dependencies=tuple(d.urn for d in r.dependencies),
            property_dependencies={k: tuple(d.urn for d in v) for k, v in r.property_dependencies.items()},
        )
        for r in args.resources
    ]
    for urn, message in rules.servers_without_firewall(resources):
        report_violation(message, urn)


def build_policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    """The pack's policies, all mandatory."""
    mandatory = EnforcementLevel.MANDATORY
    return [
        ResourceValidationPolicy(
            name=NO_OPEN_ADMIN_PORTS,
            description="SSH (22) and Swarm ports (2377, 7946, 4789) are never open to 0.0.0.0/0 or ::/0.",
            validate=_validate_admin_ports,
            enforcement_level=mandatory,
        ),
        StackValidationPolicy(
            name=SERVERS_BEHIND_FIREWALL,
            description="Every server is covered by a firewall or security group of the stack.",
            validate=_validate_servers,
            enforcement_level=mandatory,
        ),
        ResourceValidationPolicy(
            name=DNS_IN_ZONE,
            description="Every DNS record lies inside the managed zone.",
            validate=_validate_dns,
            enforcement_level=mandatory,
            config_schema=PolicyConfigSchema(
                properties={
                    "zone": {"type": "string", "description": "the managed DNS zone, e.g. spaced.fun"}
                }
            ),
        ),
        ResourceValidationPolicy(
            name=SECRETS_MARKED,
            description="Values carrying join tokens or keys are listed in additional_secret_outputs.",
            validate=_validate_secrets,
            enforcement_level=mandatory,
        ),
    ]
