"""Provider adapters: one module per provider, each turning a topology node into a `Host`.

Every adapter module exposes the same two functions, called in two passes by the program:

- `provision(node, ctx) -> Host` (pass one): the server and what it needs to boot, inside one
  `ComponentResource` per node (`spaced:providers:<Type>`).
- `protect(node, host, rules, ctx) -> list[pulumi.Resource]` (pass two, once every server exists):
  the node's firewall from the pure rules of `infra.plans.firewall`, whose WireGuard sources are the
  other nodes' addresses (Outputs) and so cannot be known in pass one.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from infra.host import Host
from infra.plans.firewall import plan_firewall
from infra.providers import aws, digitalocean, existing, gcp, hetzner, ionos
from infra.providers.base import ProvisionContext, host_cidr_output, node_labels

__all__ = ["REGISTRY", "ProvisionContext", "adapter", "host_cidr_output", "node_labels", "provision_all"]

REGISTRY: dict[str, ModuleType] = {
    "aws": aws,
    "digitalocean": digitalocean,
    "existing": existing,
    "gcp": gcp,
    "hetzner": hetzner,
    "ionos": ionos,
}


def adapter(provider: str) -> ModuleType:
    """The adapter module registered for `provider`; ValueError lists the valid names."""
    try:
        return REGISTRY[provider]
    except KeyError:
        raise ValueError(f"unknown provider {provider!r}; valid: {', '.join(sorted(REGISTRY))}") from None


def provision_all(nodes: Sequence[Any], ctx: ProvisionContext, admin_ssh_cidrs: Sequence[str],
                  mesh_port: int) -> list[Host]:
    """Pass one creates every server; pass two their firewalls, which need every server's address."""
    hosts = [adapter(node.provider).provision(node, ctx) for node in nodes]
    for node, host in zip(nodes, hosts, strict=True):
        rules = plan_firewall(host, hosts, admin_ssh_cidrs, mesh_port, to_cidr=host_cidr_output)
        adapter(node.provider).protect(node, host, rules, ctx)
    return hosts
