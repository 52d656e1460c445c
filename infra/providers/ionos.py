"""IONOS Cloud (pulumi_ionoscloud): a data center, a public LAN, a reserved IP, a server with NIC firewall.

IONOS NIC firewall rules take one source each, so a plan rule with several sources becomes several
rules. IPv6 is not configured on the NIC, so IPv6 sources are skipped here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_ionoscloud as ionoscloud

from infra.plans.firewall import ANYWHERE_V4, FirewallRule, public_rules, split_families
from infra.providers.base import (
    ProvisionContext,
    ServerArgs,
    authorized_keys_command,
    build_host,
    new_host_key,
    public_host_key,
    user_data,
)
from infra.topology import IonosNode


class IonosServer(pulumi.ComponentResource):
    """One IONOS Cloud server in its own virtual data center."""

    def __init__(
        self, name: str, args: ServerArgs[IonosNode], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:IonosServer", name, None, opts)
        node, ctx = args.node, args.ctx
        child = pulumi.ResourceOptions(parent=self)
        display_name = f"spaced-{ctx.environment}-{node.name}"
        self.datacenter = ionoscloud.compute.Datacenter(
            f"{name}-datacenter", name=display_name, location=node.region, opts=child
        )
        self.lan = ionoscloud.compute.Lan(
            f"{name}-lan", datacenter_id=self.datacenter.id, public=True, name=display_name, opts=child
        )
        self.ip_block = ionoscloud.compute.IPBlock(
            f"{name}-ip-block", location=node.region, size=1, name=display_name, opts=child
        )
        public_ipv4 = self.ip_block.ips.apply(lambda ips: ips[0])
        self.host_key = new_host_key(name, self)
        # The API wants the user data base64-encoded.
        encoded_user_data = user_data(node, ctx, self.host_key).apply(
            lambda text: base64.b64encode(text.encode()).decode()
        )
        self.server = ionoscloud.compute.Server(
            f"{name}-server",
            name=display_name,
            datacenter_id=self.datacenter.id,
            cores=node.cores,
            ram=node.ram_mb,
            image_name=node.image,
            ssh_keys=[ctx.ssh_public_key],
            volume=ionoscloud.compute.ServerVolumeArgs(
                name=f"{display_name}-boot",
                size=node.disk_gb,
                disk_type="SSD Standard",
                user_data=encoded_user_data,
            ),
            nic=ionoscloud.compute.ServerNicArgs(
                lan=self.lan.id.apply(int),
                dhcp=True,
                ips=[public_ipv4],
                # Only the NIC's rules let traffic in: its public rules below, the peer rules later.
                firewall_active=True,
                firewall_type="INGRESS",
            ),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["volume.userData", "ssh_keys"]),
        )
        self.public_rules = nic_firewall_rules(
            f"{name}-public",
            NicRef(self.datacenter.id, self.server.id, self.server.primary_nic),
            public_rules(node.edge, ctx.admin_ssh_cidrs),
            child,
        )
        self.host = build_host(
            node, ctx, self, public_ipv4, host_key=public_host_key(self.host_key), server_id=self.server.id
        )
        # ssh_keys and the user data are ignored on running servers: the deploy key rotates over SSH.
        self.authorized_keys = authorized_keys_command(
            self.host, ctx, self, [self.server, *self.public_rules]
        )
        self.register_outputs({"ipv4": public_ipv4, "datacenter_id": self.datacenter.id})


@dataclass(frozen=True)
class NicRef:
    """The NIC whose firewall holds a node's rules."""

    datacenter_id: pulumi.Input[str]
    server_id: pulumi.Input[str]
    nic_id: pulumi.Input[str]


def nic_firewall_rules(
    prefix: str, nic: NicRef, rules: Sequence[FirewallRule], opts: pulumi.ResourceOptions
) -> list[ionoscloud.compute.Firewall]:
    """One NIC firewall rule per (rule, IPv4 source), named `<prefix>-<proto>-<port>-<n>`;
    "anywhere" is a rule without a source."""
    created = []
    for rule in rules:
        v4, _v6 = split_families(rule.sources)
        for index, source in enumerate(v4):
            created.append(
                ionoscloud.compute.Firewall(
                    f"{prefix}-{rule.protocol}-{rule.port}-{index}",
                    datacenter_id=nic.datacenter_id,
                    server_id=nic.server_id,
                    nic_id=nic.nic_id,
                    protocol=rule.protocol.upper(),
                    port_range_start=rule.port,
                    port_range_end=rule.port,
                    source_ip=None if source == ANYWHERE_V4 else source,
                    type="INGRESS",
                    name=rule.description[:60],
                    opts=opts,
                )
            )
    return created


@dataclass(frozen=True)
class IonosFirewallArgs:
    """The node's NIC and the peer rules."""

    nic: NicRef
    rules: Sequence[FirewallRule]


class IonosFirewall(pulumi.ComponentResource):
    """The peer rules of one node as rules of its NIC firewall."""

    def __init__(
        self, name: str, args: IonosFirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:IonosFirewall", name, None, opts)
        self.rules = nic_firewall_rules(name, args.nic, args.rules, pulumi.ResourceOptions(parent=self))
        self.register_outputs({"nic_id": args.nic.nic_id})


def provision(node: IonosNode, ctx: ProvisionContext) -> IonosServer:
    """Data center, LAN, IP block, server and the NIC's public rules."""
    return IonosServer(node.name, ServerArgs(node, ctx))


def protect(server: IonosServer, rules: Sequence[FirewallRule]) -> IonosFirewall:
    """The node's peer rules, once every node's address exists."""
    nic = NicRef(server.datacenter.id, server.server.id, server.server.primary_nic)
    return IonosFirewall(f"{server.host.name}-firewall", IonosFirewallArgs(nic, rules))
