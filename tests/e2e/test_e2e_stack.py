"""The stack deployed by `spaced up local`, used the way browsers and operators use it: through
Traefik's one HTTP port (page from nginx, Yjs sync with item_socket) and Prometheus' HTTP API.
"""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from infra.app_stack.environments import settings_for_environment
from infra.app_stack.render import render_stack
from tests.support import docker, http_get, http_json, wait_until

from .conftest import REPO, STACK, LocalStack, load_harness

pytestmark = pytest.mark.docker

harness = load_harness()


@pytest.fixture
def agent() -> Iterator[Any]:
    """A Node process hosting real npm Yjs clients (y-socket.io, y-websocket); always stopped."""
    with harness.agents(1) as (started,):
        yield started


def test_page_and_bundle_come_from_nginx_through_traefik(local_stack: LocalStack) -> None:
    status, page = http_get(local_stack.url + "/")
    assert status == 200
    assert page == (REPO / "web/index.html").read_bytes()
    status, bundle = http_get(local_stack.url + "/dist/board.js")
    assert status == 200
    assert bundle == (REPO / "web/dist/board.js").read_bytes()


@pytest.mark.parametrize(
    "protocol",
    ["sio", "sio-polling", "ws"],
    ids=["socketio-websocket", "socketio-long-polling", "y-websocket"],
)
def test_an_edit_reaches_a_second_client_through_traefik(
    local_stack: LocalStack, agent: Any, protocol: str
) -> None:
    doc = f"e2e-sync-{protocol}-{uuid.uuid4().hex[:8]}"
    token = local_stack.token(doc)
    # Two replicas: a long-polling client must carry Traefik's sticky cookie, as browsers do.
    first = agent.open("first", protocol, local_stack.url, doc, token=token, withCredentials=True)
    second = agent.open("second", protocol, local_stack.url, doc, token=token, withCredentials=True)
    first.wait_synced(timeout=30)
    second.wait_synced(timeout=30)

    first.insert(0, "hello from the first client")
    second.wait_text("hello from the first client", timeout=30)
    second.map_set("moved-by", "second")
    first.wait_state(lambda s: s["map"].get("moved-by") == "second", 30, "the second client's map entry")


def test_a_client_without_a_token_is_refused(local_stack: LocalStack, agent: Any) -> None:
    doc = f"e2e-auth-{uuid.uuid4().hex[:8]}"
    client = agent.open("anonymous", "sio", local_stack.url, doc)
    client.wait_state(lambda s: any(e["type"] == "connection-error" for e in s["events"]), 30, "the refusal")
    assert not client.state(digest_only=True)["synced"]


def running_item_socket_tasks() -> int:
    """How many item_socket tasks run right now (what Prometheus must see)."""
    tasks = docker(
        "service",
        "ps",
        f"{STACK}_item_socket",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.CurrentState}}",
    ).stdout.splitlines()
    return sum(1 for state in tasks if state.startswith("Running"))


def test_prometheus_scrapes_every_item_socket_replica(local_stack: LocalStack) -> None:
    replicas = running_item_socket_tasks()
    assert replicas >= 1

    def item_socket_targets_up() -> list[dict[str, Any]] | None:
        targets = http_json(local_stack.prometheus_url + "/api/v1/targets")["data"]["activeTargets"]
        ours = [t for t in targets if t["labels"].get("job") == "item_socket"]
        up = [t for t in ours if t["health"] == "up"]
        return up if len(ours) == replicas and len(up) == replicas else None

    up = wait_until(
        item_socket_targets_up, 120, f"{replicas} item_socket target(s) up in Prometheus", interval=2
    )
    print(f"item_socket targets up: {[t['scrapeUrl'] for t in up]}")
    # The samples themselves arrive: `up` is 1 for every current instance (the data volume may
    # still hold series of earlier deploys' tasks, so ask per instance).
    for target in up:
        query = urllib.parse.quote(f'up{{job="item_socket",instance="{target["labels"]["instance"]}"}}')
        result = http_json(f"{local_stack.prometheus_url}/api/v1/query?query={query}")["data"]["result"]
        assert [sample["value"][1] for sample in result] == ["1"], result


def test_prometheus_loaded_the_alert_rules_of_the_stack(local_stack: LocalStack) -> None:
    settings = settings_for_environment(
        "local", images=local_stack.images, include_cadvisor=False, env=local_stack.environment()
    )
    rendered = render_stack(settings)
    rule_files = [c for c in rendered.config_files if "rules" in c.key]
    assert rule_files, "the rendered stack has no Prometheus rules file"
    expected = {
        rule["alert"]
        for config in rule_files
        for group in yaml.safe_load(config.content)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert expected

    def loaded_alerts() -> set[str] | None:
        groups = http_json(local_stack.prometheus_url + "/api/v1/rules")["data"]["groups"]
        names = {rule["name"] for group in groups for rule in group["rules"] if rule["type"] == "alerting"}
        return names if expected <= names else None

    loaded = wait_until(loaded_alerts, 60, f"the alert rules {sorted(expected)}")
    assert not [name for name in loaded if name not in expected]
    rules = http_json(local_stack.prometheus_url + "/api/v1/rules")["data"]["groups"]
    unhealthy = [r["name"] for g in rules for r in g["rules"] if r.get("health") not in ("ok", "unknown")]
    assert not unhealthy, f"rules failing to evaluate: {unhealthy}"
