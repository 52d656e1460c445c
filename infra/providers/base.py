"""What every provider adapter shares: the provisioning context and small helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pulumi

from infra.host import Host
from infra.plans.firewall import FirewallRule

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


def build_host(node: Any, ctx: ProvisionContext, server: pulumi.ComponentResource,
               public_ipv4: pulumi.Input[str], public_ipv6: pulumi.Input[str] | None = None) -> Host:
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


def provision_server(server_type: type[pulumi.ComponentResource], node: Any, ctx: ProvisionContext) -> Host:
    """Pass one of every adapter: create the node's component, keep it for pass two, return its Host."""
    server = server_type(node.name, node, ctx)
    ctx.components[node.name] = server
    return server.host  # every adapter's component sets it with `build_host`


def protect_server(server_type: type[pulumi.ComponentResource], node: Any, rules: Sequence[FirewallRule],
                   ctx: ProvisionContext) -> list[pulumi.Resource]:
    """Pass two of every adapter: the firewall of the component pass one made for `node`."""
    server = ctx.components[node.name]
    assert isinstance(server, server_type)
    return server.add_firewall(rules)
