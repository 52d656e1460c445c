"""What every provider adapter shares: the provisioning context and small helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pulumi

T = TypeVar("T")


@dataclass
class ProvisionContext:
    """What every adapter needs besides the node, shared by all nodes of one stack."""

    environment: str
    ssh_user: str
    ssh_public_key: str
    ssh_private_key: pulumi.Input[str] | None
    mesh_ips: Mapping[str, str]
    # Node name -> its ComponentResource, so pass two can parent the firewall under it.
    components: dict[str, pulumi.ComponentResource] = field(default_factory=dict)
    _shared: dict[str, Any] = field(default_factory=dict)

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        """Create a per-stack resource once (e.g. the deploy key registered with a provider)."""
        if key not in self._shared:
            self._shared[key] = factory()
        return self._shared[key]


def host_cidr_output(address: pulumi.Input[str]) -> pulumi.Output[str]:
    """The /32 of an address that may still be an Output (firewall sources of pass two)."""
    return pulumi.Output.from_input(address).apply(lambda ip: f"{ip}/128" if ":" in ip else f"{ip}/32")


def node_labels(node: Any) -> dict[str, str]:
    """Swarm node labels: the topology's own plus where the node runs."""
    return {"spaced.provider": node.provider, "spaced.region": node.region, **node.labels}
