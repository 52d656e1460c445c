"""Traefik v3: the only service reachable from the internet; routes by the swarm services' labels."""

from __future__ import annotations

from typing import Any

import yaml

from infra.app_stack.model import (
    ConfigFile,
    FileMount,
    Healthcheck,
    Port,
    Resources,
    SecretSpec,
    Service,
    ServiceBundle,
    StackSettings,
    UpdatePolicy,
    VolumeMount,
)
from infra.app_stack.services.common import (
    ACME_CONSTRAINT,
    DOCKER_API_NETWORK,
    EDGE_CONSTRAINT,
    MANAGER_CONSTRAINT,
    MONITORING_NETWORK,
    PUBLIC_NETWORK,
)
from infra.app_stack.services.socket_proxy import ENDPOINT as SOCKET_PROXY_ENDPOINT

STATIC_CONFIG = "traefik_static"
STATIC_CONFIG_PATH = (
    "/etc/traefik/traefik.yml"  # Traefik's default location: `traefik healthcheck` finds it too
)
DASHBOARD_USERS = "traefik_dashboard_users"
ACME_VOLUME = "traefik_acme"
INTERNAL_PORT = 8082
"""Ping and metrics entrypoint: reachable on the overlay only, never published."""
CERT_RESOLVER = "le"
SWARM_REFRESH = "1s"
"""How often Traefik polls the swarm API for tasks (Traefik's default, 15 s, is how long a rolled task
stays unreachable). The swarm provider has no event stream; one poll is a few small API calls."""
DIAL_TIMEOUT = "2s"
"""A task that is gone leaves an address nothing answers on (no RST): fail fast instead of Traefik's
default 30 s, so clients get an error they retry on rather than a hanging connect."""


def entrypoint(settings: StackSettings) -> str:
    """The entrypoint the application's routers listen on."""
    return "web" if settings.is_local else "websecure"


def router_labels(
    settings: StackSettings, *, router: str, rule: str, port: int, priority: int
) -> dict[str, str]:
    """Deploy labels exposing a service through Traefik's swarm provider.

    In the cloud the rule is narrowed to the environment's domain (the certificate follows from it);
    locally any host name reaches the stack.
    """
    if not settings.is_local:
        rule = f"Host(`{settings.domain}`) && ({rule})"
    return {
        "traefik.enable": "true",
        f"traefik.http.routers.{router}.rule": rule,
        f"traefik.http.routers.{router}.entrypoints": entrypoint(settings),
        f"traefik.http.routers.{router}.priority": str(priority),
        f"traefik.http.routers.{router}.service": router,
        # Swarm services publish no ports Traefik could detect: name the one to route to.
        f"traefik.http.services.{router}.loadbalancer.server.port": str(port),
    }


def static_config(settings: StackSettings) -> dict[str, Any]:
    """Traefik's static configuration (entrypoints, swarm provider, ACME in the cloud)."""
    entrypoints: dict[str, Any] = {
        "web": {"address": ":80"},
        "internal": {"address": f":{INTERNAL_PORT}"},
    }
    config: dict[str, Any] = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "log": {"level": "INFO"},
        "accessLog": {},
        "ping": {"entryPoint": "internal"},
        "metrics": {"prometheus": {"entryPoint": "internal"}},
        "api": {"dashboard": True},
        "entryPoints": entrypoints,
        "serversTransport": {"forwardingTimeouts": {"dialTimeout": DIAL_TIMEOUT}},
        "providers": {
            "swarm": {
                # The read-only API proxy: Traefik gets no Docker socket (socket_proxy.py).
                "endpoint": SOCKET_PROXY_ENDPOINT,
                "exposedByDefault": False,
                "network": f"{settings.stack_name}_{PUBLIC_NETWORK}",
                "watch": True,
                "refreshSeconds": SWARM_REFRESH,
            }
        },
    }
    if not settings.is_local:
        entrypoints["web"]["http"] = {
            "redirections": {"entryPoint": {"to": "websecure", "scheme": "https", "permanent": True}}
        }
        entrypoints["websecure"] = {"address": ":443", "http": {"tls": {"certResolver": CERT_RESOLVER}}}
        config["certificatesResolvers"] = {
            CERT_RESOLVER: {
                "acme": {
                    "email": settings.acme_email,
                    "storage": "/letsencrypt/acme.json",
                    # TLS-ALPN on 443: no port-80 dependency and no DNS provider credentials.
                    "tlsChallenge": {},
                }
            }
        }
    return config


def traefik(settings: StackSettings) -> ServiceBundle:
    """The Traefik service with its static config (a Docker config) and dashboard users (a secret)."""
    config_file = ConfigFile(
        key=STATIC_CONFIG,
        path="traefik/traefik.yml",
        content=yaml.safe_dump(static_config(settings), sort_keys=False),
    )
    dashboard_rule = "PathPrefix(`/api`) || PathPrefix(`/dashboard`)"
    labels = router_labels(settings, router="dashboard", rule=dashboard_rule, port=9999, priority=200)
    labels |= {
        "traefik.http.routers.dashboard.service": "api@internal",
        "traefik.http.routers.dashboard.middlewares": "dashboard-auth",
        "traefik.http.middlewares.dashboard-auth.basicauth.usersfile": f"/run/secrets/{DASHBOARD_USERS}",
    }
    if settings.is_local:
        ports = [Port(target=80, published=settings.http_port)]
    else:
        ports = [Port(target=80, published=80), Port(target=443, published=443)]
    service = Service(
        name="traefik",
        image=settings.images["traefik"],
        healthcheck=Healthcheck(test=["CMD", "traefik", "healthcheck", "--ping"]),
        resources=Resources(
            cpus_limit=0.5, memory_limit="256M", cpus_reservation=0.1, memory_reservation="64M"
        ),
        # One replica on the edge node that holds the ACME store (a node-local volume): acme.json has
        # no locking, so a second Traefik would race the first on renewals, and a Traefik moved to
        # another node would start without its certificates. The swarm provider needs a manager's API.
        # The swarm bootstrap labels exactly one edge manager `acme=true` (the local node has it too).
        placement=[MANAGER_CONSTRAINT, EDGE_CONSTRAINT, ACME_CONSTRAINT],
        networks=[PUBLIC_NETWORK, MONITORING_NETWORK, DOCKER_API_NETWORK],
        replicas=1,
        # stop-first: host-mode ports cannot be bound by two tasks on one node.
        update=UpdatePolicy(order="stop-first", monitor="20s"),
        ports=ports,
        configs=[FileMount(key=STATIC_CONFIG, target=STATIC_CONFIG_PATH)],
        secrets=[FileMount(key=DASHBOARD_USERS, target=DASHBOARD_USERS)],
        # The image runs Traefik as an unprivileged user (ports 80/443 need no root in a container).
        volumes=[VolumeMount(source=ACME_VOLUME, target="/letsencrypt")],
        labels=labels,
        stop_grace_period="15s",
    )
    return ServiceBundle(
        service=service,
        configs=[config_file],
        secrets=[SecretSpec(key=DASHBOARD_USERS, description="htpasswd lines for Traefik's dashboard")],
        volumes=[ACME_VOLUME],
    )
