"""nginx: serves the web page (web/index.html and the esbuild bundle in web/dist/)."""

from __future__ import annotations

from infra.app_stack.model import (
    ConfigFile,
    FileMount,
    Resources,
    Service,
    ServiceBundle,
    StackSettings,
    UpdatePolicy,
)
from infra.app_stack.services.common import MANAGER_CONSTRAINT, PUBLIC_NETWORK, bash_http_probe
from infra.app_stack.services.traefik import router_labels

CONFIG = "nginx_conf"
OTHER_SERVICES_PATHS = {
    "/socket.io/": "item_socket",
    "/ws/": "item_socket",
    "/api": "traefik",
    "/dashboard": "traefik",
}
"""Path prefixes routed by Traefik to another service; nginx sees them only while that one is down."""
RETRY_AFTER_SECONDS = 5
WEB_ROOT = "/usr/share/nginx/html"
PORT = 80


def render_nginx_conf(listen: str = str(PORT), web_root: str = WEB_ROOT, temp_dir: str = "/tmp") -> str:
    """The whole nginx.conf. `daemon` is left to the image's command (`nginx -g 'daemon off;'`).

    Caching: file names carrying a content hash (name-<hash>.ext) never change, so browsers may keep
    them for a year; everything else (index.html, the unhashed board.js) is revalidated by ETag on
    every load, so a deploy is visible at once.

    The pid file and temp directories carry a `spaced-` prefix: the image runs nginx as www-data, and
    files of the same default names left behind by root during the image build would be unwritable.

    nginx is Traefik's catch-all route, so it also answers for paths that belong to other services
    while those have no running task (Traefik then has no router for them): such a path gets 503
    with Retry-After, never the board page, so clients back off and retry instead of failing to
    parse HTML. Any other path that is not a file is 404.
    """
    return f"""\
worker_processes auto;
pid {temp_dir}/spaced-nginx.pid;
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    tcp_nopush on;
    server_tokens off;
    client_body_temp_path {temp_dir}/spaced-nginx-client-body;
    proxy_temp_path {temp_dir}/spaced-nginx-proxy;
    fastcgi_temp_path {temp_dir}/spaced-nginx-fastcgi;
    uwsgi_temp_path {temp_dir}/spaced-nginx-uwsgi;
    scgi_temp_path {temp_dir}/spaced-nginx-scgi;

    gzip on;
    gzip_vary on;
    gzip_min_length 256;
    gzip_comp_level 5;
    gzip_types text/css application/javascript text/javascript application/json image/svg+xml text/plain;

    server {{
        listen {listen};
        root {web_root};
        index index.html;

        location = /healthz {{
            access_log off;
            default_type text/plain;
            return 200 "ok\\n";
        }}

        location ~* "-[0-9a-z]{{8,}}\\.(js|css|map|woff2?|png|svg|ico)$" {{
            add_header Cache-Control "public, max-age=31536000, immutable";
            try_files $uri =404;
        }}

        location / {{
            add_header Cache-Control "no-cache";
            try_files $uri $uri/ =404;
        }}
{unavailable_locations(OTHER_SERVICES_PATHS)}
    }}
}}
"""


def unavailable_locations(paths: dict[str, str]) -> str:
    """nginx `location` blocks answering 503 + Retry-After for each prefix of `paths` (prefix -> the
    service it belongs to), matched before any file (`^~`)."""
    blocks = []
    for prefix, service in sorted(paths.items()):
        body = f"{service} is not available right now; retry in {RETRY_AFTER_SECONDS} s\\n"
        blocks.append(
            f"        location ^~ {prefix} {{\n"
            f"            default_type text/plain;\n"
            f'            add_header Retry-After "{RETRY_AFTER_SECONDS}" always;\n'
            f'            add_header Cache-Control "no-store" always;\n'
            f'            return 503 "{body}";\n'
            f"        }}"
        )
    return "\n".join(blocks)


def nginx(settings: StackSettings) -> ServiceBundle:
    """The nginx service; its nginx.conf is a Docker config."""
    config_file = ConfigFile(key=CONFIG, path="nginx/nginx.conf", content=render_nginx_conf())
    service = Service(
        name="nginx",
        image=settings.images["nginx"],
        healthcheck=bash_http_probe(PORT, "/healthz"),
        resources=Resources(
            cpus_limit=0.25, memory_limit="64M", cpus_reservation=0.05, memory_reservation="16M"
        ),
        # Stateless: any manager will do (the cloud's managers are the always-on nodes).
        placement=[MANAGER_CONSTRAINT],
        networks=[PUBLIC_NETWORK],
        replicas=1,
        update=UpdatePolicy(order="start-first"),
        configs=[FileMount(key=CONFIG, target="/etc/nginx/nginx.conf")],
        labels=router_labels(settings, router="web", rule="PathPrefix(`/`)", port=PORT, priority=1),
    )
    return ServiceBundle(service=service, configs=[config_file])
