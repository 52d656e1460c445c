"""SSH trust and deploy-key changes across every provider, under Pulumi mocks.

- Host keys: every new server gets an ed25519 host key generated in Pulumi (pulumi_tls, a secret)
  and installed through its cloud-init user data as its only host key; adopted servers carry theirs
  in the topology. Every remote command pins the key of the host it connects to.
- Deploy keys: the inputs that would replace a server when the deploy key changes (ssh_keys,
  key_name, the user data) are ignored on existing servers; a remote command per node rewrites the
  deploy user's authorized_keys instead, and runs again when the keys change.
"""

from __future__ import annotations

import json
import runpy
from typing import Any

import pulumi
import pytest
import yaml

from infra.topology import TopologyError, load_topology
from tests.infra.fixtures.pulumi_mocks import CloudMocks, is_secret, run_with_mocks, unwrap
from tests.infra.fixtures.topologies import REPO_ROOT, fixture, stack_topology
from tests.infra.program.test_program_stacks import CREDENTIALS, PRIVATE_KEY

PROGRAM = str(REPO_ROOT / "infra" / "__main__.py")
NEXT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAS9e+rdpOzHCOj2Omol1Xv19XmlTuKt47M7Cpro8zTG next@spaced"
# Server resource type -> the inputs a deploy-key change would replace it for.
KEY_INPUTS = {
    "hcloud:index/server:Server": {"ssh_keys", "user_data"},
    "digitalocean:index/droplet:Droplet": {"ssh_keys", "user_data"},
    "aws:ec2/instance:Instance": {"key_name", "user_data"},
    "gcp:compute/instance:Instance": {"metadata"},
    "ionoscloud:compute/server:Server": {"ssh_keys", "volume.userData"},
}


class Run:
    def __init__(self, mocks: CloudMocks, ignored: dict[str, set[str]]) -> None:
        self.mocks = mocks
        self.ignored = ignored


def run_program(topology: dict[str, Any]) -> Run:
    """The whole program on `topology`, recording each custom resource's ignore_changes."""
    ignored: dict[str, set[str]] = {}
    original = pulumi.CustomResource.__init__

    def recording(
        self: pulumi.CustomResource,
        t: str,
        name: str,
        props: Any = None,
        opts: pulumi.ResourceOptions | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        ignored[name] = set(opts.ignore_changes or []) if opts else set()
        original(self, t, name, props, opts, *args, **kwargs)

    config = {
        "spaced:topology": json.dumps(topology),
        "spaced:sshPrivateKey": PRIVATE_KEY,
        **CREDENTIALS,
        "aws:region": "eu-central-1",
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pulumi.CustomResource, "__init__", recording)
        mocks, _ = run_with_mocks(
            lambda: runpy.run_path(PROGRAM, run_name="__main__"),
            stack="dev",
            config=config,
            secret_keys=["spaced:sshPrivateKey"],
        )
    return Run(mocks, ignored)


def mixed_topology(**ssh: Any) -> dict[str, Any]:
    raw = fixture("providers_mix")
    # The application stack reads its settings from stacks/Pulumi.<environment>.yaml: borrow dev's.
    return {**raw, "environment": "dev", "dns": {"provider": "none"}, "ssh": {**raw["ssh"], **ssh}}


@pytest.fixture(scope="module")
def run() -> Run:
    return run_program(mixed_topology())


def pinned_keys(mocks: CloudMocks) -> dict[str, set[str]]:
    """Remote command name -> the host keys its connection pins (empty set when none)."""
    result = {}
    for command in mocks.of_type("command:remote:Command"):
        connection = unwrap(command.inputs["connection"])
        result[command.name] = {unwrap(connection.get("hostKey"))} - {None}
    return result


def user_data_of(mocks: CloudMocks, node: str) -> dict[str, Any]:
    import base64

    for resource in mocks.resources:
        if not resource.name.startswith(f"{node}-") or resource.name.endswith("-host-key"):
            continue
        inputs = resource.inputs
        text = (
            unwrap(inputs.get("userData"))
            or unwrap(unwrap(inputs.get("metadata") or {}).get("user-data"))
            or unwrap(unwrap(inputs.get("volume") or {}).get("userData"))
        )
        if text:
            if not text.startswith("#cloud-config"):
                text = base64.b64decode(text).decode()
            return yaml.safe_load(text)
    raise AssertionError(f"no user data for {node}")


CLOUD_NODES = ["hetzner-1", "aws-1", "aws-2", "gcp-1", "gcp-2", "do-1", "ionos-1"]


@pytest.mark.parametrize("node", CLOUD_NODES)
def test_a_new_server_gets_its_own_generated_host_key_and_only_that_one(run: Run, node: str) -> None:
    [key] = [r for r in run.mocks.resources if r.name == f"{node}-host-key"]
    assert key.typ == "tls:index/privateKey:PrivateKey" and key.inputs["algorithm"] == "ED25519"
    config = user_data_of(run.mocks, node)
    assert config["ssh_genkeytypes"] == ["ed25519"] and config["ssh_deletekeys"] is True
    assert config["ssh_keys"]["ed25519_private"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    public = config["ssh_keys"]["ed25519_public"]
    assert public.startswith("ssh-ed25519 AAAA")
    # every command that connects to this node pins exactly this key
    commands = [
        name for name in pinned_keys(run.mocks) if name.startswith(f"{node}-") or name.endswith(f"-{node}")
    ]
    assert commands, f"no remote command reaches {node}"
    for name in commands:
        assert pinned_keys(run.mocks)[name] == {public}, name


def test_gcp_guest_agent_keeps_the_pinned_host_key(run: Run) -> None:
    files = {f["path"]: f["content"] for f in user_data_of(run.mocks, "gcp-1")["write_files"]}
    assert "set_host_keys = false" in files["/etc/default/instance_configs.cfg"]
    assert "/etc/default/instance_configs.cfg" not in {
        f["path"] for f in user_data_of(run.mocks, "aws-1")["write_files"]
    }


def test_every_remote_command_pins_a_host_key(run: Run) -> None:
    pins = pinned_keys(run.mocks)
    assert pins and all(len(keys) == 1 for keys in pins.values()), {n: k for n, k in pins.items() if not k}


def test_an_adopted_server_is_pinned_to_the_topologys_host_key(run: Run) -> None:
    expected = fixture("providers_mix")["nodes"][0]["host_key"]
    pins = pinned_keys(run.mocks)
    adopted = [name for name in pins if "adopted-1" in name]
    assert {"adopted-1-bootstrap", "adopted-1-firewall-nftables", "adopted-1-authorized-keys"} <= set(adopted)
    assert all(pins[name] == {expected} for name in adopted)


def test_user_data_with_a_private_host_key_is_secret(run: Run) -> None:
    server = run.mocks.named("hetzner-1-server")
    assert is_secret(server.inputs["userData"])


@pytest.mark.parametrize(
    ("host_key", "message"),
    [
        (None, r"nodes\[0\]\.host_key: required field is missing"),
        ("not a key", r"nodes\[0\]\.host_key: expected an OpenSSH public key line"),
    ],
)
def test_an_adopted_node_must_carry_its_host_key(host_key: str | None, message: str) -> None:
    raw = fixture("providers_mix")
    node = dict(raw["nodes"][0])
    node.pop("host_key")
    if host_key is not None:
        node["host_key"] = host_key
    with pytest.raises(TopologyError, match=message):
        load_topology({**raw, "nodes": [node, *raw["nodes"][1:]]})


def test_an_ssh_keyscan_line_is_accepted_as_host_key() -> None:
    raw = fixture("providers_mix")
    key = raw["nodes"][0]["host_key"]
    node = {**raw["nodes"][0], "host_key": f"217.160.0.10 {key}"}
    topology = load_topology({**raw, "nodes": [node, *raw["nodes"][1:]]})
    assert topology.nodes[0].host_key == key


# --- deploy-key changes -----------------------------------------------------------------------


def test_a_hetzner_server_keeps_the_peer_firewall_its_attachment_adds(run: Run) -> None:
    assert "firewall_ids" in run.ignored["hetzner-1-server"]


def test_servers_ignore_the_inputs_a_deploy_key_change_would_replace_them_for(run: Run) -> None:
    seen = set()
    for typ, inputs in KEY_INPUTS.items():
        for server in run.mocks.of_type(typ):
            assert inputs <= run.ignored[server.name], (server.name, inputs - run.ignored[server.name])
            seen.add(typ)
    assert seen == set(KEY_INPUTS)


def test_every_node_rewrites_authorized_keys_and_again_when_the_keys_change(run: Run) -> None:
    rotated = run_program(mixed_topology(extra_public_keys=[NEXT_KEY]))
    current = fixture("providers_mix")["ssh"]["public_key"]
    for node in ["adopted-1", *CLOUD_NODES]:
        before = run.mocks.named(f"{node}-authorized-keys")
        after = rotated.mocks.named(f"{node}-authorized-keys")
        assert current in before.inputs["create"] and NEXT_KEY not in before.inputs["create"]
        assert current in after.inputs["create"] and NEXT_KEY in after.inputs["create"]
        assert before.inputs["triggers"] != after.inputs["triggers"]  # the change re-runs it


def test_prod_stack_pins_its_adopted_hosts() -> None:
    keys = {
        node["name"]: node["host_key"]
        for node in stack_topology("prod")["nodes"]
        if node["provider"] == "existing"
    }
    assert set(keys) == {"ionos-apex", "ionos-2", "ionos-3"}
