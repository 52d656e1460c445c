"""The real mesh: rendered configs running in userspace WireGuard between network namespaces.

Three member "hosts" and one outsider sit on a shared 192.0.2.0/24 "internet". The members get the
configs our plan renders; the outsider knows every member's public key and endpoint but is in no
member's peer list. Members must reach each other over their mesh addresses; the outsider must not.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from infra.plans.mesh import (
    MeshPeer,
    generate_private_key,
    public_key_from_private,
    render_apply_script,
    render_wireguard_config,
    strip_wg_quick_keys,
)
from infra.topology import allocate_mesh_addresses

from .netns_lab import NetnsLab, ensure_tun_device, netns_unavailable_reason

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

CIDR = "10.210.0.0/24"
PORT = 51820
PING_DEADLINE_SECONDS = 20


@pytest.fixture(scope="module")
def netns_ready() -> None:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    for binary in ("wireguard-go", "wg", "wg-quick", "ping", "nsenter", "unshare"):
        assert shutil.which(binary), f"{binary} is missing: apt-get install wireguard-go wireguard-tools"
    if ensure_tun_device():
        print("created /dev/net/tun (char 10:200): it was missing and wireguard-go needs it")


@pytest.fixture
def lab(netns_ready: None) -> Iterator[NetnsLab]:
    with NetnsLab() as lab:
        yield lab


def interface_address(config: str) -> str:
    match = re.search(r"^Address = (\S+)$", config, re.MULTILINE)
    assert match, "rendered config has no Address"
    return match.group(1)


def can_ping(lab: NetnsLab, netns: str, address: str, deadline_seconds: float) -> bool:
    """One-packet pings until one answers or the deadline passes (the first waits for a handshake)."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        if lab.run("ping", "-n", "-c", "1", "-W", "1", address, netns=netns, check=False).returncode == 0:
            return True
        if time.monotonic() > deadline:
            return False


def test_members_reach_each_other_over_the_mesh_and_an_outsider_reaches_nobody(lab: NetnsLab) -> None:
    members = ["alpha", "bravo", "charlie"]
    outsider = "mallory"
    addresses = allocate_mesh_addresses([*members, outsider], CIDR)
    private_keys = {name: generate_private_key() for name in [*members, outsider]}
    public_ips = {name: f"192.0.2.{10 + i}" for i, name in enumerate([*members, outsider])}
    peers = {
        name: MeshPeer(name, public_ips[name], addresses[name], public_key_from_private(private_keys[name]))
        for name in [*members, outsider]
    }
    member_peers = [peers[name] for name in members]

    namespaces: dict[str, str] = {}
    interfaces: dict[str, str] = {}
    for index, name in enumerate([*members, outsider]):
        namespaces[name] = lab.add_host(index, public_ips[name])
        interfaces[name] = lab.start_wireguard_go(namespaces[name], index)
        # The outsider knows every member (keys, endpoints) and claims a mesh address of its own.
        peer_list = [*member_peers, peers[outsider]] if name == outsider else member_peers
        config = render_wireguard_config(peers[name], private_keys[name], peer_list, PORT, mesh_cidr=CIDR)
        # The key goes to wg on stdin, as on a server; nothing with a key is written to disk.
        netns, interface = namespaces[name], interfaces[name]
        lab.run("wg", "setconf", interface, "/dev/stdin", netns=netns, stdin=strip_wg_quick_keys(config))
        lab.run("ip", "addr", "add", interface_address(config), "dev", interface, netns=netns)
        lab.run("ip", "link", "set", interface, "up", netns=netns)

    for name in members:
        for other in members:
            if other != name:
                assert can_ping(lab, namespaces[name], addresses[other], PING_DEADLINE_SECONDS), (
                    f"{name} cannot reach {other} at {addresses[other]} over the mesh"
                )

    # What WireGuard runs is what we rendered: our (clamped) private key read back unchanged,
    # and a completed handshake with each other member.
    for name in members:
        shown = lab.run("wg", "showconf", interfaces[name], netns=namespaces[name]).stdout
        assert f"PrivateKey = {private_keys[name]}" in shown
        handshakes = dict(
            line.split("\t")
            for line in lab.run(
                "wg", "show", interfaces[name], "latest-handshakes", netns=namespaces[name]
            ).stdout.split("\n")
            if line
        )
        expected = {peers[other].public_key for other in members if other != name}
        assert set(handshakes) == expected
        assert all(int(stamp) > 0 for stamp in handshakes.values())

    # Both directions at once; each ping gives up after its own 3 s deadline.
    attempts = [(namespaces[outsider], addresses[name]) for name in members]
    attempts += [(namespaces[name], addresses[outsider]) for name in members]
    answered = lab.ping_concurrently(attempts, deadline_seconds=3)
    assert not any(answered.values()), f"the outsider and a member reached each other: {answered}"
    outsider_handshakes = lab.run(
        "wg", "show", interfaces[outsider], "latest-handshakes", netns=namespaces[outsider]
    ).stdout.split()
    assert outsider_handshakes[1::2] == ["0"] * len(members), "a member shook hands with the outsider"
    # The public underlay itself works: the outsider is refused by WireGuard, not by a broken network.
    assert can_ping(lab, namespaces[outsider], public_ips[members[0]], 5)


def test_apply_script_starts_updates_and_leaves_alone(lab: NetnsLab) -> None:
    """The script a server runs, run for real (wg-quick falls back to wireguard-go, no systemd)."""
    names = ["alpha", "bravo", "charlie"]
    addresses = allocate_mesh_addresses(names, CIDR)
    private_keys = {name: generate_private_key() for name in names}
    public_ips = {name: f"192.0.2.{20 + i}" for i, name in enumerate(names)}
    peers = {
        name: MeshPeer(name, public_ips[name], addresses[name], public_key_from_private(private_keys[name]))
        for name in names
    }
    holders = {}
    for index, name in enumerate(names):
        holders[name] = lab.start_holder(lab.add_host(index, public_ips[name]))
    script = render_apply_script()

    def apply(name: str, members: list[str]) -> str:
        config = render_wireguard_config(
            peers[name], private_keys[name], [peers[m] for m in members], PORT, mesh_cidr=CIDR
        )
        result = lab.run_in_holder(holders[name], "bash", "-c", script, stdin=config)
        assert result.returncode == 0, f"apply on {name} failed: {result.stderr}"
        return result.stdout.strip().splitlines()[-1]

    def ping(name: str, other: str) -> bool:
        deadline = time.monotonic() + PING_DEADLINE_SECONDS
        while True:
            ping_once = ["ping", "-n", "-c", "1", "-W", "1", addresses[other]]
            if lab.run_in_holder(holders[name], *ping_once).returncode == 0:
                return True
            if time.monotonic() > deadline:
                return False

    # Two nodes first.
    assert apply("alpha", ["alpha", "bravo"]) == "started"
    assert apply("bravo", ["alpha", "bravo"]) == "started"
    assert ping("alpha", "bravo")
    mode = lab.run_in_holder(holders["alpha"], "stat", "-c", "%a", "/etc/wireguard/wg0.conf").stdout.strip()
    assert mode == "600"

    # The same config again changes nothing.
    before = lab.run_in_holder(holders["alpha"], "wg", "showconf", "wg0").stdout
    assert apply("alpha", ["alpha", "bravo"]) == "unchanged"
    assert lab.run_in_holder(holders["alpha"], "wg", "showconf", "wg0").stdout == before

    # A third node joins: the others take the new peer live (wg syncconf), and everyone meets.
    assert apply("charlie", names) == "started"
    assert apply("alpha", names) == "updated"
    assert apply("bravo", names) == "updated"
    for name in names:
        for other in names:
            if other != name:
                assert ping(name, other), f"{name} cannot reach {other} after charlie joined"

    # A node leaves: its peer is removed from the others, so it can no longer reach them.
    assert apply("alpha", ["alpha", "bravo"]) == "updated"
    peers_of_alpha = lab.run_in_holder(holders["alpha"], "wg", "show", "wg0", "peers").stdout.split()
    assert peers_of_alpha == [peers["bravo"].public_key]
    assert ping("alpha", "bravo")

    # A node moves to another mesh address: it restarts its interface, its peer updates live.
    moved = allocate_mesh_addresses(names, CIDR, pinned={"alpha": "10.210.0.250"})["alpha"]
    assert moved != addresses["alpha"]
    peers["alpha"] = replace(peers["alpha"], mesh_ip=moved)
    addresses["alpha"] = moved
    assert apply("alpha", ["alpha", "bravo"]) == "restarted"
    assert apply("bravo", ["alpha", "bravo"]) == "updated"
    assert ping("bravo", "alpha")
    assert ping("alpha", "bravo")
