"""Hetzner DNS backend, through the Hetzner Cloud API (pulumi_hcloud >= 1.43: `ZoneRrset`).

Hetzner moved DNS from the separate DNS Console API into the Cloud API ("Zones"), and
pulumi_hcloud 1.43 covers it: `hcloud.Zone`, `hcloud.ZoneRrset` (one resource per name and type
holding all values; the one to use) and `hcloud.ZoneRecord` (single values, only for sets managed
elsewhere). So no dynamic provider is needed; `hcloud:token` authenticates it like the servers.
Names are relative, "@" for the apex. Adoption: an RRSet is identified by zone, name and type, so an
existing set is imported as `<zone>/<name>/<type>` (looked up first: importing a set that does not
exist would fail).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_hcloud as hcloud

from infra.dns import zone_rules
from infra.plans.dns import DnsRecord


def existing_rrsets(zone: str, opts: pulumi.ResourceOptions | None = None) -> set[tuple[str, str]]:
    """(name, type) of every RRSet already in the zone (the zone must exist)."""
    found = hcloud.get_zone_rrsets(zone=zone, opts=zone_rules.invoke_options(opts))
    return {(rrset.name, rrset.type) for rrset in found.rrsets or []}


def _rrset_value(record: DnsRecord) -> pulumi.Input[str]:
    # The Cloud API wants TXT contents as quoted strings.
    if record.type == "TXT" and isinstance(record.value, str) and not record.value.startswith('"'):
        return '"' + record.value.replace('"', '\\"') + '"'
    return record.value


def create_records(
    zone: str,
    records: Sequence[DnsRecord],
    *,
    adopt_existing: bool,
    opts: pulumi.ResourceOptions | None = None,
) -> list[pulumi.Resource]:
    """One `hcloud.ZoneRrset` per (name, type) in the existing zone `zone`."""
    zone = zone_rules.checked_zone(zone, records)
    if not records:
        return []
    existing = existing_rrsets(zone, opts) if adopt_existing else set()
    resources: list[pulumi.Resource] = []
    for (name, record_type), members in zone_rules.group_rrsets(records).items():
        import_id = f"{zone}/{name}/{record_type}" if (name, record_type) in existing else None
        resources.append(
            hcloud.ZoneRrset(
                zone_rules.resource_name("hetzner", zone, members[0]),
                zone=zone,
                name=name,
                type=record_type,
                ttl=members[0].ttl,
                records=[{"value": _rrset_value(member)} for member in members],
                opts=zone_rules.with_import(opts, import_id),
            )
        )
    return resources
