"""The Pulumi program (Pulumi.yaml `main: infra/`): config -> topology -> hosts -> firewalls -> DNS ->
mesh -> swarm -> application stack. The local environment deploys only the application stack, on
the local Docker engine.

Thin on purpose: every decision lives in a pure plan (infra/plans) or an adapter (infra/providers).
"""

from __future__ import annotations

import sys
from pathlib import Path

_INFRA_DIR = Path(__file__).resolve().parent
_REPO_ROOT = str(_INFRA_DIR.parent)
# Pulumi runs this file by path with infra/ first on sys.path. The package imports need the repo
# root instead, and infra/dns must not shadow any top-level `dns` package.
if sys.path and sys.path[0] and Path(sys.path[0]).resolve() == _INFRA_DIR:
    sys.path[0] = _REPO_ROOT
elif _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import dataclasses  # noqa: E402
from collections.abc import Sequence  # noqa: E402

import pulumi  # noqa: E402
import pulumi_random as random  # noqa: E402

from infra import config as stack_config  # noqa: E402
from infra.app_stack.environments import settings_for_environment, settings_for_topology  # noqa: E402
from infra.cloud_deploy import (  # noqa: E402
    DASHBOARD_PASSWORD_KEY,
    JWT_KEY,
    POSTGRES_PASSWORD_KEY,
    REDIS_PASSWORD_KEY,
    CloudDeployArgs,
)
from infra.components.app_stack import AppStack, AppStackArgs  # noqa: E402
from infra.components.mesh import Mesh, MeshArgs  # noqa: E402
from infra.components.swarm import Swarm, SwarmArgs  # noqa: E402
from infra.dns import create_records  # noqa: E402
from infra.host import Host  # noqa: E402
from infra.plans.cloud_init import upgrade_times  # noqa: E402
from infra.plans.dns import DnsRecord  # noqa: E402
from infra.plans.records import plan_records  # noqa: E402
from infra.providers import ProvisionContext, provision_all  # noqa: E402
from infra.topology import Topology, TopologyError  # noqa: E402


def export_outputs(
    topology: Topology,
    hosts: Sequence[Host],
    records: Sequence[DnsRecord],
    swarm: Swarm | None,
    app: AppStack,
) -> None:
    """Stack outputs: where every host is, the DNS names, the swarm manager and the public URLs."""
    pulumi.export("environment", topology.environment)
    pulumi.export(
        "hosts",
        {
            host.name: {
                "provider": host.provider,
                "region": host.region,
                "public_ipv4": host.public_ipv4,
                "public_ipv6": host.public_ipv6,
                "mesh_ip": host.mesh_ip,
                "manager": host.manager,
                "edge": host.edge,
                "dns": [topology.fqdn(name) for name in topology.node(host.name).dns],
            }
            for host in hosts
        },
    )
    pulumi.export(
        "dns_records",
        [
            {"name": record.fqdn, "type": record.type, "value": record.value, "ttl": record.ttl}
            for record in records
        ],
    )
    if swarm is not None:
        pulumi.export("swarm_manager", swarm.manager_ip)
        pulumi.export("docker_host", swarm.docker_host)
    pulumi.export("url", app.url)
    # Only edge nodes serve the web; the other DNS names are for SSH and operators.
    pulumi.export("urls", [f"https://{topology.fqdn(name)}/" for node in topology.edges for name in node.dns])


def application_secrets() -> dict[str, pulumi.Output[str]]:
    """The application's secrets, made once by pulumi_random and kept (encrypted) in the Pulumi state,
    so every machine that runs `pulumi up` deploys the same ones: the item_socket JWT key, the
    Traefik dashboard password (`pulumi stack output --show-secrets dashboard_password`) and the
    Redis and PostgreSQL passwords of item_socket's scale-out (letters and digits: no quoting in
    Redis' configuration or libpq's password file)."""
    jwt = random.RandomPassword("app-jwt-secret", length=64, special=False)
    dashboard = random.RandomPassword("app-dashboard-password", length=24, special=False)
    redis_password = random.RandomPassword("app-redis-password", length=40, special=False)
    postgres_password = random.RandomPassword("app-postgres-password", length=40, special=False)
    return {
        JWT_KEY: pulumi.Output.secret(jwt.result),
        DASHBOARD_PASSWORD_KEY: pulumi.Output.secret(dashboard.result),
        REDIS_PASSWORD_KEY: pulumi.Output.secret(redis_password.result),
        POSTGRES_PASSWORD_KEY: pulumi.Output.secret(postgres_password.result),
    }


def deploy_cloud(config: stack_config.StackConfig) -> None:
    """Servers, firewalls, DNS, mesh, swarm and the application stack on it."""
    topology = config.topology
    ssh_private_key = config.ssh_private_key
    assert ssh_private_key is not None  # a required credential, checked by load_topology
    assert topology.ssh is not None and topology.domain is not None  # load_topology guarantees both
    ctx = ProvisionContext(
        environment=topology.environment,
        ssh_user=topology.ssh.user,
        ssh_public_key=topology.ssh.public_key,
        ssh_private_key=ssh_private_key,
        mesh_ips=topology.mesh_addresses(),
        admin_ssh_cidrs=topology.admin_ssh_cidrs,
        aws_provider_settings=config.aws_provider_settings,
        authorized_keys=topology.ssh.authorized_keys,
        existing_keys=topology.ssh.existing_keys,
        upgrade_times=upgrade_times([node.name for node in topology.nodes]),
    )
    hosts = provision_all(topology.nodes, ctx, topology.mesh.listen_port)
    records = plan_records(topology, {host.name: host for host in hosts})
    dns_resources = create_records(
        topology.dns.provider, topology.domain, records, adopt_existing=topology.dns.adopt_existing
    )
    mesh = Mesh(
        "mesh",
        MeshArgs(
            hosts=hosts,
            listen_port=topology.mesh.listen_port,
            cidr=topology.mesh.cidr,
            ssh_private_key=ssh_private_key,
        ),
        opts=pulumi.ResourceOptions(depends_on=[r for host in hosts for r in host.resources]),
    )
    swarm = Swarm(
        "swarm",
        SwarmArgs(hosts=hosts, ssh_private_key=ssh_private_key),
        opts=pulumi.ResourceOptions(depends_on=[mesh]),
    )
    app_secrets = application_secrets()
    app = AppStack(
        "app",
        AppStackArgs(
            settings_for_topology(topology, alerting=config.alerting),
            docker_host=swarm.docker_host,
            secret_environment=config.alert_secrets,
            cloud=CloudDeployArgs(
                private_key=ssh_private_key,
                host_key=swarm.manager_host_key,
                host_name=swarm.manager_name,
                environment=topology.environment,
                app_secrets=app_secrets,
            ),
        ),
        opts=pulumi.ResourceOptions(depends_on=[swarm, *dns_resources]),
    )
    pulumi.export("dashboard_password", pulumi.Output.secret(app_secrets[DASHBOARD_PASSWORD_KEY]))
    export_outputs(topology, hosts, records, swarm, app)


def deploy_local(config: stack_config.StackConfig) -> None:
    """The application stack on the local Docker engine; no servers, no DNS."""
    settings = settings_for_environment(config.topology.environment)
    settings = dataclasses.replace(settings, alerting=config.alerting)
    app = AppStack(
        "app",
        AppStackArgs(settings, docker_host=None, secret_environment=config.alert_secrets),
    )
    export_outputs(config.topology, [], [], None, app)


def main() -> None:
    """Entry point: read the stack config, then deploy locally or to the clouds."""
    try:
        config = stack_config.load()
    except TopologyError as error:
        # RunError: Pulumi prints the message without a Python traceback.
        stack = pulumi.get_stack()
        raise pulumi.RunError(f"{error}\nFix stacks/Pulumi.{stack}.yaml and run again.") from None
    if config.topology.is_local:
        deploy_local(config)
    else:
        deploy_cloud(config)


main()
