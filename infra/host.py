"""The one shape every provider adapter produces.

A provider turns a topology node into cloud resources and returns a `Host`. Everything after
provisioning (DNS records, firewall peers, the WireGuard mesh, the swarm bootstrap, stack outputs)
reads only `Host`s, never provider-specific resources.

In the Pulumi layer the address fields are `pulumi.Output[str]`; in pure plans and tests they are
plain strings. Plans therefore take plain values and the Pulumi layer calls them inside `.apply`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Host:
    """A server that is up (or adopted), reachable over SSH, ready for the mesh and the swarm."""

    name: str
    provider: str  # adapter that made it: hetzner, aws, gcp, digitalocean, ionos, existing
    region: str
    public_ipv4: Any  # str in plans, pulumi.Output[str] in the Pulumi layer
    mesh_ip: str  # static: allocated from the mesh range by the plan, known before anything exists
    ssh_user: str
    public_ipv6: Any | None = None
    manager: bool = False
    edge: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    # Resources a later step must wait for (the server, its firewall, its address): `depends_on` targets.
    resources: Sequence[Any] = field(default_factory=tuple)

    def with_resources(self, *more: Any) -> Host:
        """This host with `more` added to the resources later steps wait for."""
        return replace(self, resources=(*self.resources, *more))
