"""DNS records derived from the topology: the prod stack publishes exactly the seed table's records."""

from __future__ import annotations

import pytest

from infra.plans.dns import DnsRecord
from infra.plans.records import plan_records
from infra.topology import load_topology
from tests.infra.fixtures.topologies import stack_topology
from tests.infra.plans.helpers import seed_hosts


@pytest.fixture(scope="module")
def prod():  # type: ignore[no-untyped-def]
    return load_topology(stack_topology("prod"))


def test_prod_records_are_the_seed_table(prod) -> None:  # type: ignore[no-untyped-def]
    records = plan_records(prod, seed_hosts(prod))
    assert {(r.fqdn, r.type, r.value) for r in records} == {
        ("spaced.fun", "A", "217.160.139.233"),
        ("ionos.spaced.fun", "A", "87.106.135.26"),
        ("aws.spaced.fun", "A", "3.121.116.160"),
        ("hetzner.spaced.fun", "A", "188.245.210.9"),
        ("do.spaced.fun", "A", "206.189.100.29"),
    }
    assert len(records) == 5  # nothing for the GCP node and the second IONOS node, no duplicates
    assert all(r.zone == "spaced.fun" and r.ttl == 300 for r in records)


def test_apex_is_the_at_name(prod) -> None:  # type: ignore[no-untyped-def]
    records = plan_records(prod, seed_hosts(prod))
    assert DnsRecord("spaced.fun", "@", "A", "217.160.139.233", 300) in records


def test_no_aaaa_unless_the_topology_serves_ipv6(prod) -> None:  # type: ignore[no-untyped-def]
    hosts = seed_hosts(prod, ipv6={"hetzner-1": "2a01:4f8:c012:1::1", "ionos-apex": "2001:db8::1"})
    assert prod.dns.ipv6 is False  # the default: an AAAA record the edge does not serve breaks IPv6 clients
    assert not [r for r in plan_records(prod, hosts) if r.type == "AAAA"]


def test_aaaa_only_where_the_host_has_ipv6(prod) -> None:  # type: ignore[no-untyped-def]
    prod = prod.model_copy(update={"dns": prod.dns.model_copy(update={"ipv6": True})})
    hosts = seed_hosts(prod, ipv6={"hetzner-1": "2a01:4f8:c012:1::1", "gcp-1": "2600:1900::1"})
    aaaa = [(r.fqdn, r.value) for r in plan_records(prod, hosts) if r.type == "AAAA"]
    # gcp-1 has IPv6 but no DNS name: still nothing for it.
    assert aaaa == [("hetzner.spaced.fun", "2a01:4f8:c012:1::1")]


def test_dev_records_live_under_dev(prod) -> None:  # type: ignore[no-untyped-def]
    dev = load_topology(stack_topology("dev"))
    hosts = {node.name: host for node, host in zip(dev.nodes, seed_hosts(prod).values(), strict=False)}
    fqdns = sorted(r.fqdn for r in plan_records(dev, hosts))
    assert fqdns == sorted(
        [
            "dev.spaced.fun",
            "hetzner.dev.spaced.fun",
            "aws.dev.spaced.fun",
            "gcp.dev.spaced.fun",
            "do.dev.spaced.fun",
            "ionos.dev.spaced.fun",
        ]
    )


def test_a_node_without_host_is_an_error(prod) -> None:  # type: ignore[no-untyped-def]
    hosts = seed_hosts(prod)
    del hosts["aws-1"]
    with pytest.raises(KeyError, match="no host for node 'aws-1'"):
        plan_records(prod, hosts)
