"""Provider adapters: one module per provider, each turning a topology node into a `Host`.

Every adapter module has the same two functions (the `Adapter` protocol of `infra.providers.base`):

- `provision(node, ctx) -> <Provider>Server`: one finished `ComponentResource` per node
  (`spaced:providers:<Type>`) holding the server, what it needs to boot and the firewall rules it
  can carry from its first boot (SSH from the admin ranges, web on edge nodes); its `host` is the
  node's `Host`.
- `protect(server, rules) -> <Provider>Firewall`: a second component per node
  (`spaced:providers:<Type>Firewall`) for the rules that need every other node's public address
  (WireGuard from the peers), created once every server exists. It reads the server component's
  public outputs; it never adds children to a finished component.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.host import Host
from infra.plans.firewall import peer_rules
from infra.providers import aws, digitalocean, existing, gcp, hetzner, ionos
from infra.providers.base import Adapter, ProvisionContext, host_cidr_output, node_labels
from infra.topology import NodeModel

__all__ = [
    "REGISTRY",
    "Adapter",
    "ProvisionContext",
    "adapter",
    "host_cidr_output",
    "node_labels",
    "provision_all",
]

REGISTRY: dict[str, Adapter] = {
    "aws": aws,
    "digitalocean": digitalocean,
    "existing": existing,
    "gcp": gcp,
    "hetzner": hetzner,
    "ionos": ionos,
}


def adapter(provider: str) -> Adapter:
    """The adapter module registered for `provider`; ValueError lists the valid names."""
    try:
        return REGISTRY[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}; valid: {', '.join(sorted(REGISTRY))}") from None


def provision_all(nodes: Sequence[NodeModel], ctx: ProvisionContext, mesh_port: int) -> list[Host]:
    """Every node's server, then every node's peer firewall (which needs all the servers' addresses).

    Returns the Hosts in node order; each Host's `resources` hold its server and firewall
    components, so later steps (mesh, swarm) wait for both.
    """
    servers = [adapter(node.provider).provision(node, ctx) for node in nodes]
    hosts = [server.host for server in servers]
    protected: list[Host] = []
    for node, server, host in zip(nodes, servers, hosts, strict=True):
        rules = peer_rules(host, hosts, mesh_port, to_cidr=host_cidr_output)
        firewall = adapter(node.provider).protect(server, rules)
        protected.append(host.with_resources(firewall))
    return protected
