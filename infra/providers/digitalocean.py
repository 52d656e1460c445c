"""DigitalOcean (pulumi_digitalocean): a droplet with IPv4+IPv6, the deploy SSH key, a cloud firewall."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_digitalocean as digitalocean

from infra.host import Host
from infra.plans.cloud_init import cloud_config
from infra.plans.firewall import FirewallRule
from infra.providers.base import ProvisionContext, build_host, protect_server, provision_server
from infra.topology import DigitalOceanNode

ANYWHERE = ["0.0.0.0/0", "::/0"]


class DigitalOceanServer(pulumi.ComponentResource):
    """One droplet and, in pass two, its cloud firewall."""

    def __init__(self, name: str, node: DigitalOceanNode, ctx: ProvisionContext,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spaced:providers:DigitalOceanServer", name, None, opts)
        self._name = name
        ssh_key = ctx.shared("digitalocean-deploy-key", lambda: digitalocean.SshKey(
            "digitalocean-deploy-key", public_key=ctx.ssh_public_key))
        self.droplet = digitalocean.Droplet(
            f"{name}-droplet",
            name=f"{ctx.environment}-{node.name}",
            image=node.image,
            region=node.region,
            size=node.size,
            ipv6=True,
            ssh_keys=[ssh_key.fingerprint],
            user_data=cloud_config(node.name, ctx.ssh_user, ctx.ssh_public_key),
            tags=[f"spaced-{ctx.environment}"],
            # Changing user data replaces a droplet; running nodes keep theirs.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["user_data"]),
        )
        self.host = build_host(node, ctx, self, self.droplet.ipv4_address, self.droplet.ipv6_address)
        self.register_outputs({"ipv4": self.droplet.ipv4_address, "ipv6": self.droplet.ipv6_address})

    def add_firewall(self, rules: Sequence[FirewallRule]) -> list[pulumi.Resource]:
        """A cloud firewall: exactly `rules` inbound; all outbound (DO blocks what is not listed)."""
        firewall = digitalocean.Firewall(
            f"{self._name}-firewall",
            droplet_ids=[self.droplet.id.apply(int)],
            inbound_rules=[
                digitalocean.FirewallInboundRuleArgs(protocol=rule.protocol, port_range=str(rule.port),
                                                     source_addresses=list(rule.sources))
                for rule in rules
            ],
            outbound_rules=[
                digitalocean.FirewallOutboundRuleArgs(protocol="tcp", port_range="1-65535",
                                                      destination_addresses=ANYWHERE),
                digitalocean.FirewallOutboundRuleArgs(protocol="udp", port_range="1-65535",
                                                      destination_addresses=ANYWHERE),
                digitalocean.FirewallOutboundRuleArgs(protocol="icmp", destination_addresses=ANYWHERE),
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        return [firewall]


def provision(node: DigitalOceanNode, ctx: ProvisionContext) -> Host:
    """Pass one: the droplet; returns the Host."""
    return provision_server(DigitalOceanServer, node, ctx)


def protect(node: DigitalOceanNode, host: Host, rules: Sequence[FirewallRule], ctx: ProvisionContext
            ) -> list[pulumi.Resource]:
    """Pass two: the cloud firewall."""
    return protect_server(DigitalOceanServer, node, rules, ctx)
