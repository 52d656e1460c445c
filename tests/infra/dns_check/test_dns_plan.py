"""`spaced dns plan`: the records of a stack, from the stack file and the stack outputs.

The decisive test runs the real Pulumi program (infra/__main__.py) under mocks on the real stack
files and checks that the plan built from its outputs is exactly the `dns_records` it exported: the
command and the program share one derivation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra.cli import main
from infra.dns_check.plan import (
    IPV6_PROVIDERS,
    PlanError,
    build_plan,
    load_stack_topology,
    parse_outputs,
    plan_for,
)
from infra.providers import REGISTRY
from tests.infra.dns_check.conftest import OUTPUTS_FILE, STACK_FILE
from tests.infra.program.test_program_stacks import run_stack

DNSTEST = ["dns", "plan", "dnstest", "--stack-file", str(STACK_FILE)]


def test_existing_nodes_have_values_and_provisioned_nodes_are_pending() -> None:
    plan = plan_for("dnstest", stack_path=STACK_FILE)
    rows = {(r.fqdn, r.type): (r.value, r.ttl, r.backend, r.node, r.source) for r in plan.records}
    assert rows == {
        ("spaced.test", "A"): ("217.160.0.10", 300, "hetzner", "apex", "stack file"),
        ("spaced.test", "AAAA"): ("2a01:238::10", 300, "hetzner", "apex", "stack file"),
        ("www.spaced.test", "A"): ("217.160.0.10", 300, "hetzner", "apex", "stack file"),
        ("www.spaced.test", "AAAA"): ("2a01:238::10", 300, "hetzner", "apex", "stack file"),
        ("api.spaced.test", "A"): ("217.160.0.11", 300, "hetzner", "api", "stack file"),
        ("api.spaced.test", "AAAA"): ("2a01:238::11", 300, "hetzner", "api", "stack file"),
        ("gone.spaced.test", "A"): ("217.160.0.13", 300, "hetzner", "gone", "stack file"),
        # Hetzner gives every server IPv6: both records, values known after provisioning
        ("hz.spaced.test", "A"): (None, 300, "hetzner", "hz", "pending"),
        ("hz.spaced.test", "AAAA"): (None, 300, "hetzner", "hz", "pending"),
    }
    assert [r.node for r in plan.pending] == ["hz", "hz"]


def test_outputs_fill_in_the_provisioned_addresses() -> None:
    plan = plan_for("dnstest", stack_path=STACK_FILE, outputs_path=OUTPUTS_FILE)
    hz = {r.type: (r.value, r.source) for r in plan.records if r.node == "hz"}
    assert hz == {"A": ("5.75.0.1", "outputs"), "AAAA": ("2a01:4f8:0:0::1", "outputs")}
    assert not plan.pending and not plan.warnings


def test_table_says_which_values_come_after_provisioning(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(DNSTEST) == 0
    out = capsys.readouterr().out
    assert "NAME" in out and "BACKEND" in out
    assert re.search(r"^hz.spaced.test +A +\(after provisioning\) +300 +hetzner +hz$", out, re.M)
    assert "2 value(s) are known only after provisioning (hz); pass --outputs FILE" in out


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*DNSTEST, "--json", "--outputs", str(OUTPUTS_FILE)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["backend"] == "hetzner" and document["zone"] == "spaced.test"
    assert {
        "name": "hz.spaced.test",
        "type": "A",
        "value": "5.75.0.1",
        "ttl": 300,
        "backend": "hetzner",
        "node": "hz",
        "source": "outputs",
    } in document["records"]
    assert len(document["records"]) == 9


def _write_outputs(tmp_path: Path, outputs: dict[str, Any]) -> Path:
    """What `pulumi stack output --json` would print for these resolved outputs."""
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({key: outputs[key] for key in ("environment", "hosts", "dns_records")}))
    return path


@pytest.mark.parametrize("env", ["prod", "dev"])
def test_plan_from_outputs_is_what_the_pulumi_program_exports(env: str, tmp_path: Path) -> None:
    _, outputs = run_stack(env)
    plan = plan_for(env, outputs_path=_write_outputs(tmp_path, outputs))
    planned = sorted((r.fqdn, r.type, r.value, r.ttl) for r in plan.records)
    exported = sorted((r["name"], r["type"], r["value"], r["ttl"]) for r in outputs["dns_records"])
    assert planned == exported
    assert not plan.warnings and not plan.pending


@pytest.mark.parametrize("env", ["prod", "dev"])
def test_pending_records_without_outputs_are_the_same_record_sets(env: str) -> None:
    """Without outputs the plan has the same (name, type)s: IPV6_PROVIDERS matches the adapters."""
    _, outputs = run_stack(env)
    plan = plan_for(env)
    assert sorted((r.fqdn, r.type) for r in plan.records) == sorted(
        (r["name"], r["type"]) for r in outputs["dns_records"]
    )
    topology = load_stack_topology(Path(f"stacks/Pulumi.{env}.yaml").resolve())
    for record in plan.records:
        existing = topology.node(record.node).provider == "existing"
        assert record.pending is not existing


def test_ipv6_providers_are_adapters() -> None:
    assert set(REGISTRY) >= IPV6_PROVIDERS


def test_stale_outputs_are_warned_about(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    outputs = json.loads(OUTPUTS_FILE.read_text())
    outputs["hosts"]["removed-node"] = {"public_ipv4": "5.75.0.2", "public_ipv6": None}
    outputs["dns_records"] = [{"name": "hz.spaced.test", "type": "A", "value": "5.75.0.3", "ttl": 300}]
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(outputs))
    plan = build_plan(load_stack_topology(STACK_FILE), parse_outputs(path.read_text()))
    assert plan.warnings == (
        "the outputs name hosts the stack file does not have: removed-node (outputs of an older deployment?)",
        "the outputs' dns_records differ from this plan: the stack file changed since the last `pulumi up`, "
        "or the outputs are from another stack",
    )
    assert main([*DNSTEST, "--outputs", str(path)]) == 0
    assert "warning: the outputs name hosts" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "expected a JSON object"),
        ('{"hosts": []}', "hosts: expected an object"),
        ('{"hosts": {"hz": {"public_ipv4": 5}}}', "hosts.hz.public_ipv4: expected an IP address string"),
        ('{"hosts": {"hz": {"public_ipv4": "5.75.0.1", "public_ipv6": 6}}}', "hosts.hz.public_ipv6"),
        ('{"dns_records": [{"name": "x"}]}', "dns_records: expected a list"),
    ],
)
def test_bad_outputs_name_the_path(text: str, message: str) -> None:
    with pytest.raises(PlanError, match=message) as caught:
        parse_outputs(text)
    assert caught.value.kind == "BadOutputs"


def test_cli_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["dns", "plan", "nosuchenv"]) == 1
    assert "ERROR (NoStack): no stack file" in capsys.readouterr().err
    assert main([*DNSTEST, "--outputs", str(tmp_path / "missing.json")]) == 1
    assert "ERROR (BadOutputs): cannot read" in capsys.readouterr().err
    assert main(["dns", "plan", "prod", "--stack-file", str(STACK_FILE)]) == 1
    assert "ERROR (BadTopology): " in capsys.readouterr().err
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text("config:\n  spaced:topology:\n    environment: bad\n    nodes: [{name: x}]\n")
    assert main(["dns", "plan", "bad", "--stack-file", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR (BadTopology): ") and "nodes[0].provider" in err


def test_local_stack_has_no_records(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dns", "plan", "local"]) == 0
    assert "(no records: the stack publishes no DNS names)" in capsys.readouterr().out
