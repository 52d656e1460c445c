"""DigitalOcean DNS backend (pulumi_digitalocean `DnsRecord`, `get_domain`, `get_records`).

Names are relative to the domain, "@" for the apex. DigitalOcean allows several records of one
name and type, so adoption looks existing records up and imports them (`<domain>,<record_id>`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_digitalocean as digitalocean

from infra.dns import zone_rules
from infra.plans.dns import DnsRecord


def existing_record_ids(
    domain: str, name: str, record_type: str, opts: pulumi.ResourceOptions | None = None
) -> list[str]:
    """Ids of the records already published under relative `name` and `record_type`."""
    found = digitalocean.get_records(
        domain=domain,
        filters=[{"key": "name", "values": [name]}, {"key": "type", "values": [record_type]}],
        opts=zone_rules.invoke_options(opts),
    )
    return [str(record.id) for record in found.records or [] if record.id]


def create_records(
    zone: str,
    records: Sequence[DnsRecord],
    *,
    adopt_existing: bool,
    opts: pulumi.ResourceOptions | None = None,
) -> list[pulumi.Resource]:
    """One `digitalocean.DnsRecord` per record on the existing domain `zone`."""
    zone = zone_rules.checked_zone(zone, records)
    if not records:
        return []
    # Fails early, with the provider's message, when the domain is not in the account.
    domain = digitalocean.get_domain(name=zone, opts=zone_rules.invoke_options(opts)).name or zone
    import_ids: list[str | None] | None = None
    if adopt_existing:
        import_ids = zone_rules.adoption_ids(
            "DigitalOcean",
            zone,
            records,
            lambda record: existing_record_ids(domain, zone_rules.relative_name(record), record.type, opts),
            lambda record_id: f"{domain},{record_id}",
        )
    return [
        digitalocean.DnsRecord(
            logical_name,
            domain=domain,
            name=zone_rules.relative_name(record),
            type=record.type,
            value=record.value,
            ttl=record.ttl,
            opts=record_opts,
        )
        for logical_name, record, record_opts in zone_rules.per_record_args(
            "digitalocean", zone, records, opts, import_ids
        )
    ]
