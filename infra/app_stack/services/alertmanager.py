"""Alertmanager: takes Prometheus' alerts and delivers them to the receivers of `spaced:alerting`.

One replica on a manager, its silences and notification log on a volume, on the monitoring overlay
only (never routed by Traefik, never published). Prometheus finds it through swarm DNS
(`tasks.<stack>_alertmanager`). Routes by severity (critical repeats hourly, warnings every 4 h),
groups by alert, job and instance, and a node whose exporter is down silences that node's other
alerts. Receiver credentials are Docker secrets read through Alertmanager's `*_file` settings.
"""

from __future__ import annotations

from typing import Any

import yaml

from infra.app_stack.alerting import Alerting, Receiver
from infra.app_stack.model import (
    ConfigFile,
    FileMount,
    Healthcheck,
    Resources,
    SecretSpec,
    Service,
    ServiceBundle,
    StackSettings,
    UpdatePolicy,
    VolumeMount,
)
from infra.app_stack.services.common import MANAGER_CONSTRAINT, MONITORING_NETWORK

NAME = "alertmanager"
CONFIG = "alertmanager_config"
CONFIG_PATH = "/etc/alertmanager/alertmanager.yml"
DATA_VOLUME = "alertmanager_data"
PORT = 9093
NOWHERE = "nowhere"
"""The receiver with no integrations: where alerts go while `spaced:alerting` names none."""


def _secret_path(key: str) -> str:
    return f"/run/secrets/{key}"


def _integration(receiver: Receiver) -> tuple[str, dict[str, Any]]:
    """(`<kind>_configs`, one entry) of a receiver; credentials as files of its Docker secrets."""
    keys = receiver.secret_keys()
    if receiver.webhook is not None:
        entry: dict[str, Any] = {"url": receiver.webhook.url, "send_resolved": True}
        if keys:
            bearer = {"type": "Bearer", "credentials_file": _secret_path(keys[0])}
            entry["http_config"] = {"authorization": bearer}
        return "webhook_configs", entry
    if receiver.slack is not None:
        return "slack_configs", {
            "api_url_file": _secret_path(keys[0]),
            "channel": receiver.slack.channel,
            "send_resolved": True,
        }
    assert receiver.email is not None  # Receiver validates that exactly one kind is set
    mail = receiver.email
    entry = {
        "to": mail.to,
        "from": mail.from_,
        "smarthost": mail.smarthost,
        "require_tls": mail.require_tls,
        "send_resolved": True,
    }
    if mail.username:
        entry |= {"auth_username": mail.username, "auth_password_file": _secret_path(keys[0])}
    return "email_configs", entry


def _merged_receiver(name: str, members: tuple[str, ...], alerting: Alerting) -> dict[str, Any]:
    """One Alertmanager receiver holding the integrations of every named `spaced:alerting` receiver."""
    receiver: dict[str, Any] = {"name": name}
    by_name = {r.name: r for r in alerting.receivers}
    for member in members:
        kind, entry = _integration(by_name[member])
        receiver.setdefault(kind, []).append(entry)
    return receiver


def alertmanager_config(settings: StackSettings) -> dict[str, Any]:
    """alertmanager.yml as a dict (checked by `amtool check-config` in the tests)."""
    alerting = settings.alerting
    fast = settings.alert_test_timing
    routes = []
    receivers: list[dict[str, Any]] = [{"name": NOWHERE}]
    # The notification log (on the volume) remembers what each receiver was told: a firing alert
    # already sent is repeated only after repeat_interval, also across restarts of the stack.
    repeats = {"critical": "10s", "warning": "10s"} if fast else {"critical": "1h", "warning": "4h"}
    for severity, repeat in repeats.items():
        members = alerting.receivers_for(severity)  # type: ignore[arg-type]
        if not members:
            continue
        receivers.append(_merged_receiver(severity, members, alerting))
        routes.append(
            {"matchers": [f'severity="{severity}"'], "receiver": severity, "repeat_interval": repeat}
        )
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": NOWHERE,
            "group_by": ["alertname", "job", "instance"],
            "group_wait": "2s" if fast else "30s",
            "group_interval": "5s" if fast else "5m",
            "repeat_interval": "10s" if fast else "4h",
            "routes": routes,
        },
        "inhibit_rules": [
            {
                # A node whose exporter does not answer: its CPU, memory and disk alerts say nothing new.
                "source_matchers": ['alertname="TargetDown"', 'job="node"'],
                "target_matchers": ['alertname!="TargetDown"'],
                "equal": ["instance"],
            }
        ],
        "receivers": receivers,
    }


def alertmanager(settings: StackSettings) -> ServiceBundle:
    """The Alertmanager service, its config (a Docker config) and its receivers' credentials."""
    config_file = ConfigFile(
        key=CONFIG,
        path="alertmanager/alertmanager.yml",
        content=yaml.safe_dump(alertmanager_config(settings), sort_keys=False),
    )
    secrets = [
        SecretSpec(key=key, description=f"credential of alert receiver {receiver.name}", provided=True)
        for receiver in settings.alerting.receivers
        for key in receiver.secret_keys()
    ]
    service = Service(
        name=NAME,
        image=settings.images[NAME],
        command=[
            f"--config.file={CONFIG_PATH}",
            "--storage.path=/alertmanager",
            "--cluster.listen-address=",  # one instance: no gossip port
        ],
        healthcheck=Healthcheck(
            test=["CMD", "busybox", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{PORT}/-/ready"]
        ),
        resources=Resources(
            cpus_limit=0.2, memory_limit="64M", cpus_reservation=0.02, memory_reservation="16M"
        ),
        placement=[MANAGER_CONSTRAINT],
        networks=[MONITORING_NETWORK],
        replicas=1,
        # One instance owns the silences on its volume: never two at once.
        update=UpdatePolicy(order="stop-first"),
        configs=[FileMount(key=CONFIG, target=CONFIG_PATH)],
        secrets=[FileMount(key=s.key, target=s.key) for s in secrets],
        volumes=[VolumeMount(source=DATA_VOLUME, target="/alertmanager")],
    )
    return ServiceBundle(service=service, configs=[config_file], secrets=secrets, volumes=[DATA_VOLUME])
