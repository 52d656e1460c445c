"""Docker CLI commands of the deploy, as argv lists: pure functions, no I/O (Kamal's `commands/`).

`infra.docker_cli.DockerRunner` runs them; `infra.app_stack.deploy` and `infra.app_stack.local`
string them together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOG_TAIL_LINES = 50


def swarm_state_command() -> list[str]:
    """Prints the engine's swarm state (`active`, `inactive`, ...) and whether it is a manager."""
    return ["docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"]


def secret_list_command(stack: str) -> list[str]:
    """Names of the stack's Docker secrets."""
    return ["docker", "secret", "ls", "--filter", f"label=spaced.stack={stack}", "--format", "{{.Name}}"]


def secret_create_command(stack: str, name: str) -> list[str]:
    """Create a Docker secret named `name` from stdin (the content never appears in argv)."""
    return ["docker", "secret", "create", "--label", f"spaced.stack={stack}", name, "-"]


def secret_inspect_command(names: Sequence[str]) -> list[str]:
    """Full JSON of secrets (Spec.Name, CreatedAt; never their content, which the API does not give)."""
    return ["docker", "secret", "inspect", *names]


def secret_remove_command(names: Sequence[str]) -> list[str]:
    """Remove secrets (the engine refuses those still in use)."""
    return ["docker", "secret", "rm", *names]


def stack_deploy_command(stack: str, compose_file: Path, *, detach_flag: bool = True) -> list[str]:
    """`docker stack deploy`; `--prune` removes services dropped from the file.

    `--detach=true` keeps today's behaviour explicit on CLIs that have the flag (25+); older CLIs
    always detach. No `--with-registry-auth`: images are local or public.
    """
    cmd = ["docker", "stack", "deploy", "--prune"]
    if detach_flag:
        cmd.append("--detach=true")
    return [*cmd, "-c", str(compose_file), stack]


def stack_remove_command(stack: str) -> list[str]:
    """Remove the stack's services, networks and configs (volumes and secrets stay)."""
    return ["docker", "stack", "rm", stack]


def service_list_command(stack: str) -> list[str]:
    """One JSON object per service of the stack (Name, Mode, Replicas, Image)."""
    return [
        "docker",
        "service",
        "ls",
        "--filter",
        f"label=com.docker.stack.namespace={stack}",
        "--format",
        "{{json .}}",
    ]


def service_inspect_command(services: Sequence[str]) -> list[str]:
    """Full JSON of the services (Spec, UpdateStatus, PreviousSpec)."""
    return ["docker", "service", "inspect", *services]


def stack_running_tasks_command(stack: str) -> list[str]:
    """IDs of the stack's tasks that swarm wants running (old ones being replaced are left out)."""
    return ["docker", "stack", "ps", "--no-trunc", "--quiet", "--filter", "desired-state=running", stack]


def task_inspect_command(task_ids: Sequence[str]) -> list[str]:
    """Full JSON of tasks (their spec copy, state, desired state)."""
    return ["docker", "inspect", "--type", "task", *task_ids]


def service_tasks_command(service: str) -> list[str]:
    """One JSON object per task of the service (ID, CurrentState, DesiredState, Error)."""
    return ["docker", "service", "ps", "--no-trunc", "--format", "{{json .}}", service]


def service_rollback_command(service: str) -> list[str]:
    """Return the service to its previous spec (detached: convergence is waited on separately)."""
    return ["docker", "service", "rollback", "--detach", service]


def service_logs_command(service: str, tail: int = LOG_TAIL_LINES) -> list[str]:
    """The service's last log lines, all tasks."""
    return ["docker", "service", "logs", "--tail", str(tail), "--no-trunc", "--timestamps", service]


def config_list_command(stack: str) -> list[str]:
    """Names of the stack's Docker configs."""
    return ["docker", "config", "ls", "--filter", f"label=spaced.stack={stack}", "--format", "{{.Name}}"]


def config_remove_command(names: Sequence[str]) -> list[str]:
    """Remove configs (the engine refuses those still in use, which is what we want)."""
    return ["docker", "config", "rm", *names]


def swarm_info_command() -> list[str]:
    """Swarm state and this node's ID."""
    return ["docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}}"]


def swarm_init_command(advertise_addr: str = "127.0.0.1") -> list[str]:
    """A one-node swarm that advertises on loopback only (nothing can join it from outside)."""
    return ["docker", "swarm", "init", "--advertise-addr", advertise_addr]


def node_label_command(node_id: str, labels: Mapping[str, str]) -> list[str]:
    """Add placement labels to a node."""
    args = [arg for key, value in sorted(labels.items()) for arg in ("--label-add", f"{key}={value}")]
    return ["docker", "node", "update", *args, node_id]


def image_present_command(image: str) -> list[str]:
    """Exit 0 when `image` is in the engine's image store."""
    return ["docker", "image", "inspect", "--format", "{{.Id}}", image]


def image_pull_command(image: str) -> list[str]:
    """Pull `image` from its registry."""
    return ["docker", "pull", "--quiet", image]


def stack_containers_command(stack: str) -> list[str]:
    """IDs of the stack's containers on this engine, stopped ones included."""
    return ["docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={stack}"]


def stack_networks_command(stack: str) -> list[str]:
    """IDs of the stack's networks."""
    return ["docker", "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}"]


def engine_version_command() -> list[str]:
    """The engine's version: answers only when the engine does."""
    return ["docker", "version", "--format", "{{.Server.Version}}"]


def port_holder_command(port: int) -> list[str]:
    """Containers publishing `port` on the host, with their stack (empty for other programs)."""
    return [
        "docker",
        "ps",
        "--filter",
        f"publish={port}",
        "--format",
        '{{.Names}} {{.Label "com.docker.stack.namespace"}}',
    ]


def service_image_command(service: str) -> list[str]:
    """The image reference a service's tasks run."""
    return ["docker", "service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", service]


def http_get_on_network_command(network: str, image: str, url: str) -> list[str]:
    """GET `url` from a throw-away container on an attachable overlay (the monitoring services are
    never published): busybox wget of the project's base, in `image`. No `-T`: Debian bookworm's
    busybox wget crashes on it (exit 139); the runner's timeout bounds the call."""
    return [
        "docker",
        "run",
        "--rm",
        "--network",
        network,
        "--entrypoint",
        "busybox",
        image,
        "wget",
        "-q",
        "-O",
        "-",
        url,
    ]


def job_from_service_command(
    spec: Mapping[str, Any], name: str, labels: Mapping[str, str], args: Sequence[str]
) -> list[str]:
    """`docker service create` of a one-off swarm job (`replicated-job`) shaped like the service
    whose `docker service inspect` Spec is `spec`: its image, environment, secrets, volumes, networks
    and placement, running `args` instead of the service's command. A job runs on whichever node
    the placement allows (the PostgreSQL node for the backups) and is reached, like its logs,
    through any manager: also over `ssh://`."""
    template = spec["TaskTemplate"]
    container = template["ContainerSpec"]
    cmd = [
        "docker", "service", "create", "--detach", "--quiet", "--name", name,
        "--mode", "replicated-job", "--restart-condition", "none",
    ]  # fmt: skip
    for key, value in sorted(labels.items()):
        cmd += ["--label", f"{key}={value}"]
    for variable in container.get("Env") or []:
        cmd += ["--env", variable]
    for secret in container.get("Secrets") or []:
        target = secret["File"]["Name"]
        mode = f"{secret['File'].get('Mode', 0o444):o}"
        cmd += ["--secret", f"source={secret['SecretName']},target={target},mode=0{mode}"]
    for mount in container.get("Mounts") or []:
        entry = f"type={mount['Type']},source={mount['Source']},target={mount['Target']}"
        if mount.get("ReadOnly"):
            entry += ",readonly"
        cmd += ["--mount", entry]
    for network in template.get("Networks") or []:
        cmd += ["--network", network["Target"]]
    for constraint in (template.get("Placement") or {}).get("Constraints") or []:
        cmd += ["--constraint", constraint]
    if container.get("User"):
        cmd += ["--user", container["User"]]
    return [*cmd, container["Image"].split("@", 1)[0], *args]


def service_task_states_command(service: str) -> list[str]:
    """Current state of each of a service's tasks, one per line (e.g. `Complete 2 seconds ago`)."""
    return ["docker", "service", "ps", "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}", service]


def service_raw_logs_command(service: str) -> list[str]:
    """A service's log lines as its tasks wrote them (no task prefix)."""
    return ["docker", "service", "logs", "--raw", "--no-trunc", service]


def service_remove_command(service: str) -> list[str]:
    """Remove a service (a finished job)."""
    return ["docker", "service", "rm", service]


def service_scale_command(service: str, replicas: int) -> list[str]:
    """Set a replicated service's replicas (detached: the caller waits, bounded)."""
    return ["docker", "service", "scale", "--detach", f"{service}={replicas}"]
