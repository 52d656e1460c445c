"""AWS Route 53 backend (pulumi_aws `route53.Record`, `route53.get_zone`).

Route 53 holds record *sets*: one resource per name and type, carrying every value. Adoption is
Route 53's documented `allow_overwrite`: creating a set that already exists UPSERTs it instead of
failing, so the existing set is taken over and its values replaced.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_aws as aws

from infra.dns import zone_rules
from infra.plans.dns import DnsRecord


def find_zone_id(zone: str, opts: pulumi.ResourceOptions | None = None) -> str:
    """The id of the public hosted zone named `zone` (it must already exist)."""
    found = aws.route53.get_zone(name=zone, private_zone=False, opts=zone_rules.invoke_options(opts))
    if not found.zone_id:
        raise ValueError(f"Route 53 has no public hosted zone named {zone!r}: create the hosted zone first")
    return found.zone_id


def create_records(
    zone: str,
    records: Sequence[DnsRecord],
    *,
    adopt_existing: bool,
    opts: pulumi.ResourceOptions | None = None,
) -> list[pulumi.Resource]:
    """One `aws.route53.Record` per (name, type) with all its values."""
    zone = zone_rules.checked_zone(zone, records)
    if not records:
        return []
    zone_id = find_zone_id(zone, opts)
    resources: list[pulumi.Resource] = []
    for members in zone_rules.group_rrsets(records).values():
        first = members[0]
        resources.append(
            aws.route53.Record(
                zone_rules.resource_name("route53", zone, first),
                zone_id=zone_id,
                name=zone_rules.fqdn(zone, first),
                type=first.type,
                ttl=first.ttl,
                records=[member.value for member in members],
                allow_overwrite=adopt_existing,
                opts=opts,
            )
        )
    return resources
