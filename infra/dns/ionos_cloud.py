"""IONOS Cloud DNS backend (pulumi_ionoscloud `dns.Zone`, `dns.Record`, `dns.get_zone`, `dns.get_record`).

This is IONOS *Cloud* DNS (the DCD / cloud API, `ionoscloud:token`), not the DNS of domains bought
at IONOS hosting (that is `ionos_hosting`). Record names are relative and the apex is the empty
name. The zone is managed here too: a new zone is created; with adoption an existing zone of that
name is imported and kept on `pulumi destroy` (`retain_on_delete`), since it was not ours.
Adoption of records: the record with the same name and type is looked up and imported
(`<zone_id>/<record_id>`).
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_ionoscloud as ionoscloud

from infra.dns import zone_rules
from infra.plans.dns import DnsRecord

IONOS_CLOUD_APEX = ""


def find_zone_id(zone: str, opts: pulumi.ResourceOptions | None = None) -> str | None:
    """The id of the IONOS Cloud DNS zone named `zone`, or None when there is none."""
    try:
        found = ionoscloud.dns.get_zone(name=zone, opts=zone_rules.invoke_options(opts))
    except Exception as error:  # the data source raises on "not found"; nothing to adopt then
        pulumi.log.info(f"IONOS Cloud DNS: no existing zone {zone!r} to adopt ({error}); creating it")
        return None
    return found.id or None


def existing_record_ids(
    zone_id: str, name: str, record_type: str, opts: pulumi.ResourceOptions | None = None
) -> list[str]:
    """Ids of the records named `name` (relative) with type `record_type` in the zone."""
    try:
        found = ionoscloud.dns.get_record(zone_id=zone_id, name=name, opts=zone_rules.invoke_options(opts))
    except Exception as error:  # raises on "not found" and on several matches of the name
        pulumi.log.info(f"IONOS Cloud DNS: no single record {name!r} to adopt ({error}); creating it")
        return []
    if found.id and found.type == record_type and found.name == name:
        return [found.id]
    return []


def create_records(
    zone: str,
    records: Sequence[DnsRecord],
    *,
    adopt_existing: bool,
    opts: pulumi.ResourceOptions | None = None,
) -> list[pulumi.Resource]:
    """The `ionoscloud.dns.Zone` and one `ionoscloud.dns.Record` per record."""
    zone = zone_rules.checked_zone(zone, records)
    if not records:
        return []
    existing_zone_id = find_zone_id(zone, opts) if adopt_existing else None
    zone_options = (
        pulumi.ResourceOptions(import_=existing_zone_id, retain_on_delete=True)
        if (existing_zone_id)
        else pulumi.ResourceOptions()
    )
    dns_zone = ionoscloud.dns.Zone(
        f"ionos-cloud-{zone}",
        name=zone,
        enabled=True,
        opts=pulumi.ResourceOptions.merge(opts, zone_options),
    )
    import_ids: list[str | None] | None = None
    if existing_zone_id:
        import_ids = zone_rules.adoption_ids(
            "IONOS Cloud DNS",
            zone,
            records,
            lambda record: existing_record_ids(
                existing_zone_id, zone_rules.relative_name(record, IONOS_CLOUD_APEX), record.type, opts
            ),
            lambda record_id: f"{existing_zone_id}/{record_id}",
        )
    records_created: list[pulumi.Resource] = [
        ionoscloud.dns.Record(
            logical_name,
            zone_id=dns_zone.id,
            name=zone_rules.relative_name(record, IONOS_CLOUD_APEX),
            type=record.type,
            content=record.value,
            ttl=record.ttl,
            enabled=True,
            opts=record_opts,
        )
        for logical_name, record, record_opts in zone_rules.per_record_args(
            "ionos-cloud", zone, records, opts, import_ids
        )
    ]
    return [dns_zone, *records_created]
