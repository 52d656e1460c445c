"""One module per service of the stack; each returns a ServiceBundle for the given settings."""

from __future__ import annotations

from collections.abc import Callable

from infra.app_stack.model import ServiceBundle, StackSettings
from infra.app_stack.services.alertmanager import alertmanager
from infra.app_stack.services.backup import backup
from infra.app_stack.services.cadvisor import cadvisor
from infra.app_stack.services.item_socket import item_socket
from infra.app_stack.services.nginx import nginx
from infra.app_stack.services.node_exporter import node_exporter
from infra.app_stack.services.postgres import postgres
from infra.app_stack.services.prometheus import prometheus
from infra.app_stack.services.redis import redis
from infra.app_stack.services.socket_proxy import socket_proxy
from infra.app_stack.services.traefik import traefik

SERVICES: dict[str, Callable[[StackSettings], ServiceBundle]] = {
    "traefik": traefik,
    "socket_proxy": socket_proxy,
    "nginx": nginx,
    "item_socket": item_socket,
    "redis": redis,
    "postgres": postgres,
    "backup": backup,
    "prometheus": prometheus,
    "alertmanager": alertmanager,
    "node_exporter": node_exporter,
    "cadvisor": cadvisor,
}


SCALE_OUT_ONLY = ("redis", "postgres", "backup")
"""Deployed only with `item_socket_scale_out`: the embedded SQLite mode needs none of them."""


def service_names(settings: StackSettings) -> list[str]:
    """The services of the stack for these settings (cAdvisor only when included; Redis,
    PostgreSQL and the backups only with the scale-out)."""
    return [
        name
        for name in SERVICES
        if (name != "cadvisor" or settings.include_cadvisor)
        and (name not in SCALE_OUT_ONLY or settings.item_socket_scale_out)
    ]


def service_bundles(settings: StackSettings) -> list[ServiceBundle]:
    """Every service of the stack for these settings (see `service_names`)."""
    return [SERVICES[name](settings) for name in service_names(settings)]
