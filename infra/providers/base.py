"""What every provider adapter shares: the provisioning context, the adapter shape and small helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pulumi

from infra.host import Host
from infra.plans.firewall import FirewallRule
from infra.topology import NodeModel

T = TypeVar("T")


@dataclass
class ProvisionContext:
    """What every adapter needs besides the node, shared by all nodes of one stack.

    `admin_ssh_cidrs` feed the rules a server carries from its first boot (SSH, and web on edge
    nodes); `mesh_ips` maps node name -> its mesh address (allocated by the topology).
    """

    environment: str
    ssh_user: str
    ssh_public_key: str
    ssh_private_key: pulumi.Input[str] | None
    mesh_ips: Mapping[str, str]
    admin_ssh_cidrs: Sequence[str] = ()
    # aws.Provider keyword arguments carrying the stack's AWS credentials (see infra.config).
    aws_provider_settings: Mapping[str, pulumi.Input[Any]] = field(default_factory=dict)
    # Per-stack resources made once (a region's provider, the deploy key), by key.
    shared_resources: dict[str, Any] = field(default_factory=dict)

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        """Create a per-stack resource once (e.g. the deploy key registered with a provider)."""
        if key not in self.shared_resources:
            self.shared_resources[key] = factory()
        return self.shared_resources[key]


class Server(Protocol):
    """What `provision` returns: a finished component that carries the node's Host."""

    host: Host


class Adapter(Protocol):
    """One provider module: `provision` creates a node's server (with the rules it can have from its
    first boot); `protect`, called once every server exists, creates the node's firewall component
    for the rules that need the other nodes' addresses."""

    def provision(self, node: Any, ctx: ProvisionContext) -> Server: ...

    def protect(self, server: Any, rules: Sequence[FirewallRule]) -> pulumi.ComponentResource: ...


def host_cidr_output(address: pulumi.Input[str]) -> pulumi.Output[str]:
    """The /32 of an address that may still be an Output (the firewall sources of peer rules)."""
    return pulumi.Output.from_input(address).apply(lambda ip: f"{ip}/128" if ":" in ip else f"{ip}/32")


def node_labels(node: NodeModel) -> dict[str, str]:
    """Swarm node labels: the topology's own plus where the node runs."""
    return {"spaced.provider": node.provider, "spaced.region": node.region, **node.labels}


def build_host(
    node: NodeModel,
    ctx: ProvisionContext,
    server: pulumi.ComponentResource,
    public_ipv4: pulumi.Input[str],
    public_ipv6: pulumi.Input[str] | None = None,
) -> Host:
    """The Host of a provisioned node: its topology settings, the stack's SSH user and mesh address,
    and the node's component as what later steps wait for."""
    return Host(
        name=node.name,
        provider=node.provider,
        region=node.region,
        public_ipv4=public_ipv4,
        public_ipv6=public_ipv6,
        mesh_ip=ctx.mesh_ips[node.name],
        ssh_user=ctx.ssh_user,
        manager=node.manager,
        edge=node.edge,
        labels=node_labels(node),
        resources=(server,),
    )
