"""DNS records derived from the topology (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DnsRecord:
    """One record to publish. `name` is relative to the zone: "@" is the apex."""

    zone: str
    name: str
    type: str  # "A" or "AAAA"
    value: Any  # str in plans, pulumi.Output[str] in the Pulumi layer
    ttl: int = 300

    @property
    def fqdn(self) -> str:
        return self.zone if self.name == "@" else f"{self.name}.{self.zone}"
