"""The whole Pulumi program (infra/__main__.py) on the real stack files, under mocks."""

from __future__ import annotations

import json
import runpy
from typing import Any

import pulumi
import pytest

from tests.infra.fixtures.pulumi_mocks import CloudMocks, run_with_mocks
from tests.infra.fixtures.topologies import REPO_ROOT, stack_topology

PROGRAM = str(REPO_ROOT / "infra" / "__main__.py")
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\ntest-only\n-----END OPENSSH PRIVATE KEY-----\n"
CREDENTIALS = {
    "hcloud:token": "test-token",
    "digitalocean:token": "test-token",
    "aws:accessKey": "AKIATEST",
    "gcp:project": "spaced-test",
    "ionoscloud:token": "test-token",
    "spaced:ionosHostingApiKey": "prefix.secret",
    # The IONOS hosting backend must never reach the real API from a test.
    "spaced:ionosHostingBaseUrl": "http://127.0.0.1:9/v1",
}


def run_stack(
    env: str,
    extra: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    secrets: tuple[str, ...] = (),
) -> tuple[CloudMocks, dict[str, Any]]:
    config = {
        "spaced:topology": json.dumps(stack_topology(env)),
        "spaced:sshPrivateKey": PRIVATE_KEY,
        **CREDENTIALS,
        **(extra or {}),
    }
    for key in drop:
        config.pop(key)
    secret_keys = [
        "spaced:sshPrivateKey",
        "spaced:ionosHostingApiKey",
        "hcloud:token",
        "digitalocean:token",
        *secrets,
    ]
    return run_with_mocks(
        lambda: runpy.run_path(PROGRAM, run_name="__main__"),
        stack=env,
        config=config,
        secret_keys=[s for s in secret_keys if s in config],
    )


@pytest.fixture(scope="module")
def prod() -> tuple[CloudMocks, dict[str, Any]]:
    return run_stack("prod")


@pytest.fixture(scope="module")
def dev() -> tuple[CloudMocks, dict[str, Any]]:
    return run_stack("dev")


def test_prod_dns_records_are_the_seed_table(prod) -> None:  # type: ignore[no-untyped-def]
    mocks, outputs = prod
    a_records = {(r["name"], r["value"]) for r in outputs["dns_records"] if r["type"] == "A"}
    assert a_records == {
        ("spaced.fun", "217.160.139.233"),
        ("ionos.spaced.fun", "87.106.135.26"),
        ("aws.spaced.fun", mocks.ipv4["aws-1-elastic-ip"]),
        ("hetzner.spaced.fun", mocks.ipv4["hetzner-1-server"]),
        ("do.spaced.fun", mocks.ipv4["do-1-droplet"]),
    }
    # No AAAA records: prod does not switch on dns.ipv6 (the edge serves IPv4 only)
    assert not [r for r in outputs["dns_records"] if r["type"] == "AAAA"]


def test_prod_hosts_output(prod) -> None:  # type: ignore[no-untyped-def]
    mocks, outputs = prod
    hosts = outputs["hosts"]
    assert set(hosts) == {"ionos-apex", "ionos-2", "ionos-3", "aws-1", "gcp-1", "hetzner-1", "do-1"}
    assert hosts["ionos-2"]["public_ipv4"] == "87.106.217.140" and hosts["ionos-2"]["dns"] == []
    assert hosts["gcp-1"]["public_ipv4"] == mocks.ipv4["gcp-1-instance"] and hosts["gcp-1"]["dns"] == []
    assert hosts["ionos-apex"]["dns"] == ["spaced.fun"] and hosts["ionos-apex"]["edge"] is True
    mesh_ips = [h["mesh_ip"] for h in hosts.values()]
    assert len(set(mesh_ips)) == 7 and all(ip.startswith("10.210.0.") for ip in mesh_ips)
    assert sum(h["manager"] for h in hosts.values()) == 3


def test_prod_swarm_and_urls(prod) -> None:  # type: ignore[no-untyped-def]
    _, outputs = prod
    assert outputs["docker_host"] == "ssh://deploy@217.160.139.233"  # the first manager, ionos-apex
    assert outputs["swarm_manager"] == outputs["hosts"]["ionos-apex"]["mesh_ip"]
    assert outputs["url"] == "https://spaced.fun/"
    assert outputs["urls"] == ["https://spaced.fun/"]


def test_prod_resources_span_every_step(prod) -> None:  # type: ignore[no-untyped-def]
    mocks, _ = prod
    types = {r.typ for r in mocks.resources}
    for expected in (
        "hcloud:index/server:Server",
        "aws:ec2/instance:Instance",
        "aws:ec2/eip:Eip",
        "gcp:compute/instance:Instance",
        "digitalocean:index/droplet:Droplet",
        "command:remote:Command",
        "command:local:Command",
    ):
        assert expected in types
    assert not mocks.of_type("gcp:compute/address:Address")  # the prod GCP address is ephemeral
    assert not mocks.of_type("ionoscloud:compute/server:Server")  # prod's IONOS nodes are adopted
    # the existing nodes get their nftables firewall, the cloud nodes their provider firewall
    assert {
        r.name for r in mocks.of_type("command:remote:Command") if r.name.endswith("-firewall-nftables")
    } == {"ionos-apex-firewall-nftables", "ionos-2-firewall-nftables", "ionos-3-firewall-nftables"}
    firewalls = {
        r.name
        for r in mocks.resources
        if r.typ.startswith("spaced:providers:") and r.typ.endswith("Firewall")
    }
    assert firewalls == {
        f"{name}-firewall"
        for name in ("ionos-apex", "ionos-2", "ionos-3", "aws-1", "gcp-1", "hetzner-1", "do-1")
    }


def test_dev_one_node_per_provider_under_dev(dev) -> None:  # type: ignore[no-untyped-def]
    mocks, outputs = dev
    assert {h["provider"] for h in outputs["hosts"].values()} == {
        "hetzner",
        "aws",
        "gcp",
        "digitalocean",
        "ionos",
    }
    names = {r["name"] for r in outputs["dns_records"]}
    assert names == {
        "dev.spaced.fun",
        "hetzner.dev.spaced.fun",
        "aws.dev.spaced.fun",
        "gcp.dev.spaced.fun",
        "do.dev.spaced.fun",
        "ionos.dev.spaced.fun",
    }
    ionos = {(r["name"], r["value"]) for r in outputs["dns_records"] if r["type"] == "A"}
    assert ("ionos.dev.spaced.fun", mocks.ipv4["ionos-dev-ip-block"]) in ionos
    assert outputs["url"] == "https://dev.spaced.fun/"
    assert outputs["docker_host"] == f"ssh://deploy@{mocks.ipv4['hetzner-dev-server']}"
    assert mocks.of_type("ionoscloud:compute/server:Server")


def test_local_stack_deploys_only_the_application_stack() -> None:
    mocks, outputs = run_stack("local")
    assert {r.typ for r in mocks.resources} == {"spaced:app:AppStack", "command:local:Command"}
    [deploy] = mocks.of_type("command:local:Command")
    assert "DOCKER_HOST" not in (deploy.inputs.get("environment") or {})
    assert outputs["hosts"] == {} and outputs["dns_records"] == []
    assert "swarm_manager" not in outputs


def test_missing_credential_fails_before_any_resource_naming_the_key() -> None:
    with pytest.raises(pulumi.RunError) as caught:
        run_stack("prod", drop=("hcloud:token",))
    message = str(caught.value)
    assert "missing credential for 'hetzner'" in message
    assert "pulumi config set --secret hcloud:token" in message
    assert "Fix stacks/Pulumi.prod.yaml" in message


def test_missing_topology_says_which_file_to_create() -> None:
    with pytest.raises(pulumi.RunError, match=r"create stacks/Pulumi.staging.yaml"):
        run_with_mocks(lambda: runpy.run_path(PROGRAM, run_name="__main__"), stack="staging", config={})


# Server types the providers no longer sell (from their changelogs; extend as they retire more).
RETIRED_SIZES = {
    "hetzner": {
        "cx11",
        "cx21",
        "cx31",
        "cx41",
        "cx51",
        "cx22",
        "cx32",
        "cx42",
        "cx52",
    },  # changelog 2025-10-16
}


@pytest.mark.parametrize("env", ["prod", "dev"])
def test_stack_files_use_server_types_the_providers_still_sell(env: str) -> None:
    from infra.topology import load_topology

    for node in load_topology(stack_topology(env)).nodes:
        size = getattr(node, "size", None)
        assert size not in RETIRED_SIZES.get(node.provider, set()), (env, node.name, size)
