"""The rendered stack: what every service must have, and what differs between environments."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import yaml

from infra.app_stack.environments import settings_for_environment
from infra.app_stack.model import ConfigFile, StackSettings, StackSettingsError
from infra.app_stack.render import render_stack, write_stack
from infra.app_stack.services.nginx import OTHER_SERVICES_PATHS, render_nginx_conf
from infra.app_stack.services.traefik import static_config
from infra.plans.mesh import OVERLAY_MTU, OVERLAY_MTU_OPTION, TUNNEL_MTU, VXLAN_OVERHEAD

EVERY_SERVICE = {
    "traefik",
    "socket_proxy",
    "nginx",
    "item_socket",
    "prometheus",
    "alertmanager",
    "node_exporter",
    "cadvisor",
    "redis",
    "postgres",
    "backup",
}
SCALE_OUT_ONLY = {"redis", "postgres", "backup"}


def _services(settings: StackSettings) -> dict[str, dict]:
    # Through YAML and back: the test reads what `docker stack deploy` will read.
    return yaml.safe_load(render_stack(settings).compose_yaml())["services"]


@pytest.mark.parametrize("env_fixture", ["local_settings", "prod_settings"])
def test_every_service_has_health_limits_placement_and_rollback(env_fixture: str, request) -> None:
    services = _services(request.getfixturevalue(env_fixture))
    assert set(services) == EVERY_SERVICE
    for name, service in services.items():
        deploy = service["deploy"]
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert deploy["resources"]["limits"]["cpus"] and deploy["resources"]["limits"]["memory"], name
        assert deploy["resources"]["reservations"]["memory"], name
        assert deploy["placement"]["constraints"], name
        assert deploy["restart_policy"]["condition"] == "any", name
        assert deploy["update_config"]["failure_action"] == "rollback", name
        assert deploy["rollback_config"]["order"] in {"start-first", "stop-first"}, name
        assert deploy["endpoint_mode"] == "dnsrr", name
        for port in service.get("ports", []):
            assert port["mode"] == "host", name
        capped = {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
        assert service["logging"] == capped, name


@pytest.mark.parametrize("env_fixture", ["local_settings", "prod_settings"])
def test_nginx_answers_503_for_every_path_another_service_owns(env_fixture: str, request) -> None:
    """nginx is Traefik's catch-all: each PathPrefix another service routes must be a 503 location
    there, or clients of a stopped service get the board page."""
    services = _services(request.getfixturevalue(env_fixture))
    prefixes = {
        prefix
        for name, service in services.items()
        if name != "nginx"
        for key, rule in service["deploy"].get("labels", {}).items()
        if key.endswith(".rule")
        for prefix in re.findall(r"PathPrefix\(`([^`]+)`\)", rule)
    }
    assert prefixes == set(OTHER_SERVICES_PATHS)
    conf = render_nginx_conf()
    for prefix in prefixes:
        assert f"location ^~ {prefix} {{" in conf
    assert "try_files $uri $uri/ =404;" in conf, "an unknown path must be 404, not the page"


def test_item_socket_scales_out_on_redis_and_postgres_start_first(
    local_settings: StackSettings, prod_settings: StackSettings
) -> None:
    names = {
        "item_socket_jwt_secret": "spaced_jwt_abc",
        "redis_password": "spaced_redis_password_abc",
        "postgres_password": "spaced_postgres_password_abc",
    }
    compose = yaml.safe_load(render_stack(local_settings, secret_names=names).compose_yaml())
    service = compose["services"]["item_socket"]
    assert service["deploy"]["replicas"] == 2
    assert (
        yaml.safe_load(render_stack(prod_settings).compose_yaml())["services"]["item_socket"]["deploy"][
            "replicas"
        ]
        == 3
    )
    assert service["deploy"]["update_config"]["order"] == "start-first"
    assert service["deploy"]["rollback_config"]["order"] == "start-first"
    environment = service["environment"]
    assert environment["ITEM_SOCKET_REDIS_URL"] == "redis://redis:6379/0"
    assert environment["ITEM_SOCKET_STORE_URL"] == "postgresql://item_socket@postgres:5432/spaced"
    # Passwords as Docker secrets, by path; never a password in a URL or a variable.
    mounted = {s["source"]: f"/run/secrets/{s['target']}" for s in service["secrets"]}
    assert environment["ITEM_SOCKET_REDIS_PASSWORD_FILE"] == mounted["redis_password"]
    assert environment["ITEM_SOCKET_STORE_PASSWORD_FILE"] == mounted["postgres_password"]
    assert environment["ITEM_SOCKET_AUTH_SECRET_FILE"] == mounted["item_socket_jwt_secret"]
    for key, name in names.items():
        assert compose["secrets"][key] == {"external": True, "name": name}
    # Documents are in PostgreSQL: no volume, no node to stay on.
    assert "volumes" not in service and "item_socket_data" not in compose["volumes"]
    assert "node.labels.edge == true" not in service["deploy"]["placement"]["constraints"]
    assert set(service["networks"]) == {"public", "monitoring", "data"}
    grace = int(service["stop_grace_period"].removesuffix("s"))
    assert grace > int(environment["ITEM_SOCKET_SHUTDOWN_GRACE"])
    labels = service["deploy"]["labels"]
    # Long-polling needs every request of a session on the task that holds it.
    assert labels["traefik.http.services.item_socket.loadbalancer.sticky.cookie"] == "true"


@pytest.mark.parametrize("env_fixture", ["local_settings", "prod_settings"])
def test_redis_and_postgres_are_internal_pinned_and_keep_their_data(env_fixture: str, request) -> None:
    settings = request.getfixturevalue(env_fixture)
    compose = yaml.safe_load(render_stack(settings).compose_yaml())
    services = compose["services"]
    assert compose["networks"]["data"]["internal"] is True
    assert compose["networks"]["data"]["attachable"] is False
    for name, volume, target in (
        ("redis", "redis_data", "/data"),
        ("postgres", "postgres_data", "/var/lib/postgresql/data"),
        ("backup", "postgres_backups", "/backups"),
    ):
        service = services[name]
        assert service["networks"] == ["data"], f"{name} must be on the internal data overlay only"
        assert "ports" not in service and "labels" not in service["deploy"], (
            f"{name} is never published or routed"
        )
        assert service["deploy"]["placement"]["constraints"] == ["node.labels.data == true"], name
        assert (
            service["deploy"]["replicas"] == 1 and service["deploy"]["update_config"]["order"] == "stop-first"
        )
        assert {"type": "volume", "source": volume, "target": target} in service["volumes"], name
        assert volume in compose["volumes"], name
    redis = services["redis"]["command"]
    flags = dict(zip(redis[::2], redis[1::2], strict=True))
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert services["redis"]["environment"] == {"REDIS_PASSWORD_FILE": "/run/secrets/redis_password"}
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert postgres["healthcheck"]["test"][1] == "pg_isready"
    assert postgres["stop_signal"] == "SIGINT"
    # Every replica, the one a start-first update adds, and the backups fit in max_connections.
    connections = int(
        next(arg for arg in postgres["command"] if arg.startswith("max_connections=")).split("=")[1]
    )
    assert connections >= (settings.item_socket_replicas + 1) * 4 + 3
    # node-exporter exports the backup's figures from the volume the backup service writes.
    exporter = services["node_exporter"]
    assert "--collector.textfile.directory=/textfile" in exporter["command"]
    assert {
        "type": "volume",
        "source": "backup_metrics",
        "target": "/textfile",
        "read_only": True,
    } in exporter["volumes"]
    assert {"type": "volume", "source": "backup_metrics", "target": "/metrics"} in services["backup"][
        "volumes"
    ]
    environment = services["backup"]["environment"]
    assert environment["BACKUP_INTERVAL"] == "21600" and environment["BACKUP_KEEP"] == "28"


def test_sqlite_single_replica_without_the_scale_out() -> None:
    settings = settings_for_environment("local", env={"SPACED_ITEM_SOCKET_SCALE_OUT": "0"})
    rendered = render_stack(settings, secret_names={"item_socket_jwt_secret": "spaced_jwt_abc"})
    compose = yaml.safe_load(rendered.compose_yaml())
    assert not set(compose["services"]) & SCALE_OUT_ONLY
    assert "data" not in compose["networks"]
    assert {s.key for s in rendered.secrets} == {"item_socket_jwt_secret", "traefik_dashboard_users"}
    service = compose["services"]["item_socket"]
    assert service["deploy"]["replicas"] == 1
    assert service["deploy"]["update_config"]["order"] == "stop-first"
    assert not any(
        key.startswith(("ITEM_SOCKET_REDIS", "ITEM_SOCKET_STORE")) for key in service["environment"]
    )
    assert service["volumes"][0]["source"] == "item_socket_data" and "item_socket_data" in compose["volumes"]
    assert service["deploy"]["placement"]["constraints"] == ["node.labels.edge == true"]
    assert "--collector.textfile.directory=/textfile" not in compose["services"]["node_exporter"]["command"]


def _seconds(duration: str) -> float:
    return float(duration.removesuffix("s"))


@pytest.mark.parametrize("env_fixture", ["local_settings", "prod_settings"])
def test_item_socket_rolls_with_a_short_gap(env_fixture: str, request) -> None:
    """stop-first means an outage on every update; each of these bounds a part of it."""
    settings = request.getfixturevalue(env_fixture)
    service = _services(settings)["item_socket"]
    # A task counts as running (and Traefik lists it) only after its first passing probe.
    assert _seconds(service["healthcheck"]["interval"]) <= 2
    labels = service["deploy"]["labels"]
    health = "traefik.http.services.item_socket.loadbalancer.healthcheck"
    # Traefik probes readiness itself: a draining task (503 on /readyz) leaves the pool at once.
    assert labels[f"{health}.path"] == "/readyz"
    assert _seconds(labels[f"{health}.interval"]) <= 2
    static = static_config(settings)
    # Traefik learns about the new task by polling the swarm API; its default is every 15 s.
    assert _seconds(static["providers"]["swarm"]["refreshSeconds"]) <= 2
    # A gone task's address does not refuse connections: give up on it in seconds, not 30.
    assert _seconds(static["serversTransport"]["forwardingTimeouts"]["dialTimeout"]) <= 5


def test_more_than_one_item_socket_replica_needs_the_scale_out(local_settings: StackSettings) -> None:
    sqlite = dataclasses.replace(local_settings, item_socket_scale_out=False, item_socket_replicas=2)
    with pytest.raises(
        StackSettingsError, match=r"^item_socket_replicas: 2 replicas need item_socket_scale_out"
    ):
        render_stack(sqlite)
    render_stack(dataclasses.replace(local_settings, item_socket_replicas=5))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"SPACED_ITEM_SOCKET_REPLICAS": "0"},
            r"^item_socket_replicas: 0 is not a whole number of at least 1",
        ),
        (
            {"SPACED_ITEM_SOCKET_REPLICAS": "two"},
            r"^SPACED_ITEM_SOCKET_REPLICAS: 'two' is not a whole number",
        ),
        ({"SPACED_ITEM_SOCKET_REPLICAS": "17"}, r"^item_socket_replicas: 17 is more than 16"),
        ({"SPACED_ITEM_SOCKET_SCALE_OUT": "maybe"}, r"^SPACED_ITEM_SOCKET_SCALE_OUT: 'maybe' is not 1/0"),
        (
            {"SPACED_ITEM_SOCKET_SCALE_OUT": "0", "SPACED_ITEM_SOCKET_REPLICAS": "3"},
            r"^item_socket_replicas: 3 replicas need item_socket_scale_out",
        ),
        ({"SPACED_BACKUP_INTERVAL": "10"}, r"^backup_interval_seconds: 10 must be a whole number from 60"),
        ({"SPACED_BACKUP_KEEP": "0"}, r"^backup_keep: 0 must be a whole number from 1 to 1000"),
        ({"SPACED_BACKUP_MIN_BYTES": "-1"}, r"^backup_min_bytes: -1 must be a whole number from 0"),
        ({"SPACED_BACKUP_MIN_BYTES": "1k"}, r"^SPACED_BACKUP_MIN_BYTES: '1k' is not a whole number"),
    ],
)
def test_bad_scale_out_and_backup_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(StackSettingsError, match=message):
        settings_for_environment("local", env=env)


def test_scale_out_settings_survive_the_json_the_pulumi_component_passes(
    prod_settings: StackSettings,
) -> None:
    settings = dataclasses.replace(prod_settings, item_socket_replicas=4, backup_interval_seconds=3600)
    assert StackSettings.from_json(settings.to_json()) == settings
    bad = json.loads(settings.to_json()) | {"item_socket_scale_out": False}
    with pytest.raises(StackSettingsError, match="item_socket_replicas"):
        StackSettings.from_json(json.dumps(bad))


def test_local_publishes_http_and_prometheus_cloud_only_80_443(
    local_settings: StackSettings, prod_settings: StackSettings
) -> None:
    local = _services(local_settings)
    assert [p["published"] for p in local["traefik"]["ports"]] == [8080]
    assert [p["published"] for p in local["prometheus"]["ports"]] == [9090]
    cloud = _services(prod_settings)
    assert sorted(p["published"] for p in cloud["traefik"]["ports"]) == [80, 443]
    published = {name: s.get("ports") for name, s in cloud.items() if s.get("ports")}
    assert set(published) == {"traefik"}, "only Traefik may be reachable from the internet"
    assert {"redis", "postgres", "backup"} <= set(cloud)
    assert not any(k.startswith("traefik.") for k in cloud["prometheus"]["deploy"].get("labels", {}))


def test_traefik_cloud_has_acme_redirect_and_host_rules(prod_settings: StackSettings) -> None:
    config = static_config(prod_settings)
    acme = config["certificatesResolvers"]["le"]["acme"]
    assert acme["tlsChallenge"] == {} and acme["email"] == "hostmaster@example.org"
    assert config["entryPoints"]["web"]["http"]["redirections"]["entryPoint"]["to"] == "websecure"
    services = _services(prod_settings)
    constraints = services["traefik"]["deploy"]["placement"]["constraints"]
    assert "node.labels.edge == true" in constraints and services["traefik"]["deploy"]["replicas"] == 1
    rule = services["item_socket"]["deploy"]["labels"]["traefik.http.routers.item_socket.rule"]
    assert rule.startswith("Host(`example.org`)")


def test_traefik_local_has_no_acme(local_settings: StackSettings) -> None:
    config = static_config(local_settings)
    assert "certificatesResolvers" not in config and "websecure" not in config["entryPoints"]


def test_cadvisor_switch_leaves_it_out_everywhere(tmp_path: Path) -> None:
    settings = settings_for_environment("local", env={"SPACED_NO_CADVISOR": "1"})
    rendered = render_stack(settings)
    assert "cadvisor" not in rendered.compose["services"]
    prometheus_yml = next(c for c in rendered.config_files if c.key == "prometheus_config").content
    assert "cadvisor" not in prometheus_yml
    with_it = render_stack(settings_for_environment("local", env={}))
    assert "cadvisor" in next(c for c in with_it.config_files if c.key == "prometheus_config").content


def test_config_names_follow_content() -> None:
    a = ConfigFile(key="nginx_conf", path="nginx/nginx.conf", content="worker_processes 1;")
    same = ConfigFile(key="nginx_conf", path="elsewhere.conf", content="worker_processes 1;")
    changed = ConfigFile(key="nginx_conf", path="nginx/nginx.conf", content="worker_processes 2;")
    assert a.docker_name("spaced") == same.docker_name("spaced")
    assert a.docker_name("spaced") != changed.docker_name("spaced")
    assert a.docker_name("spaced").startswith("spaced_nginx_conf_")


def test_changed_setting_renames_the_config_that_uses_it(local_settings: StackSettings) -> None:
    before = render_stack(local_settings).compose["configs"]
    after = render_stack(dataclasses.replace(local_settings, stack_name="other")).compose["configs"]
    # Traefik's static config names the stack's network: it changes; nginx.conf does not.
    assert before["traefik_static"]["name"].split("_")[-1] != after["traefik_static"]["name"].split("_")[-1]
    assert before["nginx_conf"]["name"].split("_")[-1] == after["nginx_conf"]["name"].split("_")[-1]


def test_dollar_signs_are_escaped_for_compose(local_settings: StackSettings) -> None:
    command = render_stack(local_settings).compose["services"]["node_exporter"]["command"]
    assert any("($$|/)" in arg for arg in command)


def test_write_stack_puts_configs_where_the_compose_file_points(
    local_settings: StackSettings, tmp_path: Path
) -> None:
    rendered = render_stack(local_settings)
    compose_file = write_stack(rendered, tmp_path)
    compose = yaml.safe_load(compose_file.read_text())
    for key, config in compose["configs"].items():
        written = (tmp_path / config["file"]).read_text()
        assert written == next(c.content for c in rendered.config_files if c.key == key)


def test_cloud_needs_a_domain(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    (stacks / "Pulumi.dev.yaml").write_text("config:\n  spaced:topology:\n    environment: dev\n")
    with pytest.raises(StackSettingsError, match="domain"):
        settings_for_environment("dev", env={}, stacks_dir=stacks)


def test_unknown_environment_lists_the_known_ones(stacks_dir: Path) -> None:
    with pytest.raises(StackSettingsError, match=r"known environments: local, prod"):
        settings_for_environment("staging", env={}, stacks_dir=stacks_dir)


def test_bad_port_variable_is_named() -> None:
    with pytest.raises(StackSettingsError, match="SPACED_HTTP_PORT"):
        settings_for_environment("local", env={"SPACED_HTTP_PORT": "eighty"})


def test_image_override_variable(local_settings: StackSettings) -> None:
    settings = settings_for_environment("local", env={"SPACED_IMAGE_ITEM_SOCKET": "example/item:1"})
    assert render_stack(settings).compose["services"]["item_socket"]["image"] == "example/item:1"


@pytest.mark.parametrize("env_fixture", ["local_settings", "prod_settings"])
def test_every_overlay_carries_the_mesh_mtu(env_fixture: str, request) -> None:
    """Overlays ride inside the WireGuard tunnel: their MTU leaves room for VXLAN inside it."""
    networks = yaml.safe_load(render_stack(request.getfixturevalue(env_fixture)).compose_yaml())["networks"]
    assert networks
    for name, network in networks.items():
        assert network["driver_opts"] == {OVERLAY_MTU_OPTION: str(OVERLAY_MTU)}, name
    assert OVERLAY_MTU + VXLAN_OVERHEAD <= TUNNEL_MTU
