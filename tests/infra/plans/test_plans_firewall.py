"""Least-privilege firewall rules, and the nftables ruleset adopted hosts load."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from infra.plans.firewall import (
    SWARM_PORTS,
    firewall_install_script,
    nftables_script,
    plan_firewall,
)
from infra.topology import load_topology
from tests.infra.fixtures.topologies import stack_topology
from tests.infra.plans.helpers import SEED_ADDRESSES, seed_hosts

ADMIN = ("198.51.100.0/24", "2001:db8:1::/48")


@pytest.fixture(scope="module")
def prod_hosts():  # type: ignore[no-untyped-def]
    return list(seed_hosts(load_topology(stack_topology("prod"))).values())


def rules_for(name: str, hosts):  # type: ignore[no-untyped-def]
    [host] = [h for h in hosts if h.name == name]
    return plan_firewall(host, hosts, ADMIN, 51820)


def test_ssh_only_from_admin_ranges(prod_hosts) -> None:  # type: ignore[no-untyped-def]
    for host in prod_hosts:
        ssh = [r for r in rules_for(host.name, prod_hosts) if r.port == 22]
        assert [(r.protocol, r.sources) for r in ssh] == [("tcp", ADMIN)]


def test_web_ports_only_on_the_edge(prod_hosts) -> None:  # type: ignore[no-untyped-def]
    for host in prod_hosts:
        web = {r.port for r in rules_for(host.name, prod_hosts) if r.port in (80, 443)}
        assert web == ({80, 443} if host.name == "ionos-apex" else set())


def test_wireguard_only_from_the_other_nodes(prod_hosts) -> None:  # type: ignore[no-untyped-def]
    [wireguard] = [r for r in rules_for("aws-1", prod_hosts) if r.port == 51820]
    assert wireguard.protocol == "udp"
    expected = {f"{ip}/32" for name, ip in SEED_ADDRESSES.items() if name != "aws-1"}
    assert set(wireguard.sources) == expected and len(wireguard.sources) == 6


def test_nothing_else_and_never_a_swarm_port(prod_hosts) -> None:  # type: ignore[no-untyped-def]
    for host in prod_hosts:
        opened = {(r.protocol, r.port) for r in rules_for(host.name, prod_hosts)}
        assert opened <= {("tcp", 22), ("tcp", 80), ("tcp", 443), ("udp", 51820)}
        assert not opened & set(SWARM_PORTS)


def test_single_node_has_no_wireguard_rule(prod_hosts) -> None:  # type: ignore[no-untyped-def]
    [solo] = prod_hosts[:1]
    assert {r.port for r in plan_firewall(solo, [solo], ADMIN, 51820)} == {22, 80, 443}


def test_empty_admin_ranges_are_refused(prod_hosts) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="admin_ssh_cidrs is empty"):
        plan_firewall(prod_hosts[0], prod_hosts, [], 51820)


@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nftables (apt-get install nftables)")
def test_nftables_ruleset_is_accepted_by_nft(prod_hosts, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ruleset = tmp_path / "spaced.nft"
    ruleset.write_text(nftables_script(rules_for("ionos-apex", prod_hosts)))
    check = subprocess.run(["nft", "-c", "-f", str(ruleset)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    # And nft really checks: a typo in a port is refused.
    ruleset.write_text(ruleset.read_text().replace("dport 22 ", "dport twenty-two "))
    broken = subprocess.run(["nft", "-c", "-f", str(ruleset)], capture_output=True, text=True, timeout=30)
    assert broken.returncode != 0


def test_nftables_ruleset_content(prod_hosts) -> None:  # type: ignore[no-untyped-def]
    script = nftables_script(rules_for("ionos-3", prod_hosts))
    assert "policy drop;" in script
    assert "ip saddr { 198.51.100.0/24 } tcp dport 22 accept" in script
    assert "ip6 saddr { 2001:db8:1::/48 } tcp dport 22 accept" in script
    assert "dport 80" not in script and "dport 443" not in script  # not the edge
    assert "217.160.139.233/32" in script and "87.106.135.26/32" not in script  # peers, not itself
    for _, port in SWARM_PORTS:
        assert f"dport {port}" not in script


def test_install_script_is_valid_shell(prod_hosts) -> None:  # type: ignore[no-untyped-def]
    script = firewall_install_script(rules_for("ionos-2", prod_hosts))
    result = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "nft -c -f /etc/spaced/firewall.nft.new" in script  # checked before it replaces the old one
