"""The DNS records a topology publishes, derived from its nodes and their hosts (pure)."""

from __future__ import annotations

from collections.abc import Mapping

from infra.host import Host
from infra.plans.dns import DnsRecord
from infra.topology import Topology


def plan_records(topology: Topology, hosts: Mapping[str, Host]) -> list[DnsRecord]:
    """One A record per DNS name of a node, plus an AAAA record where its host has IPv6 and the
    topology publishes IPv6 (`dns.ipv6`, off by default).

    `hosts` maps node names to hosts; a node with DNS names but no host is a programming error.
    Nodes without DNS names (e.g. the GCP node with an ephemeral address) publish nothing.
    """
    if topology.domain is None:
        return []
    records: list[DnsRecord] = []
    for node in topology.nodes:
        if not node.dns:
            continue
        host = hosts.get(node.name)
        if host is None:
            raise KeyError(f"no host for node {node.name!r}; provision every node before planning records")
        for name in node.dns:
            records.append(DnsRecord(topology.domain, name, "A", host.public_ipv4, topology.dns.ttl))
            if topology.dns.ipv6 and host.public_ipv6 is not None:
                records.append(DnsRecord(topology.domain, name, "AAAA", host.public_ipv6, topology.dns.ttl))
    return records
