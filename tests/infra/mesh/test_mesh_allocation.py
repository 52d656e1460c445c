"""Mesh address allocation: inside the range, unique, stable, pins honoured; bad ranges and pins are
refused once, by the topology model, with the path of the field."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.topology import TopologyError, allocate_mesh_addresses, load_topology
from tests.infra.fixtures.topologies import fixture

PROD_NODES = ["ionos-apex", "aws-1", "gcp-1", "hetzner-1", "do-1", "ionos-cloud-1"]
CIDR = "10.210.0.0/24"

node_names = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), unique=True, max_size=40)


@given(names=node_names, prefix=st.sampled_from([24, 25, 26]))
def test_every_node_gets_a_unique_usable_address_in_the_range(names: list[str], prefix: int) -> None:
    cidr = f"10.210.0.0/{prefix}"
    network = ipaddress.ip_network(cidr)
    if len(names) > network.num_addresses - 2:
        return  # refused by load_topology (mesh.cidr: ... has room for ...), see below
    addresses = allocate_mesh_addresses(names, cidr)
    assert list(addresses) == names
    assert len(set(addresses.values())) == len(names)
    for address in map(ipaddress.ip_address, addresses.values()):
        assert address in network
        assert address not in (network.network_address, network.broadcast_address)


def test_allocation_is_deterministic_and_independent_of_node_order() -> None:
    first = allocate_mesh_addresses(PROD_NODES, CIDR)
    again = allocate_mesh_addresses(list(reversed(PROD_NODES)), CIDR)
    assert first == again


def test_adding_or_removing_a_node_leaves_the_other_addresses_alone() -> None:
    before = allocate_mesh_addresses(PROD_NODES, CIDR)
    grown = allocate_mesh_addresses([*PROD_NODES, "scaleway-1"], CIDR)
    shrunk = allocate_mesh_addresses([n for n in PROD_NODES if n != "gcp-1"], CIDR)
    assert {n: grown[n] for n in PROD_NODES} == before
    assert shrunk == {n: a for n, a in before.items() if n != "gcp-1"}


def test_a_full_range_is_filled_exactly() -> None:
    addresses = allocate_mesh_addresses(["a", "b", "c", "d", "e", "f"], "10.9.0.0/29")
    assert sorted(addresses.values(), key=ipaddress.ip_address) == [f"10.9.0.{i}" for i in range(1, 7)]


def test_pinned_addresses_are_honoured_and_never_handed_to_others() -> None:
    free = allocate_mesh_addresses(PROD_NODES, CIDR)
    # Pin aws-1 onto the address gcp-1 would get by hash: gcp-1 must move, aws-1 must keep the pin.
    pinned = allocate_mesh_addresses(PROD_NODES, CIDR, pinned={"aws-1": free["gcp-1"], "do-1": "10.210.0.7"})
    assert pinned["aws-1"] == free["gcp-1"]
    assert pinned["do-1"] == "10.210.0.7"
    assert pinned["gcp-1"] != free["gcp-1"]
    assert len(set(pinned.values())) == len(PROD_NODES)


def topology_with(cidr: str, pins: dict[int, str], count: int = 3) -> dict[str, object]:
    """valid_minimal grown to `count` nodes on `cidr`, with `pins` (node index -> mesh_ip)."""
    raw = fixture("valid_minimal")
    template = raw["nodes"][0]
    nodes = [
        {**template, "name": f"node-{i}", "manager": i == 0, "edge": i == 0, "dns": []} for i in range(count)
    ]
    for index, address in pins.items():
        nodes[index]["mesh_ip"] = address
    return {**raw, "mesh": {"cidr": cidr}, "nodes": nodes}


@pytest.mark.parametrize(
    ("cidr", "pins", "count", "message"),
    [
        (CIDR, {1: "10.211.0.5"}, 3, r"nodes\[1\]\.mesh_ip: 10.211.0.5 is not a host address of mesh.cidr"),
        (CIDR, {1: "not-an-ip"}, 3, r"nodes\[1\]\.mesh_ip: 'not-an-ip' is not an IPv4 address"),
        (CIDR, {1: "10.210.0.0"}, 3, r"nodes\[1\]\.mesh_ip: 10.210.0.0 is not a host address"),
        (CIDR, {1: "10.210.0.255"}, 3, r"nodes\[1\]\.mesh_ip: 10.210.0.255 is not a host address"),
        (
            CIDR,
            {1: "10.210.0.9", 2: "10.210.0.9"},
            3,
            r"nodes\[2\]\.mesh_ip: 10.210.0.9 is already pinned by nodes\[1\]",
        ),
        (
            "10.0.0.0/30",
            {},
            3,
            r"mesh.cidr: 10.0.0.0/30 has room for 2 node\(s\) but the topology has 3; use a /29",
        ),
        ("10.0.0.0/31", {}, 1, r"mesh.cidr: 10.0.0.0/31 has room for 0 node"),
        ("10.210.0.1/24", {}, 1, r"mesh.cidr: '10.210.0.1/24' has host bits set; did you mean 10.210.0.0/24"),
        ("fd00::/64", {}, 1, r"mesh.cidr: 'fd00::/64' must be a private IPv4 range"),
        ("banana", {}, 1, r"mesh.cidr: 'banana' is not a CIDR range"),
    ],
)
def test_bad_ranges_and_pins_are_refused_by_the_topology(
    cidr: str, pins: dict[int, str], count: int, message: str
) -> None:
    with pytest.raises(TopologyError, match=message):
        load_topology(topology_with(cidr, pins, count))


def test_the_topology_allocates_with_its_pins() -> None:
    topology = load_topology(topology_with(CIDR, {2: "10.210.0.7"}))
    addresses = topology.mesh_addresses()
    assert addresses["node-2"] == "10.210.0.7"
    names = ["node-0", "node-1", "node-2"]
    assert addresses == allocate_mesh_addresses(names, CIDR, {"node-2": "10.210.0.7"})
