"""An alert reaches a person: a real alert, fired by a real fault on the local stack, is delivered by
Alertmanager to a webhook receiver, and so is its resolution.

The receiver is a small HTTP server the test starts as a swarm service on the stack's monitoring
overlay (where Alertmanager runs; nothing is published). The stack is redeployed with that receiver
in `spaced:alerting` and the test-only fast timing (`for: 10s`), item_socket is scaled to 0
(ItemSocketMissing), then back to 1; the stack is redeployed as it was afterwards. Runs after the
first-minute quiet check of test_e2e_alerts.py (file order).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from infra.app_stack.alerting import parse_alerting
from infra.app_stack.deploy import deploy
from infra.app_stack.environments import settings_for_environment
from infra.app_stack.model import StackSettings
from tests.support import docker, http_get, wait_until

from .conftest import STACK, LocalStack, spaced

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SINK_PORT = 9000
# Prints each POST body as one line: the test reads them from `docker service logs`.
SINK_SERVER = f"""
import http.server, json
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print("ALERT " + json.dumps(json.loads(body)), flush=True)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("", {SINK_PORT}), Sink).serve_forever()
"""


@pytest.fixture
def alert_sink(local_stack: LocalStack) -> Iterator[str]:
    """A webhook receiver on the monitoring overlay; yields its service name; always removed."""
    name = f"spaced-alert-sink-{uuid.uuid4().hex[:8]}"
    docker(
        "service", "create", "--detach", "--name", name, "--network", f"{STACK}_monitoring",
        "--endpoint-mode", "dnsrr", "--no-healthcheck", "--entrypoint", "python3",
        local_stack.images["item_socket"], "-c", SINK_SERVER,
    )  # fmt: skip
    try:
        wait_until(
            lambda: "Running" in docker("service", "ps", name, "--format", "{{.CurrentState}}").stdout,
            60,
            "the alert sink running",
            interval=1,
        )
        yield name
    finally:
        docker("service", "rm", name, check=False)


def received(sink: str) -> list[dict[str, Any]]:
    """The webhook payloads the sink has printed so far."""
    logs = docker("service", "logs", "--raw", sink, check=False).stdout
    return [json.loads(line.split("ALERT ", 1)[1]) for line in logs.splitlines() if "ALERT " in line]


def notification(sink: str, alertname: str, status: str) -> dict[str, Any] | None:
    """The first payload carrying `alertname` with `status` ("firing" or "resolved")."""
    for payload in received(sink):
        for alert in payload.get("alerts", []):
            if alert["labels"].get("alertname") == alertname and alert["status"] == status:
                return alert
    return None


def print_alerting_state(local_stack: LocalStack, sink: str) -> None:
    """What Prometheus and Alertmanager hold, and what the sink got, for a failing test's report."""
    print(http_get(local_stack.prometheus_url + "/api/v1/alerts"))
    print(http_get(local_stack.prometheus_url + "/api/v1/alertmanagers"))
    for service in (f"{STACK}_alertmanager", sink):
        print(docker("service", "logs", "--tail", "40", service, check=False).stdout)


def stack_settings(local_stack: LocalStack, **changes: Any) -> StackSettings:
    settings = settings_for_environment(
        "local",
        images=local_stack.images,
        include_cadvisor=False,
        http_port=local_stack.http_port,
        env=local_stack.environment(),
    )
    return dataclasses.replace(settings, **changes)


def test_a_real_alert_and_its_resolution_reach_a_webhook(local_stack: LocalStack, alert_sink: str) -> None:
    alerting = parse_alerting(
        {"receivers": [{"name": "e2e-hook", "webhook": {"url": f"http://{alert_sink}:{SINK_PORT}/alerts"}}]},
        "test",
    )
    service = f"{STACK}_item_socket"
    replicas = docker(
        "service", "inspect", service, "--format", "{{.Spec.Mode.Replicated.Replicas}}"
    ).stdout.strip()
    try:
        deploy(
            stack_settings(local_stack, alerting=alerting, alert_test_timing=True),
            progress=print,
            timeout=300,
        )
        docker("service", "scale", "--detach", f"{service}=0")
        down_at = time.monotonic()
        try:
            fired = wait_until(
                lambda: notification(alert_sink, "ItemSocketMissing", "firing"),
                180,
                "ItemSocketMissing delivered to the webhook",
                interval=2,
            )
        except AssertionError:
            print_alerting_state(local_stack, alert_sink)
            raise
        fired_after = time.monotonic() - down_at
        assert fired["labels"]["severity"] == "critical"
        # What an operator sees meanwhile: `spaced alerts` reads Alertmanager's (and Prometheus') API.
        shown = spaced(["alerts", "local", "--json"], local_stack.environment(), timeout=120)
        assert shown.returncode == 0, shown.stderr
        rows = json.loads(shown.stdout)
        assert {"state": "firing", "alertname": "ItemSocketMissing"}.items() <= next(
            r for r in rows if r["alertname"] == "ItemSocketMissing"
        ).items(), rows
        docker("service", "scale", "--detach", f"{service}={replicas}")
        up_at = time.monotonic()
        wait_until(
            lambda: notification(alert_sink, "ItemSocketMissing", "resolved"),
            180,
            "the resolution delivered to the webhook",
            interval=2,
        )
        resolved_after = time.monotonic() - up_at
        print(
            f"\nItemSocketMissing reached the webhook {fired_after:.1f}s after item_socket was scaled to 0 "
            f"(rule for: 10s in test timing), its resolution {resolved_after:.1f}s after it came back"
        )
    finally:
        docker("service", "scale", "--detach", f"{service}={replicas}", check=False)
        deploy(stack_settings(local_stack), progress=print, timeout=300)
