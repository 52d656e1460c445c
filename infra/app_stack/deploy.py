"""The one deploy function: rendered stack -> Docker endpoint (local socket or ssh://manager).

Layout (as in Kamal): the `*_command` functions build argv lists and do no I/O; `DockerRunner` runs
them (with DOCKER_HOST set for a remote engine); `deploy()` strings the steps together:

1. render the stack and write it under `build/<env>/` (never committed);
2. make sure every Docker secret exists: its content is generated once into `build/<env>/secrets/`
   (mode 0600) and the Docker secret is named `<stack>_<key>_<sha256[:12]>`;
3. `docker stack deploy --prune -c build/<env>/docker-stack.yml <stack>`;
4. wait, bounded, until every service has rolled (`infra.app_stack.rollout`: its update completed,
   its tasks run the new spec and are healthy); when an update fails, roll the service back and
   raise ConvergenceError with its last log lines.

`python -m infra.app_stack.deploy --env <env>` is what the Pulumi component runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.app_stack.environments import REPO_ROOT, settings_for_environment
from infra.app_stack.model import SecretSpec, StackSettings, content_hash
from infra.app_stack.render import RenderedStack, render_stack, write_stack
from infra.app_stack.rollout import (
    ROLLING_BACK,
    Rollout,
    TaskSnapshot,
    UpdateStatus,
    parse_services,
    parse_tasks,
    rollout_state,
)
from infra.app_stack.services.item_socket import JWT_SECRET
from infra.app_stack.services.traefik import DASHBOARD_USERS

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
BUILD_DIR = REPO_ROOT / "build"
DEFAULT_TIMEOUT = 300.0
POLL_INTERVAL = 2.0
FAILED_TASKS_BEFORE_GIVING_UP = 3
LOG_TAIL_LINES = 50
DASHBOARD_USER = "admin"
DASHBOARD_PASSWORD_FILE = "traefik_dashboard_password"


# --- errors: one class per failure, each with what to do next -------------------------------------


class DeployError(Exception):
    """Base of every deploy failure; `str()` is a message naming what to do next."""

    kind = "DeployError"


class DockerUnavailableError(DeployError):
    """The Docker engine does not answer."""

    kind = "DockerUnavailable"


class SwarmInactiveError(DeployError):
    """The engine is not a swarm manager."""

    kind = "SwarmInactive"


class PortInUseError(DeployError):
    """A port the local stack publishes is taken by another program."""

    kind = "PortInUse"


class StackDeployError(DeployError):
    """`docker stack deploy` (or another docker command) failed."""

    kind = "StackDeployFailed"


class ConvergenceError(DeployError):
    """A service did not reach its desired healthy tasks in time (it has been rolled back)."""

    kind = "ServiceUnhealthy"


# --- pure command builders ---------------------------------------------------------------------------


def docker_environment(docker_host: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Process environment for docker commands: DOCKER_HOST set for a remote engine."""
    env = dict(os.environ if base is None else base)
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return env


def swarm_state_command() -> list[str]:
    """Prints the engine's swarm state (`active`, `inactive`, ...) and whether it is a manager."""
    return ["docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"]


def secret_list_command(stack: str) -> list[str]:
    """Names of the stack's Docker secrets."""
    return ["docker", "secret", "ls", "--filter", f"label=spaced.stack={stack}", "--format", "{{.Name}}"]


def secret_create_command(stack: str, name: str) -> list[str]:
    """Create a Docker secret named `name` from stdin (the content never appears in argv)."""
    return ["docker", "secret", "create", "--label", f"spaced.stack={stack}", name, "-"]


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


# --- pure parsers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceState:
    """Running vs desired tasks of one service, from `docker service ls`."""

    name: str
    running: int
    desired: int

    @property
    def converged(self) -> bool:
        """All desired tasks run. Counts only: also true while an update has not rolled yet (the old
        tasks still run), which is why the deploy waits on `infra.app_stack.rollout` instead."""
        return self.desired > 0 and self.running == self.desired


_REPLICAS = re.compile(r"^(\d+)/(\d+)")


def parse_service_list(output: str) -> list[ServiceState]:
    """Parse `docker service ls --format '{{json .}}'` lines."""
    states = []
    for line in output.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        match = _REPLICAS.match(row.get("Replicas", ""))
        running, desired = (int(match[1]), int(match[2])) if match else (0, 0)
        states.append(ServiceState(name=row["Name"], running=running, desired=desired))
    return sorted(states, key=lambda s: s.name)


@dataclass(frozen=True)
class TaskFailure:
    """A task that ended in an error."""

    task_id: str
    error: str


def parse_failed_tasks(output: str) -> list[TaskFailure]:
    """Failed or rejected tasks from `docker service ps --format '{{json .}}'` lines."""
    failures = []
    for line in output.splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        state = row.get("CurrentState", "")
        if row.get("Error") or state.startswith(("Failed", "Rejected")):
            failures.append(TaskFailure(task_id=row["ID"], error=row.get("Error") or state))
    return failures


# --- running ---------------------------------------------------------------------------------------


@dataclass
class DockerRunner:
    """Runs docker commands against one engine; every call is bounded by `command_timeout`."""

    docker_host: str | None = None
    command_timeout: float = 120.0
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = docker_environment(self.docker_host)

    def run(
        self, cmd: Sequence[str], *, stdin: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd`; on failure raise StackDeployError with its stderr (or DockerUnavailableError)."""
        log.debug("running %s", " ".join(cmd))
        try:
            result = subprocess.run(
                list(cmd),
                input=stdin.decode() if stdin is not None else None,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=self.command_timeout,
                check=False,
            )
        except FileNotFoundError:
            raise DockerUnavailableError(
                "the docker CLI is not installed; run `make deps` (installs docker.io)"
            ) from None
        except subprocess.TimeoutExpired:
            raise StackDeployError(
                f"`{' '.join(cmd[:4])}` did not finish within {self.command_timeout:.0f}s; "
                f"check the engine at {self.describe()}"
            ) from None
        if check and result.returncode != 0:
            stderr = result.stderr.strip()
            if _engine_unreachable(stderr):
                raise DockerUnavailableError(self.unreachable_message(stderr))
            raise StackDeployError(f"`{' '.join(cmd[:4])}` failed: {stderr or result.stdout.strip()}")
        return result

    def describe(self) -> str:
        """Where the engine is, for messages."""
        return (
            self.docker_host
            or self.env.get("DOCKER_HOST")
            or "the local engine (unix:///var/run/docker.sock)"
        )

    def unreachable_message(self, stderr: str) -> str:
        """What to do when the engine does not answer."""
        first_line = stderr.splitlines()[0] if stderr else "no answer"
        if self.describe().startswith("ssh://"):
            return (
                f"no Docker engine answers at {self.describe()} ({first_line}); "
                "check --docker-host / DOCKER_HOST and that the manager is reachable over SSH"
            )
        return (
            f"no Docker engine answers at {self.describe()} ({first_line}); start dockerd (make services)"
            " or point DOCKER_HOST at a running engine"
        )

    def supports_stack_detach(self) -> bool:
        """Whether this docker CLI has `docker stack deploy --detach` (CLI 25+)."""
        help_text = self.run(["docker", "stack", "deploy", "--help"], check=False).stdout
        return "--detach" in help_text


def _engine_unreachable(stderr: str) -> bool:
    markers = ("Cannot connect to the Docker daemon", "error during connect", "Is the docker daemon running")
    return any(m.lower() in stderr.lower() for m in markers)


def ensure_swarm_manager(runner: DockerRunner) -> None:
    """Raise unless the engine answers and is a swarm manager."""
    out = runner.run(swarm_state_command()).stdout.split()
    state, is_manager = ([*out, "", ""])[:2]
    if state != "active":
        raise SwarmInactiveError(
            f"the engine at {runner.describe()} is not in swarm mode (state {state or 'unknown'}); "
            "`spaced up local` initialises it locally, the cloud's swarm comes from `pulumi up`"
        )
    if is_manager != "true":
        raise SwarmInactiveError(
            f"the engine at {runner.describe()} is a swarm worker; point DOCKER_HOST at a manager"
        )


# --- secrets ----------------------------------------------------------------------------------------


def generate_secret(key: str, secrets_dir: Path, env: Mapping[str, str]) -> bytes:
    """Fresh content for secret `key` (also writes the dashboard password file next to it)."""
    if key == JWT_SECRET:
        return secrets.token_urlsafe(48).encode()
    if key == DASHBOARD_USERS:
        import bcrypt  # only needed when a new users file is made

        password = env.get("SPACED_DASHBOARD_PASSWORD") or secrets.token_urlsafe(18)
        _write_private(secrets_dir / DASHBOARD_PASSWORD_FILE, password.encode())
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        return f"{DASHBOARD_USER}:{hashed}\n".encode()
    raise ValueError(f"no generator for secret {key!r}")


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def secrets_dir_for(environment: str, build_dir: Path = BUILD_DIR) -> Path:
    """Where an environment's generated secrets live on the deploying machine (gitignored, 0600)."""
    return build_dir / environment / "secrets"


def local_secret_contents(
    specs: Sequence[SecretSpec], secrets_dir: Path, env: Mapping[str, str]
) -> dict[str, bytes]:
    """Each secret's content: read from `secrets_dir`, generated there on first use."""
    contents = {}
    for spec in specs:
        path = secrets_dir / spec.key
        if not path.is_file():
            _write_private(path, generate_secret(spec.key, secrets_dir, env))
        contents[spec.key] = path.read_bytes()
    return contents


def secret_docker_names(stack: str, contents: Mapping[str, bytes]) -> dict[str, str]:
    """Content-hashed Docker names of the secrets: new content, new secret, rolled services."""
    return {key: f"{stack}_{key}_{content_hash(data)}" for key, data in contents.items()}


def ensure_secrets(
    runner: DockerRunner, stack: str, contents: Mapping[str, bytes], progress: Progress
) -> dict[str, str]:
    """Create the Docker secrets that do not exist yet; returns key -> Docker name."""
    names = secret_docker_names(stack, contents)
    existing = set(runner.run(secret_list_command(stack)).stdout.split())
    for key, name in names.items():
        if name not in existing:
            progress(f"creating Docker secret {name}")
            runner.run(secret_create_command(stack, name), stdin=contents[key])
    return names


# --- waiting ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """The stack's state just before a deploy: failures and rollbacks from earlier deploys do not count."""

    failed_tasks: Mapping[str, set[str]]
    updates: Mapping[str, UpdateStatus]


def take_baseline(runner: DockerRunner, services: Sequence[str]) -> Baseline:
    """Failed task IDs and update status of the services that exist already."""
    failed = {}
    for service in services:
        result = runner.run(service_tasks_command(service), check=False)
        failed[service] = (
            {f.task_id for f in parse_failed_tasks(result.stdout)} if result.returncode == 0 else set()
        )
    inspected = (
        parse_services(runner.run(service_inspect_command(services), check=False).stdout) if services else {}
    )
    return Baseline(failed_tasks=failed, updates={name: s.update for name, s in inspected.items()})


def observe_rollouts(
    runner: DockerRunner, stack: str, expected: Sequence[str], baseline: Baseline
) -> tuple[list[ServiceState], dict[str, Rollout]]:
    """One look at the stack: replica counts and, for each expected service, where its rollout stands."""
    states = parse_service_list(runner.run(service_list_command(stack)).stdout)
    by_name = {s.name: s for s in states}
    present = [name for name in expected if name in by_name]
    # check=False: a service or task removed between two commands is simply missing from the output.
    services = (
        parse_services(runner.run(service_inspect_command(present), check=False).stdout) if present else {}
    )
    task_ids = runner.run(stack_running_tasks_command(stack), check=False).stdout.split()
    tasks = parse_tasks(runner.run(task_inspect_command(task_ids), check=False).stdout) if task_ids else []
    tasks_by_service: dict[str, list[TaskSnapshot]] = {}
    for task in tasks:
        tasks_by_service.setdefault(task.service_id, []).append(task)
    rollouts = {}
    for name in expected:
        service = services.get(name)
        if service is None:
            rollouts[name] = Rollout(service=name, phase="pending", reason="not created yet")
            continue
        rollouts[name] = rollout_state(
            service, tasks_by_service.get(service.id, []), by_name[name].desired, baseline.updates.get(name)
        )
    return states, rollouts


def progress_report(stack: str, states: Sequence[ServiceState], rollouts: Mapping[str, Rollout]) -> str:
    """One line: each service's running/desired tasks, with the reason when it has not rolled yet."""
    parts = []
    for state in states:
        rollout = rollouts.get(state.name)
        reason = f" ({rollout.reason})" if rollout and rollout.phase == "pending" else ""
        parts.append(f"{state.name.removeprefix(stack + '_')} {state.running}/{state.desired}{reason}")
    return ", ".join(parts)


def wait_for_convergence(
    runner: DockerRunner,
    stack: str,
    expected: Sequence[str],
    baseline: Baseline,
    *,
    timeout: float,
    progress: Progress,
    poll_interval: float = POLL_INTERVAL,
) -> list[ServiceState]:
    """Poll until every expected service has rolled: update completed, current spec, healthy tasks.

    Raises ConvergenceError naming the failing service as soon as swarm reports its update failed
    (rolled back or paused) or it has failed FAILED_TASKS_BEFORE_GIVING_UP new tasks, or when
    `timeout` passes; a service that swarm has not rolled back yet is rolled back first.
    """
    deadline = time.monotonic() + timeout
    last_report = ""
    while True:
        states, rollouts = observe_rollouts(runner, stack, expected, baseline)
        report = progress_report(stack, states, rollouts)
        if report != last_report:
            progress(f"waiting for services: {report}")
            last_report = report
        failed = [r for r in rollouts.values() if r.phase == "failed"]
        if failed:
            raise ConvergenceError(failure_message(runner, failed[0].service, failed[0].reason))
        pending = [r for r in rollouts.values() if r.phase == "pending"]
        if not pending:
            return states
        for name in (r.service for r in pending):
            result = runner.run(service_tasks_command(name), check=False)
            if result.returncode != 0:
                continue
            new = [
                f
                for f in parse_failed_tasks(result.stdout)
                if f.task_id not in baseline.failed_tasks.get(name, set())
            ]
            if any("port already in use" in f.error or "address already in use" in f.error for f in new):
                raise PortInUseError(
                    f"{name} cannot publish its port: {new[0].error}. Free the port or choose another one "
                    "(spaced up local --http-port N / SPACED_HTTP_PORT, SPACED_PROMETHEUS_PORT)"
                )
            if len(new) >= FAILED_TASKS_BEFORE_GIVING_UP:
                raise ConvergenceError(
                    failure_message(runner, name, f"{len(new)} tasks failed, last: {new[0].error}")
                )
        if time.monotonic() >= deadline:
            raise ConvergenceError(
                failure_message(
                    runner, pending[0].service, f"not rolled out after {timeout:.0f}s: {pending[0].reason}"
                )
            )
        time.sleep(poll_interval)


def failure_message(runner: DockerRunner, service: str, reason: str) -> str:
    """Roll `service` back unless swarm did already, and describe it with its last log lines."""
    snapshot = parse_services(runner.run(service_inspect_command([service]), check=False).stdout).get(service)
    state = snapshot.update.state if snapshot else ""
    if state in (ROLLING_BACK, "rollback_completed"):
        action = "swarm rolled it back to its previous version (update_config failure_action)"
    elif state == "rollback_paused":
        action = (
            "swarm's rollback failed too and is paused; inspect it with "
            f"`docker service ps {service}` and deploy a fixed version"
        )
    elif snapshot is not None and snapshot.has_previous_spec:
        rollback = runner.run(service_rollback_command(service), check=False)
        action = (
            "rolled back to its previous version"
            if rollback.returncode == 0
            else f"rollback failed: {rollback.stderr.strip()}"
        )
    else:
        action = "first deploy of this service: nothing to roll back to"
    logs = runner.run(service_logs_command(service), check=False)
    tail = (logs.stdout + logs.stderr).strip() or "(no log lines)"
    return (
        f"service {service}: {reason}; {action}.\n"
        f"Last {LOG_TAIL_LINES} log lines (docker service logs {service}):\n{tail}"
    )


# --- the deploy function ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployResult:
    """What a successful deploy produced."""

    compose_file: Path
    services: list[ServiceState]
    secrets_dir: Path


def prune_old_configs(runner: DockerRunner, rendered: RenderedStack) -> None:
    """Remove the stack's configs no longer referenced (in-use ones are refused by the engine)."""
    stack = rendered.settings.stack_name
    current = {c.docker_name(stack) for c in rendered.config_files}
    stale = [n for n in runner.run(config_list_command(stack)).stdout.split() if n not in current]
    if stale:
        runner.run(config_remove_command(stale), check=False)


def deploy(
    settings: StackSettings,
    docker_host: str | None = None,
    progress: Progress = print,
    timeout: float = DEFAULT_TIMEOUT,
    build_dir: Path = BUILD_DIR,
    env: Mapping[str, str] | None = None,
) -> DeployResult:
    """Deploy the stack to the engine at `docker_host` (None = local) and wait until it is healthy."""
    env = os.environ if env is None else env
    runner = DockerRunner(docker_host=docker_host)
    stack = settings.stack_name
    ensure_swarm_manager(runner)

    out_dir = build_dir / settings.environment
    secrets_dir = secrets_dir_for(settings.environment, build_dir)
    unresolved = render_stack(settings)
    contents = local_secret_contents(unresolved.secrets, secrets_dir, env)
    names = ensure_secrets(runner, stack, contents, progress)
    rendered = render_stack(settings, secret_names=names)
    compose_file = write_stack(rendered, out_dir)
    progress(f"rendered {compose_file}")

    expected = [f"{stack}_{name}" for name in rendered.compose["services"]]
    existing = [s.name for s in parse_service_list(runner.run(service_list_command(stack)).stdout)]
    baseline = take_baseline(runner, [s for s in expected if s in existing])

    progress(f"deploying stack {stack} to {runner.describe()}")
    runner.run(stack_deploy_command(stack, compose_file, detach_flag=runner.supports_stack_detach()))
    states = wait_for_convergence(runner, stack, expected, baseline, timeout=timeout, progress=progress)
    prune_old_configs(runner, rendered)
    progress(f"stack {stack} is up: " + ", ".join(f"{s.name} {s.running}/{s.desired}" for s in states))
    return DeployResult(compose_file=compose_file, services=states, secrets_dir=secrets_dir)


def remove(
    stack: str, docker_host: str | None = None, progress: Progress = print, timeout: float = 120.0
) -> None:
    """`docker stack rm` and wait (bounded) until its services are gone. Volumes and secrets stay."""
    runner = DockerRunner(docker_host=docker_host)
    runner.run(stack_remove_command(stack))
    deadline = time.monotonic() + timeout
    while parse_service_list(runner.run(service_list_command(stack)).stdout):
        if time.monotonic() >= deadline:
            raise StackDeployError(
                f"stack {stack} still has services after {timeout:.0f}s; see `docker service ls`"
            )
        time.sleep(POLL_INTERVAL)
    progress(f"stack {stack} removed (volumes and secrets kept)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m infra.app_stack.deploy` (what the Pulumi component runs)."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.app_stack.deploy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--env", required=True, help="environment (local or a stacks/Pulumi.<env>.yaml name)")
    parser.add_argument(
        "--docker-host", default=None, help="e.g. ssh://deploy@203.0.113.10 (default: DOCKER_HOST)"
    )
    parser.add_argument("--domain", default=None)
    parser.add_argument("--acme-email", default=None)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--remove", action="store_true", help="remove the stack instead of deploying it")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(message, flush=True)

    try:
        settings = settings_for_environment(args.env, domain=args.domain, acme_email=args.acme_email)
        if args.remove:
            remove(settings.stack_name, docker_host=args.docker_host)
        else:
            if settings.is_local:
                from infra.app_stack.local import prepare_local  # local.py builds on this module

                settings = prepare_local(settings, DockerRunner(args.docker_host), progress)
            deploy(
                settings,
                docker_host=args.docker_host,
                timeout=args.timeout,
                progress=progress,
            )
    except (DeployError, ValueError) as exc:
        kind = getattr(exc, "kind", type(exc).__name__)
        print(f"ERROR ({kind}): {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
