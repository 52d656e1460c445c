"""One module per service of the stack; each returns a ServiceBundle for the given settings."""

from __future__ import annotations

from collections.abc import Callable

from infra.app_stack.model import ServiceBundle, StackSettings
from infra.app_stack.services.cadvisor import cadvisor
from infra.app_stack.services.item_socket import item_socket
from infra.app_stack.services.nginx import nginx
from infra.app_stack.services.node_exporter import node_exporter
from infra.app_stack.services.prometheus import prometheus
from infra.app_stack.services.socket_proxy import socket_proxy
from infra.app_stack.services.traefik import traefik

# Redis is not deployed: item_socket runs one replica with SQLite until the Redis scale-out lands.
SERVICES: dict[str, Callable[[StackSettings], ServiceBundle]] = {
    "traefik": traefik,
    "socket_proxy": socket_proxy,
    "nginx": nginx,
    "item_socket": item_socket,
    "prometheus": prometheus,
    "node_exporter": node_exporter,
    "cadvisor": cadvisor,
}


def service_bundles(settings: StackSettings) -> list[ServiceBundle]:
    """Every service of the stack for these settings (cAdvisor only when included)."""
    return [
        build(settings) for name, build in SERVICES.items() if name != "cadvisor" or settings.include_cadvisor
    ]
