"""DNS backends behind one interface.

Each backend module exposes `create_records(zone, records, *, adopt_existing, opts)` and returns
the Pulumi resources it registered. `BACKENDS` is the explicit registry the topology's
`dns.provider` names; "none" publishes nothing (records managed elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pulumi

from infra.dns import cloudflare, digitalocean, hetzner, ionos_cloud, ionos_hosting, route53, zone_rules
from infra.plans.dns import DnsRecord

CreateRecords = Callable[..., list[pulumi.Resource]]

BACKENDS: dict[str, CreateRecords] = {
    "cloudflare": cloudflare.create_records,
    "route53": route53.create_records,
    "digitalocean": digitalocean.create_records,
    "hetzner": hetzner.create_records,
    "ionos-cloud": ionos_cloud.create_records,
    "ionos-hosting": ionos_hosting.create_records,
}

NO_DNS = "none"


def create_records(
    provider: str,
    zone: str,
    records: Sequence[DnsRecord],
    *,
    adopt_existing: bool,
    opts: pulumi.ResourceOptions | None = None,
) -> list[pulumi.Resource]:
    """Publish `records` in `zone` with the backend named `provider`.

    Every record is checked to lie inside `zone` (relative name, same zone) before any backend
    runs. With `adopt_existing`, records that already exist at the provider are taken over instead
    of duplicated (how depends on the provider: see each backend's docstring).
    """
    if provider == NO_DNS:
        return []
    backend = BACKENDS.get(provider)
    if backend is None:
        valid = ", ".join([*BACKENDS, NO_DNS])
        raise ValueError(
            f"unknown DNS provider {provider!r}: set spaced:topology dns.provider to one of {valid}"
        )
    zone_rules.validate_records(zone, records)
    return backend(zone_rules.normalize_zone(zone), records, adopt_existing=adopt_existing, opts=opts)
