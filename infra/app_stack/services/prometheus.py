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
ALERTMANAGER_PORT = 9093
STARTUP_GRACE_SECONDS = 120
"""How long after Prometheus starts an absence may count: discovery and first scrapes are due."""
TEST_FOR = "10s"
"""Every rule's `for:` under `alert_test_timing` (end-to-end tests of the delivery only)."""
SCRAPE_INTERVAL_SECONDS = 15
"""Every job's scrape interval; the alert rules count on it to tell a full window of samples."""


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
            "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            "evaluation_interval": "15s",
            "external_labels": {"environment": settings.environment},
        },
        "rule_files": [RULES_RELATIVE_PATH],
        # Alertmanager's task, found like the scrape targets (a rescheduled task is picked up).
        "alerting": {
            "alertmanagers": [{"dns_sd_configs": [_tasks(settings, "alertmanager", ALERTMANAGER_PORT)]}]
        },
        "scrape_configs": jobs,
    }


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, **labels: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity, **labels},
        "annotations": {"summary": summary},
    }


# Filesystems that hold data: not memory-backed, not image layers, not read-only mounts.
_FS = '{fstype!~"tmpfs|overlay|squashfs"}'
_FREE_FRACTION = f"node_filesystem_avail_bytes{_FS} / node_filesystem_size_bytes{_FS}"
_WRITABLE = f"node_filesystem_readonly{_FS} == 0"
_CONTAINER_CPU = 'container_cpu_usage_seconds_total{container_label_com_docker_swarm_service_name!=""}'


def _with_history(selector: str, window: str) -> str:
    """`and` clause: the series already had a sample one `window` ago (a trend needs that much data;
    gaps in between do not matter to it)."""
    return f"and {selector} offset {window}"


def _full_window(selector: str, minutes: int, by: str) -> str:
    """`and` clause: the last `minutes` hold all their scrapes but one, for every series of `by`
    (`on (<labels>)` or `without (<labels>)`), so a rate over them is an average over that whole
    window of this node or container. Not so in the first minutes of a fresh node or stack (image
    builds, containers starting, WAL replay), nor across the gap of a redeploy, where a window
    spanning two start-ups would pass for sustained load (Prometheus keeps its data volume)."""
    samples = minutes * 60 // SCRAPE_INTERVAL_SECONDS
    grouping, labels = by.split(" ", 1)
    matching = f" on {labels}" if grouping == "on" else ""
    aggregate = "by" if grouping == "on" else "without"
    return (
        f"and{matching} min {aggregate} {labels} (count_over_time({selector}[{minutes}m])) >= {samples - 1}"
    )


def answered_lately(job: str) -> str:
    """PromQL: `up` of the job's targets whose last scrape succeeded within the last minute.

    Not `up == 1` alone: a target that vanished from discovery keeps its last sample until it is
    marked stale, which does not always happen (seen here after a Prometheus restart: a removed
    item_socket task still read `up 1` minutes later), and an absence must not hide behind it.
    """
    # timestamp() reads the sample time of a plain selector only: compare the age, then keep up == 1.
    return f'(time() - timestamp(up{{job="{job}"}}) < 60) and up{{job="{job}"}} == 1'


def alert_rules(settings: StackSettings) -> dict[str, Any]:
    """Alert rules: they fire before a host or container hits its limits, and when item_socket fails.

    None of them may go pending on a healthy stack that just came up on a busy machine: a CPU rate
    is judged only over a full 10-minute window of scrapes (`_full_window`), long enough to average
    out an image build; a disk trend only with an hour of data and when the disk is also nearly
    full; a task as down only after several failed scrapes; item_socket's absence only once
    Prometheus has had time to discover and scrape it.
    """
    grace = 0 if settings.alert_test_timing else STARTUP_GRACE_SECONDS
    # The start time of this very process: its sample must be fresh (its own scrape). Right after a
    # restart the previous process' last sample (still within the 5-minute lookback, the data
    # volume survives) would say "started long ago".
    own_start = 'process_start_time_seconds{job="prometheus"}'
    started_long_enough = f"(time() - {own_start} > {grace} and (time() - timestamp({own_start}) < 60))"
    host = [
        _alert(
            "HostCpuHigh",
            '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[10m])) > 0.9 '
            + _full_window('node_cpu_seconds_total{mode="idle"}', 10, by="on (instance)"),
            "15m",
            "warning",
            "CPU of {{ $labels.instance }} over 90% busy (10-minute average) for 15 minutes",
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
            f"{_FREE_FRACTION} < 0.15 and {_WRITABLE}",
            "10m",
            "warning",
            "Less than 15% disk left on {{ $labels.instance }} {{ $labels.mountpoint }}",
        ),
        _alert(
            "HostDiskFullIn24h",
            # A fast write on a roomy disk (an image build) is no emergency: only a nearly full disk
            # whose trend over hours (at least one hour of data) reaches zero within a day is.
            f"{_FREE_FRACTION} < 0.10"
            f" and predict_linear(node_filesystem_avail_bytes{_FS}[6h], 86400) < 0"
            f" and {_WRITABLE} " + _with_history(f"node_filesystem_avail_bytes{_FS}", "1h"),
            "30m",
            "critical",
            "Disk {{ $labels.mountpoint }} on {{ $labels.instance }} under 10% free and full within a day",
        ),
    ]
    item_socket = [
        _alert(
            "ItemSocketDown",
            # Every scrape of the last minute failed, and there were at least 3: a task still
            # starting (its first scrape may come before it listens) is not down.
            'max_over_time(up{job="item_socket"}[1m]) == 0'
            ' and count_over_time(up{job="item_socket"}[1m]) >= 3',
            "1m",
            "critical",
            "item_socket task {{ $labels.instance }} has not answered /metrics for 2 minutes",
        ),
        _alert(
            "ItemSocketMissing",
            # None discovered, or none answering (a crash loop starts new tasks under new addresses,
            # which ItemSocketDown never sees for long). Only once this Prometheus has run for 2
            # minutes: right after it starts, discovery (DNS every 15 s) and the first scrape are due.
            f"absent({answered_lately('item_socket')}) and on () {started_long_enough}",
            "2m",
            "critical",
            "No item_socket task answers /metrics (none discovered, or all down)",
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
            # Every scrape of the last minute, at least 3: a replica that starts before PostgreSQL
            # answers says so for a moment.
            "max_over_time(item_socket_store_healthy[1m]) == 0"
            " and count_over_time(item_socket_store_healthy[1m]) >= 3",
            "1m",
            "critical",
            "item_socket cannot write its document store on {{ $labels.instance }}",
        ),
    ]
    # Every other scrape job: a target that stops answering, and a job with no target answering.
    # item_socket has its own, sharper rules above; Prometheus' own job cannot report its absence.
    jobs = ["node", "traefik", *(["cadvisor"] if settings.include_cadvisor else [])]
    scrape = [
        _alert(
            "TargetDown",
            'max_over_time(up{job!="item_socket"}[1m]) == 0'
            ' and count_over_time(up{job!="item_socket"}[1m]) >= 3',
            "2m",
            "warning",
            "{{ $labels.job }} target {{ $labels.instance }} has not answered its scrape for 3 minutes",
        ),
        *(
            _alert(
                "ScrapeJobMissing",
                f"absent({answered_lately(job)}) and on () {started_long_enough}",
                "3m",
                "critical",
                f"No {job} target answers its scrape (none discovered, or all down)",
                job=job,
            )
            for job in jobs
        ),
    ]
    groups = [
        {"name": "host", "rules": host},
        {"name": "item_socket", "rules": item_socket},
        {"name": "scrape", "rules": scrape},
    ]
    if settings.item_socket_scale_out:
        groups += [
            {"name": "scale_out", "rules": scale_out_rules()},
            {"name": "backups", "rules": backup_rules(started_long_enough_for_backups())},
        ]
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
                # cAdvisor labels the usage by `cpu` ("total", or one series per CPU), the limit not:
                # sum it away, or the division matches nothing. Starting containers (Prometheus
                # replaying its WAL, imports) run at their limit: judged over a full window only.
                f"sum without (cpu) (rate({_CONTAINER_CPU}[10m]))"
                " / (container_spec_cpu_quota / container_spec_cpu_period > 0) > 0.9 "
                + _full_window(_CONTAINER_CPU, 10, by="without (cpu)"),
                "10m",
                "warning",
                "{{ $labels.container_label_com_docker_swarm_service_name }} uses over 90% of its CPU limit",
            ),
        ]
        groups.append({"name": "containers", "rules": containers})
    if settings.alert_test_timing:
        for group in groups:
            for rule in group["rules"]:
                rule["for"] = TEST_FOR
    return {"groups": groups}


def _p99(metric: str, by: str) -> str:
    """PromQL: the 99th percentile of a histogram over 5 minutes, per `by` labels."""
    return f"histogram_quantile(0.99, sum by ({by}, le) (rate({metric}_bucket[5m])))"


_FAILED = 'sum by (instance) (increase(item_socket_compactions_total{outcome="failed"}[15m]))'
_COMPACTED = 'sum by (instance) (increase(item_socket_compactions_total{outcome="compacted"}[15m]))'
STREAM_LAG_P99_SECONDS = 1.0
"""An update another replica appended reaches clients here later than this (p99): they see stalls."""
REDIS_P99_SECONDS = 0.1
STORE_P99_SECONDS = 1.0
OUTBOX_MINUTES = 5
REDIS_MEMORY_WARNING = 0.8
REDIS_MEMORY_CRITICAL = 0.95
# Redis' used share of its maxmemory (no series while maxmemory is 0: no limit, nothing to warn of).
_REDIS_MEMORY_SHARE = "max(item_socket_redis_memory_used_bytes / (item_socket_redis_maxmemory_bytes > 0))"
BACKUP_STARTUP_GRACE_SECONDS = 1800
"""A fresh stack makes its first backup once item_socket has made its tables (within minutes);
until Prometheus has run this long, no backup is missing yet."""


def scale_out_rules() -> list[dict[str, Any]]:
    """Alerts on item_socket's Redis streams and PostgreSQL store (each replica reports its own).

    A replica starting before Redis or PostgreSQL answers reports them unhealthy for a moment: a
    down alert needs every scrape of a full minute to say so (as ItemSocketDown does).
    """
    return [
        _alert(
            "ItemSocketStreamLagHigh",
            f"{_p99('item_socket_stream_lag_seconds', 'instance')} > {STREAM_LAG_P99_SECONDS:g}",
            "5m",
            "warning",
            "Updates from other item_socket replicas reach {{ $labels.instance }} over "
            f"{STREAM_LAG_P99_SECONDS:g} s late (p99, 5 minutes)",
        ),
        _alert(
            "RedisDown",
            "max_over_time(item_socket_redis_healthy[1m]) == 0"
            " and count_over_time(item_socket_redis_healthy[1m]) >= 3",
            "1m",
            "critical",
            "item_socket {{ $labels.instance }} cannot reach Redis: its edits are held, not shared",
        ),
        _alert(
            "RedisSlow",
            f"{_p99('item_socket_redis_seconds', 'instance')} > {REDIS_P99_SECONDS:g}",
            "10m",
            "warning",
            f"Redis round trips of item_socket {{{{ $labels.instance }}}} over {REDIS_P99_SECONDS:g} s (p99)",
        ),
        _alert(
            "PostgresSlow",
            # PostgreSQL calls alone (load_snapshot, save_snapshot, the 2 s readiness ping): item_socket
            # times them at the store's boundary, so Redis round trips never show here (RedisSlow).
            f"{_p99('item_socket_store_operation_seconds', 'instance, operation')} > {STORE_P99_SECONDS:g}",
            "10m",
            "warning",
            "PostgreSQL {{ $labels.operation }} of item_socket {{ $labels.instance }} over "
            f"{STORE_P99_SECONDS:g} s (p99)",
        ),
        _alert(
            "ItemSocketCompactionOverlap",
            # Exactly one writer compacts a document at a time: any overlap (a lock lost mid-way,
            # a snapshot fenced) is a bug to look at now. Resolves 15 minutes after the last one.
            "increase(item_socket_compaction_overlaps_total[15m]) > 0",
            "0s",
            "critical",
            "item_socket {{ $labels.instance }} ran a compaction while another held the document",
        ),
        _alert(
            "ItemSocketCompactionsFailing",
            # Busy compactions (another replica holds the lock) are normal; failures are not,
            # once they outnumber the successful ones.
            # (A replica that never compacted has no `compacted` series: it counts as 0.)
            f"{_FAILED} >= 3 and {_FAILED} > ({_COMPACTED} or {_FAILED} * 0)",
            "15m",
            "warning",
            "Most compactions of item_socket {{ $labels.instance }} fail: streams grow, syncs slow down",
        ),
        _alert(
            "RedisMemoryHigh",
            # Every replica reports the same Redis: one alert, not one per replica. At maxmemory
            # (noeviction) Redis refuses appends, and edits are held, then refused.
            f"{_REDIS_MEMORY_SHARE} > {REDIS_MEMORY_WARNING:g}",
            "15m",
            "warning",
            "Redis uses {{ $value | humanizePercentage }} of its maxmemory: compactions are not keeping up",
        ),
        _alert(
            "RedisMemoryFull",
            f"{_REDIS_MEMORY_SHARE} > {REDIS_MEMORY_CRITICAL:g}",
            "2m",
            "critical",
            "Redis is at {{ $value | humanizePercentage }} of its maxmemory: "
            "item_socket edits are about to be refused",
        ),
        _alert(
            "ItemSocketOutboxGrowing",
            # Updates applied here but not yet appended to Redis: non-empty for minutes, and growing.
            f"min_over_time(item_socket_outbox_updates[{OUTBOX_MINUTES}m]) > 0"
            f" and deriv(item_socket_outbox_updates[{OUTBOX_MINUTES}m]) > 0",
            "5m",
            "critical",
            "item_socket {{ $labels.instance }} holds updates it cannot append to Redis, more and more",
        ),
    ]


def started_long_enough_for_backups() -> str:
    """PromQL `and on ()` clause: this Prometheus has run BACKUP_STARTUP_GRACE_SECONDS (fresh sample)."""
    own_start = 'process_start_time_seconds{job="prometheus"}'
    return (
        f"and on () (time() - {own_start} > {BACKUP_STARTUP_GRACE_SECONDS}"
        f" and (time() - timestamp({own_start}) < 60))"
    )


def backup_rules(startup_guard: str) -> list[dict[str, Any]]:
    """Alerts on the scheduled PostgreSQL backups (the backup service's textfile metrics, exported by
    node-exporter on the PostgreSQL node)."""
    return [
        _alert(
            "BackupMissing",
            f"absent(spaced_backup_last_attempt_timestamp_seconds) {startup_guard}",
            "30m",
            "critical",
            "No PostgreSQL backup has been attempted (no spaced_backup metrics from node-exporter)",
        ),
        _alert(
            "BackupTooOld",
            # Never succeeded (0) or not within two intervals: a schedule missed, or every try failed.
            "time() - spaced_backup_last_success_timestamp_seconds > 2 * spaced_backup_interval_seconds",
            "15m",
            "critical",
            "The last verified PostgreSQL backup is older than two backup intervals",
        ),
        _alert(
            "BackupTooSmall",
            "spaced_backup_last_size_bytes < spaced_backup_min_size_bytes",
            "1m",
            "critical",
            "The last PostgreSQL backup has {{ $value }} bytes, under the floor (BACKUP_MIN_BYTES)",
        ),
        _alert(
            "BackupVerifyFailed",
            # A dump under the floor is not verified either: BackupTooSmall says more.
            "spaced_backup_last_verify_ok == 0"
            " unless spaced_backup_last_size_bytes < spaced_backup_min_size_bytes",
            "1m",
            "critical",
            "The last PostgreSQL backup did not restore into a scratch database with a documents table",
        ),
        _alert(
            "BackupEmpty",
            # A fresh stack has no documents yet; a backup with none where the last week had some does.
            "spaced_backup_last_documents == 0 and spaced_backup_last_verify_ok == 1"
            " and max_over_time(spaced_backup_last_documents[7d]) > 0",
            "1m",
            "critical",
            "The last PostgreSQL backup holds no document, where earlier ones this week had some",
        ),
    ]


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
