"""Existing servers (e.g. the IONOS VPS): adopted by IP, no cloud resource; managed over SSH.

The deploy user must already exist with the deploy key and passwordless sudo (README, "Adopting a
server"). `provision` installs the same packages and hardening as cloud-init does elsewhere;
`protect` loads an nftables firewall with the whole rule set (public and peer rules in one ruleset),
because no cloud firewall sits in front of these hosts.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from infra.connection import ssh_connection
from infra.plans.cloud_init import bootstrap_script
from infra.plans.firewall import FIREWALL_REMOVE_SCRIPT, FirewallRule, firewall_install_script, public_rules
from infra.providers.base import ProvisionContext, ServerArgs, authorized_keys_command, build_host
from infra.topology import ExistingNode


class ExistingServer(pulumi.ComponentResource):
    """An adopted server: the bootstrap command over SSH."""

    def __init__(
        self, name: str, args: ServerArgs[ExistingNode], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:ExistingServer", name, None, opts)
        node, ctx = args.node, args.ctx
        if ctx.ssh_private_key is None:
            raise ValueError(
                f"node {node.name!r} is adopted over SSH but spaced:sshPrivateKey is not set; "
                "run: pulumi config set --secret spaced:sshPrivateKey < ~/.ssh/spaced_deploy"
            )
        self.host = build_host(
            node,
            ctx,
            self,
            node.public_ipv4,
            node.public_ipv6,
            host_key=node.host_key,
            server_id=node.host_key,
        )
        # Pins the host key the topology carries: another server at this address stops the run here.
        self.connection = ssh_connection(self.host, ctx.ssh_private_key)
        # Rules known now; `protect` loads them together with the peer rules as one ruleset.
        self.public_rules = public_rules(node.edge, ctx.admin_ssh_cidrs)
        self.bootstrap = command.remote.Command(
            f"{name}-bootstrap",
            connection=self.connection,
            create="sudo sh -s",
            stdin=bootstrap_script(ctx.ssh_user, ctx.upgrade_times.get(node.name, "03:00")),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.authorized_keys = authorized_keys_command(self.host, ctx, self, [self.bootstrap])
        self.register_outputs({"ipv4": node.public_ipv4})


@dataclass(frozen=True)
class ExistingFirewallArgs:
    """How to reach the host, what must run first (the bootstrap) and every rule of the ruleset."""

    connection: command.remote.ConnectionArgs
    after: pulumi.Resource
    rules: Sequence[FirewallRule]


class ExistingFirewall(pulumi.ComponentResource):
    """An nftables ruleset on an adopted host, loaded now and at every boot."""

    def __init__(
        self, name: str, args: ExistingFirewallArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:ExistingFirewall", name, None, opts)
        rules = list(args.rules)
        # Sources may be Outputs (the peers' /32s): resolve them all, then render the plain script.
        sources = pulumi.Output.all(*[pulumi.Output.all(*rule.sources) for rule in rules])
        script = sources.apply(
            lambda resolved: firewall_install_script(
                [
                    dataclasses.replace(rule, sources=tuple(values))
                    for rule, values in zip(rules, resolved, strict=True)
                ]
            )
        )
        self.command = command.remote.Command(
            f"{name}-nftables",
            connection=args.connection,
            create="sudo sh -s",
            stdin=script,
            delete=f"sudo sh -c {shlex.quote(FIREWALL_REMOVE_SCRIPT)}",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.after]),
        )
        self.register_outputs({})


def provision(node: ExistingNode, ctx: ProvisionContext) -> ExistingServer:
    """Adopt the server and bootstrap it."""
    return ExistingServer(node.name, ServerArgs(node, ctx))


def protect(server: ExistingServer, rules: Sequence[FirewallRule]) -> ExistingFirewall:
    """The nftables firewall: the public rules and the peer rules in one ruleset."""
    return ExistingFirewall(
        f"{server.host.name}-firewall",
        ExistingFirewallArgs(server.connection, server.bootstrap, [*server.public_rules, *rules]),
    )
