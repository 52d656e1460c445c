"""IONOS Cloud (pulumi_ionoscloud): a data center, a public LAN, a reserved IP, a server with NIC firewall.

IONOS NIC firewall rules take one source each, so a plan rule with several sources becomes several
rules. IPv6 is not configured on the NIC, so IPv6 sources are skipped here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pulumi
import pulumi_ionoscloud as ionoscloud

from infra.host import Host
from infra.plans.cloud_init import cloud_config
from infra.plans.firewall import ANYWHERE_V4, FirewallRule, split_families
from infra.providers.base import ProvisionContext, build_host, protect_server, provision_server
from infra.topology import IonosNode


class IonosServer(pulumi.ComponentResource):
    """One IONOS Cloud server in its own virtual data center."""

    def __init__(self, name: str, node: IonosNode, ctx: ProvisionContext,
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spaced:providers:IonosServer", name, None, opts)
        self._name = name
        child = pulumi.ResourceOptions(parent=self)
        display_name = f"spaced-{ctx.environment}-{node.name}"
        self.datacenter = ionoscloud.compute.Datacenter(f"{name}-datacenter", name=display_name,
                                                        location=node.region, opts=child)
        self.lan = ionoscloud.compute.Lan(f"{name}-lan", datacenter_id=self.datacenter.id, public=True,
                                          name=display_name, opts=child)
        self.ip_block = ionoscloud.compute.IPBlock(f"{name}-ip-block", location=node.region, size=1,
                                                   name=display_name, opts=child)
        public_ipv4 = self.ip_block.ips.apply(lambda ips: ips[0])
        user_data = cloud_config(node.name, ctx.ssh_user, ctx.ssh_public_key)
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
                user_data=base64.b64encode(user_data.encode()).decode(),  # the API wants base64
            ),
            nic=ionoscloud.compute.ServerNicArgs(
                lan=self.lan.id.apply(int),
                dhcp=True,
                ips=[public_ipv4],
                # Only the rules added in pass two let traffic in.
                firewall_active=True,
                firewall_type="INGRESS",
            ),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["volume.userData"]),
        )
        self.host = build_host(node, ctx, self, public_ipv4)
        self.register_outputs({"ipv4": public_ipv4, "datacenter_id": self.datacenter.id})

    def add_firewall(self, rules: Sequence[FirewallRule]) -> list[pulumi.Resource]:
        """One NIC firewall rule per (rule, IPv4 source); "anywhere" is a rule without a source."""
        created: list[pulumi.Resource] = []
        for rule in rules:
            v4, _v6 = split_families(rule.sources)
            for index, source in enumerate(v4):
                created.append(ionoscloud.compute.Firewall(
                    f"{self._name}-{rule.protocol}-{rule.port}-{index}",
                    datacenter_id=self.datacenter.id,
                    server_id=self.server.id,
                    nic_id=self.server.primary_nic,
                    protocol=rule.protocol.upper(),
                    port_range_start=rule.port,
                    port_range_end=rule.port,
                    source_ip=None if source == ANYWHERE_V4 else source,
                    type="INGRESS",
                    name=rule.description[:60],
                    opts=pulumi.ResourceOptions(parent=self),
                ))
        return created


def provision(node: IonosNode, ctx: ProvisionContext) -> Host:
    """Pass one: data center, LAN, IP block, server; returns the Host."""
    return provision_server(IonosServer, node, ctx)


def protect(node: IonosNode, host: Host, rules: Sequence[FirewallRule], ctx: ProvisionContext
            ) -> list[pulumi.Resource]:
    """Pass two: the NIC firewall rules."""
    return protect_server(IonosServer, node, rules, ctx)
