"""Cloudflare DNS backend (pulumi_cloudflare v6: `DnsRecord`, `get_zone`, `get_dns_records`).

Since v6 (Terraform provider v5) a record's `name` must be the full name: the API answers with the
FQDN, and a relative name or "@" makes every later preview show a change.
Adoption: Cloudflare allows several records of one name and type, so creating would duplicate an
existing record; the backend looks the records up and imports them (`<zone_id>/<record_id>`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_cloudflare as cloudflare

from infra.dns import zone_rules
from infra.plans.dns import DnsRecord


def find_zone_id(zone: str, opts: pulumi.ResourceOptions | None = None) -> str:
    """The id of the Cloudflare zone named `zone` (it must already exist in the account)."""
    found = cloudflare.get_zone(filter={"name": zone, "match": "all"}, opts=zone_rules.invoke_options(opts))
    if not found.zone_id:
        raise ValueError(
            f"Cloudflare has no zone named {zone!r}: add the domain to the Cloudflare account first"
        )
    return found.zone_id


def existing_record_ids(
    zone_id: str, name: str, record_type: str, opts: pulumi.ResourceOptions | None = None
) -> list[str]:
    """Ids of the records already published under `name` (full name) and `record_type`."""
    found = cloudflare.get_dns_records(
        zone_id=zone_id, name={"exact": name}, type=record_type, opts=zone_rules.invoke_options(opts)
    )
    return [result.id for result in found.results or [] if result.id]


def create_records(
    zone: str,
    records: Sequence[DnsRecord],
    *,
    adopt_existing: bool,
    opts: pulumi.ResourceOptions | None = None,
) -> list[pulumi.Resource]:
    """One `cloudflare.DnsRecord` per record (not proxied: the edge terminates TLS itself)."""
    zone = zone_rules.checked_zone(zone, records)
    if not records:
        return []
    zone_id = find_zone_id(zone, opts)
    import_ids: list[str | None] | None = None
    if adopt_existing:
        import_ids = zone_rules.adoption_ids(
            "Cloudflare",
            zone,
            records,
            lambda record: existing_record_ids(zone_id, zone_rules.fqdn(zone, record), record.type, opts),
            lambda record_id: f"{zone_id}/{record_id}",
        )
    return [
        cloudflare.DnsRecord(
            logical_name,
            zone_id=zone_id,
            name=zone_rules.fqdn(zone, record),
            type=record.type,
            content=record.value,
            ttl=record.ttl,
            proxied=False,
            opts=record_opts,
        )
        for logical_name, record, record_opts in zone_rules.per_record_args(
            "cloudflare", zone, records, opts, import_ids
        )
    ]
