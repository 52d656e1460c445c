"""What every provider adapter shares: the provisioning context, the adapter shape and small helpers."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import pulumi
import pulumi_tls as tls
from pulumi_command import remote

from infra.connection import ssh_connection
from infra.host import Host
from infra.plans.cloud_init import SshHostKey, SystemFile, authorized_keys_script, cloud_config
from infra.plans.firewall import FirewallRule
from infra.topology import NodeModel

T = TypeVar("T")
N = TypeVar("N", bound=NodeModel)


@dataclass
class ProvisionContext:
    """What every adapter needs besides the node, shared by all nodes of one stack.

    `admin_ssh_cidrs` feed the rules a server carries from its first boot (SSH, and web on edge
    nodes); `mesh_ips` maps node name -> its mesh address (allocated by the topology).
    """

    environment: str
    ssh_user: str
    ssh_public_key: str
    ssh_private_key: pulumi.Input[str] | None
    mesh_ips: Mapping[str, str]
    admin_ssh_cidrs: Sequence[str] = ()
    # Every key the deploy user may log in with (ssh.public_key + ssh.extra_public_keys).
    authorized_keys: Sequence[str] = ()
    # Provider -> the name or id of an account key to use as the deploy key (ssh.existing_keys).
    existing_keys: Mapping[str, str] = field(default_factory=dict)
    # Node name -> "HH:MM" UTC of its unattended upgrade (infra.plans.cloud_init.upgrade_times).
    upgrade_times: Mapping[str, str] = field(default_factory=dict)
    # aws.Provider keyword arguments carrying the stack's AWS credentials (see infra.config).
    aws_provider_settings: Mapping[str, pulumi.Input[Any]] = field(default_factory=dict)
    # Per-stack resources made once (a region's provider, the deploy key), by key.
    shared_resources: dict[str, Any] = field(default_factory=dict)

    def shared(self, key: str, factory: Callable[[], T]) -> T:
        """Create a per-stack resource once (e.g. the deploy key registered with a provider)."""
        if key not in self.shared_resources:
            self.shared_resources[key] = factory()
        return self.shared_resources[key]


@dataclass(frozen=True)
class ServerArgs(Generic[N]):
    """The arguments of every server component: its node (typed per provider) and the stack context."""

    node: N
    ctx: ProvisionContext


class Server(Protocol):
    """What `provision` returns: a finished component that carries the node's Host."""

    host: Host


class Adapter(Protocol):
    """One provider module: `provision` creates a node's server (with the rules it can have from its
    first boot); `protect`, called once every server exists, creates the node's firewall component
    for the rules that need the other nodes' addresses."""

    def provision(self, node: Any, ctx: ProvisionContext) -> Server: ...

    def protect(self, server: Any, rules: Sequence[FirewallRule]) -> pulumi.ComponentResource: ...


def host_cidr_output(address: pulumi.Input[str]) -> pulumi.Output[str]:
    """The /32 of an address that may still be an Output (the firewall sources of peer rules)."""
    return pulumi.Output.from_input(address).apply(lambda ip: f"{ip}/128" if ":" in ip else f"{ip}/32")


def node_labels(node: NodeModel) -> dict[str, str]:
    """Swarm node labels: the topology's own plus where the node runs."""
    return {"spaced.provider": node.provider, "spaced.region": node.region, **node.labels}


def new_host_key(name: str, parent: pulumi.Resource) -> tls.PrivateKey:
    """A new server's ed25519 SSH host key, made once and kept (secret) in the Pulumi state."""
    return tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=pulumi.ResourceOptions(parent=parent))


def public_host_key(host_key: tls.PrivateKey) -> pulumi.Output[str]:
    """The OpenSSH public line ("ssh-ed25519 AAAA...") connections pin."""
    return host_key.public_key_openssh.apply(str.strip)


def user_data(
    node: NodeModel, ctx: ProvisionContext, host_key: tls.PrivateKey, extra_files: Sequence[SystemFile] = ()
) -> pulumi.Output[str]:
    """The node's cloud-init user data with its host key installed; a secret (it holds the private key)."""
    return pulumi.Output.secret(
        pulumi.Output.all(host_key.private_key_openssh, host_key.public_key_openssh).apply(
            lambda keys: cloud_config(
                node.name,
                ctx.ssh_user,
                ctx.ssh_public_key,
                host_key=SshHostKey(keys[0], keys[1]),
                upgrade_time=ctx.upgrade_times.get(node.name, "03:00"),
                extra_files=extra_files,
            )
        )
    )


def authorized_keys_command(
    host: Host, ctx: ProvisionContext, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource]
) -> remote.Command:
    """Keep the deploy user's authorized_keys equal to `ctx.authorized_keys`, over SSH.

    Servers ignore changes of their creation-time key inputs (which would replace them), so a new
    deploy key reaches running servers only through this command: it runs again whenever the keys
    change. To rotate, add the new key to `ssh.extra_public_keys` and `up` (still connecting with the
    old private key), then make it `ssh.public_key` with its private half as spaced:sshPrivateKey.
    """
    keys = list(ctx.authorized_keys or (ctx.ssh_public_key,))
    return remote.Command(
        f"{host.name}-authorized-keys",
        connection=ssh_connection(host, ctx.ssh_private_key),
        create=f"sudo -n sh -c {shlex.quote(authorized_keys_script(ctx.ssh_user, keys))}",
        triggers=keys,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)),
    )


def build_host(
    node: NodeModel,
    ctx: ProvisionContext,
    server: pulumi.ComponentResource,
    public_ipv4: pulumi.Input[str],
    public_ipv6: pulumi.Input[str] | None = None,
    *,
    host_key: pulumi.Input[str] | None = None,
    server_id: pulumi.Input[str] | None = None,
) -> Host:
    """The Host of a provisioned node: its topology settings, the stack's SSH user and mesh address,
    and the node's component as what later steps wait for."""
    return Host(
        name=node.name,
        provider=node.provider,
        region=node.region,
        public_ipv4=public_ipv4,
        public_ipv6=public_ipv6,
        host_key=host_key,
        server_id=server_id,
        mesh_ip=ctx.mesh_ips[node.name],
        ssh_user=ctx.ssh_user,
        manager=node.manager,
        edge=node.edge,
        labels=node_labels(node),
        resources=(server,),
    )
