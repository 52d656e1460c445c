"""Plain hosts for plan tests: the prod topology with the seed table's addresses."""

from __future__ import annotations

from infra.host import Host
from infra.topology import Topology

# The addresses of the seed architecture table (docs: seed/architecture.md, "Topology").
SEED_ADDRESSES = {
    "ionos-apex": "217.160.139.233",
    "ionos-2": "87.106.217.140",
    "ionos-3": "87.106.135.26",
    "aws-1": "3.121.116.160",
    "gcp-1": "34.141.195.208",
    "hetzner-1": "188.245.210.9",
    "do-1": "206.189.100.29",
}


def seed_hosts(topology: Topology, ipv6: dict[str, str] | None = None) -> dict[str, Host]:
    """One Host per node of the prod topology, at the seed table's address."""
    ipv6 = ipv6 or {}
    return {
        node.name: Host(
            name=node.name,
            provider=node.provider,
            region=node.region,
            public_ipv4=SEED_ADDRESSES[node.name],
            public_ipv6=ipv6.get(node.name),
            mesh_ip=f"10.210.0.{index + 1}",
            ssh_user="deploy",
            manager=node.manager,
            edge=node.edge,
        )
        for index, node in enumerate(topology.nodes)
    }
