"""Pieces several service modules share: network keys, placement constraints and health probes."""

from __future__ import annotations

from infra.app_stack.model import Healthcheck

PUBLIC_NETWORK = "public"
"""Overlay shared by Traefik and the services it routes to."""
MONITORING_NETWORK = "monitoring"
"""Overlay Prometheus scrapes over; never routed from the internet."""
DOCKER_API_NETWORK = "docker_api"
"""Internal overlay between Traefik and the read-only Docker API proxy, and nothing else."""
DATA_NETWORK = "data"
"""Internal overlay of item_socket, Redis, PostgreSQL and the backups: never routed, never published,
not on Traefik's network. Internal and not attachable: only the stack's services (and the
`spaced backup`/`restore` jobs, which are swarm services too) join it."""

# Labels set by the swarm bootstrap (infra.plans.swarm) and by `spaced up local` on the local node.
EDGE_CONSTRAINT = "node.labels.edge == true"
ACME_CONSTRAINT = "node.labels.acme == true"
MANAGER_CONSTRAINT = "node.role == manager"
DATA_CONSTRAINT = "node.labels.data == true"
"""The one node that keeps Redis' and PostgreSQL's volumes (the swarm bootstrap labels the edge
manager that also holds the ACME store; `spaced up local` labels the local node)."""


def bash_http_probe(port: int, path: str) -> Healthcheck:
    """Healthcheck for the images built from the Debian base: bash is always there, curl/wget are not.

    Sends an HTTP/1.0 GET over bash's /dev/tcp and passes when the status line says 200.
    No `$` in the command, so compose interpolation leaves it alone.
    """
    script = (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && "
        f"printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && "
        "grep -q '^HTTP/1.[01] 200' <&3"
    )
    return Healthcheck(test=["CMD", "bash", "-c", script])
