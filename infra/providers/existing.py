"""Existing servers (e.g. the IONOS VPS): adopted by IP, no cloud resource; managed over SSH.

The deploy user must already exist with the deploy key and passwordless sudo (README, "Adopting a
server"). Pass one installs the same packages and hardening as cloud-init does elsewhere; pass two
loads an nftables firewall, because no cloud firewall sits in front of these hosts.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence

import pulumi
import pulumi_command as command

from infra.host import Host
from infra.plans.cloud_init import bootstrap_script
from infra.plans.firewall import FIREWALL_REMOVE_SCRIPT, FirewallRule, firewall_install_script
from infra.providers.base import ProvisionContext, build_host, protect_server, provision_server
from infra.topology import ExistingNode


class ExistingServer(pulumi.ComponentResource):
    """An adopted server: a bootstrap command and, in pass two, a firewall command."""

    def __init__(self, name: str, node: ExistingNode, ctx: ProvisionContext,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spaced:providers:ExistingServer", name, None, opts)
        if ctx.ssh_private_key is None:
            raise ValueError(
                f"node {node.name!r} is adopted over SSH but spaced:sshPrivateKey is not set; "
                "run: pulumi config set --secret spaced:sshPrivateKey < ~/.ssh/spaced_deploy"
            )
        self._name = name
        self.connection = command.remote.ConnectionArgs(
            host=node.public_ipv4, user=ctx.ssh_user, private_key=ctx.ssh_private_key)
        self.bootstrap = command.remote.Command(
            f"{name}-bootstrap",
            connection=self.connection,
            create="sudo sh -s",
            stdin=bootstrap_script(ctx.ssh_user),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.host = build_host(node, ctx, self, node.public_ipv4, node.public_ipv6)
        self.register_outputs({"ipv4": node.public_ipv4})

    def add_firewall(self, rules: Sequence[FirewallRule]) -> list[pulumi.Resource]:
        """An nftables ruleset, loaded now and at every boot, once the peers' addresses are known."""
        # Sources may be Outputs (the peers' /32s): resolve them all, then render the plain script.
        sources = pulumi.Output.all(*[pulumi.Output.all(*rule.sources) for rule in rules])
        script = sources.apply(lambda resolved: firewall_install_script(
            [dataclasses.replace(rule, sources=tuple(values))
             for rule, values in zip(rules, resolved, strict=True)]
        ))
        firewall = command.remote.Command(
            f"{self._name}-firewall",
            connection=self.connection,
            create="sudo sh -s",
            stdin=script,
            delete=f"sudo sh -c {shlex.quote(FIREWALL_REMOVE_SCRIPT)}",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.bootstrap]),
        )
        return [firewall]


def provision(node: ExistingNode, ctx: ProvisionContext) -> Host:
    """Pass one: adopt the server and bootstrap it; returns the Host."""
    return provision_server(ExistingServer, node, ctx)


def protect(node: ExistingNode, host: Host, rules: Sequence[FirewallRule], ctx: ProvisionContext
            ) -> list[pulumi.Resource]:
    """Pass two: the nftables firewall."""
    return protect_server(ExistingServer, node, rules, ctx)
