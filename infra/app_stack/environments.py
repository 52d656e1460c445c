"""StackSettings for an environment: `local` is built in; cloud environments read stacks/Pulumi.<env>.yaml.

Switches (environment variables, each also a CLI flag of `spaced`):
- `SPACED_NO_CADVISOR=1`: leave cAdvisor out (its image has no offline build and cannot always be pulled).
- `SPACED_HTTP_PORT` (default 8080): local host port of Traefik's HTTP entrypoint.
- `SPACED_PROMETHEUS_PORT` (default 9090; `0` = not published): local host port of Prometheus.
- `SPACED_REGISTRY`, `SPACED_IMAGE_TAG`: where the cloud pulls the images built by `infra.images`.
- `SPACED_IMAGE_<SERVICE>` (e.g. `SPACED_IMAGE_ITEM_SOCKET`): one image reference, any environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

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


def read_topology(environment: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """The `spaced:topology` mapping of stacks/Pulumi.<env>.yaml (only its plain keys are used here)."""
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
    topology = (document.get("config") or {}).get("spaced:topology")
    if not isinstance(topology, dict):
        raise StackSettingsError(f"{path}: config/spaced:topology: missing or not a mapping")
    return topology


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
        )
    elif domain is not None and acme_email is not None:
        settings = StackSettings(
            environment=environment,
            images=merged_images,
            domain=domain,
            acme_email=acme_email,
            prometheus_port=None,
            include_cadvisor=include_cadvisor,
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
    )
    settings.validate()
    return settings
