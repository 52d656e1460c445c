"""Two stacks, one account: Hetzner and DigitalOcean refuse a second SSH key with the same public key.

A stack reuses an identical key that another stack (or a person) registered, keeps managing its own,
and can be told to use a named key (`ssh.existing_keys`).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest

from infra.plans.deploy_key import AccountKey, key_to_reuse, md5_fingerprint
from infra.providers import ProvisionContext, provision_all
from infra.topology import TopologyError, load_topology
from tests.infra.fixtures.pulumi_mocks import CloudMocks, run_with_mocks
from tests.infra.fixtures.topologies import fixture

PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-only\n-----END OPENSSH PRIVATE KEY-----\n"


def provision(
    account: dict[str, list[dict[str, Any]]],
    existing_keys: dict[str, str] | None = None,
    environment: str = "dev",
) -> CloudMocks:
    raw = fixture("providers_mix")
    raw = {**raw, "nodes": [n for n in raw["nodes"] if n["provider"] in ("hetzner", "digitalocean")]}
    raw["nodes"][0] |= {"manager": True, "edge": True}
    topology = load_topology(raw)
    mocks = CloudMocks()
    mocks.account_ssh_keys = account

    def program() -> None:
        ctx = ProvisionContext(
            environment=environment,
            ssh_user="deploy",
            ssh_public_key=topology.ssh.public_key,
            ssh_private_key=pulumi.Output.secret(PRIVATE_KEY),
            mesh_ips=topology.mesh_addresses(),
            admin_ssh_cidrs=topology.admin_ssh_cidrs,
            existing_keys=existing_keys or {},
        )
        provision_all(topology.nodes, ctx, 51820)

    run_with_mocks(program, mocks=mocks)
    return mocks


def deploy_public_key() -> str:
    return fixture("providers_mix")["ssh"]["public_key"]


def test_md5_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    key = tmp_path / "key.pub"
    key.write_text(deploy_public_key() + "\n")
    shown = subprocess.run(
        ["ssh-keygen", "-l", "-E", "md5", "-f", str(key)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()[1]
    assert shown == "MD5:" + md5_fingerprint(deploy_public_key())


def test_an_empty_account_gets_the_stacks_own_key() -> None:
    mocks = provision({"hcloud": [], "digitalocean": []})
    [hetzner_key] = mocks.of_type("hcloud:index/sshKey:SshKey")
    [do_key] = mocks.of_type("digitalocean:index/sshKey:SshKey")
    assert hetzner_key.inputs["labels"] == {"spaced-environment": "dev"}
    assert do_key.inputs["name"] == "spaced-dev-deploy"
    assert mocks.named("hetzner-1-server").inputs["sshKeys"] == [mocks.ids["hetzner-deploy-key"]]


def test_a_key_another_stack_registered_is_reused_not_duplicated() -> None:
    fingerprint = md5_fingerprint(deploy_public_key())
    account = {
        "hcloud": [
            {
                "id": 4711,
                "name": "hetzner-deploy-key-1a2b",
                "fingerprint": fingerprint,
                "labels": {"spaced-environment": "prod"},
                "publicKey": deploy_public_key(),
            }
        ],
        "digitalocean": [
            {
                "id": 815,
                "name": "spaced-prod-deploy",
                "fingerprint": fingerprint,
                "publicKey": deploy_public_key(),
            }
        ],
    }
    mocks = provision(account)
    assert not mocks.of_type("hcloud:index/sshKey:SshKey")
    assert not mocks.of_type("digitalocean:index/sshKey:SshKey")
    assert mocks.named("hetzner-1-server").inputs["sshKeys"] == ["4711"]
    assert mocks.named("do-1-droplet").inputs["sshKeys"] == [fingerprint]


def test_the_stacks_own_key_stays_managed() -> None:
    fingerprint = md5_fingerprint(deploy_public_key())
    account = {
        "hcloud": [
            {
                "id": 4711,
                "name": "hetzner-deploy-key-1a2b",
                "fingerprint": fingerprint,
                "labels": {"spaced-environment": "dev"},
                "publicKey": deploy_public_key(),
            }
        ],
        "digitalocean": [
            {
                "id": 815,
                "name": "spaced-dev-deploy",
                "fingerprint": fingerprint,
                "publicKey": deploy_public_key(),
            }
        ],
    }
    mocks = provision(account)
    assert len(mocks.of_type("hcloud:index/sshKey:SshKey")) == 1
    assert len(mocks.of_type("digitalocean:index/sshKey:SshKey")) == 1


def test_the_topology_can_name_an_existing_key() -> None:
    account = {
        "hcloud": [{"id": 99, "name": "team-key", "fingerprint": "aa:bb", "labels": {}, "publicKey": "x"}],
        "digitalocean": [{"id": 7, "name": "team-key", "fingerprint": "cc:dd", "publicKey": "x"}],
    }
    mocks = provision(account, existing_keys={"hetzner": "team-key", "digitalocean": "team-key"})
    assert mocks.named("hetzner-1-server").inputs["sshKeys"] == ["99"]
    assert mocks.named("do-1-droplet").inputs["sshKeys"] == ["cc:dd"]
    assert not mocks.of_type("hcloud:index/sshKey:SshKey")


def test_a_named_key_that_does_not_exist_names_the_field() -> None:
    keys = [AccountKey("1", "other", "aa:bb")]
    with pytest.raises(TopologyError, match=r"ssh.existing_keys.hetzner: no SSH key 'team-key'.*keys: other"):
        key_to_reuse(
            keys, deploy_public_key(), is_own=lambda key: False, named="team-key", provider="hetzner"
        )


def test_existing_keys_only_for_providers_that_refuse_duplicates() -> None:
    raw = fixture("valid_minimal")
    raw["ssh"] = {**raw["ssh"], "existing_keys": {"aws": "x"}}
    with pytest.raises(TopologyError, match=r"ssh.existing_keys.aws"):
        load_topology(raw)
