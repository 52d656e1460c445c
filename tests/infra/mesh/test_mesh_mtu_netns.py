"""Packet sizes across clouds, for real: a 1460-byte link on one side, wireguard-go, VXLAN on top.

Two hosts on the lab's 192.0.2.0/24 "internet"; host B's link is 1460 bytes (GCP's network MTU) and
the bridge drops larger frames silently, as a path without ICMP "fragmentation needed" does. Over
the WireGuard tunnel runs a VXLAN overlay (what Docker's overlay networks are). A 2 MB TCP transfer
from A to B over the overlay:

- with the old defaults (tunnel 1420, as wg-quick picks on a 1500-byte link; overlay 1450, Docker's
  default) every full-size segment becomes a 1480-byte UDP packet that never arrives: the transfer
  stalls and times out;
- with the plan's MTUs (tunnel `TUNNEL_MTU`, overlay `OVERLAY_MTU`) it completes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from infra.plans.mesh import (
    OVERLAY_MTU,
    TUNNEL_MTU,
    MeshPeer,
    generate_private_key,
    public_key_from_private,
    render_wireguard_config,
    strip_wg_quick_keys,
)

from .netns_lab import NetnsLab, ensure_tun_device, netns_unavailable_reason

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]

CIDR = "10.210.0.0/24"
PORT = 51820
SMALL_LINK_MTU = 1460  # GCP
OLD_TUNNEL_MTU, OLD_OVERLAY_MTU = 1420, 1450
TRANSFER_BYTES = 2 * 1024 * 1024
TRANSFER_TIMEOUT_S = 15
OVERLAY_IPS = {"a": "198.18.0.1", "b": "198.18.0.2"}  # RFC 2544 benchmarking range, inside the lab only

RECEIVER = """
import socket, sys
server = socket.create_server((sys.argv[1], 5001))
server.settimeout(float(sys.argv[2]))
print("listening", flush=True)
conn, _ = server.accept()
conn.settimeout(float(sys.argv[2]))
total = 0
try:
    while chunk := conn.recv(65536):
        total += len(chunk)
except OSError:
    pass
print(total, flush=True)
"""
SENDER = """
import socket, sys, time
started = time.monotonic()
conn = socket.create_connection((sys.argv[1], 5001), timeout=float(sys.argv[3]))
conn.settimeout(float(sys.argv[3]))
try:
    conn.sendall(b"x" * int(sys.argv[2]))
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)  # the receiver closes once it has read everything
    print(f"done {time.monotonic() - started:.3f}", flush=True)
except OSError as error:
    print(f"failed {time.monotonic() - started:.3f} {error}", flush=True)
"""


@pytest.fixture(scope="module")
def netns_ready() -> None:
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    for binary in ("wireguard-go", "wg", "ip"):
        assert shutil.which(binary), (
            f"{binary} is missing: apt-get install wireguard-go wireguard-tools iproute2"
        )
    ensure_tun_device()


@pytest.fixture
def lab(netns_ready: None) -> Iterator[NetnsLab]:
    with NetnsLab() as lab:
        yield lab


def build(lab: NetnsLab, tunnel_mtu: int | None, overlay_mtu: int) -> dict[str, str]:
    """Hosts a (1500-byte link) and b (1460-byte link), a tunnel and a VXLAN overlay; name -> netns."""
    keys = {name: generate_private_key() for name in "ab"}
    public = {"a": "192.0.2.21", "b": "192.0.2.22"}
    mesh = {"a": "10.210.0.21", "b": "10.210.0.22"}
    peers = [MeshPeer(n, public[n], mesh[n], public_key_from_private(keys[n])) for n in "ab"]
    namespaces = {}
    for index, name in enumerate("ab"):
        netns = namespaces[name] = lab.add_host(index, public[name])
        if name == "b":  # B's side of the internet is 1460 bytes; the bridge drops bigger frames
            lab.run(
                "ip", "link", "set", f"mb{lab.run_id}{index}", "mtu", str(SMALL_LINK_MTU), netns=lab.internet
            )
            lab.run("ip", "link", "set", f"mv{lab.run_id}{index}", "mtu", str(SMALL_LINK_MTU), netns=netns)
        interface = lab.start_wireguard_go(netns, index)
        config = render_wireguard_config(peers[index], keys[name], peers, PORT, mesh_cidr=CIDR)
        lab.run("wg", "setconf", interface, "/dev/stdin", netns=netns, stdin=strip_wg_quick_keys(config))
        lab.run("ip", "addr", "add", f"{mesh[name]}/24", "dev", interface, netns=netns)
        # What wg-quick does with the config's MTU line; the old default where there is none.
        mtu = tunnel_mtu if tunnel_mtu is not None else OLD_TUNNEL_MTU
        lab.run("ip", "link", "set", interface, "mtu", str(mtu), "up", netns=netns)
        other = "b" if name == "a" else "a"
        # Like Docker's overlay driver: not bound to a device, routed over the tunnel by address.
        lab.run(
            "ip",
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "4242",
            "dstport",
            "4789",
            "local",
            mesh[name],
            "remote",
            mesh[other],
            netns=netns,
        )
        lab.run("ip", "link", "set", "vx0", "mtu", str(overlay_mtu), "up", netns=netns)
        lab.run("ip", "addr", "add", f"{OVERLAY_IPS[name]}/24", "dev", "vx0", netns=netns)
    # The tunnel is up (small packets pass) before anything is measured.
    deadline = time.monotonic() + 20
    while (
        lab.run(
            "ping", "-n", "-c", "1", "-W", "1", OVERLAY_IPS["b"], netns=namespaces["a"], check=False
        ).returncode
        != 0
    ):
        assert time.monotonic() < deadline, "no small packet crossed the overlay within 20 s"
    return namespaces


def transfer(lab: NetnsLab, namespaces: dict[str, str]) -> tuple[bool, float, int]:
    """Send TRANSFER_BYTES from a to b over the overlay: (completed, seconds, bytes b received)."""
    receiver = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            namespaces["b"],
            sys.executable,
            "-c",
            RECEIVER,
            OVERLAY_IPS["b"],
            str(TRANSFER_TIMEOUT_S),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lab.processes.append(receiver)  # type: ignore[arg-type]
    assert receiver.stdout is not None and receiver.stdout.readline().strip() == "listening"
    sender = lab.run(
        sys.executable,
        "-c",
        SENDER,
        OVERLAY_IPS["b"],
        str(TRANSFER_BYTES),
        str(TRANSFER_TIMEOUT_S),
        netns=namespaces["a"],
        timeout=TRANSFER_TIMEOUT_S * 3,
    )
    received = int(receiver.communicate(timeout=TRANSFER_TIMEOUT_S * 2)[0].strip() or 0)
    status, seconds = sender.stdout.split()[:2]
    return status == "done", float(seconds), received


def test_old_defaults_stall_a_2mb_transfer_on_a_1460_link(lab: NetnsLab) -> None:
    completed, seconds, received = transfer(lab, build(lab, None, OLD_OVERLAY_MTU))
    print(
        f"\nbefore (tunnel {OLD_TUNNEL_MTU}, overlay {OLD_OVERLAY_MTU}): completed={completed} "
        f"after {seconds:.2f} s, {received} of {TRANSFER_BYTES} bytes arrived"
    )
    assert not completed and received < TRANSFER_BYTES


def test_planned_mtus_carry_a_2mb_transfer_on_a_1460_link(lab: NetnsLab) -> None:
    completed, seconds, received = transfer(lab, build(lab, TUNNEL_MTU, OVERLAY_MTU))
    print(
        f"\nafter (tunnel {TUNNEL_MTU}, overlay {OVERLAY_MTU}): completed={completed} "
        f"in {seconds:.2f} s, {received} of {TRANSFER_BYTES} bytes arrived"
    )
    assert completed and received == TRANSFER_BYTES


def test_the_rendered_config_carries_the_tunnel_mtu_and_the_overlay_fits_inside() -> None:
    keys = [generate_private_key() for _ in range(2)]
    peers = [
        MeshPeer(n, f"192.0.2.{i + 1}", f"10.210.0.{i + 1}", public_key_from_private(k))
        for i, (n, k) in enumerate(zip("ab", keys, strict=True))
    ]
    config = render_wireguard_config(peers[0], keys[0], peers, PORT, mesh_cidr=CIDR)
    assert f"MTU = {TUNNEL_MTU}\n" in config
    assert TUNNEL_MTU + 80 <= SMALL_LINK_MTU  # WireGuard over IPv6 adds 80 bytes
    assert OVERLAY_MTU + 50 <= TUNNEL_MTU  # VXLAN adds 50
