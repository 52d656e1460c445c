"""The stack's alert rules under `promtool test rules`: input series in, alerts out at given times.

Each rule that judges a rate, a trend or an absence has one case shaped like what a healthy stack
does right after `spaced up` on a busy machine (image builds, containers starting, the first scrape
still due) and must not even go pending there (no `ALERTS` series at all), and one case of the real
trouble it exists for, which must fire, and not before its `for:` has run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.app_stack.environments import settings_for_environment
from infra.app_stack.services.prometheus import alert_rules

NODE = {"instance": "10.0.2.3:9100", "job": "node"}
DISK = {**NODE, "device": "/dev/vda", "fstype": "ext4", "mountpoint": "/"}
ITEM_SOCKET = {"instance": "10.0.1.7:8080", "job": "item_socket"}
PROMETHEUS = {"instance": "localhost:9090", "job": "prometheus"}
NODE_UP = {"instance": "10.0.2.3:9100", "job": "node"}
TRAEFIK_UP = {"instance": "10.0.2.5:8082", "job": "traefik"}
CADVISOR_UP = {"instance": "10.0.2.4:8080", "job": "cadvisor"}
CONTAINER = {
    "instance": "10.0.2.4:8080",
    "job": "cadvisor",
    "id": "/docker/abc",
    "container_label_com_docker_swarm_service_name": "spaced_prometheus",
}
GB = 1_000_000_000


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    """One input series in promtool's notation (`a+bxN`: N more samples, each `b` above the last)."""
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def cpu_idle(per_minute: str) -> list[dict[str, str]]:
    """node_cpu_seconds_total{mode="idle"} of a 2-core host, sampled every minute, both cores alike."""
    return [
        series("node_cpu_seconds_total", {**NODE, "cpu": str(cpu), "mode": "idle"}, per_minute)
        for cpu in (0, 1)
    ]


def histogram(
    name: str, labels: dict[str, str], per_scrape: dict[str, int], scrapes: int
) -> list[dict[str, str]]:
    """`<name>_bucket` series of a histogram that observes, every scrape, `per_scrape[le]` values up
    to `le` (cumulative, as Prometheus' buckets are)."""
    return [
        series(f"{name}_bucket", {**labels, "le": le}, f"0+{count}x{scrapes}")
        for le, count in per_scrape.items()
    ]


FAST = {"0.005": 10, "0.05": 10, "0.5": 10, "1": 10, "2.5": 10, "+Inf": 10}
"""Every observation under 5 ms."""
SLOW = {"0.005": 0, "0.05": 0, "0.5": 0, "1": 0, "2.5": 10, "+Inf": 10}
"""Every observation between 1 and 2.5 s."""
BACKUP_NODE = {"instance": "10.0.2.3:9100", "job": "node"}
EVERY_10_MINUTES = "_x2 " + " ".join(f"{180 + 600 * n}x9" for n in range(7))
"""Minute by minute for 72 minutes: nothing until minute 3, then the end time of the latest backup."""


def never_pending(alert: str, *minutes: float) -> list[dict[str, Any]]:
    """promql_expr_test items: no `ALERTS` series (neither pending nor firing) of `alert` at those times."""
    return [
        {"expr": f'ALERTS{{alertname="{alert}"}}', "eval_time": f"{m * 60:g}s", "exp_samples": []}
        for m in minutes
    ]


def not_firing(alert: str, minutes: float) -> dict[str, Any]:
    """alert_rule_test item: `alert` is not firing at that time."""
    return {"eval_time": f"{minutes * 60:g}s", "alertname": alert, "exp_alerts": []}


def firing(alert: str, minutes: float, labels: dict[str, str], summary: str) -> dict[str, Any]:
    """alert_rule_test item: `alert` fires at that time with these labels and summary."""
    return {
        "eval_time": f"{minutes * 60:g}s",
        "alertname": alert,
        "exp_alerts": [{"exp_labels": labels, "exp_annotations": {"summary": summary}}],
    }


def case(
    name: str, interval: str, inputs: list[dict[str, str]], **checks: list[dict[str, Any]]
) -> dict[str, Any]:
    """One promtool test group; `name` is only for the reader (promtool reports by position)."""
    return {"name": name, "interval": interval, "input_series": inputs, **checks}


CASES: list[dict[str, Any]] = [
    case(
        "RedisMemoryHigh/Full: two replicas report one Redis filling up; no limit never alerts",
        "1m",
        [
            *(
                series(name, {**ITEM_SOCKET, "instance": instance}, values)
                for instance in ("10.0.1.7:8080", "10.0.1.8:8080")
                for name, values in (
                    ("item_socket_redis_memory_used_bytes", "500x10 850x20 970x20"),
                    ("item_socket_redis_maxmemory_bytes", "1000x50"),
                )
            ),
            series(
                "item_socket_redis_memory_used_bytes", {**ITEM_SOCKET, "instance": "other:8080"}, "5000x50"
            ),
            series("item_socket_redis_maxmemory_bytes", {**ITEM_SOCKET, "instance": "other:8080"}, "0x50"),
        ],
        promql_expr_test=[
            *never_pending("RedisMemoryHigh", 0, 5, 10),
            *never_pending("RedisMemoryFull", 0, 10, 20, 30),
        ],
        alert_rule_test=[
            not_firing("RedisMemoryHigh", 20),
            firing(
                "RedisMemoryHigh",
                27,
                {"severity": "warning"},
                "Redis uses 85% of its maxmemory: compactions are not keeping up",
            ),
            not_firing("RedisMemoryFull", 31),
            firing(
                "RedisMemoryFull",
                34,
                {"severity": "critical"},
                "Redis is at 97% of its maxmemory: item_socket edits are about to be refused",
            ),
        ],
    ),
    case(
        "HostCpuHigh: a fresh stack after 5 minutes of image builds at 100% CPU, then 5% busy",
        "15s",
        cpu_idle("0x19 14.25+14.25x220"),
        promql_expr_test=never_pending("HostCpuHigh", 1, 2, 5, 8, 10, 15, 30, 55),
    ),
    case(
        "HostCpuHigh: 5 busy minutes of one stack, a 3-minute gap (redeploy), then a busy new stack",
        "15s",
        # The data volume outlives the stack: the new one must not be judged on a window that
        # spans both start-ups (it would read as 10 minutes of load).
        cpu_idle("0+0.75x19 _x11 24+0.75x60"),
        promql_expr_test=never_pending("HostCpuHigh", 4, 8.5, 9, 10, 12, 15, 17),
    ),
    case(
        "HostCpuHigh: a host 95% busy for an hour",
        "15s",
        cpu_idle("0+0.75x240"),
        # Judged once 10 minutes of scrapes are in, fires 15 minutes later.
        promql_expr_test=never_pending("HostCpuHigh", 1, 5, 9),
        alert_rule_test=[
            not_firing("HostCpuHigh", 24),
            firing(
                "HostCpuHigh",
                26,
                {"severity": "warning", "instance": NODE["instance"]},
                f"CPU of {NODE['instance']} over 90% busy (10-minute average) for 15 minutes",
            ),
        ],
    ),
    case(
        "HostDisk*: a roomy disk (80% free) written fast (10 GB in 10 minutes), then still",
        "1m",
        [
            series("node_filesystem_size_bytes", DISK, f"{100 * GB}x120"),
            series("node_filesystem_avail_bytes", DISK, f"{80 * GB}-{GB}x10 {70 * GB}x110"),
            series("node_filesystem_readonly", DISK, "0x120"),
        ],
        promql_expr_test=[
            *never_pending("HostDiskFullIn24h", 1, 5, 10, 30, 60, 90, 120),
            *never_pending("HostDiskFillingUp", 5, 60, 120),
        ],
    ),
    case(
        "HostDiskFullIn24h: a disk with 9% free losing 1 GB an hour (full in 9 h)",
        "1m",
        [
            series("node_filesystem_size_bytes", DISK, f"{100 * GB}x200"),
            series("node_filesystem_avail_bytes", DISK, f"{9 * GB}-{GB // 60}x200"),
            series("node_filesystem_readonly", DISK, "0x200"),
        ],
        # Needs an hour of data for its trend, then fires 30 minutes later.
        promql_expr_test=never_pending("HostDiskFullIn24h", 1, 30, 59),
        alert_rule_test=[
            not_firing("HostDiskFullIn24h", 85),
            firing(
                "HostDiskFullIn24h",
                95,
                {"severity": "critical", **DISK},
                f"Disk / on {NODE['instance']} under 10% free and full within a day",
            ),
        ],
    ),
    case(
        "HostDisk*: a full read-only mount is no disk to fill",
        "1m",
        [
            series("node_filesystem_size_bytes", {**DISK, "mountpoint": "/media/cd"}, f"{GB}x120"),
            series("node_filesystem_avail_bytes", {**DISK, "mountpoint": "/media/cd"}, "0x120"),
            series("node_filesystem_readonly", {**DISK, "mountpoint": "/media/cd"}, "1x120"),
        ],
        promql_expr_test=[
            *never_pending("HostDiskFillingUp", 5, 30, 120),
            *never_pending("HostDiskFullIn24h", 5, 30, 120),
        ],
    ),
    case(
        "ItemSocket*: a fresh Prometheus; item_socket discovered after 30 s, its first scrape fails",
        "15s",
        [
            series("process_start_time_seconds", PROMETHEUS, "0x40"),
            series("up", ITEM_SOCKET, "_ _ 0 1x37"),
        ],
        promql_expr_test=[
            *never_pending("ItemSocketMissing", 0, 0.25, 0.5, 1, 2, 3, 5, 10),
            *never_pending("ItemSocketDown", 0.5, 1, 2, 3, 5, 10),
        ],
    ),
    case(
        "ItemSocketMissing: no item_socket task is ever discovered",
        "15s",
        [series("process_start_time_seconds", PROMETHEUS, "0x40")],
        # Judged once this Prometheus has run 2 minutes, then fires 2 minutes later.
        promql_expr_test=never_pending("ItemSocketMissing", 0, 1, 2),
        alert_rule_test=[
            not_firing("ItemSocketMissing", 4),
            firing(
                "ItemSocketMissing",
                4.5,
                {"severity": "critical"},
                "No item_socket task answers /metrics (none discovered, or all down)",
            ),
        ],
    ),
    case(
        "ItemSocketMissing: the only task vanishes from discovery and its last `up 1` is never marked stale",
        "15s",
        [
            series("process_start_time_seconds", PROMETHEUS, "0x60"),
            # Answers for 2 minutes, then no more samples at all (no stale marker).
            series("up", ITEM_SOCKET, "1x8"),
        ],
        promql_expr_test=never_pending("ItemSocketMissing", 1, 2, 2.75),
        alert_rule_test=[
            not_firing("ItemSocketMissing", 4.5),
            firing(
                "ItemSocketMissing",
                5.5,
                {"severity": "critical"},
                "No item_socket task answers /metrics (none discovered, or all down)",
            ),
        ],
    ),
    case(
        "ItemSocket*: a task answers for 5 minutes, then hangs",
        "15s",
        [
            series("process_start_time_seconds", PROMETHEUS, "0x60"),
            series("up", ITEM_SOCKET, "1x20 0x40"),
        ],
        promql_expr_test=never_pending("ItemSocketDown", 1, 5, 5.75),
        alert_rule_test=[
            not_firing("ItemSocketDown", 6.5),
            firing(
                "ItemSocketDown",
                7.5,
                {"severity": "critical", **ITEM_SOCKET},
                f"item_socket task {ITEM_SOCKET['instance']} has not answered /metrics for 2 minutes",
            ),
            firing(
                "ItemSocketMissing",
                8,
                {"severity": "critical"},
                "No item_socket task answers /metrics (none discovered, or all down)",
            ),
        ],
    ),
    case(
        "TargetDown/ScrapeJobMissing: a fresh stack; exporters discovered after 30 s, first scrapes fail",
        "15s",
        [
            series("process_start_time_seconds", PROMETHEUS, "0x60"),
            series("up", PROMETHEUS, "1x60"),
            series("up", NODE_UP, "_ _ 0 1x57"),
            series("up", TRAEFIK_UP, "_ 0 0 1x57"),
            series("up", CADVISOR_UP, "_ _ _ 0 1x56"),
        ],
        promql_expr_test=[
            *never_pending("TargetDown", 0.5, 1, 2, 5, 10, 15),
            *never_pending("ScrapeJobMissing", 0, 0.5, 1, 2, 3, 5, 10, 15),
        ],
    ),
    case(
        "ScrapeJobMissing: the stack down for 3 minutes, then up again; Prometheus keeps its data volume",
        "15s",
        [
            # The old process' last samples (t <= 2 min) are still within the 5-minute lookback when
            # the new one starts (t = 5 min) and first scrapes itself at 5:15, the exporters at 5:30.
            series("process_start_time_seconds", PROMETHEUS, "0x8 _x12 300x20"),
            series("up", PROMETHEUS, "1x8 _x12 1x20"),
            series("up", NODE_UP, "1x8 _x13 1x19"),
            series("up", TRAEFIK_UP, "1x8 _x13 1x19"),
        ],
        promql_expr_test=never_pending("ScrapeJobMissing", 4, 5, 5.25, 5.5, 6, 7),
    ),
    case(
        "TargetDown/ScrapeJobMissing: node-exporter answers 5 minutes then stops; Traefik never answers",
        "15s",
        [
            series("process_start_time_seconds", PROMETHEUS, "0x60"),
            series("up", PROMETHEUS, "1x60"),
            series("up", NODE_UP, "1x20 0x40"),
            series("up", CADVISOR_UP, "1x60"),
        ],
        promql_expr_test=never_pending("TargetDown", 1, 5, 5.75),
        alert_rule_test=[
            not_firing("TargetDown", 7.5),
            firing(
                "TargetDown",
                8.5,
                {"severity": "warning", **NODE_UP},
                f"node target {NODE_UP['instance']} has not answered its scrape for 3 minutes",
            ),
            not_firing("ScrapeJobMissing", 4.5),
            {
                "eval_time": "9m",
                "alertname": "ScrapeJobMissing",
                "exp_alerts": [
                    {
                        "exp_labels": {"severity": "critical", "job": job},
                        "exp_annotations": {
                            "summary": f"No {job} target answers its scrape (none discovered, or all down)"
                        },
                    }
                    for job in ("node", "traefik")
                ],
            },
        ],
    ),
    case(
        "ItemSocketErrorRate: a newcomer's page without a token refused 8 times in the first minute",
        "15s",
        [
            series("item_socket_errors_total", {**ITEM_SOCKET, "kind": "unauthorized"}, "0 2 4 6 8x36"),
            series("item_socket_messages_total", ITEM_SOCKET, "0+3x40"),
        ],
        promql_expr_test=never_pending("ItemSocketErrorRate", 0.5, 1, 2, 5, 10),
    ),
    case(
        "ItemSocketErrorRate: 10 of 100 messages a second end in errors",
        "15s",
        [
            series("item_socket_errors_total", {**ITEM_SOCKET, "kind": "decoder_panic"}, "0+150x60"),
            series("item_socket_messages_total", ITEM_SOCKET, "0+1500x60"),
        ],
        alert_rule_test=[
            not_firing("ItemSocketErrorRate", 4.5),
            firing(
                "ItemSocketErrorRate",
                6,
                {"severity": "warning", "instance": ITEM_SOCKET["instance"]},
                f"More than 5% of item_socket messages end in errors on {ITEM_SOCKET['instance']}",
            ),
        ],
    ),
    case(
        "ContainerCpuNearLimit: a container at its 0.5-CPU limit for its first 3 minutes, then 10%",
        "15s",
        [
            series(
                "container_cpu_usage_seconds_total", {**CONTAINER, "cpu": "total"}, "0+7.5x12 90.75+0.75x227"
            ),
            series("container_spec_cpu_quota", CONTAINER, "50000x240"),
            series("container_spec_cpu_period", CONTAINER, "100000x240"),
        ],
        promql_expr_test=never_pending("ContainerCpuNearLimit", 1, 2, 3, 5, 10, 20, 40),
    ),
    case(
        "ContainerCpuNearLimit: a container at 96% of its CPU limit for an hour",
        "15s",
        [
            # cAdvisor's usage carries a `cpu` label the limit lacks.
            series("container_cpu_usage_seconds_total", {**CONTAINER, "cpu": "total"}, "0+7.2x240"),
            series("container_spec_cpu_quota", CONTAINER, "50000x240"),
            series("container_spec_cpu_period", CONTAINER, "100000x240"),
        ],
        promql_expr_test=never_pending("ContainerCpuNearLimit", 1, 5, 9),
        alert_rule_test=[
            not_firing("ContainerCpuNearLimit", 19),
            firing(
                "ContainerCpuNearLimit",
                21,
                {"severity": "warning", **CONTAINER},
                "spaced_prometheus uses over 90% of its CPU limit",
            ),
        ],
    ),
    case(
        "ItemSocketStreamLagHigh/RedisSlow/PostgresSlow: replicas, Redis and PostgreSQL answer in ms",
        "15s",
        [
            *histogram("item_socket_stream_lag_seconds", ITEM_SOCKET, FAST, 60),
            *histogram("item_socket_redis_seconds", ITEM_SOCKET, FAST, 60),
            *histogram("item_socket_store_operation_seconds", {**ITEM_SOCKET, "operation": "ping"}, FAST, 60),
        ],
        promql_expr_test=[
            *never_pending("ItemSocketStreamLagHigh", 0.5, 1, 5, 14),
            *never_pending("RedisSlow", 0.5, 1, 5, 14),
            *never_pending("PostgresSlow", 0.5, 1, 5, 14),
        ],
    ),
    case(
        "ItemSocketStreamLagHigh/RedisSlow/PostgresSlow: every update, round trip and snapshot save: 1-2.5 s",
        "15s",
        [
            *histogram("item_socket_stream_lag_seconds", ITEM_SOCKET, SLOW, 60),
            *histogram("item_socket_redis_seconds", ITEM_SOCKET, SLOW, 60),
            *histogram(
                "item_socket_store_operation_seconds", {**ITEM_SOCKET, "operation": "save_snapshot"}, SLOW, 60
            ),
        ],
        alert_rule_test=[
            not_firing("ItemSocketStreamLagHigh", 4.5),
            firing(
                "ItemSocketStreamLagHigh",
                6,
                {"severity": "warning", "instance": ITEM_SOCKET["instance"]},
                f"Updates from other item_socket replicas reach {ITEM_SOCKET['instance']} over 1 s late "
                "(p99, 5 minutes)",
            ),
            not_firing("RedisSlow", 9.5),
            firing(
                "RedisSlow",
                11,
                {"severity": "warning", "instance": ITEM_SOCKET["instance"]},
                f"Redis round trips of item_socket {ITEM_SOCKET['instance']} over 0.1 s (p99)",
            ),
            not_firing("PostgresSlow", 9.5),
            firing(
                "PostgresSlow",
                11,
                {"severity": "warning", "instance": ITEM_SOCKET["instance"], "operation": "save_snapshot"},
                f"PostgreSQL save_snapshot of item_socket {ITEM_SOCKET['instance']} over 1 s (p99)",
            ),
        ],
    ),
    case(
        "RedisDown/ItemSocketStoreUnhealthy: a replica starts 30 s before Redis and PostgreSQL answer",
        "15s",
        [
            series("item_socket_redis_healthy", ITEM_SOCKET, "0 0 1x40"),
            series("item_socket_store_healthy", ITEM_SOCKET, "0 0 1x40"),
        ],
        promql_expr_test=[
            *never_pending("RedisDown", 0, 0.25, 0.5, 1, 2, 5, 10),
            *never_pending("ItemSocketStoreUnhealthy", 0, 0.25, 0.5, 1, 2, 5, 10),
        ],
    ),
    case(
        "RedisDown/ItemSocketStoreUnhealthy: Redis and PostgreSQL gone after 2 minutes",
        "15s",
        [
            series("item_socket_redis_healthy", ITEM_SOCKET, "1x8 0x40"),
            series("item_socket_store_healthy", ITEM_SOCKET, "1x8 0x40"),
        ],
        alert_rule_test=[
            not_firing("RedisDown", 3.5),
            firing(
                "RedisDown",
                4.5,
                {"severity": "critical", **ITEM_SOCKET},
                f"item_socket {ITEM_SOCKET['instance']} cannot reach Redis: its edits are held, not shared",
            ),
            not_firing("ItemSocketStoreUnhealthy", 3.5),
            firing(
                "ItemSocketStoreUnhealthy",
                4.5,
                {"severity": "critical", **ITEM_SOCKET},
                f"item_socket cannot write its document store on {ITEM_SOCKET['instance']}",
            ),
        ],
    ),
    case(
        "ItemSocketCompactionOverlap/CompactionsFailing: compactions succeed, some busy, one failure",
        "15s",
        [
            series("item_socket_compaction_overlaps_total", ITEM_SOCKET, "0x100"),
            series("item_socket_compactions_total", {**ITEM_SOCKET, "outcome": "compacted"}, "0+2x100"),
            series("item_socket_compactions_total", {**ITEM_SOCKET, "outcome": "busy"}, "0+1x100"),
            series("item_socket_compactions_total", {**ITEM_SOCKET, "outcome": "failed"}, "0x20 1x80"),
        ],
        promql_expr_test=[
            *never_pending("ItemSocketCompactionOverlap", 0, 1, 10, 25),
            *never_pending("ItemSocketCompactionsFailing", 0, 1, 10, 20, 25),
        ],
    ),
    case(
        "ItemSocketCompactionOverlap/CompactionsFailing: an overlap; a replica whose compactions all fail",
        "15s",
        [
            series("item_socket_compaction_overlaps_total", ITEM_SOCKET, "0x4 1x100"),
            # Never one success: no `compacted` series at all.
            series("item_socket_compactions_total", {**ITEM_SOCKET, "outcome": "failed"}, "0+1x100"),
        ],
        promql_expr_test=never_pending("ItemSocketCompactionOverlap", 0, 0.75),
        alert_rule_test=[
            firing(
                "ItemSocketCompactionOverlap",
                1.5,
                {"severity": "critical", **ITEM_SOCKET},
                f"item_socket {ITEM_SOCKET['instance']} ran a compaction while another held the document",
            ),
            not_firing("ItemSocketCompactionOverlap", 20),  # 15 minutes without another overlap
            not_firing("ItemSocketCompactionsFailing", 15),
            firing(
                "ItemSocketCompactionsFailing",
                17.5,
                {"severity": "warning", "instance": ITEM_SOCKET["instance"]},
                f"Most compactions of item_socket {ITEM_SOCKET['instance']} fail: "
                "streams grow, syncs slow down",
            ),
        ],
    ),
    case(
        "ItemSocketOutboxGrowing: updates wait a moment for Redis now and then",
        "15s",
        [series("item_socket_outbox_updates", ITEM_SOCKET, "0 3 0 0 12 0 1 0x53")],
        promql_expr_test=never_pending("ItemSocketOutboxGrowing", 0.5, 1, 2, 5, 10, 14),
    ),
    case(
        "ItemSocketOutboxGrowing: Redis refuses appends, the outbox grows by 10 every scrape",
        "15s",
        [series("item_socket_outbox_updates", ITEM_SOCKET, "0+10x60")],
        promql_expr_test=never_pending("ItemSocketOutboxGrowing", 1, 4.75),
        alert_rule_test=[
            not_firing("ItemSocketOutboxGrowing", 9.75),
            firing(
                "ItemSocketOutboxGrowing",
                11,
                {"severity": "critical", **ITEM_SOCKET},
                f"item_socket {ITEM_SOCKET['instance']} holds updates it cannot append to Redis, "
                "more and more",
            ),
        ],
    ),
    case(
        "Backup*: a fresh stack; the first backup (no documents yet) 3 minutes in, then every 10 minutes",
        "1m",
        [
            series("process_start_time_seconds", PROMETHEUS, "0x70"),
            # A backup at minute 3, 13, 23, ...: its end time stays the last one until the next.
            series("spaced_backup_last_attempt_timestamp_seconds", BACKUP_NODE, EVERY_10_MINUTES),
            series("spaced_backup_last_success_timestamp_seconds", BACKUP_NODE, EVERY_10_MINUTES),
            series("spaced_backup_interval_seconds", BACKUP_NODE, "_x3 600x67"),
            series("spaced_backup_min_size_bytes", BACKUP_NODE, "_x3 1024x67"),
            series("spaced_backup_last_size_bytes", BACKUP_NODE, "_x3 2674x67"),
            series("spaced_backup_last_verify_ok", BACKUP_NODE, "_x3 1x67"),
            series("spaced_backup_last_documents", BACKUP_NODE, "_x3 0x67"),
        ],
        promql_expr_test=[
            check
            for alert in (
                "BackupMissing",
                "BackupTooOld",
                "BackupTooSmall",
                "BackupVerifyFailed",
                "BackupEmpty",
            )
            for check in never_pending(alert, 1, 4, 20, 31, 45, 61, 69)
        ],
    ),
    case(
        "BackupMissing: no backup is ever attempted",
        "1m",
        [series("process_start_time_seconds", PROMETHEUS, "0x70")],
        # Judged once Prometheus has run 30 minutes, then fires 30 minutes later.
        promql_expr_test=never_pending("BackupMissing", 1, 15, 29),
        alert_rule_test=[
            not_firing("BackupMissing", 55),
            firing(
                "BackupMissing",
                65,
                {"severity": "critical"},
                "No PostgreSQL backup has been attempted (no spaced_backup metrics from node-exporter)",
            ),
        ],
    ),
    case(
        "BackupTooOld: one verified backup at minute 1, then every 10-minute try fails",
        "1m",
        [
            series(
                "spaced_backup_last_attempt_timestamp_seconds", BACKUP_NODE, "_ 60x9 660x10 1260x10 1860x15"
            ),
            series("spaced_backup_last_success_timestamp_seconds", BACKUP_NODE, "_ 60x45"),
            series("spaced_backup_interval_seconds", BACKUP_NODE, "_ 600x45"),
        ],
        # Older than two intervals from minute 21, then fires 15 minutes later.
        promql_expr_test=never_pending("BackupTooOld", 2, 10, 20),
        alert_rule_test=[
            not_firing("BackupTooOld", 34),
            firing(
                "BackupTooOld",
                40,
                {"severity": "critical", **BACKUP_NODE},
                "The last verified PostgreSQL backup is older than two backup intervals",
            ),
        ],
    ),
    case(
        "BackupTooSmall: a dump of 867 bytes (an empty database) under the 1024-byte floor",
        "1m",
        [
            series("spaced_backup_last_size_bytes", BACKUP_NODE, "2674x5 867x10"),
            series("spaced_backup_min_size_bytes", BACKUP_NODE, "1024x15"),
            series("spaced_backup_last_verify_ok", BACKUP_NODE, "1x5 0x10"),
        ],
        promql_expr_test=[
            *never_pending("BackupTooSmall", 1, 5),
            *never_pending("BackupVerifyFailed", 1, 5, 10),
        ],
        alert_rule_test=[
            firing(
                "BackupTooSmall",
                8,
                {"severity": "critical", **BACKUP_NODE},
                "The last PostgreSQL backup has 867 bytes, under the floor (BACKUP_MIN_BYTES)",
            ),
        ],
    ),
    case(
        "BackupVerifyFailed: a dump of normal size that does not restore",
        "1m",
        [
            series("spaced_backup_last_size_bytes", BACKUP_NODE, "2674x15"),
            series("spaced_backup_min_size_bytes", BACKUP_NODE, "1024x15"),
            series("spaced_backup_last_verify_ok", BACKUP_NODE, "1x5 0x10"),
        ],
        promql_expr_test=never_pending("BackupVerifyFailed", 1, 5),
        alert_rule_test=[
            firing(
                "BackupVerifyFailed",
                8,
                {"severity": "critical", **BACKUP_NODE},
                "The last PostgreSQL backup did not restore into a scratch database with a documents table",
            ),
        ],
    ),
    case(
        "BackupEmpty: 25 documents in every backup, then a verified one with none (a wiped database)",
        "1m",
        [
            series("spaced_backup_last_documents", BACKUP_NODE, "25x5 0x10"),
            series("spaced_backup_last_verify_ok", BACKUP_NODE, "1x15"),
        ],
        promql_expr_test=never_pending("BackupEmpty", 1, 5),
        alert_rule_test=[
            firing(
                "BackupEmpty",
                8,
                {"severity": "critical", **BACKUP_NODE},
                "The last PostgreSQL backup holds no document, where earlier ones this week had some",
            ),
        ],
    ),
]


def write_promtool_tests(directory: Path, rules: dict[str, Any]) -> Path:
    """Write the rules and CASES as promtool's unit-test file; returns the test file's path."""
    (directory / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    tests = [{key: value for key, value in c.items() if key != "name"} for c in CASES]
    document = {"rule_files": ["alerts.yml"], "evaluation_interval": "15s", "tests": tests}
    path = directory / "alerts_test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_alert_rules_of_the_scale_out_only_with_it() -> None:
    """Redis, PostgreSQL and backup alerts exist only where those services are deployed."""
    names = {
        group["name"]
        for group in alert_rules(
            settings_for_environment("local", env={"SPACED_ITEM_SOCKET_SCALE_OUT": "0"})
        )["groups"]
    }
    assert not names & set(SCALE_OUT_GROUPS)


def test_alert_rules_pass_their_promtool_unit_tests(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run scripts/install-deps.sh (Debian prometheus)")
    rules = alert_rules(settings_for_environment("local", env={}, include_cadvisor=True))
    result = subprocess.run(
        [promtool, "test", "rules", str(write_promtool_tests(tmp_path, rules))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = "\n".join(f"  {i}: {c['name']}" for i, c in enumerate(CASES))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\ncases by position:\n{names}"
    assert "SUCCESS" in result.stdout


SCALE_OUT_GROUPS = ("scale_out", "backups")


def test_every_rule_that_judges_a_rate_trend_or_absence_has_cases() -> None:
    """A rule added later with a rate, a trend or an absence in it needs its quiet and its firing case;
    so does every rule of the scale-out and the backups."""
    rules = alert_rules(settings_for_environment("local", env={}, include_cadvisor=True))
    judged = {
        rule["alert"]
        for group in rules["groups"]
        for rule in group["rules"]
        if any(word in rule["expr"] for word in ("rate(", "predict_linear(", "absent(", "_over_time("))
        or group["name"] in SCALE_OUT_GROUPS
    }
    assert {"RedisDown", "BackupMissing", "ItemSocketCompactionOverlap"} <= judged
    covered_quiet = set()
    covered_firing = set()
    for c in CASES:
        for check in c.get("promql_expr_test", []):
            covered_quiet.add(check["expr"].split('"')[1])
        for check in c.get("alert_rule_test", []):
            if check["exp_alerts"]:
                covered_firing.add(check["alertname"])
    assert judged <= covered_quiet, f"no never-pending case for {sorted(judged - covered_quiet)}"
    assert judged <= covered_firing, f"no firing case for {sorted(judged - covered_firing)}"
