"""Google Cloud (pulumi_gcp): an instance in the stack's own VPC, per-node firewall rules, optional static IP.

The stack gets its own auto-mode VPC network instead of `default`: the default network ships with
rules that open SSH and RDP to the whole internet, which least privilege cannot accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.plans.cloud_init import GCE_GUEST_AGENT_CONFIG
from infra.plans.firewall import FirewallRule, public_rules, split_families
from infra.providers.base import (
    ProvisionContext,
    ServerArgs,
    authorized_keys_command,
    build_host,
    new_host_key,
    public_host_key,
    user_data,
)
from infra.topology import GcpNode


class GcpServer(pulumi.ComponentResource):
    """One Compute Engine instance in the stack's VPC; its public rules target its network tag."""

    def __init__(
        self, name: str, args: ServerArgs[GcpNode], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:GcpServer", name, None, opts)
        node, ctx = args.node, args.ctx
        self.network = ctx.shared(
            "gcp-network",
            lambda: gcp.compute.Network(
                "gcp-network",
                auto_create_subnetworks=True,
                description=f"spaced {ctx.environment}: no ingress except the per-node rules",
            ),
        )
        self.tag = f"spaced-{ctx.environment}-{node.name}"
        child = pulumi.ResourceOptions(parent=self)
        labels = {"spaced-environment": ctx.environment, "spaced-node": node.name}

        # The stack's VPC lets nothing in but these rules (and, later, the peer rules).
        self.public_rules = vpc_firewall_rules(
            f"{name}-public", self.network.id, self.tag, public_rules(node.edge, ctx.admin_ssh_cidrs), child
        )
        self.host_key = new_host_key(name, self)
        nat_ip: pulumi.Input[str] | None = None
        if node.static_ip:
            self.address = gcp.compute.Address(
                f"{name}-address", region=node.region, labels=labels, opts=child
            )
            nat_ip = self.address.address
        self.instance = gcp.compute.Instance(
            f"{name}-instance",
            machine_type=node.size,
            zone=node.effective_zone,
            boot_disk=gcp.compute.InstanceBootDiskArgs(
                initialize_params=gcp.compute.InstanceBootDiskInitializeParamsArgs(
                    image=node.image, size=node.disk_gb
                )
            ),
            network_interfaces=[
                gcp.compute.InstanceNetworkInterfaceArgs(
                    network=self.network.id,
                    access_configs=[gcp.compute.InstanceNetworkInterfaceAccessConfigArgs(nat_ip=nat_ip)],
                )
            ],
            metadata={
                "user-data": user_data(node, ctx, self.host_key, extra_files=[GCE_GUEST_AGENT_CONFIG]),
                # Only the deploy key (from the user data) may log in, not project-wide keys.
                "block-project-ssh-keys": "TRUE",
            },
            tags=[self.tag],
            labels=labels,
            allow_stopping_for_update=True,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["metadata"]),
        )
        public_ipv4 = (
            self.address.address
            if node.static_ip
            else self.instance.network_interfaces.apply(lambda nics: nics[0].access_configs[0].nat_ip)
        )
        self.host = build_host(
            node, ctx, self, public_ipv4, host_key=public_host_key(self.host_key), server_id=self.instance.id
        )
        # metadata (user data with its keys) is ignored on running instances: keys rotate over SSH.
        self.authorized_keys = authorized_keys_command(self.host, ctx, self, [self.instance])
        self.register_outputs({"ipv4": public_ipv4})


def vpc_firewall_rules(
    prefix: str,
    network_id: pulumi.Input[str],
    tag: str,
    rules: Sequence[FirewallRule],
    opts: pulumi.ResourceOptions,
) -> list[gcp.compute.Firewall]:
    """One VPC firewall rule per plan rule and address family (GCP rules cannot mix v4 and v6),
    named `<prefix>-<proto>-<port>-<family>`, targeting instances tagged `tag`."""
    created = []
    for rule in rules:
        v4, v6 = split_families(rule.sources)
        for family, sources in (("v4", v4), ("v6", v6)):
            if not sources:
                continue
            created.append(
                gcp.compute.Firewall(
                    f"{prefix}-{rule.protocol}-{rule.port}-{family}",
                    network=network_id,
                    direction="INGRESS",
                    allows=[gcp.compute.FirewallAllowArgs(protocol=rule.protocol, ports=[str(rule.port)])],
                    source_ranges=list(sources),
                    target_tags=[tag],
                    description=rule.description,
                    opts=opts,
                )
            )
    return created


@dataclass(frozen=True)
class GcpFirewallArgs:
    """The stack's network, the node's network tag and the peer rules."""

    network_id: pulumi.Input[str]
    tag: str
    rules: Sequence[FirewallRule]


class GcpFirewall(pulumi.ComponentResource):
    """The peer rules of one node as VPC firewall rules on its network tag."""

    def __init__(self, name: str, args: GcpFirewallArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spaced:providers:GcpFirewall", name, None, opts)
        self.rules = vpc_firewall_rules(
            name, args.network_id, args.tag, args.rules, pulumi.ResourceOptions(parent=self)
        )
        self.register_outputs({"tag": args.tag})


def provision(node: GcpNode, ctx: ProvisionContext) -> GcpServer:
    """The instance (and its static address) with its public rules."""
    return GcpServer(node.name, ServerArgs(node, ctx))


def protect(server: GcpServer, rules: Sequence[FirewallRule]) -> GcpFirewall:
    """The node's peer rules, once every node's address exists."""
    return GcpFirewall(f"{server.host.name}-firewall", GcpFirewallArgs(server.network.id, server.tag, rules))
