"""The cloud application deploy, as the Pulumi program wires it (under mocks).

The deploy command runs through infra/cloud_deploy.py with the stack's deploy key and the first
manager's pinned host key (the very key every remote command to that host pins), never with the
operator's SSH setup; the application secrets come from pulumi_random, kept in the state.
"""

from __future__ import annotations

import json

import pulumi
import pytest

from infra import cloud_deploy
from infra.app_stack.model import StackSettings
from tests.infra.fixtures.pulumi_mocks import CloudMocks, is_secret, unwrap
from tests.infra.fixtures.topologies import stack_topology
from tests.infra.program.test_program_stacks import PRIVATE_KEY, run_stack


@pytest.fixture(scope="module", params=["prod", "dev"])
def stack(request: pytest.FixtureRequest) -> tuple[str, CloudMocks, dict]:
    mocks, outputs = run_stack(request.param)
    return request.param, mocks, outputs


def deploy_command(mocks: CloudMocks):  # type: ignore[no-untyped-def]
    [deploy] = mocks.of_type("command:local:Command")
    return deploy


def test_the_deploy_runs_with_the_deploy_key_and_the_managers_pinned_host_key(stack) -> None:  # type: ignore[no-untyped-def]
    env, mocks, _ = stack
    deploy = deploy_command(mocks)
    for phase in ("create", "update", "delete"):
        assert " -m infra.cloud_deploy -- " in deploy.inputs[phase], phase
    environment = unwrap(deploy.inputs["environment"])
    assert unwrap(environment[cloud_deploy.PRIVATE_KEY_VAR]) == PRIVATE_KEY
    first_manager = next(n["name"] for n in stack_topology(env)["nodes"] if n.get("manager"))
    assert environment[cloud_deploy.HOST_NAME_VAR] == first_manager
    [init] = [r for r in mocks.of_type("command:remote:Command") if r.name == f"swarm-{first_manager}-init"]
    pinned = unwrap(unwrap(init.inputs["connection"])["hostKey"])
    assert pinned.startswith("ssh-ed25519 ") and unwrap(environment[cloud_deploy.HOST_KEY_VAR]) == pinned
    assert environment["DOCKER_HOST"].startswith("ssh://deploy@")


def test_application_secrets_come_from_the_pulumi_state(stack) -> None:  # type: ignore[no-untyped-def]
    env, mocks, outputs = stack
    passwords = {r.name: r for r in mocks.of_type("random:index/randomPassword:RandomPassword")}
    assert set(passwords) == {
        "app-jwt-secret",
        "app-dashboard-password",
        "app-redis-password",
        "app-postgres-password",
    }
    assert all(p.inputs["special"] is False for p in passwords.values())
    assert passwords["app-jwt-secret"].inputs["length"] >= 48
    raw_environment = deploy_command(mocks).inputs["environment"]
    assert is_secret(raw_environment) or is_secret(raw_environment[cloud_deploy.APP_SECRETS_VAR])
    environment = unwrap(raw_environment)
    values = json.loads(unwrap(environment[cloud_deploy.APP_SECRETS_VAR]))
    assert set(values) == {
        cloud_deploy.JWT_KEY,
        cloud_deploy.DASHBOARD_PASSWORD_KEY,
        cloud_deploy.REDIS_PASSWORD_KEY,
        cloud_deploy.POSTGRES_PASSWORD_KEY,
    }
    assert environment[cloud_deploy.ENVIRONMENT_VAR] == env
    assert "dashboard_password" in outputs


ALERTING = {
    "receivers": [
        {"name": "ops-slack", "slack": {"channel": "#ops"}},
        {"name": "ops-hook", "webhook": {"url": "https://hooks.example.org/a"}},
    ]
}
SLACK_URL = "https://hooks.slack.example/services/T0/B0/secret"


def test_alert_receivers_reach_the_deploy_with_their_credentials_as_secrets() -> None:
    mocks, _ = run_stack(
        "dev",
        extra={
            "spaced:alerting": json.dumps(ALERTING),
            "spaced:alertmanager-ops-slack-slack-url": SLACK_URL,
        },
        secrets=("spaced:alertmanager-ops-slack-slack-url",),
    )
    deploy = deploy_command(mocks)
    settings = StackSettings.from_json(deploy.inputs["stdin"])
    assert [r.name for r in settings.alerting.receivers] == ["ops-slack", "ops-hook"]
    raw = deploy.inputs["environment"]
    name = "SPACED_SECRET_ALERTMANAGER_OPS_SLACK_SLACK_URL"
    assert is_secret(raw) or is_secret(raw[name])
    assert unwrap(unwrap(raw)[name]) == SLACK_URL
    assert SLACK_URL not in deploy.inputs["stdin"], "credentials never travel in the settings"


def test_a_receiver_without_its_credential_stops_the_program_naming_the_key() -> None:
    with pytest.raises(pulumi.config.ConfigMissingError, match="spaced:alertmanager-ops-slack-slack-url"):
        run_stack("dev", extra={"spaced:alerting": json.dumps(ALERTING)})
