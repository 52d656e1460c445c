"""One test per bad-topology message: each fixture in tests/infra/fixtures/topologies is one mistake."""

from __future__ import annotations

import pytest

from infra.topology import PROVIDERS, REGIONS, TopologyError, load_topology
from tests.infra.fixtures.topologies import ALL_CREDENTIALS, fixture


def problems_of(name: str, credentials: dict[str, bool] | None = None) -> list[str]:
    with pytest.raises(TopologyError) as caught:
        load_topology(fixture(name), credentials=credentials)
    # The message carries every problem too, one per line.
    for problem in caught.value.problems:
        assert problem in str(caught.value)
    return caught.value.problems


def test_unknown_provider_lists_the_valid_ones() -> None:
    assert problems_of("unknown_provider") == [
        "nodes[1].provider: unknown provider 'linode'; valid: " + ", ".join(sorted(PROVIDERS))
    ]


def test_unknown_aws_region_lists_the_valid_ones() -> None:
    [problem] = problems_of("unknown_region")
    assert problem.startswith("nodes[1].region: unknown AWS region 'eu-centrl-1'; valid: ")
    assert "eu-central-1" in problem and "us-east-1" in problem


def test_unknown_hetzner_region_names_the_provider() -> None:
    [problem] = problems_of("unknown_region_hetzner")
    assert problem == "nodes[0].region: unknown Hetzner region 'falkenstein'; valid: " + ", ".join(
        sorted(REGIONS["hetzner"])
    )


def test_gcp_zone_outside_its_region() -> None:
    assert problems_of("gcp_zone_outside_region") == [
        "nodes[1].zone: zone 'europe-west1-b' is not in region 'europe-west3'; use e.g. europe-west3-a"
    ]


def test_duplicate_node_names_point_at_both_nodes() -> None:
    assert problems_of("duplicate_node_names") == [
        "nodes[0].name: duplicate node name 'node-1'",
        "nodes[1].name: duplicate node name 'node-1'",
    ]


def test_duplicate_dns_names_even_when_spelled_fully_qualified() -> None:
    assert problems_of("duplicate_dns_names") == [
        "nodes[1].dns[0]: duplicate DNS name 'www.spaced.fun' (also nodes[0].dns[1])"
    ]


def test_dns_name_outside_the_zone() -> None:
    [problem] = problems_of("dns_outside_zone")
    assert problem.startswith("nodes[1].dns[0]: 'aws.example.com.' is outside the zone 'spaced.fun'")


def test_no_manager() -> None:
    assert problems_of("no_manager") == ["nodes: no manager; set `manager: true` on 1, 3 or 5 nodes"]


def test_even_number_of_managers() -> None:
    [problem] = problems_of("even_managers")
    assert problem.startswith("nodes: 2 managers is an even number")


def test_no_edge_node() -> None:
    [problem] = problems_of("no_edge")
    assert problem.startswith("nodes: no edge node; set `edge: true`")


def test_edge_node_that_is_not_a_manager() -> None:
    [problem] = problems_of("edge_not_manager")
    assert problem.startswith("nodes: no edge node is a manager;")


def test_missing_credential_names_the_key_and_how_to_set_it() -> None:
    credentials = {**ALL_CREDENTIALS, "digitalocean": False}
    [problem] = problems_of("missing_credential", credentials)
    assert problem.startswith("nodes[1].provider: missing credential for 'digitalocean'")
    assert "pulumi config set --secret digitalocean:token" in problem
    assert "DIGITALOCEAN_TOKEN" in problem


def test_missing_ssh_key_is_a_missing_credential() -> None:
    [problem] = problems_of("valid_minimal", {**ALL_CREDENTIALS, "ssh": False})
    assert problem.startswith("ssh: missing credential for 'ssh'")
    assert "spaced:sshPrivateKey" in problem


def test_missing_dns_credential() -> None:
    raw = fixture("valid_minimal") | {"dns": {"provider": "cloudflare"}}
    with pytest.raises(TopologyError) as caught:
        load_topology(raw, credentials={**ALL_CREDENTIALS, "dns:cloudflare": False})
    [problem] = caught.value.problems
    assert problem.startswith("dns.provider: missing credential for 'dns:cloudflare'")
    assert "cloudflare:apiToken" in problem


def test_bad_admin_cidrs_host_bits_and_garbage() -> None:
    [problem] = problems_of("bad_admin_cidr")
    assert problem.startswith("admin_ssh_cidrs: ")
    assert "'198.51.100.7/24' has host bits set; did you mean 198.51.100.0/24?" in problem
    assert "[1] 'office-network' is not a CIDR range" in problem


def test_mesh_range_must_be_private() -> None:
    [problem] = problems_of("bad_mesh_cidr")
    assert problem.startswith("mesh.cidr: '8.8.8.0/24' must be a private IPv4 range")


def test_mesh_range_too_small() -> None:
    assert problems_of("mesh_too_small") == [
        "mesh.cidr: 10.210.0.0/30 has room for 2 node(s) but the topology has 3; use a /29 or larger"
    ]


def test_unknown_field_is_a_typo_not_a_default() -> None:
    problems = problems_of("unknown_field")
    assert "nodes[0].regoin: unknown field; remove it or check its spelling" in problems
    assert "nodes[0].region: required field is missing" in problems


def test_unknown_dns_provider() -> None:
    [problem] = problems_of("unknown_dns_provider")
    assert problem.startswith("dns.provider: unknown DNS provider 'godaddy'; valid: cloudflare")


def test_local_environment_has_no_nodes() -> None:
    [problem] = problems_of("local_with_nodes")
    assert problem.startswith("nodes: the local environment runs on the local Docker engine")


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of("many_problems")
    expected_prefixes = [
        "admin_ssh_cidrs: ",
        "nodes[0].region: unknown AWS region 'eu-centrl-1'",
        "nodes[2].provider: unknown provider 'vultr'",
        "nodes[1].dns[0]: 'other.org.' is outside the zone",
        "nodes[0].name: duplicate node name 'node-1'",
        "nodes[1].name: duplicate node name 'node-1'",
    ]
    for prefix in expected_prefixes:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)


def test_not_a_mapping() -> None:
    with pytest.raises(TopologyError, match="spaced:topology: expected a mapping"):
        load_topology(["nodes"])  # type: ignore[arg-type]
