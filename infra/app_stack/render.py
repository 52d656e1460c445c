"""Render the stack: one compose file plus the config files it references, all from Python.

Docker configs get content-hashed names (`<stack>_<key>_<sha256[:12]>`), so changing a file creates a
new config and rolls the services that mount it. Secrets are external: their content is generated at
deploy time (`infra.app_stack.deploy`) and never rendered; `secret_names` maps each key to the Docker
secret's name (a placeholder when rendering without Docker).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.app_stack.model import ConfigFile, SecretSpec, StackSettings
from infra.app_stack.services import service_bundles
from infra.app_stack.services.common import (
    DATA_NETWORK,
    DOCKER_API_NETWORK,
    MONITORING_NETWORK,
    PUBLIC_NETWORK,
)
from infra.plans.mesh import OVERLAY_MTU, OVERLAY_MTU_OPTION

COMPOSE_FILE = "docker-stack.yml"


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated values out in full: no `&id001` anchors in a file people read."""

    def ignore_aliases(self, data: object) -> bool:
        return True


COMPOSE_VERSION = "3.8"


@dataclass(frozen=True)
class RenderedStack:
    """The compose document and the files it references (paths relative to the compose file)."""

    settings: StackSettings
    compose: dict[str, Any]
    config_files: tuple[ConfigFile, ...]
    secrets: tuple[SecretSpec, ...]

    def compose_yaml(self) -> str:
        """The compose file's text."""
        header = (
            f"# Rendered by infra.app_stack for environment {self.settings.environment!r}; do not edit.\n"
            + (
                f"# item_socket: {self.settings.item_socket_replicas} replicas on Redis + PostgreSQL.\n"
                if self.settings.item_socket_scale_out
                else "# item_socket: one replica with SQLite (item_socket_scale_out off), no Redis.\n"
            )
        )
        return header + yaml.dump(self.compose, Dumper=_PlainDumper, sort_keys=False, width=200)

    def digest(self) -> str:
        """SHA-256 of the compose file and every config file: changes whenever a deploy would change."""
        h = hashlib.sha256(self.compose_yaml().encode())
        for config in self.config_files:
            h.update(config.path.encode() + b"\0" + config.content.encode())
        return h.hexdigest()


def placeholder_secret_name(stack_name: str, key: str) -> str:
    """Secret name used when rendering without Docker (deploy resolves the real, hashed one)."""
    return f"{stack_name}_{key}"


def stack_secret_specs(settings: StackSettings) -> tuple[SecretSpec, ...]:
    """The Docker secrets the stack of `settings` needs (their content is made at deploy time)."""
    return tuple(s for b in service_bundles(settings) for s in b.secrets)


def render_stack(settings: StackSettings, secret_names: Mapping[str, str] | None = None) -> RenderedStack:
    """Render the compose document for `settings`."""
    settings.validate()
    bundles = service_bundles(settings)
    stack = settings.stack_name
    labels = {"spaced.stack": stack, "spaced.environment": settings.environment}
    config_files = tuple(c for b in bundles for c in b.configs)
    secrets = tuple(s for b in bundles for s in b.secrets)
    names = dict(secret_names or {})
    overlay = {
        "driver": "overlay",
        "driver_opts": {OVERLAY_MTU_OPTION: str(OVERLAY_MTU)},
        "labels": labels,
    }
    compose: dict[str, Any] = {
        "version": COMPOSE_VERSION,
        "services": {b.service.name: b.service.to_compose() for b in bundles},
        # Every overlay carries an MTU that fits inside the WireGuard tunnel on the smallest provider
        # path (infra.plans.mesh: GCP's 1460 - WireGuard - VXLAN); Docker's default (1450) does not.
        "networks": {
            # Attachable: one-off containers (debugging, tests) can join the overlay.
            **{net: {**overlay, "attachable": True} for net in (PUBLIC_NETWORK, MONITORING_NETWORK)},
            # Only Traefik and the Docker API proxy: internal, and no container may attach to it.
            DOCKER_API_NETWORK: {**overlay, "internal": True, "attachable": False},
            # item_socket and its Redis and PostgreSQL (and the backups): internal, not attachable.
            **(
                {DATA_NETWORK: {**overlay, "internal": True, "attachable": False}}
                if settings.item_socket_scale_out
                else {}
            ),
        },
        # A volume several services mount (the backup metrics) is declared once.
        "volumes": {v: {"labels": labels} for b in bundles for v in b.volumes},
        "configs": {
            c.key: {"file": f"./{c.path}", "name": c.docker_name(stack), "labels": labels}
            for c in config_files
        },
        "secrets": {
            s.key: {"external": True, "name": names.get(s.key, placeholder_secret_name(stack, s.key))}
            for s in secrets
        },
    }
    return RenderedStack(settings=settings, compose=compose, config_files=config_files, secrets=secrets)


def write_stack(rendered: RenderedStack, out_dir: Path) -> Path:
    """Write the compose file and its config files under `out_dir`; returns the compose file's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for config in rendered.config_files:
        target = out_dir / config.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config.content)
    compose_path = out_dir / COMPOSE_FILE
    compose_path.write_text(rendered.compose_yaml())
    return compose_path
