"""Alertmanager's rendered config: checked by amtool, routed by severity, credentials as secrets."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.app_stack.alerting import alert_rows, parse_alerting
from infra.app_stack.model import StackSettings, StackSettingsError
from infra.app_stack.render import render_stack, stack_secret_specs, write_stack
from infra.app_stack.services.alertmanager import alertmanager_config
from infra.app_stack.stack_secrets import local_secret_contents

ALERTING = {
    "receivers": [
        {"name": "ops-hook", "webhook": {"url": "https://hooks.example.org/alerts", "bearer_token": True}},
        {"name": "ops-slack", "slack": {"channel": "#ops"}},
        {
            "name": "ops-mail",
            "email": {
                "to": "ops@example.org",
                "from": "alerts@example.org",
                "smarthost": "smtp.example.org:587",
                "username": "alerts",
            },
        },
    ],
    "warning": ["ops-slack"],
}


def amtool_check(config: dict, directory: Path) -> subprocess.CompletedProcess[str]:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.fail("amtool is not installed: run scripts/install-deps.sh (Debian prometheus-alertmanager)")
    path = directory / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("with_receivers", [False, True], ids=["no-receivers", "webhook-slack-email"])
@pytest.mark.parametrize("env_fixture", ["local_settings", "prod_settings"])
def test_amtool_accepts_the_rendered_config(
    env_fixture: str, with_receivers: bool, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    settings: StackSettings = request.getfixturevalue(env_fixture)
    if with_receivers:
        settings = dataclasses.replace(settings, alerting=parse_alerting(ALERTING, "test"))
    result = amtool_check(alertmanager_config(settings), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_routes_by_severity_and_a_down_node_inhibits_its_other_alerts(local_settings: StackSettings) -> None:
    settings = dataclasses.replace(local_settings, alerting=parse_alerting(ALERTING, "test"))
    config = alertmanager_config(settings)
    routes = {tuple(r["matchers"]): r for r in config["route"]["routes"]}
    assert routes[('severity="critical"',)]["receiver"] == "critical"
    receivers = {r["name"]: r for r in config["receivers"]}
    critical, warning = receivers["critical"], receivers["warning"]
    kinds = {k for k in critical if k.endswith("_configs")}
    assert kinds == {"webhook_configs", "slack_configs", "email_configs"}
    assert {k for k in warning if k.endswith("_configs")} == {"slack_configs"}
    token_file = critical["webhook_configs"][0]["http_config"]["authorization"]["credentials_file"]
    assert token_file == "/run/secrets/alertmanager_ops_hook_token"
    assert critical["slack_configs"][0]["api_url_file"] == "/run/secrets/alertmanager_ops_slack_slack_url"
    assert critical["email_configs"][0]["auth_password_file"].startswith("/run/secrets/")
    inhibit = config["inhibit_rules"][0]
    assert 'job="node"' in inhibit["source_matchers"] and inhibit["equal"] == ["instance"]
    rendered = yaml.safe_dump(config)
    assert "hooks.example.org" in rendered and "xoxb" not in rendered


def test_receiver_credentials_are_provided_secrets_and_a_missing_one_is_named(
    local_settings: StackSettings, tmp_path: Path
) -> None:
    settings = dataclasses.replace(local_settings, alerting=parse_alerting(ALERTING, "test"))
    specs = [s for s in stack_secret_specs(settings) if s.provided]
    assert sorted(s.key for s in specs) == [
        "alertmanager_ops_hook_token",
        "alertmanager_ops_mail_smtp_password",
        "alertmanager_ops_slack_slack_url",
    ]
    env = {s.env_name: f"value-of-{s.key}" for s in specs}
    contents = local_secret_contents(specs, tmp_path, env)
    assert contents["alertmanager_ops_slack_slack_url"] == b"value-of-alertmanager_ops_slack_slack_url"
    assert not list(tmp_path.iterdir()), "provided secrets are not written to disk"
    del env["SPACED_SECRET_ALERTMANAGER_OPS_SLACK_SLACK_URL"]
    with pytest.raises(StackSettingsError, match="set SPACED_SECRET_ALERTMANAGER_OPS_SLACK_SLACK_URL"):
        local_secret_contents(specs, tmp_path, env)
    compose = yaml.safe_load(render_stack(settings).compose_yaml())
    mounted = {s["source"] for s in compose["services"]["alertmanager"]["secrets"]}
    assert mounted == {s.key for s in specs}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"receivers": [{"name": "x"}]}, r"receivers\.0: .*exactly one of webhook, slack, email"),
        ({"receivers": [{"name": "x", "slack": {"channel": "ops"}}]}, r"receivers\.0\.slack\.channel"),
        ({"receivers": [{"name": "x", "webhook": {"url": "ftp://a"}}]}, r"receivers\.0\.webhook\.url"),
        ({"critical": ["nobody"]}, r"critical: unknown receiver nobody"),
        ({"receivers": [{"name": "Bad Name", "slack": {"channel": "#a"}}]}, r"receivers\.0\.name"),
        ({"receiver": []}, r"receiver: Extra inputs"),
    ],
)
def test_bad_alerting_sections_name_the_field(raw: dict, message: str) -> None:
    with pytest.raises(StackSettingsError, match=message):
        parse_alerting(raw, "stacks/Pulumi.prod.yaml: spaced:alerting")


def test_prometheus_sends_to_the_discovered_alertmanager(
    local_settings: StackSettings, tmp_path: Path
) -> None:
    write_stack(render_stack(local_settings), tmp_path)
    config = yaml.safe_load((tmp_path / "prometheus/prometheus.yml").read_text())
    (target,) = config["alerting"]["alertmanagers"]
    assert target["dns_sd_configs"][0]["names"] == ["tasks.spaced_alertmanager"]


def test_alert_rows_list_firing_suppressed_and_pending() -> None:
    am = [
        {
            "labels": {"alertname": "ItemSocketMissing", "severity": "critical"},
            "annotations": {"summary": "No item_socket task answers"},
            "startsAt": "2026-12-06T07:00:00.123Z",
            "status": {"state": "active"},
        },
        {
            "labels": {"alertname": "HostCpuHigh", "severity": "warning", "instance": "10.0.2.3:9100"},
            "annotations": {},
            "startsAt": "2026-12-06T06:00:00Z",
            "status": {"state": "suppressed"},
        },
    ]
    prometheus = {
        "data": {
            "alerts": [
                {"labels": {"alertname": "TargetDown", "job": "node"}, "state": "pending", "activeAt": "x"},
                {"labels": {"alertname": "ItemSocketMissing"}, "state": "firing", "activeAt": "y"},
            ]
        }
    }
    rows = alert_rows(am, prometheus)
    assert [(r["state"], r["alertname"]) for r in rows] == [
        ("firing", "ItemSocketMissing"),
        ("pending", "TargetDown"),
        ("suppressed", "HostCpuHigh"),
    ]
    assert rows[0]["since"] == "2026-12-06 07:00:00" and rows[1]["where"] == "node"
