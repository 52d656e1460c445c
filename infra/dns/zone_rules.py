"""Checks and naming shared by every DNS backend (pure, no Pulumi resources).

Every backend calls `validate_records` first, so a record that would land outside the zone, an
absolute or malformed name, or an unsupported type fails before anything is registered, with a
message naming the record and how to fix it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

import pulumi

from infra.plans.dns import DnsRecord

SUPPORTED_TYPES = ("A", "AAAA", "CNAME", "TXT")
APEX = "@"

# One DNS label: letters, digits, hyphens (not at the ends); underscores for service labels
# (_acme-challenge); "*" only as a whole leftmost label.
_LABEL = re.compile(r"^(?:\*|_?[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?)$")


class DnsRecordError(ValueError):
    """A DNS record that no backend may publish (outside the zone, bad name, type, value or TTL)."""


def normalize_zone(zone: str) -> str:
    """The zone in the form every backend compares against: lower case, no trailing dot."""
    normalized = zone.strip().rstrip(".").lower()
    labels = normalized.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) and label != "*" for label in labels):
        raise DnsRecordError(
            f"DNS zone {zone!r} is not a domain name: set spaced:topology domain to a name "
            f"such as 'example.com'"
        )
    return normalized


def _describe(record: DnsRecord) -> str:
    return f"DNS record (zone={record.zone!r}, name={record.name!r}, type={record.type!r})"


def validate_record(zone: str, record: DnsRecord) -> None:
    """Raise `DnsRecordError` unless `record` is a well-formed record strictly inside `zone`."""
    zone = normalize_zone(zone)
    what = _describe(record)
    if normalize_zone(record.zone) != zone:
        raise DnsRecordError(
            f"{what} belongs to zone {record.zone!r}, not to {zone!r}: every record must stay inside "
            f"the managed zone; give it zone={zone!r} or manage {record.zone!r} separately"
        )
    name = record.name
    if name != APEX:
        if name != name.strip() or not name:
            raise DnsRecordError(f"{what}: the name is empty or padded; use '@' for the zone apex")
        if name.endswith("."):
            raise DnsRecordError(
                f"{what}: the name is absolute (ends with '.'); names are relative to the zone, "
                f"e.g. 'www' for www.{zone}"
            )
        lowered = name.lower()
        if lowered == zone or lowered.endswith("." + zone):
            raise DnsRecordError(
                f"{what}: the name already ends with the zone, which would publish "
                f"{lowered}.{zone}; give it relative to the zone ('@' for the apex)"
            )
        labels = lowered.split(".")
        for position, label in enumerate(labels):
            if not _LABEL.match(label) or (label == "*" and position != 0):
                raise DnsRecordError(
                    f"{what}: {label!r} is not a valid DNS label (letters, digits, inner hyphens; "
                    f"'*' only as the leftmost label)"
                )
        if len(f"{lowered}.{zone}") > 253:
            raise DnsRecordError(f"{what}: the full name is longer than 253 characters")
    if record.type not in SUPPORTED_TYPES:
        raise DnsRecordError(f"{what}: type must be one of {', '.join(SUPPORTED_TYPES)}")
    if isinstance(record.ttl, bool) or not isinstance(record.ttl, int) or not 60 <= record.ttl <= 86400:
        raise DnsRecordError(f"{what}: ttl {record.ttl!r} must be an integer number of seconds in 60..86400")
    _validate_value(what, record)


def _validate_value(what: str, record: DnsRecord) -> None:
    # Outputs (addresses of servers not created yet) are checked by the provider at apply time.
    if not isinstance(record.value, str):
        if isinstance(record.value, pulumi.Output):
            return
        raise DnsRecordError(f"{what}: value must be a string or a pulumi.Output, got {type(record.value)}")
    if record.type in ("A", "AAAA"):
        family = ipaddress.IPv4Address if record.type == "A" else ipaddress.IPv6Address
        try:
            family(record.value)
        except ValueError:
            raise DnsRecordError(
                f"{what}: value {record.value!r} is not an IPv{4 if record.type == 'A' else 6} address"
            ) from None
    elif not record.value:
        raise DnsRecordError(f"{what}: value is empty")


def validate_records(zone: str, records: Sequence[DnsRecord]) -> list[DnsRecord]:
    """Validate every record (see `validate_record`) and reject exact duplicates by name, type and value."""
    seen: set[tuple[str, str, str]] = set()
    for record in records:
        validate_record(zone, record)
        if isinstance(record.value, str):
            key = (record.name.lower(), record.type, record.value)
            if key in seen:
                raise DnsRecordError(f"{_describe(record)} with value {record.value!r} is listed twice")
            seen.add(key)
    return list(records)


def checked_zone(zone: str, records: Sequence[DnsRecord]) -> str:
    """Every backend's first step: the normalized zone, once all `records` pass `validate_records`."""
    zone = normalize_zone(zone)
    validate_records(zone, records)
    return zone


def fqdn(zone: str, record: DnsRecord) -> str:
    """The absolute name without the trailing dot: `www.example.com`, or `example.com` for the apex."""
    zone = normalize_zone(zone)
    return zone if record.name == APEX else f"{record.name.lower()}.{zone}"


def relative_name(record: DnsRecord, apex: str = APEX) -> str:
    """The name relative to the zone, with the apex spelled the way a provider wants it."""
    return apex if record.name == APEX else record.name.lower()


def group_rrsets(records: Sequence[DnsRecord]) -> dict[tuple[str, str], list[DnsRecord]]:
    """Records by (name, type): providers that model record *sets* (Route 53, Hetzner) need one
    resource per set, and all of a set's records must agree on the TTL."""
    groups: dict[tuple[str, str], list[DnsRecord]] = {}
    for record in records:
        groups.setdefault((relative_name(record), record.type), []).append(record)
    for (name, rtype), members in groups.items():
        ttls = {member.ttl for member in members}
        if len(ttls) > 1:
            raise DnsRecordError(
                f"DNS records {name!r} {rtype} have different TTLs {sorted(ttls)}: a record set has one TTL"
            )
    return groups


def resource_name(prefix: str, zone: str, record: DnsRecord, index: int = 0) -> str:
    """A stable Pulumi logical name: the provider, the full name, the type, and a position when one
    name and type carry several values (round-robin)."""
    suffix = "" if index == 0 else f"-{index + 1}"
    return f"{prefix}-{fqdn(zone, record)}-{record.type.lower()}{suffix}"


def numbered(records: Sequence[DnsRecord]) -> list[tuple[int, DnsRecord]]:
    """Each record with its position among the records of the same name and type."""
    counters: dict[tuple[str, str], int] = {}
    result: list[tuple[int, DnsRecord]] = []
    for record in records:
        key = (relative_name(record), record.type)
        result.append((counters.get(key, 0), record))
        counters[key] = counters.get(key, 0) + 1
    return result


def per_record_args(
    prefix: str,
    zone: str,
    records: Sequence[DnsRecord],
    opts: pulumi.ResourceOptions | None,
    import_ids: Sequence[str | None] | None = None,
) -> list[tuple[str, DnsRecord, pulumi.ResourceOptions]]:
    """For backends with one resource per record: each record with its logical name (`resource_name`)
    and its options, which import `import_ids[i]` where adoption found one (see `adoption_ids`)."""
    if import_ids is None:
        import_ids = [None] * len(records)
    return [
        (resource_name(prefix, zone, record, index), record, with_import(opts, import_id))
        for (index, record), import_id in zip(numbered(records), import_ids, strict=True)
    ]


def invoke_options(opts: pulumi.ResourceOptions | None) -> pulumi.InvokeOptions | None:
    """Lookups run with the same explicit provider (and parent) as the resources they feed."""
    if opts is None:
        return None
    return pulumi.InvokeOptions(parent=opts.parent, provider=opts.provider)


def with_import(opts: pulumi.ResourceOptions | None, import_id: str | None) -> pulumi.ResourceOptions:
    """`opts` plus `import_=import_id` when an existing record was found to adopt."""
    extra = pulumi.ResourceOptions(import_=import_id) if import_id else pulumi.ResourceOptions()
    return pulumi.ResourceOptions.merge(opts, extra)


def adoption_ids(
    provider_label: str,
    zone: str,
    records: Sequence[DnsRecord],
    existing_ids: Callable[[DnsRecord], list[str]],
    make_import_id: Callable[[str], str],
) -> list[str | None]:
    """For providers that allow several records per name and type: the import id each record adopts.

    `existing_ids(record)` lists the provider ids already published for the record's name and type
    (called once per name and type). The n-th wanted record of a name and type adopts the n-th
    existing one; wanted records beyond those are created (None). Existing records beyond the wanted
    ones are left alone, with a warning, since removing records nobody declared is not ours to do.
    """
    found: dict[tuple[str, str], list[str]] = {}
    wanted: dict[tuple[str, str], int] = {}
    result: list[str | None] = []
    for index, record in numbered(records):
        key = (relative_name(record), record.type)
        if key not in found:
            found[key] = existing_ids(record)
        wanted[key] = index + 1
        result.append(make_import_id(found[key][index]) if index < len(found[key]) else None)
    for (name, record_type), ids in found.items():
        if len(ids) > wanted[(name, record_type)]:
            pulumi.log.warn(
                f"{provider_label} already has {len(ids)} {record_type} records for {name!r} in {zone} but "
                f"the topology declares {wanted[(name, record_type)]}; the others stay as they are: "
                f"delete them by hand if they are stale"
            )
    return result
