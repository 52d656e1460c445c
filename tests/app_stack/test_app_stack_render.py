"""The rendered stack: what every service must have, and what differs between environments."""

from __future__ import annotations

import dataclasses
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
}


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


def test_item_socket_one_replica_stop_first_secret_as_file(local_settings: StackSettings) -> None:
    rendered = render_stack(local_settings, secret_names={"item_socket_jwt_secret": "spaced_jwt_abc"})
    compose = yaml.safe_load(rendered.compose_yaml())
    service = compose["services"]["item_socket"]
    assert service["deploy"]["replicas"] == 1
    assert service["deploy"]["update_config"]["order"] == "stop-first"
    secret_target = service["secrets"][0]["target"]
    assert service["environment"]["ITEM_SOCKET_AUTH_SECRET_FILE"] == f"/run/secrets/{secret_target}"
    assert compose["secrets"][service["secrets"][0]["source"]] == {"external": True, "name": "spaced_jwt_abc"}
    # The stop grace period outlasts item_socket's own drain, so SIGKILL never cuts the drain short.
    grace = int(service["stop_grace_period"].removesuffix("s"))
    assert grace > int(service["environment"]["ITEM_SOCKET_SHUTDOWN_GRACE"])
    assert service["volumes"][0]["type"] == "volume" and service["volumes"][0]["source"] in compose["volumes"]
    labels = service["deploy"]["labels"]
    assert "/socket.io/" in labels["traefik.http.routers.item_socket.rule"]
    assert "/ws/" in labels["traefik.http.routers.item_socket.rule"]
    assert labels["traefik.http.services.item_socket.loadbalancer.sticky.cookie"] == "true"


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


def test_more_than_one_item_socket_replica_is_refused(local_settings: StackSettings) -> None:
    with pytest.raises(StackSettingsError, match="item_socket_replicas"):
        render_stack(dataclasses.replace(local_settings, item_socket_replicas=2))


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
