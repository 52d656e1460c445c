"""Mesh address allocation: inside the range, unique, stable, pins honoured, clear errors."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.plans.mesh import MeshError, allocate_mesh_addresses

PROD_NODES = ["ionos-apex", "aws-1", "gcp-1", "hetzner-1", "do-1", "ionos-cloud-1"]
CIDR = "10.210.0.0/24"

node_names = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), unique=True, max_size=40)


@given(names=node_names, prefix=st.sampled_from([24, 25, 26]))
def test_every_node_gets_a_unique_usable_address_in_the_range(names: list[str], prefix: int) -> None:
    cidr = f"10.210.0.0/{prefix}"
    network = ipaddress.ip_network(cidr)
    if len(names) > network.num_addresses - 2:
        with pytest.raises(MeshError, match="usable addresses"):
            allocate_mesh_addresses(names, cidr)
        return
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


@pytest.mark.parametrize(
    ("pins", "message"),
    [
        ({"aws-1": "10.211.0.5"}, "aws-1.*10.211.0.5 is outside mesh.cidr 10.210.0.0/24"),
        ({"aws-1": "not-an-ip"}, "aws-1.*'not-an-ip' is not an IPv4 address"),
        ({"aws-1": "10.210.0.0"}, "aws-1.*network or broadcast"),
        ({"aws-1": "10.210.0.255"}, "aws-1.*network or broadcast"),
        ({"aws-1": "10.210.0.9", "gcp-1": "10.210.0.9"}, "10.210.0.9 is already pinned for 'aws-1'"),
        ({"azure-1": "10.210.0.9"}, "pin for 'azure-1' names no node; nodes are: ionos-apex, aws-1"),
    ],
)
def test_bad_pins_are_refused_with_the_reason(pins: dict[str, str], message: str) -> None:
    with pytest.raises(MeshError, match=message):
        allocate_mesh_addresses(PROD_NODES, CIDR, pinned=pins)


@pytest.mark.parametrize(
    ("names", "cidr", "message"),
    [
        (["a", "b", "c"], "10.0.0.0/30", r"2 usable addresses but there are 3 nodes.*at least a /29"),
        (["a"], "10.0.0.0/31", r"too small for a mesh; use at least a /30"),
        (["a"], "10.210.0.1/24", r"not a network range.*10.210.0.0/24"),
        (["a"], "fd00::/64", r"IPv6; the mesh uses an IPv4 range"),
        (["a"], "banana", r"'banana' is not a network range"),
        (["a", "a"], CIDR, r"'a' appears twice"),
        (["bad name"], CIDR, r"'bad name' is not valid"),
    ],
)
def test_bad_ranges_and_names_are_refused_with_the_reason(names: list[str], cidr: str, message: str) -> None:
    with pytest.raises(MeshError, match=message):
        allocate_mesh_addresses(names, cidr)
