"""Every provider adapter under Pulumi mocks: resource types, their arguments, the firewall rules.

One mocked run provisions `providers_mix.yaml` (one or two nodes of every provider): every server,
then every node's peer firewall; the tests then read what was registered.
"""

from __future__ import annotations

import base64
from typing import Any

import pulumi
import pytest
from pulumi.runtime.settings import SETTINGS

from infra.plans.firewall import SWARM_PORTS
from infra.providers import REGISTRY, ProvisionContext, adapter, provision_all
from infra.topology import load_topology
from tests.infra.fixtures.pulumi_mocks import MOCK_AMI, CloudMocks, is_secret, run_with_mocks, unwrap
from tests.infra.fixtures.topologies import fixture

ADMIN_V4, ADMIN_V6 = "198.51.100.0/24", "2001:db8:1::/48"
ADOPTED_IP = "217.160.0.10"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-only\n-----END OPENSSH PRIVATE KEY-----\n"


class Run:
    """What one mocked provisioning run produced."""

    def __init__(self, mocks: CloudMocks, hosts: dict[str, dict[str, Any]], urns: list[str]) -> None:
        self.mocks = mocks
        self.hosts = hosts
        self.urns = urns

    def peers_of(self, name: str) -> set[str]:
        """The /32s every other node's WireGuard rule must allow: all public IPv4s but `name`'s."""
        return {f"{host['public_ipv4']}/32" for other, host in self.hosts.items() if other != name}


@pytest.fixture(scope="module")
def run() -> Run:
    topology = load_topology(fixture("providers_mix"))
    resolved: dict[str, dict[str, Any]] = {}

    def program() -> None:
        ctx = ProvisionContext(
            environment="test",
            ssh_user="deploy",
            ssh_public_key=topology.ssh.public_key,
            ssh_private_key=pulumi.Output.secret(PRIVATE_KEY),
            mesh_ips={n.name: f"10.220.0.{i + 1}" for i, n in enumerate(topology.nodes)},
            admin_ssh_cidrs=topology.admin_ssh_cidrs,
        )
        hosts = provision_all(topology.nodes, ctx, topology.mesh.listen_port)
        for host in hosts:
            pulumi.Output.all(host.public_ipv4, host.public_ipv6).apply(
                lambda ips, host=host: resolved.__setitem__(
                    host.name,
                    {
                        "public_ipv4": ips[0],
                        "public_ipv6": ips[1],
                        "mesh_ip": host.mesh_ip,
                        "provider": host.provider,
                        "edge": host.edge,
                        "resources": host.resources,
                    },
                )
            )

    mocks, _ = run_with_mocks(program)
    return Run(mocks, resolved, list(SETTINGS.monitor.resources))


def test_every_node_yields_a_host_with_its_address(run: Run) -> None:
    assert set(run.hosts) == {"adopted-1", "hetzner-1", "aws-1", "aws-2", "gcp-1", "gcp-2", "do-1", "ionos-1"}
    assert run.hosts["adopted-1"]["public_ipv4"] == ADOPTED_IP
    assert run.hosts["hetzner-1"]["public_ipv4"] == run.mocks.ipv4["hetzner-1-server"]
    assert run.hosts["hetzner-1"]["public_ipv6"] == run.mocks.ipv6["hetzner-1-server"]
    # aws-1 is reached at its Elastic IP, not at the instance's own address
    assert run.hosts["aws-1"]["public_ipv4"] == run.mocks.ipv4["aws-1-elastic-ip"]
    assert run.hosts["aws-2"]["public_ipv4"] == run.mocks.ipv4["aws-2-instance"]
    assert run.hosts["gcp-1"]["public_ipv4"] == run.mocks.ipv4["gcp-1-address"]  # static
    assert run.hosts["gcp-2"]["public_ipv4"] == run.mocks.ipv4["gcp-2-instance"]  # ephemeral
    assert run.hosts["do-1"]["public_ipv4"] == run.mocks.ipv4["do-1-droplet"]
    assert run.hosts["ionos-1"]["public_ipv4"] == run.mocks.ipv4["ionos-1-ip-block"]
    assert len({h["public_ipv4"] for h in run.hosts.values()}) == 8


def test_a_server_and_a_firewall_component_per_node_with_children_under_them(run: Run) -> None:
    expected = {
        "adopted-1": "Existing",
        "hetzner-1": "Hetzner",
        "aws-1": "Aws",
        "gcp-1": "Gcp",
        "do-1": "DigitalOcean",
        "ionos-1": "Ionos",
    }
    for node, kind in expected.items():
        server, firewall = f"spaced:providers:{kind}Server", f"spaced:providers:{kind}Firewall"
        assert any(urn.endswith(f"{server}::{node}") for urn in run.urns), (node, server)
        assert any(urn.endswith(f"{firewall}::{node}-firewall") for urn in run.urns), (node, firewall)
        own = [
            urn.split("::")[-1]
            for urn in run.urns
            if urn.split("::")[-1].startswith(f"{node}-")
            and node_of(urn.split("::")[-1]) == node
            and "spaced:providers:" not in urn.split("::")[-2].split("$")[-1]
        ]
        parented = [urn.split("::")[-1] for urn in run.urns if f"{server}$" in urn or f"{firewall}$" in urn]
        assert own, f"{node} has no resources"
        # every resource named after the node hangs under one of the node's components (parent=self)
        assert set(own) <= set(parented), (node, set(own) - set(parented))


def test_peer_rules_live_in_the_firewall_component_not_in_the_finished_server(run: Run) -> None:
    """The server component is complete when `provision` returns; `protect` adds nothing under it."""
    for node in ("adopted-1", "hetzner-1", "aws-1", "gcp-1", "do-1", "ionos-1"):
        under_firewall = [
            urn
            for urn in run.urns
            if urn.split("::")[-1] != f"{node}-firewall"
            and "Firewall$" in urn
            and urn.split("::")[-1].startswith(f"{node}-firewall")
        ]
        assert under_firewall, node
        for urn in run.urns:
            if urn.split("::")[-1].startswith(f"{node}-firewall-"):
                assert "Server$" not in urn, urn  # never a child of the server component


def test_unknown_provider_lists_the_registry() -> None:
    with pytest.raises(ValueError, match="unknown provider 'vultr'; valid: " + ", ".join(sorted(REGISTRY))):
        adapter("vultr")


# --- firewalls: the same least-privilege rules, translated per provider -------------------------------

NODES = ("adopted-1", "hetzner-1", "aws-1", "aws-2", "gcp-1", "gcp-2", "do-1", "ionos-1")


def node_of(resource_name: str) -> str:
    """The node a resource belongs to: the longest node name its name starts with."""
    return max((n for n in NODES if resource_name.startswith(f"{n}-")), key=len)


def opened(run: Run) -> dict[str, set[tuple[str, int, str]]]:
    """node -> {(protocol, port, source)} over every provider's firewall resources."""
    result: dict[str, set[tuple[str, int, str]]] = {}
    m = run.mocks
    for rule in m.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
        source = rule.inputs.get("cidrIpv4") or rule.inputs.get("cidrIpv6")
        assert rule.inputs["fromPort"] == rule.inputs["toPort"]
        result.setdefault(node_of(rule.name), set()).add(
            (rule.inputs["ipProtocol"], rule.inputs["fromPort"], source)
        )
    for fw in m.of_type("hcloud:index/firewall:Firewall"):
        for rule in fw.inputs["rules"]:
            assert rule["direction"] == "in"
            for source in rule["sourceIps"]:
                result.setdefault(node_of(fw.name), set()).add((rule["protocol"], int(rule["port"]), source))
    for fw in m.of_type("gcp:compute/firewall:Firewall"):
        node = node_of(fw.name)
        assert fw.inputs["direction"] == "INGRESS" and fw.inputs["targetTags"] == [f"spaced-test-{node}"]
        for allow in fw.inputs["allows"]:
            for port in allow["ports"]:
                for source in fw.inputs["sourceRanges"]:
                    result.setdefault(node, set()).add((allow["protocol"], int(port), source))
    for fw in m.of_type("digitalocean:index/firewall:Firewall"):
        for rule in fw.inputs["inboundRules"]:
            for source in rule["sourceAddresses"]:
                result.setdefault(node_of(fw.name), set()).add(
                    (rule["protocol"], int(rule["portRange"]), source)
                )
    for fw in m.of_type("ionoscloud:compute/firewall:Firewall"):
        assert fw.inputs["type"] == "INGRESS" and fw.inputs["portRangeStart"] == fw.inputs["portRangeEnd"]
        source = fw.inputs.get("sourceIp") or "0.0.0.0/0"
        port = fw.inputs["portRangeStart"]
        result.setdefault(node_of(fw.name), set()).add((fw.inputs["protocol"].lower(), port, source))
    return result


CLOUD_NODES = ["hetzner-1", "aws-1", "aws-2", "gcp-1", "gcp-2", "do-1", "ionos-1"]


@pytest.mark.parametrize("node", CLOUD_NODES)
def test_cloud_firewall_is_least_privilege(run: Run, node: str) -> None:
    rules = opened(run)[node]
    ssh_sources = {source for protocol, port, source in rules if (protocol, port) == ("tcp", 22)}
    expected_ssh = {ADMIN_V4} if node == "ionos-1" else {ADMIN_V4, ADMIN_V6}  # no IPv6 on the IONOS NIC
    assert ssh_sources == expected_ssh
    wireguard = {source for protocol, port, source in rules if (protocol, port) == ("udp", 51820)}
    assert wireguard == run.peers_of(node)
    assert {(p, port) for p, port, _ in rules} == {("tcp", 22), ("udp", 51820)}  # not the edge: no web


def test_no_swarm_port_anywhere(run: Run) -> None:
    for node, rules in opened(run).items():
        assert not {(p, port) for p, port, _ in rules} & set(SWARM_PORTS), node


# --- provider specifics ---------------------------------------------------------------------------------


def test_hetzner_server(run: Run) -> None:
    server = run.mocks.named("hetzner-1-server")
    assert server.typ == "hcloud:index/server:Server"
    assert (server.inputs["serverType"], server.inputs["location"], server.inputs["image"]) == (
        "cx33",
        "nbg1",
        "debian-12",
    )
    assert is_secret(server.inputs["userData"])  # it holds the server's private host key
    assert unwrap(server.inputs["userData"]).startswith("#cloud-config\n")
    [key] = run.mocks.of_type("hcloud:index/sshKey:SshKey")
    assert key.inputs["publicKey"].startswith("ssh-ed25519 ")
    # boots behind its public rules; the peer rules are a second firewall attached once all exist
    assert server.inputs["firewallIds"] == [int(run.mocks.ids["hetzner-1-public-firewall"])]
    [attachment] = run.mocks.of_type("hcloud:index/firewallAttachment:FirewallAttachment")
    assert attachment.inputs["serverIds"] == [int(run.mocks.ids["hetzner-1-server"])]
    assert attachment.inputs["firewallId"] == int(run.mocks.ids["hetzner-1-firewall-rules"])


def test_aws_instance_security_group_key_pair_and_eip(run: Run) -> None:
    m = run.mocks
    instance = m.named("aws-1-instance")
    assert instance.inputs["ami"] == MOCK_AMI and instance.inputs["instanceType"] == "t3.small"
    assert instance.inputs["metadataOptions"]["httpTokens"] == "required"
    assert unwrap(instance.inputs["userData"]).startswith("#cloud-config\n")
    assert instance.inputs["vpcSecurityGroupIds"] == [m.ids["aws-1-security-group"]]
    # one key pair and one provider for the region, shared by both AWS nodes
    [key_pair] = m.of_type("aws:ec2/keyPair:KeyPair")
    assert instance.inputs["keyName"] == key_pair.name == m.named("aws-2-instance").inputs["keyName"]
    assert [p.inputs["region"] for p in m.of_type("pulumi:providers:aws")] == ["eu-central-1"]
    [eip] = m.of_type("aws:ec2/eip:Eip")
    assert eip.name == "aws-1-elastic-ip" and eip.inputs["domain"] == "vpc"
    assert eip.inputs["instance"].startswith("i-0")
    # the Debian AMI lookup asks for the right architecture: arm64 for the Graviton t4g node
    architectures = sorted(
        f["values"][0]
        for c in m.calls
        if c.token == "aws:ec2/getAmi:getAmi"
        for f in c.args["filters"]
        if f["name"] == "architecture"
    )
    assert architectures == ["arm64", "x86_64"]
    egress = m.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    assert {e.inputs.get("cidrIpv4") or e.inputs.get("cidrIpv6") for e in egress} == {"0.0.0.0/0", "::/0"}


def test_gcp_instances_own_network_and_static_address(run: Run) -> None:
    m = run.mocks
    [network] = m.of_type("gcp:compute/network:Network")
    assert network.inputs["autoCreateSubnetworks"] is True  # not `default`, whose rules open SSH to all
    one, two = m.named("gcp-1-instance"), m.named("gcp-2-instance")
    assert one.inputs["zone"] == "europe-west3-a" and two.inputs["zone"] == "europe-west3-b"
    assert one.inputs["tags"] == ["spaced-test-gcp-1"]
    assert unwrap(unwrap(one.inputs["metadata"])["user-data"]).startswith("#cloud-config\n")
    assert unwrap(one.inputs["metadata"])["block-project-ssh-keys"] == "TRUE"
    assert one.inputs["networkInterfaces"][0]["network"] == f"{network.name}-id"
    assert one.inputs["networkInterfaces"][0]["accessConfigs"][0]["natIp"] == m.ipv4["gcp-1-address"]
    assert [a.name for a in m.of_type("gcp:compute/address:Address")] == ["gcp-1-address"]


def test_digitalocean_droplet_key_and_firewall(run: Run) -> None:
    m = run.mocks
    droplet = m.named("do-1-droplet")
    [key] = m.of_type("digitalocean:index/sshKey:SshKey")
    assert droplet.inputs["sshKeys"] == ["3b:16:bf:e4:8b:00:8b:b8:59:8c:a9:d3:f0:19:45:fa"]
    assert key.inputs["publicKey"].startswith("ssh-ed25519 ")
    assert droplet.inputs["ipv6"] is True and droplet.inputs["region"] == "fra1"
    public, peers = m.named("do-1-public-firewall"), m.named("do-1-firewall-rules")
    # the public firewall targets the droplet's own tag, so it applies from the droplet's creation
    assert public.inputs["tags"] == ["spaced-test-do-1"] and "spaced-test-do-1" in droplet.inputs["tags"]
    assert peers.inputs["dropletIds"] == [int(m.ids["do-1-droplet"])]
    firewall = public
    outbound = {(r["protocol"], tuple(r["destinationAddresses"])) for r in firewall.inputs["outboundRules"]}
    assert ("tcp", ("0.0.0.0/0", "::/0")) in outbound and ("udp", ("0.0.0.0/0", "::/0")) in outbound


def test_ionos_datacenter_lan_ip_block_server(run: Run) -> None:
    m = run.mocks
    assert m.named("ionos-1-datacenter").inputs["location"] == "de/fra"
    assert m.named("ionos-1-lan").inputs["public"] is True
    assert m.named("ionos-1-ip-block").inputs["size"] == 1
    server = m.named("ionos-1-server")
    assert (server.inputs["cores"], server.inputs["ram"]) == (2, 4096)
    nic = server.inputs["nic"]
    assert nic["firewallActive"] is True and nic["firewallType"] == "INGRESS" and nic["lan"] == 1
    assert nic["ips"] == [m.ipv4["ionos-1-ip-block"]]
    user_data = base64.b64decode(unwrap(unwrap(server.inputs["volume"])["userData"])).decode()
    assert user_data.startswith("#cloud-config\n")
    rules = [r for r in m.of_type("ionoscloud:compute/firewall:Firewall")]
    assert all(r.inputs["nicId"] == "ionos-1-server-nic-id" for r in rules)


def test_existing_node_is_adopted_over_ssh_with_nftables(run: Run) -> None:
    m = run.mocks
    bootstrap, firewall = m.named("adopted-1-bootstrap"), m.named("adopted-1-firewall-nftables")
    for command in (bootstrap, firewall):
        assert command.typ == "command:remote:Command"
        assert is_secret(command.inputs["connection"])  # it carries the private key
        connection = unwrap(command.inputs["connection"])
        assert (connection["host"], connection["user"]) == (ADOPTED_IP, "deploy")
        assert connection["privateKey"] == PRIVATE_KEY
        assert command.inputs["create"] == "sudo sh -s"
    bootstrap_script = unwrap(bootstrap.inputs["stdin"])
    assert "apt-get install" in bootstrap_script and "docker.io" in bootstrap_script
    script = unwrap(firewall.inputs["stdin"])
    assert f"ip saddr {{ {ADMIN_V4} }} tcp dport 22 accept" in script
    assert f"ip6 saddr {{ {ADMIN_V6} }} tcp dport 22 accept" in script
    assert "tcp dport 80 accept" in script and "tcp dport 443 accept" in script  # the edge node
    for peer in run.peers_of("adopted-1"):
        assert peer in script
    assert f"{ADOPTED_IP}/32" not in script
    for _, port in SWARM_PORTS:
        assert f"dport {port} " not in script
    # no cloud resources for an adopted node
    assert not [
        r
        for r in m.resources
        if r.name.startswith("adopted-1-")
        and r.typ not in ("command:remote:Command", "spaced:providers:ExistingFirewall")
    ]
