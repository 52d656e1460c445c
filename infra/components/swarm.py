"""The Docker Swarm as Pulumi resources: remote commands over SSH that run the scripts of
infra/plans/swarm.py.

Per swarm, on the first manager: `init` (wait for cloud-init, `docker swarm init` on the mesh
address) and `join-tokens` (stdout is a secret: `additional_secret_outputs`, no logging, and
`Output.secret` on everything derived from it).

Per joining node, three commands whose creation order makes the deletion order right when a node
is removed from the topology (Pulumi deletes dependents first):
  1. `<node>-remove`  on the first manager; create: nothing; delete: `docker node rm` once the node is down.
  2. `<node>-join`    on the node, depends on 1; create: join (token on stdin); delete: leave the swarm.
  3. `<node>-labels`  on the first manager, depends on 2; create: labels (+ promote managers);
                      delete: demote + drain.
So removal runs drain (3), leave (2), rm (1). Every command is `delete_before_replace`, so a
replaced join leaves before it joins again.

The scripts are idempotent and the inputs are stable (no timestamps, no random values), so a second
`pulumi up` finds no changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi_command import remote

from infra.connection import ssh_connection
from infra.host import Host
from infra.plans import swarm as plan

# The per-dial timeout and retry count allow for a server that is still booting.
SSH_DIAL_ERROR_LIMIT = 30
SSH_PER_DIAL_TIMEOUT_S = 30


@dataclass(frozen=True)
class SwarmArgs:
    """Inputs of `Swarm`: the provisioned hosts and the SSH key that reaches them."""

    hosts: Sequence[Host]
    ssh_private_key: pulumi.Input[str]


def _dependencies(opts: pulumi.ResourceOptions | None) -> list[pulumi.Resource]:
    # A component's depends_on does not hold back its children's registrations, so the children
    # get the caller's dependencies (typically the mesh) explicitly.
    if opts is None or opts.depends_on is None:
        return []
    if isinstance(opts.depends_on, pulumi.Resource):
        return [opts.depends_on]
    if isinstance(opts.depends_on, Sequence):
        return [dependency for dependency in opts.depends_on if isinstance(dependency, pulumi.Resource)]
    return []


class Swarm(pulumi.ComponentResource):
    """A Docker Swarm over the hosts' mesh addresses."""

    manager_ip: pulumi.Output[str]  # mesh address of the first manager
    manager_name: str  # node name of the first manager
    manager_host_key: pulumi.Output[str]  # its pinned SSH host key (what the deploy's ssh checks)
    docker_host: pulumi.Output[str]  # ssh://<user>@<public ipv4 of the first manager>
    node_ids: dict[str, pulumi.Output[str]]  # swarm node id per host name
    join_tokens: pulumi.Output[dict[str, str]]  # secret: {"worker": ..., "manager": ...}
    commands: dict[str, remote.Command]  # every remote command by logical name

    def __init__(self, name: str, args: SwarmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spaced:swarm:Swarm", name, None, opts)
        swarm_plan = plan.plan_swarm(args.hosts)
        hosts = {host.name: host for host in args.hosts}
        private_key = pulumi.Output.secret(args.ssh_private_key)
        caller_dependencies = _dependencies(opts)

        def connection(host: Host) -> remote.ConnectionArgs:
            # The deploy key, and the host's key pinned: another server at that address stops the run.
            return ssh_connection(
                host,
                private_key,
                dial_error_limit=SSH_DIAL_ERROR_LIMIT,
                per_dial_timeout=SSH_PER_DIAL_TIMEOUT_S,
            )

        def options(host: Host, *depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(
                parent=self,
                depends_on=[*caller_dependencies, *host.resources, *depends_on],
                delete_before_replace=True,
            )

        self.commands = {}

        def command(resource_name: str, **kwargs: Any) -> remote.Command:
            self.commands[resource_name] = remote.Command(resource_name, **kwargs)
            return self.commands[resource_name]

        first = swarm_plan.first_manager
        first_host = hosts[first.name]
        manager_connection = connection(first_host)

        # A replaced first manager must join the swarm the other managers still run, not start a
        # second one: each other manager offers its address and manager token (a secret) to init.
        # The first manager's server identity is part of these commands' stdin, so its replacement
        # runs them again as an update (a trigger would replace init, whose delete leaves the swarm).
        first_server = pulumi.Output.from_input(first_host.server_id or "").apply(str)
        probes = [
            command(
                f"{name}-{other.name}-manager-probe",
                connection=connection(hosts[other.name]),
                create=plan.bash_command(plan.manager_probe_script()),
                stdin=first_server.apply(lambda server: f"# first manager server {server}\n"),
                logging=remote.Logging.NONE,
                opts=pulumi.ResourceOptions.merge(
                    options(hosts[other.name]), pulumi.ResourceOptions(additional_secret_outputs=["stdout"])
                ),
            )
            for other in swarm_plan.joining
            if other.manager
        ]
        offers = pulumi.Output.secret(
            pulumi.Output.all(first_server, *[probe.stdout for probe in probes]).apply(
                lambda values: f"# first manager server {values[0]}\n" + "".join(values[1:])
            )
        )
        init = command(
            f"{name}-{first.name}-init",
            connection=manager_connection,
            create=plan.bash_command(plan.init_script(first.mesh_ip, node_name=first.name)),
            stdin=offers,
            # Destroying the swarm: the first manager goes last (every join depends on it).
            delete=plan.bash_command(plan.leave_script(force=True)),
            triggers=[first.mesh_ip],
            logging=remote.Logging.STDERR,
            opts=pulumi.ResourceOptions.merge(
                options(first_host, *probes), pulumi.ResourceOptions(additional_secret_outputs=["stdin"])
            ),
        )
        tokens = command(
            f"{name}-join-tokens",
            connection=manager_connection,
            create=plan.bash_command(plan.print_join_tokens_script()),
            triggers=[init.id],
            logging=remote.Logging.NONE,
            opts=pulumi.ResourceOptions.merge(
                options(first_host, init), pulumi.ResourceOptions(additional_secret_outputs=["stdout"])
            ),
        )
        self.join_tokens = pulumi.Output.secret(tokens.stdout).apply(plan.parse_join_tokens)
        worker_token = pulumi.Output.secret(self.join_tokens.apply(lambda found: found["worker"]))
        manager_token = pulumi.Output.secret(self.join_tokens.apply(lambda found: found["manager"]))

        first_id = init.stdout.apply(plan.parse_node_id)
        command(
            f"{name}-{first.name}-labels",
            connection=manager_connection,
            create=first_id.apply(
                lambda node_id: plan.bash_command(plan.label_script(node_id, first.labels, manager=True))
            ),
            triggers=[first_id],
            opts=options(first_host, init),
        )
        self.node_ids = {first.name: first_id}

        for node in swarm_plan.joining:
            host = hosts[node.name]
            remove = command(
                f"{name}-{node.name}-remove",
                connection=manager_connection,
                create="true",
                delete=plan.bash_command(plan.remove_node_script(node.name)),
                triggers=[node.name],
                opts=options(first_host, init),
            )
            join = command(
                f"{name}-{node.name}-join",
                connection=connection(host),
                create=plan.bash_command(plan.join_script(first.mesh_ip, node.mesh_ip)),
                stdin=(manager_token if node.manager else worker_token).apply(lambda token: f"{token}\n"),
                delete=plan.bash_command(plan.leave_script()),
                # A new manager address or a role change means leaving and joining again.
                triggers=[first.mesh_ip, node.mesh_ip, node.role],
                opts=pulumi.ResourceOptions.merge(
                    options(host, tokens, remove), pulumi.ResourceOptions(additional_secret_outputs=["stdin"])
                ),
            )
            node_id = join.stdout.apply(plan.parse_node_id)
            command(
                f"{name}-{node.name}-labels",
                connection=manager_connection,
                create=node_id.apply(
                    lambda node_id, node=node: plan.bash_command(
                        plan.label_script(node_id, node.labels, manager=node.manager)
                    )
                ),
                delete=node_id.apply(
                    lambda node_id, node=node: plan.bash_command(
                        plan.drain_script(node_id, manager=node.manager)
                    )
                ),
                triggers=[node_id],
                opts=options(first_host, join),
            )
            self.node_ids[node.name] = node_id

        self.manager_ip = pulumi.Output.from_input(first.mesh_ip)
        self.manager_name = first.name
        self.manager_host_key = pulumi.Output.from_input(first_host.host_key or "")
        self.docker_host = pulumi.Output.concat("ssh://", first_host.ssh_user, "@", first_host.public_ipv4)
        self.register_outputs(
            {"manager_ip": self.manager_ip, "docker_host": self.docker_host, "node_ids": self.node_ids}
        )
