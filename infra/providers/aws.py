"""AWS (pulumi_aws): an EC2 instance with its own security group, the deploy key pair and an Elastic IP.

Each region gets an explicit `aws.Provider`, so one stack can place nodes in several regions and
does not depend on `aws:region` being set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

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
from infra.topology import AwsNode

DEBIAN_OWNER = (
    "136693071363"  # the Debian cloud team's AWS account (https://wiki.debian.org/Cloud/AmazonEC2Image)
)


def architecture(instance_type: str) -> str:
    """arm64 for Graviton families (t4g, m7g, c7gn, ...), x86_64 otherwise."""
    return "arm64" if re.match(r"^[a-z]+\d+g", instance_type) else "x86_64"


class AwsServer(pulumi.ComponentResource):
    """One EC2 instance in its own security group, which holds the public rules from the start."""

    def __init__(
        self, name: str, args: ServerArgs[AwsNode], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("spaced:providers:AwsServer", name, None, opts)
        node, ctx = args.node, args.ctx
        region = node.region
        # The stack's credentials must be passed explicitly: Pulumi gives aws:* config to the default
        # provider only (pulumi-aws issues 1307, 3259).
        provider = ctx.shared(
            f"aws-provider-{region}",
            lambda: aws.Provider(f"aws-{region}", region=region, **ctx.aws_provider_settings),
        )
        self.provider = provider
        key_pair = ctx.shared(
            f"aws-deploy-key-{region}",
            lambda: aws.ec2.KeyPair(
                f"aws-deploy-key-{region}",
                public_key=ctx.ssh_public_key,
                tags={"spaced-environment": ctx.environment},
                opts=pulumi.ResourceOptions(provider=provider),
            ),
        )
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        tags = {
            "Name": f"{ctx.environment}-{node.name}",
            "spaced-environment": ctx.environment,
            "spaced-node": node.name,
        }

        self.host_key = new_host_key(name, self)
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-security-group",
            description=f"spaced {ctx.environment} {node.name}: SSH from admins, WireGuard from peers",
            tags=tags,
            opts=child,
        )
        # Pulumi/Terraform remove AWS's default allow-all egress rule, so state it explicitly.
        self.egress = [
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-egress-{family}",
                security_group_id=self.security_group.id,
                ip_protocol="-1",
                description="all outbound",
                opts=child,
                **{key: cidr},
            )
            for family, key, cidr in (("v4", "cidr_ipv4", "0.0.0.0/0"), ("v6", "cidr_ipv6", "::/0"))
        ]
        # A new security group has no ingress: the instance is closed until these rules exist.
        self.public_ingress = ingress_rules(
            f"{name}-public", self.security_group.id, public_rules(node.edge, ctx.admin_ssh_cidrs), child
        )
        ami: pulumi.Input[str]
        if node.image:
            ami = node.image
        else:
            debian_arch = "arm64" if architecture(node.size) == "arm64" else "amd64"
            ami = aws.ec2.get_ami_output(
                most_recent=True,
                owners=[DEBIAN_OWNER],
                filters=[
                    aws.ec2.GetAmiFilterArgs(name="name", values=[f"debian-12-{debian_arch}-*"]),
                    aws.ec2.GetAmiFilterArgs(name="architecture", values=[architecture(node.size)]),
                ],
                opts=pulumi.InvokeOutputOptions(provider=provider),
            ).id
        self.instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ami,
            instance_type=node.size,
            key_name=key_pair.key_name,
            vpc_security_group_ids=[self.security_group.id],
            user_data=user_data(node, ctx, self.host_key),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_size=node.disk_gb, volume_type="gp3", encrypted=True
            ),
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(http_tokens="required"),  # IMDSv2 only
            tags=tags,
            # A newer AMI, cloud-config or key pair must not replace a running node; new nodes pick
            # them up, running ones get a new deploy key through the authorized-keys command.
            opts=pulumi.ResourceOptions(
                parent=self, provider=provider, ignore_changes=["ami", "user_data", "key_name"]
            ),
        )
        public_ipv4: pulumi.Output[str]
        if node.static_ip:
            self.elastic_ip = aws.ec2.Eip(
                f"{name}-elastic-ip", domain="vpc", instance=self.instance.id, tags=tags, opts=child
            )
            public_ipv4 = self.elastic_ip.public_ip
        else:
            public_ipv4 = self.instance.public_ip
        self.host = build_host(
            node, ctx, self, public_ipv4, host_key=public_host_key(self.host_key), server_id=self.instance.id
        )
        self.authorized_keys = authorized_keys_command(
            self.host, ctx, self, [self.instance, *([self.elastic_ip] if node.static_ip else [])]
        )
        self.register_outputs({"ipv4": public_ipv4, "instance_id": self.instance.id})


def ingress_rules(
    prefix: str,
    security_group_id: pulumi.Input[str],
    rules: Sequence[FirewallRule],
    opts: pulumi.ResourceOptions,
) -> list[aws.vpc.SecurityGroupIngressRule]:
    """One security-group ingress rule per (plan rule, source range), named
    `<prefix>-<proto>-<port>-<family>-<n>`."""
    created = []
    for rule in rules:
        v4, v6 = split_families(rule.sources)
        for family, key, sources in (("v4", "cidr_ipv4", v4), ("v6", "cidr_ipv6", v6)):
            for index, source in enumerate(sources):
                created.append(
                    aws.vpc.SecurityGroupIngressRule(
                        f"{prefix}-{rule.protocol}-{rule.port}-{family}-{index}",
                        security_group_id=security_group_id,
                        ip_protocol=rule.protocol,
                        from_port=rule.port,
                        to_port=rule.port,
                        description=rule.description,
                        opts=opts,
                        **{key: source},
                    )
                )
    return created


@dataclass(frozen=True)
class AwsFirewallArgs:
    """The node's security group (and the regional provider that owns it) and the peer rules."""

    security_group_id: pulumi.Input[str]
    provider: aws.Provider
    rules: Sequence[FirewallRule]


class AwsFirewall(pulumi.ComponentResource):
    """The peer rules of one node as ingress rules of its security group."""

    def __init__(self, name: str, args: AwsFirewallArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spaced:providers:AwsFirewall", name, None, opts)
        self.ingress = ingress_rules(
            name,
            args.security_group_id,
            args.rules,
            pulumi.ResourceOptions(parent=self, provider=args.provider),
        )
        self.register_outputs({"security_group_id": args.security_group_id})


def provision(node: AwsNode, ctx: ProvisionContext) -> AwsServer:
    """The node's security group (public rules), instance and Elastic IP."""
    return AwsServer(node.name, ServerArgs(node, ctx))


def protect(server: AwsServer, rules: Sequence[FirewallRule]) -> AwsFirewall:
    """The node's peer rules, once every node's address exists."""
    return AwsFirewall(
        f"{server.host.name}-firewall", AwsFirewallArgs(server.security_group.id, server.provider, rules)
    )
