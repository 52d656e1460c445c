"""The Mesh component under Pulumi mocks: a key and an apply command per host, secrets kept secret."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Iterator
from typing import Any

import pulumi
import pytest

from infra.host import Host
from infra.plans.mesh import (
    MeshPeer,
    config_fingerprint,
    public_key_from_private,
    render_apply_script,
)
from infra.topology import allocate_mesh_addresses

from .wg_config import parse_wireguard_config

CIDR = "10.210.0.0/24"
PORT = 51820
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-only\n-----END OPENSSH PRIVATE KEY-----\n"


class MeshMocks(pulumi.runtime.Mocks):
    """Runs the real key provider for dynamic resources; every other resource echoes its inputs."""

    def __init__(self) -> None:
        self.registered: list[pulumi.runtime.MockResourceArgs] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.registered.append(args)
        if args.typ == "pulumi-python:dynamic:Resource":
            from infra.components.mesh import WireGuardKeyProvider

            created = WireGuardKeyProvider().create(args.inputs)
            return created.id, {**args.inputs, **created.outs}
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


@pytest.fixture
def mocks() -> Iterator[MeshMocks]:
    mocks = MeshMocks()
    pulumi.runtime.set_mocks(mocks, preview=False)
    yield mocks


def make_hosts(names: list[str]) -> list[Host]:
    addresses = allocate_mesh_addresses(names, CIDR)
    return [
        Host(
            name=name,
            provider="existing",
            region="test",
            public_ipv4=pulumi.Output.from_input(f"192.0.2.{i + 10}"),
            mesh_ip=addresses[name],
            ssh_user="root" if i == 0 else "deploy",
            host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsAv6Gu3peoqR+hx8LYO3CIRaglqPFuXSwT0C1/nnSh",
        )
        for i, name in enumerate(names)
    ]


def resolve(output: pulumi.Output[Any]) -> tuple[Any, bool]:
    """Value and secretness of an output (the mock engine resolves everything during the test)."""

    async def both() -> tuple[Any, bool]:
        return await output.future(), await output.is_secret()

    return asyncio.get_event_loop().run_until_complete(both())


def build_mesh(names: list[str], transformations: list[Any] | None = None):  # type: ignore[no-untyped-def]
    from infra.components.mesh import Mesh, MeshArgs

    hosts = make_hosts(names)
    mesh = Mesh(
        "mesh",
        MeshArgs(hosts=hosts, listen_port=PORT, cidr=CIDR, ssh_private_key=pulumi.Output.secret(SSH_KEY)),
        opts=pulumi.ResourceOptions(transformations=transformations or []),
    )
    return mesh, hosts


@pulumi.runtime.test
def test_one_key_and_one_apply_command_per_host_children_of_the_mesh(mocks: MeshMocks) -> pulumi.Output:
    names = ["ionos-apex", "aws-1", "gcp-1"]
    mesh, _ = build_mesh(names)

    def check(_: Any) -> None:
        by_type: dict[str, list[str]] = {}
        for args in mocks.registered:
            by_type.setdefault(args.typ, []).append(args.name)
        assert sorted(by_type["pulumi-python:dynamic:Resource"]) == sorted(f"mesh-key-{n}" for n in names)
        assert sorted(by_type["command:remote:Command"]) == sorted(f"mesh-apply-{n}" for n in names)

    return pulumi.Output.all(mesh.ready, mesh.urn, *[c.urn for c in mesh.commands.values()]).apply(
        lambda values: check(values) or _check_children(values[1], values[2:])
    )


def _check_children(mesh_urn: str, command_urns: list[str]) -> None:
    assert mesh_urn.endswith("spaced:mesh:Mesh::mesh")
    for urn in command_urns:
        # A child's URN type is qualified by its parent's type.
        assert "::spaced:mesh:Mesh$command:remote:Command::mesh-apply-" in urn


def test_each_host_receives_its_own_config_listing_every_other_host(mocks: MeshMocks) -> None:
    names = ["ionos-apex", "aws-1", "gcp-1", "hetzner-1"]
    mesh, hosts = build_mesh(names)
    public_keys = {name: resolve(key)[0] for name, key in mesh.public_keys.items()}
    for host in hosts:
        command = mesh.commands[host.name]
        config, _ = resolve(command.stdin)
        (_, interface), *peers = parse_wireguard_config(config)
        assert interface["Address"] == f"{host.mesh_ip}/24"
        assert public_key_from_private(interface["PrivateKey"]) == public_keys[host.name]
        assert {p["PublicKey"] for _, p in peers} == {public_keys[h.name] for h in hosts if h is not host}
        assert {p["Endpoint"] for _, p in peers} == {
            f"{resolve(h.public_ipv4)[0]}:{PORT}" for h in hosts if h is not host
        }
        assert {p["AllowedIPs"] for _, p in peers} == {f"{h.mesh_ip}/32" for h in hosts if h is not host}

        create, _ = resolve(command.create)
        argv = shlex.split(create)
        assert argv[-1] == render_apply_script()
        assert argv[:-1] == (["bash", "-c"] if host.ssh_user == "root" else ["sudo", "-n", "bash", "-c"])
        assert interface["PrivateKey"] not in create  # the key travels on stdin only

        connection, _ = resolve(command.connection)
        assert (connection.host, connection.user) == (resolve(host.public_ipv4)[0], host.ssh_user)
        assert connection.private_key == SSH_KEY


def test_triggers_are_the_public_fingerprint_of_the_applied_config(mocks: MeshMocks) -> None:
    mesh, hosts = build_mesh(["a", "b", "c"])
    public_keys = {name: resolve(key)[0] for name, key in mesh.public_keys.items()}
    peers = [MeshPeer(h.name, resolve(h.public_ipv4)[0], h.mesh_ip, public_keys[h.name]) for h in hosts]
    for host, peer in zip(hosts, peers, strict=True):
        triggers, secret = resolve(mesh.commands[host.name].triggers)
        assert triggers == [config_fingerprint(peer, peers, PORT, CIDR)]
        assert not secret  # readable in a preview: it is derived from public values only


def test_private_keys_configs_and_command_outputs_are_secret(mocks: MeshMocks) -> None:
    # The mock engine ignores additional_secret_outputs (the real engine applies them), so check
    # what the program hands the engine: the inputs as sent and the options asked for.
    seen: dict[str, pulumi.ResourceTransformationArgs] = {}

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        seen[args.name] = args

    mesh, hosts = build_mesh(["a", "b"], transformations=[record])
    for host in hosts:
        command = seen[f"mesh-apply-{host.name}"]
        config, secret = resolve(command.props["stdin"])
        assert secret, "the config (with the private key) is sent to the engine in the clear"
        assert "PrivateKey = " in config
        assert resolve(command.props["connection"].private_key)[1]
        assert set(command.opts.additional_secret_outputs or []) >= {"stdin", "stdout", "stderr"}

        key = seen[f"mesh-key-{host.name}"]
        assert "private_key" in (key.opts.additional_secret_outputs or [])
        private_key, secret = resolve(mesh.keys[host.name].private_key)
        assert secret
        public_key, public_secret = resolve(mesh.public_keys[host.name])
        assert public_key_from_private(private_key) == public_key
        assert not public_secret  # public keys stay readable


def _with(host: Host, **changes: Any) -> Host:
    from dataclasses import replace

    return replace(host, **changes)
