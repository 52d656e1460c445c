"""Prometheus: discovers every item_socket task through swarm DNS and scrapes the node/container exporters.

Never routed by Traefik and never published in the cloud. Locally it is published on
`settings.prometheus_port` for the tests; host-mode publishing binds every address of the host
(swarm cannot bind one address), so keep that port closed to other machines on a shared host.
"""

from __future__ import annotations

from typing import Any

import yaml

from infra.app_stack.model import (
    ConfigFile,
    FileMount,
    Port,
    Resources,
    Service,
    ServiceBundle,
    StackSettings,
    UpdatePolicy,
    VolumeMount,
)
from infra.app_stack.services import item_socket as item_socket_service
from infra.app_stack.services.common import MANAGER_CONSTRAINT, MONITORING_NETWORK, bash_http_probe

CONFIG = "prometheus_config"
RULES = "prometheus_rules"
CONFIG_DIR = "/etc/prometheus"
RULES_RELATIVE_PATH = "rules/alerts.yml"
"""Relative to the config file, so the same file checks out with promtool in any directory."""
DATA_VOLUME = "prometheus_data"
PORT = 9090
NODE_EXPORTER_PORT = 9100
CADVISOR_PORT = 8080


def _tasks(settings: StackSettings, service: str, port: int) -> dict[str, Any]:
    # `tasks.<stack>_<service>` resolves to one A record per running task (with dnsrr and with VIP),
    # so a new or rescheduled task is scraped on the next refresh without touching this file.
    return {
        "names": [f"tasks.{settings.stack_name}_{service}"],
        "type": "A",
        "port": port,
        "refresh_interval": "15s",
    }


def prometheus_config(settings: StackSettings) -> dict[str, Any]:
    """prometheus.yml as a dict."""
    from infra.app_stack.services.traefik import INTERNAL_PORT

    jobs: list[dict[str, Any]] = [
        {"job_name": "prometheus", "static_configs": [{"targets": [f"localhost:{PORT}"]}]},
        {
            "job_name": "item_socket",
            "dns_sd_configs": [_tasks(settings, "item_socket", item_socket_service.PORT)],
        },
        {"job_name": "traefik", "dns_sd_configs": [_tasks(settings, "traefik", INTERNAL_PORT)]},
        {"job_name": "node", "dns_sd_configs": [_tasks(settings, "node_exporter", NODE_EXPORTER_PORT)]},
    ]
    if settings.include_cadvisor:
        jobs.append({"job_name": "cadvisor", "dns_sd_configs": [_tasks(settings, "cadvisor", CADVISOR_PORT)]})
    return {
        "global": {
            "scrape_interval": "15s",
            "evaluation_interval": "15s",
            "external_labels": {"environment": settings.environment},
        },
        "rule_files": [RULES_RELATIVE_PATH],
        "scrape_configs": jobs,
    }


def _alert(name: str, expr: str, duration: str, severity: str, summary: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {"summary": summary},
    }


def alert_rules(settings: StackSettings) -> dict[str, Any]:
    """Alert rules: they fire before a host or container hits its limits, and when item_socket fails."""
    host = [
        _alert(
            "HostCpuHigh",
            '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])) > 0.85',
            "10m",
            "warning",
            "CPU of {{ $labels.instance }} above 85% for 10 minutes",
        ),
        _alert(
            "HostMemoryLow",
            "node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes < 0.10",
            "5m",
            "warning",
            "Less than 10% memory available on {{ $labels.instance }}",
        ),
        _alert(
            "HostDiskFillingUp",
            'node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"}'
            ' / node_filesystem_size_bytes{fstype!~"tmpfs|overlay|squashfs"} < 0.15',
            "10m",
            "warning",
            "Less than 15% disk left on {{ $labels.instance }} {{ $labels.mountpoint }}",
        ),
        _alert(
            "HostDiskFullIn24h",
            'predict_linear(node_filesystem_avail_bytes{fstype!~"tmpfs|overlay|squashfs"}[6h], 86400) < 0',
            "30m",
            "critical",
            "Disk {{ $labels.mountpoint }} on {{ $labels.instance }} full within a day",
        ),
    ]
    item_socket = [
        _alert(
            "ItemSocketDown",
            'up{job="item_socket"} == 0',
            "1m",
            "critical",
            "item_socket task {{ $labels.instance }} does not answer /metrics",
        ),
        _alert(
            "ItemSocketMissing",
            'absent(up{job="item_socket"})',
            "2m",
            "critical",
            "No item_socket task is discovered at all",
        ),
        _alert(
            "ItemSocketErrorRate",
            "sum by (instance) (rate(item_socket_errors_total[5m]))"
            " / clamp_min(sum by (instance) (rate(item_socket_messages_total[5m])), 1) > 0.05",
            "5m",
            "warning",
            "More than 5% of item_socket messages end in errors on {{ $labels.instance }}",
        ),
        _alert(
            "ItemSocketStoreUnhealthy",
            "item_socket_store_healthy == 0",
            "2m",
            "critical",
            "item_socket cannot write its document store on {{ $labels.instance }}",
        ),
    ]
    groups = [{"name": "host", "rules": host}, {"name": "item_socket", "rules": item_socket}]
    if settings.include_cadvisor:
        # Swarm limits appear as the container's spec limits; compare usage against them.
        containers = [
            _alert(
                "ContainerMemoryNearLimit",
                'container_memory_working_set_bytes{container_label_com_docker_swarm_service_name!=""}'
                " / (container_spec_memory_limit_bytes > 0) > 0.9",
                "5m",
                "warning",
                "{{ $labels.container_label_com_docker_swarm_service_name }} uses over 90% of its memory",
            ),
            _alert(
                "ContainerCpuNearLimit",
                'rate(container_cpu_usage_seconds_total{container_label_com_docker_swarm_service_name!=""}[5m])'
                " / (container_spec_cpu_quota / container_spec_cpu_period > 0) > 0.9",
                "10m",
                "warning",
                "{{ $labels.container_label_com_docker_swarm_service_name }} uses over 90% of its CPU limit",
            ),
        ]
        groups.append({"name": "containers", "rules": containers})
    return {"groups": groups}


def prometheus(settings: StackSettings) -> ServiceBundle:
    """The Prometheus service with its config and rules as Docker configs."""
    config_file = ConfigFile(
        key=CONFIG,
        path="prometheus/prometheus.yml",
        content=yaml.safe_dump(prometheus_config(settings), sort_keys=False),
    )
    rules_file = ConfigFile(
        key=RULES,
        path=f"prometheus/{RULES_RELATIVE_PATH}",
        content=yaml.safe_dump(alert_rules(settings), sort_keys=False),
    )
    ports = []
    if settings.is_local and settings.prometheus_port is not None:
        ports = [Port(target=PORT, published=settings.prometheus_port)]
    service = Service(
        name="prometheus",
        image=settings.images["prometheus"],
        command=[
            f"--config.file={CONFIG_DIR}/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=15d",
            f"--web.listen-address=:{PORT}",
        ],
        healthcheck=bash_http_probe(PORT, "/-/healthy"),
        resources=Resources(
            cpus_limit=0.5, memory_limit="512M", cpus_reservation=0.1, memory_reservation="128M"
        ),
        # Its TSDB is on a node-local volume: keep it on the manager it started on.
        placement=[MANAGER_CONSTRAINT],
        networks=[MONITORING_NETWORK],
        replicas=1,
        # stop-first: two Prometheus processes cannot open one TSDB (it is locked).
        update=UpdatePolicy(order="stop-first", monitor="20s"),
        ports=ports,
        configs=[
            FileMount(key=CONFIG, target=f"{CONFIG_DIR}/prometheus.yml"),
            FileMount(key=RULES, target=f"{CONFIG_DIR}/{RULES_RELATIVE_PATH}"),
        ],
        volumes=[VolumeMount(source=DATA_VOLUME, target="/prometheus")],
    )
    return ServiceBundle(service=service, configs=[config_file, rules_file], volumes=[DATA_VOLUME])
