"""Hetzner Cloud (pulumi_hcloud): a server with IPv4+IPv6, firewalled from its first boot.

The server is created with a firewall holding its public rules (SSH, web on edge nodes) in
`firewall_ids`, so it is never reachable unfiltered; the WireGuard rule, which needs the other
nodes' addresses, is a second firewall attached once every server exists (Hetzner applies every
firewall attached to a server). That is the hcloud provider's documented way to use servers'
addresses in firewall rules without a window of exposure (terraform-provider-hcloud PR #500).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_hcloud as hcloud

from infra.plans.deploy_key import AccountKey, key_to_reuse
from infra.plans.firewall import FirewallRule, public_rules
from infra.providers.base import (
    ProvisionContext,
    ServerArgs,
    authorized_keys_command,
    build_host,
    new_host_key,
    public_host_key,
    user_data,
)
from infra.topology import HetznerNode


def firewall_rules(rules: Sequence[FirewallRule]) -> list[hcloud.FirewallRuleArgs]:
    """Hetzner inbound rules, one per plan rule (sources may be Outputs)."""
    return [
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol=rule.protocol,
            port=str(rule.port),
            source_ips=list(rule.sources),
            description=rule.description,
        )
        for rule in rules
    ]


def deploy_key_id(ctx: ProvisionContext) -> pulumi.Input[str]:
    """The id of the deploy key in the Hetzner account: an identical key another stack registered
    (Hetzner refuses duplicates), the one `ssh.existing_keys.hetzner` names, or this stack's own."""
    listing = hcloud.get_ssh_keys().ssh_keys or []
    keys = [AccountKey(str(k.id), k.name, k.fingerprint, dict(k.labels or {})) for k in listing]
    reuse = key_to_reuse(
        keys,
        ctx.ssh_public_key,
        is_own=lambda key: key.labels.get("spaced-environment") == ctx.environment,
        named=ctx.existing_keys.get("hetzner"),
        provider="hetzner",
    )
    if reuse is not None:
        return reuse.id
    return hcloud.SshKey(
        "hetzner-deploy-key", public_key=ctx.ssh_public_key, labels={"spaced-environment": ctx.environment}
    ).id


class HetznerServer(pulumi.ComponentResource):
    """One Hetzner Cloud server behind a firewall with its public rules."""

    def __init__(
        self, name: str, args: ServerArgs[HetznerNode], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:HetznerServer", name, None, opts)
        node, ctx = args.node, args.ctx
        ssh_key_id = ctx.shared("hetzner-deploy-key", lambda: deploy_key_id(ctx))
        child = pulumi.ResourceOptions(parent=self)
        self.host_key = new_host_key(name, self)
        self.public_firewall = hcloud.Firewall(
            f"{name}-public-firewall",
            rules=firewall_rules(public_rules(node.edge, ctx.admin_ssh_cidrs)),
            labels={"spaced-environment": ctx.environment, "spaced-node": node.name},
            opts=child,
        )
        self.server = hcloud.Server(
            f"{name}-server",
            name=f"{ctx.environment}-{node.name}",
            server_type=node.size,
            image=node.image,
            location=node.region,
            ssh_keys=[ssh_key_id],
            user_data=user_data(node, ctx, self.host_key),
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            # Attached at creation: the server boots behind its firewall.
            firewall_ids=[self.public_firewall.id.apply(int)],
            labels={"spaced-environment": ctx.environment, "spaced-node": node.name},
            # Key inputs (ssh_keys, user_data) force a replacement: a running server keeps its own;
            # a new deploy key reaches it through the authorized-keys command below. firewall_ids
            # also lists the peer firewall once its attachment exists: not a change to undo.
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["user_data", "ssh_keys", "firewall_ids"]
            ),
        )
        self.host = build_host(
            node,
            ctx,
            self,
            self.server.ipv4_address,
            self.server.ipv6_address,
            host_key=public_host_key(self.host_key),
            server_id=self.server.id,
        )
        self.authorized_keys = authorized_keys_command(self.host, ctx, self, [self.server])
        self.register_outputs({"ipv4": self.server.ipv4_address, "ipv6": self.server.ipv6_address})


@dataclass(frozen=True)
class HetznerFirewallArgs:
    """The server to protect (its numeric id as an Output) and the rules of the peer firewall."""

    server_id: pulumi.Input[str]
    rules: Sequence[FirewallRule]


class HetznerFirewall(pulumi.ComponentResource):
    """A Hetzner firewall with exactly `rules` inbound (outbound stays open), attached to the server."""

    def __init__(
        self, name: str, args: HetznerFirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:HetznerFirewall", name, None, opts)
        self.firewall: hcloud.Firewall | None = None
        if not args.rules:  # a single node has no peers
            self.register_outputs({})
            return
        child = pulumi.ResourceOptions(parent=self)
        self.firewall = hcloud.Firewall(f"{name}-rules", rules=firewall_rules(args.rules), opts=child)
        self.attachment = hcloud.FirewallAttachment(
            f"{name}-attachment",
            firewall_id=self.firewall.id.apply(int),
            server_ids=[pulumi.Output.from_input(args.server_id).apply(int)],
            opts=child,
        )
        self.register_outputs({"firewall_id": self.firewall.id})


def provision(node: HetznerNode, ctx: ProvisionContext) -> HetznerServer:
    """The node's server, behind its public rules from the first boot."""
    return HetznerServer(node.name, ServerArgs(node, ctx))


def protect(server: HetznerServer, rules: Sequence[FirewallRule]) -> HetznerFirewall:
    """The node's peer firewall, once every node's address exists."""
    return HetznerFirewall(f"{server.host.name}-firewall", HetznerFirewallArgs(server.server.id, rules))
