"""Typed model of the application stack: settings per environment and the pieces of a swarm service.

Every class here is plain data with a `to_compose()` method; nothing talks to Docker. The service
modules in `infra.app_stack.services` build these objects and `infra.app_stack.render` turns them
into one compose file for `docker stack deploy`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from infra.app_stack.alerting import Alerting
from infra.errors import SpacedError

STACK_NAME = "spaced"
LOCAL_ENVIRONMENT = "local"

# The services whose images `infra.images.build_local_images` builds (cAdvisor is always pulled).
BUILT_SERVICES = (
    "item_socket",
    "traefik",
    "nginx",
    "prometheus",
    "node_exporter",
    "socket_proxy",
    "alertmanager",
    "redis",
    "postgres",
)
"""`postgres` is also the image of the `backup` service (pg_dump, pg_restore and a scratch server)."""
CADVISOR_IMAGE = "gcr.io/cadvisor/cadvisor:v0.49.1"


SCALE_OUT_SERVICES = ("redis", "postgres")
"""Built services deployed only with `item_socket_scale_out` (the backup service runs `postgres`)."""
MAX_ITEM_SOCKET_REPLICAS = 16
MIN_BACKUP_INTERVAL_SECONDS = 60
MAX_BACKUP_INTERVAL_SECONDS = 7 * 86400


class StackSettingsError(ValueError, SpacedError):
    """A stack setting is missing or invalid; the message names the setting and how to fix it."""

    kind = "BadSettings"


def escape_interpolation(value: str) -> str:
    """Escape `$` for compose files: `docker stack deploy` interpolates `$VAR` in every string."""
    return value.replace("$", "$$")


def content_hash(content: str | bytes) -> str:
    """First 12 hex digits of the SHA-256 of `content` (used in config and secret names)."""
    data = content.encode() if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()[:12]


@dataclass(frozen=True)
class StackSettings:
    """What differs between environments. Build it with `settings_for_environment`."""

    environment: str
    images: Mapping[str, str]
    stack_name: str = STACK_NAME
    domain: str | None = None
    acme_email: str | None = None
    http_port: int = 8080
    """Local only: the host port Traefik's plain-HTTP entrypoint is published on."""
    prometheus_port: int | None = None
    """Host port for Prometheus (local only; never published in the cloud)."""
    include_cadvisor: bool = True
    item_socket_scale_out: bool = True
    """True: item_socket runs `item_socket_replicas` replicas sharing Redis (streams) and PostgreSQL
    (the store), updated start-first. False: the embedded single replica with SQLite on a volume of
    the edge node, updated stop-first, and neither Redis nor PostgreSQL nor backups are deployed."""
    item_socket_replicas: int = 1
    """Replicas of item_socket; more than 1 needs `item_socket_scale_out`."""
    item_socket_drain_seconds: int = 20
    """How long item_socket drains connections on SIGTERM; the stop grace period adds a margin."""
    backup_interval_seconds: int = 6 * 3600
    """Seconds between two scheduled PostgreSQL backups (scale-out only)."""
    backup_keep: int = 28
    """How many scheduled backups stay on the backups volume (the oldest beyond that are deleted)."""
    backup_min_bytes: int = 1024
    """A backup smaller than this is reported as too small (an alert), whatever it restores to."""
    alerting: Alerting = field(default_factory=Alerting)
    """Where Alertmanager sends alerts (`spaced:alerting` of the stack file); none = nowhere."""
    alert_test_timing: bool = False
    """Test only (SPACED_ALERT_TEST_TIMING=1): alert rules fire after 10 s and Alertmanager flushes
    within seconds, so an end-to-end test sees an alert and its resolution in about a minute."""

    def to_json(self) -> str:
        """The settings as one JSON object (what the Pulumi component hands the deploy command)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields |= {"images": dict(self.images), "alerting": self.alerting.model_dump(by_alias=True)}
        return json.dumps(fields, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StackSettings:
        """Settings from `to_json`'s output, validated; raises StackSettingsError on anything else."""
        try:
            fields = json.loads(text)
            fields["alerting"] = Alerting.model_validate(fields.get("alerting") or {})
            settings = cls(**fields)
        except (ValueError, TypeError, AttributeError) as error:
            raise StackSettingsError(f"stack settings JSON: {error}") from None
        settings.validate()
        return settings

    @property
    def is_local(self) -> bool:
        """True for the local environment (plain HTTP, no ACME, Prometheus published)."""
        return self.environment == LOCAL_ENVIRONMENT

    def validate(self) -> None:
        """Raise StackSettingsError naming the first bad setting."""
        if not self.environment or not self.environment.replace("-", "").isalnum():
            raise StackSettingsError(f"environment: {self.environment!r} must be letters, digits or '-'")
        if not self.is_local:
            if not self.domain:
                raise StackSettingsError(
                    f"domain: environment {self.environment!r} needs a domain "
                    "(spaced:topology.domain in stacks/Pulumi.<env>.yaml)"
                )
            if not self.acme_email or "@" not in self.acme_email:
                raise StackSettingsError(
                    f"acme_email: environment {self.environment!r} needs an e-mail address for Let's Encrypt "
                    f"(got {self.acme_email!r})"
                )
        self._validate_item_socket()
        self._validate_backups()
        for port_name in ("http_port", "prometheus_port"):
            port = getattr(self, port_name)
            if port is not None and not 1 <= port <= 65535:
                raise StackSettingsError(f"{port_name}: {port} is not a TCP port (1-65535)")
        needed = [s for s in self.built_services if s not in self.images]
        if needed:
            raise StackSettingsError(f"images: no image reference for {', '.join(needed)}")

    @property
    def built_services(self) -> tuple[str, ...]:
        """The built images these settings deploy (Redis and PostgreSQL only with the scale-out)."""
        if self.item_socket_scale_out:
            return BUILT_SERVICES
        return tuple(s for s in BUILT_SERVICES if s not in SCALE_OUT_SERVICES)

    def _validate_item_socket(self) -> None:
        replicas = self.item_socket_replicas
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise StackSettingsError(
                f"item_socket_replicas: {replicas!r} is not a whole number of at least 1"
            )
        if replicas > MAX_ITEM_SOCKET_REPLICAS:
            raise StackSettingsError(
                f"item_socket_replicas: {replicas} is more than {MAX_ITEM_SOCKET_REPLICAS} "
                "(PostgreSQL's max_connections is sized for the replicas; raise the limit in model.py)"
            )
        if replicas != 1 and not self.item_socket_scale_out:
            # SQLite on a node-local volume: a second replica would serve the same documents from
            # separate memories and write the same file.
            raise StackSettingsError(
                f"item_socket_replicas: {replicas} replicas need item_socket_scale_out "
                "(Redis + PostgreSQL); without it item_socket keeps its documents in SQLite and must "
                "run exactly 1 replica (SPACED_ITEM_SOCKET_SCALE_OUT=1, or SPACED_ITEM_SOCKET_REPLICAS=1)"
            )

    def _validate_backups(self) -> None:
        bounds = {
            "backup_interval_seconds": (MIN_BACKUP_INTERVAL_SECONDS, MAX_BACKUP_INTERVAL_SECONDS),
            "backup_keep": (1, 1000),
            "backup_min_bytes": (0, 1 << 40),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise StackSettingsError(f"{name}: {value!r} must be a whole number from {low} to {high}")


@dataclass(frozen=True)
class ConfigFile:
    """A file rendered from Python that becomes a Docker config (immutable, content-hashed name)."""

    key: str
    """Key in the compose file's top-level `configs` (and base of the Docker name)."""
    path: str
    """Path relative to the build directory the file is written to."""
    content: str

    def docker_name(self, stack_name: str) -> str:
        """`<stack>_<key>_<sha256[:12]>`: a changed file gets a new name and so rolls its service."""
        return f"{stack_name}_{self.key}_{content_hash(self.content)}"


@dataclass(frozen=True)
class SecretSpec:
    """A Docker secret the stack needs; its content is made or read at deploy time, never rendered."""

    key: str
    description: str
    provided: bool = False
    """True: an operator's credential, read from `SPACED_SECRET_<KEY>` on the deploying machine (see
    `secret_env_name`); False: generated once by the deploy and kept under build/<env>/secrets/."""

    @property
    def env_name(self) -> str:
        """The environment variable a provided secret's content comes from."""
        return f"SPACED_SECRET_{self.key.upper()}"


@dataclass(frozen=True)
class FileMount:
    """A config or secret mounted into a container."""

    key: str
    target: str
    mode: int = 0o444


@dataclass(frozen=True)
class VolumeMount:
    """A named volume (`source` is a volume key) or a host bind mount (`bind=True`)."""

    source: str
    target: str
    read_only: bool = False
    bind: bool = False

    def to_compose(self) -> dict[str, Any]:
        """Long-syntax volume entry."""
        entry: dict[str, Any] = {
            "type": "bind" if self.bind else "volume",
            "source": self.source,
            "target": self.target,
        }
        if self.read_only:
            entry["read_only"] = True
        return entry


@dataclass(frozen=True)
class Port:
    """A published port. Always host mode: this kernel has no IPVS for the ingress routing mesh."""

    target: int
    published: int
    protocol: Literal["tcp", "udp"] = "tcp"

    def to_compose(self) -> dict[str, Any]:
        """Long-syntax port entry."""
        return {"target": self.target, "published": self.published, "protocol": self.protocol, "mode": "host"}


@dataclass(frozen=True)
class Healthcheck:
    """Container healthcheck; swarm keeps a task `starting` until it passes."""

    test: Sequence[str]
    interval: str = "10s"
    timeout: str = "3s"
    retries: int = 3
    start_period: str = "10s"

    def to_compose(self) -> dict[str, Any]:
        """Compose `healthcheck` block."""
        return {
            "test": list(self.test),
            "interval": self.interval,
            "timeout": self.timeout,
            "retries": self.retries,
            "start_period": self.start_period,
        }


@dataclass(frozen=True)
class LogRotation:
    """The json-file log driver with a size cap: without one a container's log grows forever
    (~390 bytes per request through Traefik or nginx). The same cap is the engine default that
    cloud-init writes into the nodes' daemon.json."""

    max_size: str = "10m"
    max_file: int = 3

    def to_compose(self) -> dict[str, Any]:
        """Compose `logging` block."""
        return {"driver": "json-file", "options": {"max-size": self.max_size, "max-file": str(self.max_file)}}


@dataclass(frozen=True)
class Resources:
    """CPU/memory limits and reservations (memory as compose strings like '256M')."""

    cpus_limit: float
    memory_limit: str
    cpus_reservation: float
    memory_reservation: str

    def to_compose(self) -> dict[str, Any]:
        """Compose `deploy.resources` block."""
        return {
            "limits": {"cpus": f"{self.cpus_limit:g}", "memory": self.memory_limit},
            "reservations": {"cpus": f"{self.cpus_reservation:g}", "memory": self.memory_reservation},
        }


@dataclass(frozen=True)
class UpdatePolicy:
    """`update_config` / `rollback_config`: one task at a time, watched for `monitor` after start."""

    order: Literal["stop-first", "start-first"] = "start-first"
    parallelism: int = 1
    delay: str = "5s"
    monitor: str = "30s"
    max_failure_ratio: float = 0.0

    def to_compose(self, failure_action: str) -> dict[str, Any]:
        """Compose block; `failure_action` is `rollback` for updates and `pause` for rollbacks."""
        return {
            "parallelism": self.parallelism,
            "delay": self.delay,
            "order": self.order,
            "monitor": self.monitor,
            "max_failure_ratio": self.max_failure_ratio,
            "failure_action": failure_action,
        }


@dataclass(frozen=True)
class Service:
    """One swarm service of the stack."""

    name: str
    image: str
    healthcheck: Healthcheck
    resources: Resources
    placement: Sequence[str]
    networks: Sequence[str]
    update: UpdatePolicy = field(default_factory=UpdatePolicy)
    mode: Literal["replicated", "global"] = "replicated"
    replicas: int = 1
    max_replicas_per_node: int | None = None
    command: Sequence[str] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    ports: Sequence[Port] = ()
    configs: Sequence[FileMount] = ()
    secrets: Sequence[FileMount] = ()
    volumes: Sequence[VolumeMount] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    """Deploy labels (what Traefik's swarm provider reads)."""
    stop_grace_period: str = "10s"
    stop_signal: str | None = None
    user: str | None = None
    # VIP needs IPVS, which this kernel lacks; with dnsrr Traefik and Prometheus reach tasks directly.
    endpoint_mode: Literal["dnsrr", "vip"] = "dnsrr"
    restart_max_attempts: int = 0
    """0 = unlimited: a crashed task is always restarted."""
    logging: LogRotation = field(default_factory=LogRotation)

    def to_compose(self) -> dict[str, Any]:
        """The service's entry in the compose file's `services`."""
        deploy: dict[str, Any] = {"mode": self.mode, "endpoint_mode": self.endpoint_mode}
        if self.mode == "replicated":
            deploy["replicas"] = self.replicas
        placement: dict[str, Any] = {"constraints": list(self.placement)}
        if self.max_replicas_per_node is not None:
            placement["max_replicas_per_node"] = self.max_replicas_per_node
        deploy |= {
            "placement": placement,
            "resources": self.resources.to_compose(),
            "restart_policy": {
                "condition": "any",
                "delay": "5s",
                "max_attempts": self.restart_max_attempts,
                "window": "60s",
            },
            "update_config": self.update.to_compose("rollback"),
            "rollback_config": self.update.to_compose("pause"),
        }
        esc = escape_interpolation
        if self.labels:
            deploy["labels"] = {k: esc(v) for k, v in sorted(self.labels.items())}
        body: dict[str, Any] = {"image": self.image}
        if self.command is not None:
            body["command"] = [esc(arg) for arg in self.command]
        if self.user is not None:
            body["user"] = self.user
        if self.environment:
            body["environment"] = {k: esc(v) for k, v in sorted(self.environment.items())}
        body["healthcheck"] = self.healthcheck.to_compose()
        body["healthcheck"]["test"] = [esc(arg) for arg in body["healthcheck"]["test"]]
        if self.ports:
            body["ports"] = [p.to_compose() for p in self.ports]
        body["networks"] = list(self.networks)
        if self.configs:
            body["configs"] = [{"source": c.key, "target": c.target, "mode": c.mode} for c in self.configs]
        if self.secrets:
            body["secrets"] = [{"source": s.key, "target": s.target, "mode": s.mode} for s in self.secrets]
        if self.volumes:
            body["volumes"] = [v.to_compose() for v in self.volumes]
        body["logging"] = self.logging.to_compose()
        body["stop_grace_period"] = self.stop_grace_period
        if self.stop_signal:
            body["stop_signal"] = self.stop_signal
        body["deploy"] = deploy
        return body


@dataclass(frozen=True)
class ServiceBundle:
    """What one service module contributes: the service plus the configs/secrets/volumes it uses."""

    service: Service
    configs: Sequence[ConfigFile] = ()
    secrets: Sequence[SecretSpec] = ()
    volumes: Sequence[str] = ()
