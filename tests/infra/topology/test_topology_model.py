"""Valid topologies: the stack files, name normalisation, credentials that are present."""

from __future__ import annotations

from infra.topology import AwsNode, ExistingNode, GcpNode, load_topology, required_credentials
from tests.infra.fixtures.topologies import ALL_CREDENTIALS, fixture, stack_topology


def test_prod_stack_is_the_seed_table() -> None:
    topology = load_topology(stack_topology("prod"), credentials=ALL_CREDENTIALS)
    assert topology.domain == "spaced.fun"
    existing = [node for node in topology.nodes if isinstance(node, ExistingNode)]
    assert [node.public_ipv4 for node in existing] == ["217.160.139.233", "87.106.217.140", "87.106.135.26"]
    assert {node.provider for node in topology.nodes} == {"existing", "aws", "gcp", "hetzner", "digitalocean"}
    [aws] = [node for node in topology.nodes if isinstance(node, AwsNode)]
    assert aws.region == "eu-central-1" and aws.static_ip
    [gcp] = [node for node in topology.nodes if isinstance(node, GcpNode)]
    assert not gcp.static_ip and gcp.dns == ()
    assert len(topology.managers) % 2 == 1
    assert [node.name for node in topology.edges] == ["ionos-apex"]
    assert topology.site_domain == "spaced.fun"


def test_dev_stack_has_one_node_per_cloud_provider_under_dev() -> None:
    topology = load_topology(stack_topology("dev"), credentials=ALL_CREDENTIALS)
    providers = [node.provider for node in topology.nodes]
    assert sorted(providers) == ["aws", "digitalocean", "gcp", "hetzner", "ionos"]
    for node in topology.nodes:
        for name in node.dns:
            assert topology.fqdn(name).endswith(".dev.spaced.fun") or topology.fqdn(name) == "dev.spaced.fun"
    assert topology.site_domain == "dev.spaced.fun"


def test_local_stack_has_no_nodes_and_needs_no_credentials() -> None:
    topology = load_topology(stack_topology("local"), credentials={})
    assert topology.is_local and topology.nodes == ()
    assert required_credentials(topology) == {}


def test_dns_names_are_normalised_to_zone_relative() -> None:
    raw = fixture("valid_minimal")
    raw["nodes"][0]["dns"] = ["@", "WWW.spaced.fun", "api.spaced.fun."]
    topology = load_topology(raw)
    assert topology.nodes[0].dns == ("@", "www", "api")


def test_credentials_from_the_environment_count() -> None:
    topology = load_topology(fixture("valid_minimal"), credentials={"hetzner": True, "ssh": True})
    assert required_credentials(topology) == {"hetzner": "nodes[0].provider", "ssh": "ssh"}


def test_gcp_zone_defaults_to_the_regions_first() -> None:
    raw = fixture("valid_minimal")
    raw["nodes"].append({"name": "gcp-1", "provider": "gcp", "region": "europe-west3"})
    topology = load_topology(raw)
    assert topology.node("gcp-1").effective_zone == "europe-west3-a"
