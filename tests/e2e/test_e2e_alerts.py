"""A healthy, freshly deployed local stack raises no alert: none pending or firing in Prometheus
during the first minute after `spaced up local` (image builds and startup included).

The check reads both the live alerts (`/api/v1/alerts`, polled every 2 s) and Prometheus' own
`ALERTS` series since its process started, so an alert that was pending for a moment between two
polls, or while `spaced up` was still waiting for the stack, counts too. (Prometheus writes `ALERTS`
only once it has restored the rules' `for` state, from about the third evaluation after its start;
the first ones are covered by the live poll, which starts right after `up`, about 12 s after
Prometheus started here.) This module sorts first among the e2e tests, so it sees the stack before
the rolling-update test takes item_socket down on purpose.
"""

from __future__ import annotations

import time
import urllib.parse
from datetime import datetime
from typing import Any

import pytest

from tests.support import http_json, wait_until

from .conftest import LocalStack

pytestmark = pytest.mark.docker

QUIET_SECONDS = 60.0
"""How long after `up` (at least) no alert may be pending or firing."""
POLL_SECONDS = 2.0


def active_alerts(stack: LocalStack) -> list[dict[str, Any]]:
    """Alerts Prometheus holds right now (pending or firing), as name, state and labels."""
    alerts = http_json(stack.prometheus_url + "/api/v1/alerts")["data"]["alerts"]
    return [{"name": a["labels"]["alertname"], "state": a["state"], "labels": a["labels"]} for a in alerts]


def alerts_since(stack: LocalStack, start: float) -> dict[str, float]:
    """Every `alertname/alertstate` of the `ALERTS` series since `start`, with its first sample's time."""
    seconds = max(1, int(time.time() - start))
    query = urllib.parse.quote(f"ALERTS[{seconds}s]")
    result = http_json(f"{stack.prometheus_url}/api/v1/query?query={query}")["data"]["result"]
    first: dict[str, float] = {}
    for series in result:
        key = f"{series['metric']['alertname']}/{series['metric']['alertstate']}"
        at = min(float(value[0]) for value in series["values"])
        first[key] = min(first.get(key, at), at)
    return first


def prometheus_start(stack: LocalStack) -> float:
    """When this Prometheus process started (a fresh one per `spaced up`), in Unix seconds."""
    info = http_json(stack.prometheus_url + "/api/v1/status/runtimeinfo")["data"]
    return datetime.fromisoformat(info["startTime"].replace("Z", "+00:00")).timestamp()


def rules_evaluated(stack: LocalStack) -> bool:
    """True once every alerting rule has been evaluated (health ok) at least once."""
    groups = http_json(stack.prometheus_url + "/api/v1/rules?type=alert")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    return bool(rules) and all(rule["health"] == "ok" for rule in rules)


def test_no_alert_is_pending_or_firing_in_the_first_minute_after_up(local_stack: LocalStack) -> None:
    observed_from = time.time()
    started = wait_until(lambda: prometheus_start(local_stack), 60, "Prometheus' runtime info", interval=1)
    wait_until(lambda: rules_evaluated(local_stack), 60, "every alerting rule evaluated once", interval=1)
    # At least QUIET_SECONDS after `up` returned (this test starts after it) and after Prometheus
    # started: the window in which build and startup load used to raise alerts.
    until = max(observed_from, started) + QUIET_SECONDS
    seen: list[tuple[float, dict[str, Any]]] = []
    polls = 0
    while True:  # bounded: `until` is fixed; each poll is bounded by http_json's timeout
        now = time.time()
        seen += [(now - started, alert) for alert in active_alerts(local_stack)]
        polls += 1
        if now >= until:
            break
        time.sleep(min(POLL_SECONDS, max(0.0, until - now)))  # pacing of the poll loop
    history = alerts_since(local_stack, started)
    live: dict[str, list[int]] = {}
    for at, alert in seen:
        first_last = live.setdefault(f"{alert['name']}/{alert['state']}", [round(at), round(at)])
        first_last[1] = round(at)
    after_start = {key: round(at - started) for key, at in history.items()}
    print(
        f"alerts: {polls} polls from {observed_from - started:.0f}s to {until - started:.0f}s after "
        f"Prometheus started; live (first, last s after start): {live}; ALERTS (first s): {after_start}"
    )
    assert not live, (
        f"alerts pending or firing on a fresh, healthy stack (s after Prometheus started): {live}"
    )
    assert not history, f"alerts were pending or firing since Prometheus started (first s): {after_start}"
