"""Hetzner Cloud (pulumi_hcloud): a server with IPv4+IPv6 and a Hetzner firewall attached to it."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_hcloud as hcloud

from infra.host import Host
from infra.plans.cloud_init import cloud_config
from infra.plans.firewall import FirewallRule
from infra.providers.base import ProvisionContext, build_host, protect_server, provision_server
from infra.topology import HetznerNode


class HetznerServer(pulumi.ComponentResource):
    """One Hetzner Cloud server and, in pass two, its firewall."""

    def __init__(self, name: str, node: HetznerNode, ctx: ProvisionContext,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spaced:providers:HetznerServer", name, None, opts)
        self._name = name
        ssh_key = ctx.shared("hetzner-deploy-key", lambda: hcloud.SshKey(
            "hetzner-deploy-key", public_key=ctx.ssh_public_key,
            labels={"spaced-environment": ctx.environment}))
        self.server = hcloud.Server(
            f"{name}-server",
            name=f"{ctx.environment}-{node.name}",
            server_type=node.size,
            image=node.image,
            location=node.region,
            ssh_keys=[ssh_key.id],
            user_data=cloud_config(node.name, ctx.ssh_user, ctx.ssh_public_key),
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            labels={"spaced-environment": ctx.environment, "spaced-node": node.name},
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["user_data"]),
        )
        self.host = build_host(node, ctx, self, self.server.ipv4_address, self.server.ipv6_address)
        self.register_outputs({"ipv4": self.server.ipv4_address, "ipv6": self.server.ipv6_address})

    def add_firewall(self, rules: Sequence[FirewallRule]) -> list[pulumi.Resource]:
        """A Hetzner firewall with exactly `rules` inbound (outbound stays open), attached to the server."""
        firewall = hcloud.Firewall(
            f"{self._name}-firewall",
            rules=[
                hcloud.FirewallRuleArgs(direction="in", protocol=rule.protocol, port=str(rule.port),
                                        source_ips=list(rule.sources), description=rule.description)
                for rule in rules
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        attachment = hcloud.FirewallAttachment(
            f"{self._name}-firewall-attachment",
            firewall_id=firewall.id.apply(int),
            server_ids=[self.server.id.apply(int)],
            opts=pulumi.ResourceOptions(parent=self),
        )
        return [firewall, attachment]


def provision(node: HetznerNode, ctx: ProvisionContext) -> Host:
    """Pass one: create the server; returns its Host."""
    return provision_server(HetznerServer, node, ctx)


def protect(node: HetznerNode, host: Host, rules: Sequence[FirewallRule], ctx: ProvisionContext
            ) -> list[pulumi.Resource]:
    """Pass two: the firewall, once every node's address exists."""
    return protect_server(HetznerServer, node, rules, ctx)
