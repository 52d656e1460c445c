"""The nftables ruleset of an adopted host, loaded for real in a network namespace.

A "server" namespace loads the ruleset and listens on SSH, HTTPS, a swarm port and WireGuard's
UDP port; a "client" namespace, joined by a veth pair, probes them from an admin address, a peer
node's address and an outsider's address. Only what the plan allows may get through.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.host import Host
from infra.plans.firewall import nftables_script, plan_firewall

pytestmark = [
    pytest.mark.netns,
    # nft and ip come with scripts/install-deps.sh: only a run without root may skip (allow-listed).
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

SERVER, ADMIN, PEER, OUTSIDER = "198.51.100.1", "198.51.100.10", "198.51.100.20", "198.51.100.200"
ADMIN_CIDR = "198.51.100.0/28"  # holds ADMIN and not PEER or OUTSIDER
PORTS = {"ssh": 22, "https": 443, "swarm": 2377, "wireguard": 51820}

LISTENER = """
import socket, sys
tcp = []
for port in (22, 443, 2377):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); tcp.append(s)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", 51820))
print("ready", flush=True)
while True:
    data, peer = udp.recvfrom(64)
    udp.sendto(data, peer)
"""

PROBE = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
server, sources = sys.argv[1], sys.argv[2].split(",")
def tcp(source, port):
    s = socket.socket(); s.settimeout(1.0); s.bind((source, 0))
    try:
        s.connect((server, port)); return "open"
    except (TimeoutError, socket.timeout): return "dropped"
    except ConnectionRefusedError: return "refused"
    finally: s.close()
def udp(source, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0); s.bind((source, 0))
    try:
        s.sendto(b"ping", (server, port)); s.recvfrom(64); return "open"
    except (TimeoutError, socket.timeout): return "dropped"
    finally: s.close()
jobs = {f"{src} {name}": (udp if name == "wireguard" else tcp, src, port)
        for src in sources for name, port in json.loads(sys.argv[3]).items()}
with ThreadPoolExecutor(len(jobs)) as pool:
    futures = {key: pool.submit(fn, src, port) for key, (fn, src, port) in jobs.items()}
print(json.dumps({key: f.result() for key, f in futures.items()}))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces(tmp_path: Path) -> Iterator[tuple[str, str]]:
    run_id = secrets.token_hex(3)
    server, client = f"fw-{run_id}-srv", f"fw-{run_id}-cli"
    made: list[str] = []
    try:
        for ns in (server, client):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh(
            "ip",
            "link",
            "add",
            "vsrv",
            "netns",
            server,
            "type",
            "veth",
            "peer",
            "name",
            "vcli",
            "netns",
            client,
        )
        sh("ip", "-n", server, "addr", "add", f"{SERVER}/24", "dev", "vsrv")
        for address in (ADMIN, PEER, OUTSIDER):
            sh("ip", "-n", client, "addr", "add", f"{address}/24", "dev", "vcli")
        for ns, dev in ((server, "vsrv"), (client, "vcli")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield server, client
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_only_planned_traffic_gets_in(namespaces: tuple[str, str], tmp_path: Path) -> None:
    server, client = namespaces
    me = Host("adopted", "existing", "de", SERVER, "10.210.0.1", "deploy", edge=True)
    peer = Host("peer", "aws", "eu-central-1", PEER, "10.210.0.2", "deploy")
    ruleset = tmp_path / "spaced.nft"
    ruleset.write_text(nftables_script(plan_firewall(me, [me, peer], [ADMIN_CIDR], 51820)))
    sh("ip", "netns", "exec", server, "nft", "-f", str(ruleset))

    listener = subprocess.Popen(
        ["ip", "netns", "exec", server, sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        probe = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                client,
                sys.executable,
                "-c",
                PROBE,
                SERVER,
                ",".join((ADMIN, PEER, OUTSIDER)),
                json.dumps(PORTS),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        listener.kill()
        listener.wait(timeout=30)
    seen = json.loads(probe.stdout)
    assert seen == {
        f"{ADMIN} ssh": "open",
        f"{PEER} ssh": "dropped",
        f"{OUTSIDER} ssh": "dropped",
        f"{ADMIN} https": "open",
        f"{PEER} https": "open",
        f"{OUTSIDER} https": "open",  # the edge node
        f"{ADMIN} swarm": "dropped",
        f"{PEER} swarm": "dropped",
        f"{OUTSIDER} swarm": "dropped",
        f"{ADMIN} wireguard": "dropped",
        f"{PEER} wireguard": "open",
        f"{OUTSIDER} wireguard": "dropped",
    }


# --- ports Docker publishes: DNAT-ed to a container and forwarded past the input chain -----------

CONTAINER, BRIDGE_ADDRESS = "172.18.0.2", "172.18.0.1"
PUBLISHED = {"published-https": 443, "published-metrics": 9090}
CONTAINER_LISTENER = """
import socket
servers = []
for port in (443, 9090):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); servers.append(s)
print("ready", flush=True)
import time
while True:
    time.sleep(3600)
"""
# What Docker does for `ports: [443, 9090]` (host mode): DNAT on the host to the container.
DOCKER_NAT = f"""table ip docker-like {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    tcp dport {{ 443, 9090 }} dnat to {CONTAINER}
  }}
}}
"""


def test_published_ports_are_filtered_like_the_host(namespaces: tuple[str, str], tmp_path: Path) -> None:
    """An outsider reaches a published port only if a rule allows that port from its address."""
    server, client = namespaces
    container = f"{server}-ctr"
    sh("ip", "netns", "add", container)
    listener: subprocess.Popen[str] | None = None
    try:
        # A "docker0" bridge on the server with one container behind it.
        sh("ip", "-n", server, "link", "add", "docker0", "type", "bridge")
        sh("ip", "-n", server, "addr", "add", f"{BRIDGE_ADDRESS}/24", "dev", "docker0")
        sh("ip", "-n", server, "link", "set", "docker0", "up")
        sh(
            "ip",
            "link",
            "add",
            "vhost",
            "netns",
            server,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            container,
        )
        sh("ip", "-n", server, "link", "set", "vhost", "master", "docker0", "up")
        sh("ip", "-n", container, "addr", "add", f"{CONTAINER}/24", "dev", "eth0")
        sh("ip", "-n", container, "link", "set", "eth0", "up")
        sh("ip", "-n", container, "link", "set", "lo", "up")
        sh("ip", "-n", container, "route", "add", "default", "via", BRIDGE_ADDRESS)
        sh("ip", "netns", "exec", server, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        nat = tmp_path / "docker-like.nft"
        nat.write_text(DOCKER_NAT)
        sh("ip", "netns", "exec", server, "nft", "-f", str(nat))
        me = Host("adopted", "existing", "de", SERVER, "10.210.0.1", "deploy", edge=True)
        ruleset = tmp_path / "spaced.nft"
        ruleset.write_text(nftables_script(plan_firewall(me, [me], [ADMIN_CIDR], 51820)))
        sh("ip", "netns", "exec", server, "nft", "-f", str(ruleset))

        listener = subprocess.Popen(
            ["ip", "netns", "exec", container, sys.executable, "-c", CONTAINER_LISTENER],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        probe = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                client,
                sys.executable,
                "-c",
                PROBE,
                SERVER,
                ",".join((ADMIN, OUTSIDER)),
                json.dumps(PUBLISHED),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=30)
        subprocess.run(["ip", "netns", "del", container], capture_output=True, timeout=30)
    seen = json.loads(probe.stdout)
    print(f"\npublished-port reachability: {json.dumps(seen, sort_keys=True)}")
    assert seen == {
        # the edge's web port is open to everyone, published or not
        f"{ADMIN} published-https": "open",
        f"{OUTSIDER} published-https": "open",
        # a port no rule opens is closed even though Docker forwards it past the input chain
        f"{ADMIN} published-metrics": "dropped",
        f"{OUTSIDER} published-metrics": "dropped",
    }
