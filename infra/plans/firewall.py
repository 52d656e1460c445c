"""Least-privilege inbound rules per node (pure rule objects; provider adapters translate them).

Per node: SSH (22/tcp) only from the admin ranges; HTTP/HTTPS only on edge nodes; WireGuard
(the mesh port, udp) only from the other nodes' public addresses. Nothing else is open inbound and
Swarm's ports (2377/tcp, 7946/tcp+udp, 4789/udp) never are: swarm traffic runs inside the mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from infra.host import Host
from infra.plans.remote import wait_for_cloud_init

SSH_PORT = 22
WEB_PORTS = (80, 443)
SWARM_PORTS: tuple[tuple[str, int], ...] = (("tcp", 2377), ("tcp", 7946), ("udp", 7946), ("udp", 4789))
ANYWHERE_V4 = "0.0.0.0/0"
ANYWHERE_V6 = "::/0"


@dataclass(frozen=True)
class FirewallRule:
    """Allow inbound `protocol`/`port` from `sources` (CIDR strings, or Outputs of them in Pulumi)."""

    protocol: Literal["tcp", "udp"]
    port: int
    sources: tuple[Any, ...]
    description: str


def host_cidr(address: str) -> str:
    """The single-address CIDR of an IPv4 or IPv6 address."""
    return f"{address}/128" if ":" in address else f"{address}/32"


def public_rules(edge: bool, admin_ssh_cidrs: Sequence[str]) -> list[FirewallRule]:
    """The rules a node needs from the start, known before any server exists: SSH from the admin
    ranges, and 80/443 from anywhere on edge nodes. ValueError when `admin_ssh_cidrs` is empty."""
    if not admin_ssh_cidrs:
        raise ValueError("admin_ssh_cidrs is empty: SSH would be open to nobody (or, worse, everybody)")
    rules = [FirewallRule("tcp", SSH_PORT, tuple(admin_ssh_cidrs), "SSH from the admin ranges")]
    if edge:
        for port in WEB_PORTS:
            rules.append(
                FirewallRule("tcp", port, (ANYWHERE_V4, ANYWHERE_V6), f"web {port} on the edge node")
            )
    return rules


def peer_rules(
    host: Host, all_hosts: Sequence[Host], mesh_port: int, *, to_cidr: Callable[[Any], Any] = host_cidr
) -> list[FirewallRule]:
    """The rules that need every other node's public address: WireGuard from the other nodes
    (empty for a single node). `to_cidr` as for `plan_firewall`."""
    peers = tuple(to_cidr(peer.public_ipv4) for peer in all_hosts if peer.name != host.name)
    return [FirewallRule("udp", mesh_port, peers, "WireGuard from the other nodes")] if peers else []


def plan_firewall(
    host: Host,
    all_hosts: Sequence[Host],
    admin_ssh_cidrs: Sequence[str],
    mesh_port: int,
    *,
    to_cidr: Callable[[Any], Any] = host_cidr,
) -> list[FirewallRule]:
    """The inbound rules of `host`: `public_rules` followed by `peer_rules`.

    `to_cidr` turns a peer's public address into a single-address CIDR; the Pulumi layer passes a
    function that does it inside `Output.apply`, tests use the default on plain strings.
    """
    return [
        *public_rules(host.edge, admin_ssh_cidrs),
        *peer_rules(host, all_hosts, mesh_port, to_cidr=to_cidr),
    ]


def split_families(sources: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Split plain CIDR strings into (IPv4, IPv6); non-strings (Outputs of peer /32s) count as IPv4."""
    v4 = [s for s in sources if not (isinstance(s, str) and ":" in s)]
    v6 = [s for s in sources if isinstance(s, str) and ":" in s]
    return v4, v6


# Interfaces whose traffic to a published port comes from this host's own containers.
CONTAINER_INTERFACES = ("docker0", "docker_gwbridge", "br-*")


def _accept_lines(rules: Sequence[FirewallRule], port_match: str) -> list[str]:
    """One accept line per rule and address family; `port_match` is e.g. "tcp dport" (input) or
    "meta l4proto tcp ct original proto-dst" (published ports, matched before Docker's DNAT)."""
    lines = []
    for rule in rules:
        v4, v6 = split_families(rule.sources)
        match = port_match.format(protocol=rule.protocol)
        for family, sources in (("ip", v4), ("ip6", v6)):
            if not sources:
                continue
            if ANYWHERE_V4 in sources or ANYWHERE_V6 in sources:
                lines.append(
                    f"    meta nfproto {'ipv4' if family == 'ip' else 'ipv6'} "
                    f'{match} {rule.port} accept comment "{rule.description}"'
                )
            else:
                joined = ", ".join(str(s) for s in sources)
                lines.append(
                    f"    {family} saddr {{ {joined} }} {match} {rule.port} accept "
                    f'comment "{rule.description}"'
                )
    return lines


def nftables_script(rules: Sequence[FirewallRule], mesh_interface: str = "wg0") -> str:
    """An nftables ruleset for an adopted host (no cloud firewall in front of it), all strings resolved.

    Own table `inet spaced`: it leaves Docker's iptables-nft tables alone. A drop in any base chain
    drops the packet, so this filter applies even though Docker's chains accept. Traffic arriving on
    the mesh interface is trusted: the swarm talks over it.

    Two hooks: `input` (traffic to the host) and `forward`, because a port Docker publishes is
    DNAT-ed to a container and forwarded past `input`. New forwarded connections that Docker
    DNAT-ed from outside must match a rule by their original destination port (`ct original
    proto-dst`): an address outside the allowed ranges cannot reach a published port either.
    """
    local_interfaces = ", ".join(f'"{name}"' for name in ("lo", mesh_interface, *CONTAINER_INTERFACES))
    lines = [
        "table inet spaced",  # create-then-delete makes the load idempotent
        "delete table inet spaced",
        "table inet spaced {",
        "  chain input {",
        "    type filter hook input priority filter; policy drop;",
        "    ct state established,related accept",
        "    ct state invalid drop",
        '    iifname "lo" accept',
        f'    iifname "{mesh_interface}" accept',
        # ICMP errors come in as `related`; echo and IPv6 neighbour discovery are needed to stay reachable.
        "    ip protocol icmp icmp type { echo-request, destination-unreachable, time-exceeded } accept",
        "    ip6 nexthdr icmpv6 icmpv6 type { echo-request, destination-unreachable, packet-too-big,"
        " time-exceeded, nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept",
        *_accept_lines(rules, "{protocol} dport"),
        "  }",
        "  chain forward {",
        # Only published ports (DNAT-ed connections) are filtered here; containers' own traffic and
        # the overlay's pass on to Docker's chains.
        "    type filter hook forward priority filter; policy accept;",
        "    ct state established,related accept",
        "    ct status dnat jump published",
        "  }",
        "  chain published {",
        f"    iifname {{ {local_interfaces} }} accept",
        *_accept_lines(rules, "meta l4proto {protocol} ct original proto-dst"),
        '    counter drop comment "published port from outside the allowed ranges"',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


FIREWALL_PATH = "/etc/spaced/firewall.nft"
FIREWALL_UNIT = "spaced-firewall.service"


def firewall_install_script(rules: Sequence[FirewallRule], mesh_interface: str = "wg0") -> str:
    """Shell script (run as root on an adopted host) that checks, persists and loads the ruleset.

    The ruleset is checked with `nft -c` before it replaces the old one, and a systemd unit loads it
    at boot. The SSH session running the script survives the load (`ct state established`).
    """
    ruleset = nftables_script(rules, mesh_interface)
    return f"""#!/bin/sh
set -eu
{wait_for_cloud_init()}mkdir -p /etc/spaced
cat > {FIREWALL_PATH}.new <<'SPACED_EOF'
{ruleset}SPACED_EOF
nft -c -f {FIREWALL_PATH}.new
mv {FIREWALL_PATH}.new {FIREWALL_PATH}
cat > /etc/systemd/system/{FIREWALL_UNIT} <<'SPACED_EOF'
[Unit]
Description=spaced inbound firewall (nftables table inet spaced)
Wants=network-pre.target
Before=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {FIREWALL_PATH}

[Install]
WantedBy=multi-user.target
SPACED_EOF
systemctl daemon-reload
systemctl enable {FIREWALL_UNIT}
nft -f {FIREWALL_PATH}
"""


FIREWALL_REMOVE_SCRIPT = f"""#!/bin/sh
systemctl disable {FIREWALL_UNIT} || true
rm -f /etc/systemd/system/{FIREWALL_UNIT} {FIREWALL_PATH}
nft delete table inet spaced || true
"""
