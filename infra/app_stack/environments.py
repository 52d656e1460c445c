"""StackSettings for an environment: `local` is built in; cloud environments read stacks/Pulumi.<env>.yaml.

Switches (environment variables, each also a CLI flag of `spaced`):
- `SPACED_NO_CADVISOR=1`: leave cAdvisor out (its image has no offline build and cannot always be pulled).
- `SPACED_HTTP_PORT` (default 8080): local host port of Traefik's HTTP entrypoint.
- `SPACED_PROMETHEUS_PORT` (default 9090; `0` = not published): local host port of Prometheus.
- `SPACED_REGISTRY`, `SPACED_IMAGE_TAG`: where the cloud pulls the images built by `infra.images`.
- `SPACED_IMAGE_<SERVICE>` (e.g. `SPACED_IMAGE_ITEM_SOCKET`): one image reference, any environment.
- `SPACED_SECRET_<KEY>`: the content of a provided Docker secret (alert receivers' credentials).
- `SPACED_ALERT_TEST_TIMING=1`: test only; alert rules fire after 10 s, Alertmanager flushes at once.
- `SPACED_ITEM_SOCKET_SCALE_OUT` (default 1): item_socket on Redis + PostgreSQL with several replicas;
  `0` = the embedded single replica with SQLite (no Redis, PostgreSQL or backups deployed).
- `SPACED_ITEM_SOCKET_REPLICAS` (default: local 2, cloud 3; 1 without the scale-out).
- `SPACED_BACKUP_INTERVAL` (seconds, default 21600 = 6 h), `SPACED_BACKUP_KEEP` (default 28),
  `SPACED_BACKUP_MIN_BYTES` (default 1024): the scheduled PostgreSQL backups.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from infra.app_stack.alerting import Alerting, parse_alerting
from infra.app_stack.model import (
    BUILT_SERVICES,
    CADVISOR_IMAGE,
    LOCAL_ENVIRONMENT,
    StackSettings,
    StackSettingsError,
)
from infra.topology import Topology, TopologyError, load_topology

REPO_ROOT = Path(__file__).resolve().parents[2]
STACKS_DIR = REPO_ROOT / "stacks"
DEFAULT_REGISTRY = "ghcr.io/spaced-fun"
DEFAULT_IMAGE_TAG = "0.1.0"
TRUTHY = {"1", "true", "yes", "on"}
FALSY = {"0", "false", "no", "off"}
DEFAULT_REPLICAS = {LOCAL_ENVIRONMENT: 2}
"""item_socket replicas with the scale-out, per environment; CLOUD_REPLICAS for every other one."""
CLOUD_REPLICAS = 3


def local_image_ref(service: str) -> str:
    """The reference a locally built image of `service` is tagged with (no registry)."""
    return f"spaced/{service.replace('_', '-')}:local"


def default_images(environment: str, env: Mapping[str, str]) -> dict[str, str]:
    """Image references: local tags, or `<registry>/spaced-<service>:<tag>` in the cloud."""
    if environment == LOCAL_ENVIRONMENT:
        images = {service: local_image_ref(service) for service in BUILT_SERVICES}
    else:
        registry = env.get("SPACED_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
        tag = env.get("SPACED_IMAGE_TAG", DEFAULT_IMAGE_TAG)
        images = {s: f"{registry}/spaced-{s.replace('_', '-')}:{tag}" for s in BUILT_SERVICES}
    images["cadvisor"] = CADVISOR_IMAGE
    for service in [*BUILT_SERVICES, "cadvisor"]:
        override = env.get(f"SPACED_IMAGE_{service.upper()}")
        if override:
            images[service] = override
    return images


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise StackSettingsError(f"{name}: {raw!r} is not a port number") from None


def _whole_number(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise StackSettingsError(f"{name}: {raw!r} is not a whole number") from None


def scale_out_settings(environment: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The StackSettings fields of item_socket's scale-out and of the backups, from SPACED_* variables.

    Raises StackSettingsError naming the variable of a value that is not a number or a switch.
    """
    raw = env.get("SPACED_ITEM_SOCKET_SCALE_OUT", "1").strip().lower()
    if raw not in TRUTHY | FALSY:
        raise StackSettingsError(f"SPACED_ITEM_SOCKET_SCALE_OUT: {raw!r} is not 1/0 (true/false)")
    scale_out = raw in TRUTHY
    replicas = _whole_number(env, "SPACED_ITEM_SOCKET_REPLICAS")
    if replicas is None:
        replicas = DEFAULT_REPLICAS.get(environment, CLOUD_REPLICAS) if scale_out else 1
    fields: dict[str, Any] = {"item_socket_scale_out": scale_out, "item_socket_replicas": replicas}
    for name, variable in (
        ("backup_interval_seconds", "SPACED_BACKUP_INTERVAL"),
        ("backup_keep", "SPACED_BACKUP_KEEP"),
        ("backup_min_bytes", "SPACED_BACKUP_MIN_BYTES"),
    ):
        value = _whole_number(env, variable)
        if value is not None:
            fields[name] = value
    return fields


def read_stack_config(environment: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """The `config` mapping of stacks/Pulumi.<env>.yaml; raises StackSettingsError naming the file."""
    path = stacks_dir / f"Pulumi.{environment}.yaml"
    if not path.is_file():
        known = sorted(
            p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir.glob("Pulumi.*.yaml")
        )
        raise StackSettingsError(
            f"environment {environment!r}: no {path}"
            f" (known environments: {', '.join([LOCAL_ENVIRONMENT, *known])})"
        )
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StackSettingsError(f"{path}: not valid YAML: {exc}") from None
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise StackSettingsError(f"{path}: config: not a mapping")
    return config


def read_topology(environment: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """The `spaced:topology` mapping of stacks/Pulumi.<env>.yaml (only its plain keys are used here)."""
    topology = read_stack_config(environment, stacks_dir).get("spaced:topology")
    if not isinstance(topology, dict):
        path = stacks_dir / f"Pulumi.{environment}.yaml"
        raise StackSettingsError(f"{path}: config/spaced:topology: missing or not a mapping")
    return topology


def read_alerting(environment: str, stacks_dir: Path = STACKS_DIR) -> Alerting:
    """`spaced:alerting` of stacks/Pulumi.<env>.yaml, validated (no file or no section: no receivers)."""
    if not (stacks_dir / f"Pulumi.{environment}.yaml").is_file():
        return Alerting()
    raw = read_stack_config(environment, stacks_dir).get("spaced:alerting")
    return parse_alerting(raw, f"stacks/Pulumi.{environment}.yaml: spaced:alerting")


def settings_for_environment(
    environment: str,
    *,
    domain: str | None = None,
    acme_email: str | None = None,
    images: Mapping[str, str] | None = None,
    include_cadvisor: bool | None = None,
    http_port: int | None = None,
    env: Mapping[str, str] | None = None,
    stacks_dir: Path = STACKS_DIR,
) -> StackSettings:
    """Validated settings for `environment`; explicit arguments win over SPACED_* variables and the yaml."""
    env = os.environ if env is None else env
    if include_cadvisor is None:
        include_cadvisor = env.get("SPACED_NO_CADVISOR", "").lower() not in TRUTHY
    merged_images = default_images(environment, env) | dict(images or {})
    if environment == LOCAL_ENVIRONMENT:
        prometheus_port = _port(env, "SPACED_PROMETHEUS_PORT", 9090)
        settings = StackSettings(
            environment=environment,
            images=merged_images,
            domain=domain,
            acme_email=acme_email,
            http_port=http_port if http_port is not None else _port(env, "SPACED_HTTP_PORT", 8080),
            prometheus_port=prometheus_port or None,
            include_cadvisor=include_cadvisor,
            alerting=read_alerting(environment, stacks_dir),
            alert_test_timing=env.get("SPACED_ALERT_TEST_TIMING", "").lower() in TRUTHY,
            **scale_out_settings(environment, env),
        )
    elif domain is not None and acme_email is not None:
        settings = StackSettings(
            environment=environment,
            images=merged_images,
            domain=domain,
            acme_email=acme_email,
            prometheus_port=None,
            include_cadvisor=include_cadvisor,
            alerting=read_alerting(environment, stacks_dir),
            **scale_out_settings(environment, env),
        )
    else:
        raw = read_topology(environment, stacks_dir)
        declared = raw.get("environment", environment)
        if declared != environment:
            raise StackSettingsError(
                f"stacks/Pulumi.{environment}.yaml: config/spaced:topology/environment is {declared!r}, "
                f"expected {environment!r}"
            )
        try:
            topology = load_topology(raw)
        except TopologyError as error:
            raise StackSettingsError(f"stacks/Pulumi.{environment}.yaml: {error}") from None
        return settings_for_topology(
            topology,
            images=images,
            include_cadvisor=include_cadvisor,
            env=env,
            domain=domain,
            acme_email=acme_email,
            alerting=read_alerting(environment, stacks_dir),
        )
    settings.validate()
    return settings


def settings_for_topology(
    topology: Topology,
    *,
    images: Mapping[str, str] | None = None,
    include_cadvisor: bool | None = None,
    env: Mapping[str, str] | None = None,
    domain: str | None = None,
    acme_email: str | None = None,
    alerting: Alerting | None = None,
) -> StackSettings:
    """Validated settings of a cloud environment from its already loaded topology (what the Pulumi
    program hands the AppStack component: the stack file is read and validated once).

    The public name is the edge node's first DNS name (`Topology.site_domain`); Let's Encrypt's
    mailbox defaults to RFC 2142's hostmaster@ of it. Raises StackSettingsError on a bad setting.
    """
    env = os.environ if env is None else env
    if include_cadvisor is None:
        include_cadvisor = env.get("SPACED_NO_CADVISOR", "").lower() not in TRUTHY
    domain = domain or topology.site_domain
    acme_email = acme_email or topology.acme_email or (f"hostmaster@{domain}" if domain else None)
    settings = StackSettings(
        environment=topology.environment,
        images=default_images(topology.environment, env) | dict(images or {}),
        domain=domain,
        acme_email=acme_email,
        prometheus_port=None,
        include_cadvisor=include_cadvisor,
        alerting=alerting or Alerting(),
        alert_test_timing=env.get("SPACED_ALERT_TEST_TIMING", "").lower() in TRUTHY,
        **scale_out_settings(topology.environment, env),
    )
    settings.validate()
    return settings
