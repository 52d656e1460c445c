"""DigitalOcean (pulumi_digitalocean): a droplet with IPv4+IPv6, the deploy SSH key, cloud firewalls.

The droplet boots behind a cloud firewall with its public rules (SSH, web on edge nodes): the
firewall exists first and targets the droplet's own tag, so DigitalOcean applies it as the droplet
is created. The WireGuard rule, which needs the other nodes' addresses, is a second firewall on the
droplet once every server exists (DigitalOcean applies the union of a droplet's firewalls).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_digitalocean as digitalocean

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
from infra.topology import DigitalOceanNode

ANYWHERE = ["0.0.0.0/0", "::/0"]


def inbound_rules(rules: Sequence[FirewallRule]) -> list[digitalocean.FirewallInboundRuleArgs]:
    """DigitalOcean inbound rules, one per plan rule (sources may be Outputs)."""
    return [
        digitalocean.FirewallInboundRuleArgs(
            protocol=rule.protocol, port_range=str(rule.port), source_addresses=list(rule.sources)
        )
        for rule in rules
    ]


def own_key_name(environment: str) -> str:
    """The name of the deploy key a stack registers itself (how it recognises its own key)."""
    return f"spaced-{environment}-deploy"


def deploy_key_fingerprint(ctx: ProvisionContext) -> pulumi.Input[str]:
    """The fingerprint droplets reference: an identical key another stack registered (DigitalOcean
    refuses duplicates), the one `ssh.existing_keys.digitalocean` names, or this stack's own."""
    listing = digitalocean.get_ssh_keys().ssh_keys or []
    keys = [AccountKey(str(k.id), k.name, k.fingerprint) for k in listing]
    reuse = key_to_reuse(
        keys,
        ctx.ssh_public_key,
        is_own=lambda key: key.name == own_key_name(ctx.environment),
        named=ctx.existing_keys.get("digitalocean"),
        provider="digitalocean",
    )
    if reuse is not None:
        return reuse.fingerprint
    return digitalocean.SshKey(
        "digitalocean-deploy-key", name=own_key_name(ctx.environment), public_key=ctx.ssh_public_key
    ).fingerprint


class DigitalOceanServer(pulumi.ComponentResource):
    """One droplet, created behind its public-rules firewall."""

    def __init__(
        self, name: str, args: ServerArgs[DigitalOceanNode], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:DigitalOceanServer", name, None, opts)
        node, ctx = args.node, args.ctx
        ssh_key_fingerprint = ctx.shared("digitalocean-deploy-key", lambda: deploy_key_fingerprint(ctx))
        self.host_key = new_host_key(name, self)
        self.tag = digitalocean.Tag(
            f"{name}-tag",
            name=f"spaced-{ctx.environment}-{node.name}",
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.public_firewall = digitalocean.Firewall(
            f"{name}-public-firewall",
            tags=[self.tag.name],
            inbound_rules=inbound_rules(public_rules(node.edge, ctx.admin_ssh_cidrs)),
            # DigitalOcean drops whatever outbound traffic no firewall of the droplet allows.
            outbound_rules=[
                digitalocean.FirewallOutboundRuleArgs(
                    protocol="tcp", port_range="1-65535", destination_addresses=ANYWHERE
                ),
                digitalocean.FirewallOutboundRuleArgs(
                    protocol="udp", port_range="1-65535", destination_addresses=ANYWHERE
                ),
                digitalocean.FirewallOutboundRuleArgs(protocol="icmp", destination_addresses=ANYWHERE),
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.droplet = digitalocean.Droplet(
            f"{name}-droplet",
            name=f"{ctx.environment}-{node.name}",
            image=node.image,
            region=node.region,
            size=node.size,
            ipv6=True,
            ssh_keys=[ssh_key_fingerprint],
            user_data=user_data(node, ctx, self.host_key),
            tags=[f"spaced-{ctx.environment}", self.tag.name],
            # Changing user data or ssh_keys replaces a droplet; running nodes keep theirs (a new deploy
            # key reaches them through the authorized-keys command). The firewall exists before the
            # droplet, so the droplet is filtered from its first packet.
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["user_data", "ssh_keys"], depends_on=[self.public_firewall]
            ),
        )
        self.host = build_host(
            node,
            ctx,
            self,
            self.droplet.ipv4_address,
            self.droplet.ipv6_address,
            host_key=public_host_key(self.host_key),
            server_id=self.droplet.id,
        )
        self.authorized_keys = authorized_keys_command(self.host, ctx, self, [self.droplet])
        self.register_outputs({"ipv4": self.droplet.ipv4_address, "ipv6": self.droplet.ipv6_address})


@dataclass(frozen=True)
class DigitalOceanFirewallArgs:
    """The droplet to protect (its numeric id) and the rules of its peer firewall."""

    droplet_id: pulumi.Input[str]
    rules: Sequence[FirewallRule]


class DigitalOceanFirewall(pulumi.ComponentResource):
    """A cloud firewall on one droplet with exactly `rules` inbound (outbound: the public firewall's)."""

    def __init__(
        self, name: str, args: DigitalOceanFirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:DigitalOceanFirewall", name, None, opts)
        self.firewall: digitalocean.Firewall | None = None
        if not args.rules:  # a single node has no peers
            self.register_outputs({})
            return
        self.firewall = digitalocean.Firewall(
            f"{name}-rules",
            droplet_ids=[pulumi.Output.from_input(args.droplet_id).apply(int)],
            inbound_rules=inbound_rules(args.rules),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"firewall_id": self.firewall.id})


def provision(node: DigitalOceanNode, ctx: ProvisionContext) -> DigitalOceanServer:
    """The node's droplet, behind its public rules from the first boot."""
    return DigitalOceanServer(node.name, ServerArgs(node, ctx))


def protect(server: DigitalOceanServer, rules: Sequence[FirewallRule]) -> DigitalOceanFirewall:
    """The node's peer firewall, once every node's address exists."""
    return DigitalOceanFirewall(
        f"{server.host.name}-firewall", DigitalOceanFirewallArgs(server.droplet.id, rules)
    )
