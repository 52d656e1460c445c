"""Rendering of the per-node WireGuard configs, the setconf subset and the fingerprint."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from infra.plans.mesh import (
    TUNNEL_MTU,
    MeshError,
    MeshPeer,
    config_fingerprint,
    generate_private_key,
    public_key_from_private,
    render_wireguard_config,
    strip_wg_quick_keys,
)
from infra.topology import allocate_mesh_addresses

from .wg_config import parse_wireguard_config

CIDR = "10.210.0.0/24"
PORT = 51820


def make_mesh(names: list[str]) -> tuple[list[MeshPeer], dict[str, str]]:
    """Peers with fresh keys and documentation-range public addresses, plus their private keys."""
    addresses = allocate_mesh_addresses(names, CIDR)
    private_keys = {name: generate_private_key() for name in names}
    peers = [
        MeshPeer(name, f"198.51.100.{i + 1}", addresses[name], public_key_from_private(private_keys[name]))
        for i, name in enumerate(names)
    ]
    return peers, private_keys


def test_every_node_lists_every_other_node_and_never_itself() -> None:
    names = ["ionos-apex", "aws-1", "gcp-1", "hetzner-1", "do-1"]
    peers, private_keys = make_mesh(names)
    for node in peers:
        config = render_wireguard_config(node, private_keys[node.name], peers, PORT, mesh_cidr=CIDR)
        sections = parse_wireguard_config(config)
        (interface_name, interface), *peer_sections = sections
        assert interface_name == "Interface"
        assert interface == {
            "Address": f"{node.mesh_ip}/24",
            "ListenPort": str(PORT),
            "MTU": str(TUNNEL_MTU),
            "PrivateKey": private_keys[node.name],
        }
        assert all(name == "Peer" for name, _ in peer_sections)
        expected = {
            other.public_key: {
                "PublicKey": other.public_key,
                "AllowedIPs": f"{other.mesh_ip}/32",
                "Endpoint": f"{other.endpoint_host}:{PORT}",
                "PersistentKeepalive": "25",
            }
            for other in peers
            if other.name != node.name
        }
        assert {section["PublicKey"]: section for _, section in peer_sections} == expected
        assert len(peer_sections) == len(names) - 1
        assert node.public_key not in config


def test_rendering_does_not_depend_on_the_order_of_peers() -> None:
    peers, private_keys = make_mesh(["a", "b", "c", "d"])
    node = peers[2]
    forward = render_wireguard_config(node, private_keys["c"], peers, PORT, mesh_cidr=CIDR)
    backward = render_wireguard_config(node, private_keys["c"], peers[::-1], PORT, mesh_cidr=CIDR)
    assert forward == backward


def test_a_single_node_mesh_has_no_peers() -> None:
    peers, private_keys = make_mesh(["solo"])
    config = render_wireguard_config(peers[0], private_keys["solo"], peers, PORT, mesh_cidr=CIDR)
    assert [name for name, _ in parse_wireguard_config(config)] == ["Interface"]


def test_ipv6_endpoints_are_bracketed_and_dns_names_pass_through() -> None:
    peers, private_keys = make_mesh(["a", "b", "c"])
    peers[1] = replace(peers[1], endpoint_host="2001:db8::7")
    peers[2] = replace(peers[2], endpoint_host="c.nodes.example.net")
    config = render_wireguard_config(peers[0], private_keys["a"], peers, 4500, mesh_cidr=CIDR)
    endpoints = {s["Endpoint"] for name, s in parse_wireguard_config(config) if name == "Peer"}
    assert endpoints == {"[2001:db8::7]:4500", "c.nodes.example.net:4500"}


# Changes to peer "b" (given the whole mesh) and the error each must cause.
BAD_PEER_CHANGES = {
    "key taken": (lambda p: {"public_key": p[2].public_key}, "public key .* used by another"),
    "key malformed": (lambda p: {"public_key": "short"}, "public key of mesh peer 'b'"),
    "endpoint injects": (lambda p: {"endpoint_host": "1.2.3.4\nPostUp=x"}, "is not a host"),
    "endpoint empty": (lambda p: {"endpoint_host": ""}, "is not a host"),
    "name taken": (lambda p: {"name": "c"}, "name c is used by another node"),
}


@pytest.mark.parametrize("case", sorted(BAD_PEER_CHANGES))
def test_bad_peers_are_refused_with_the_reason(case: str) -> None:
    changes, message = BAD_PEER_CHANGES[case]
    peers, private_keys = make_mesh(["a", "b", "c"])
    peers[1] = replace(peers[1], **changes(peers))
    with pytest.raises(MeshError, match=message):
        render_wireguard_config(peers[0], private_keys["a"], peers, PORT, mesh_cidr=CIDR)


def test_a_private_key_that_does_not_match_the_node_is_refused() -> None:
    peers, private_keys = make_mesh(["a", "b"])
    with pytest.raises(MeshError, match="'a': its private key does not match"):
        render_wireguard_config(peers[0], private_keys["b"], peers, PORT, mesh_cidr=CIDR)


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_a_bad_listen_port_is_refused(port: int) -> None:
    peers, private_keys = make_mesh(["a", "b"])
    with pytest.raises(MeshError, match=f"listen_port {port} is not a UDP port"):
        render_wireguard_config(peers[0], private_keys["a"], peers, port, mesh_cidr=CIDR)


def test_strip_matches_wg_quick_strip(tmp_path: Path) -> None:
    peers, private_keys = make_mesh(["a", "b", "c"])
    config = render_wireguard_config(peers[0], private_keys["a"], peers, PORT, mesh_cidr=CIDR)
    # Add every wg-quick-only key, so the comparison covers them all, not only Address.
    extra = "MTU = 1380\nDNS = 10.210.0.1\nTable = off\nPreUp = true\nPostUp = true\nPreDown = true\n"
    extra += "PostDown = true\nSaveConfig = false\n"
    config = config.replace("[Interface]\n", "[Interface]\n" + extra, 1)
    path = tmp_path / "wg7.conf"
    path.write_text(config)
    path.chmod(0o600)
    wg_quick = subprocess.run(
        ["wg-quick", "strip", str(path)], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    ours = strip_wg_quick_keys(config)
    assert ours.rstrip("\n") == wg_quick.rstrip("\n")
    assert "Address" not in ours
    assert "PrivateKey = " + private_keys["a"] in ours


def test_fingerprint_changes_exactly_when_the_applied_config_would() -> None:
    peers, _ = make_mesh(["a", "b", "c"])
    node = peers[0]
    base = config_fingerprint(node, peers, PORT, CIDR)
    assert config_fingerprint(node, peers[::-1], PORT, CIDR) == base
    assert config_fingerprint(node, peers[:2], PORT, CIDR) != base  # a node removed
    more, _ = make_mesh(["a", "b", "c", "d"])
    assert config_fingerprint(node, [*peers, more[3]], PORT, CIDR) != base  # a node added
    moved = [peers[0], replace(peers[1], endpoint_host="203.0.113.9"), peers[2]]
    assert config_fingerprint(node, moved, PORT, CIDR) != base  # a peer got a new public address
    rotated = replace(node, public_key=public_key_from_private(generate_private_key()))
    assert config_fingerprint(rotated, [rotated, *peers[1:]], PORT, CIDR) != base  # own key rotated
    assert config_fingerprint(node, peers, PORT + 1, CIDR) != base
