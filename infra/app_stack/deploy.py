"""The one deploy function: rendered stack -> Docker endpoint (local socket or ssh://manager).

Layout (as in Kamal): `infra.app_stack.commands` builds argv lists and does no I/O;
`infra.docker_cli.DockerRunner` runs them (with DOCKER_HOST set for a remote engine); `deploy()`
strings the steps together, and the `spaced` CLI (`infra.cli`) is the one place that prints errors:

1. make sure every Docker secret exists (`infra.app_stack.stack_secrets`);
2. render the stack once, with those secrets' names, and write it under `build/<env>/`;
3. `docker stack deploy --prune -c build/<env>/docker-stack.yml <stack>`;
4. wait, bounded, until every service has rolled (`infra.app_stack.rollout`: its update completed,
   its tasks run the new spec and are healthy); when an update fails, roll the service back and
   raise ConvergenceError with its last log lines.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.app_stack import commands
from infra.app_stack.commands import LOG_TAIL_LINES
from infra.app_stack.errors import ConvergenceError, PortInUseError, SwarmInactiveError
from infra.app_stack.model import StackSettings
from infra.app_stack.render import RenderedStack, render_stack, stack_secret_specs, write_stack
from infra.app_stack.rollout import (
    ROLLING_BACK,
    Rollout,
    ServiceState,
    TaskFailure,
    TaskSnapshot,
    UpdateStatus,
    parse_failed_tasks,
    parse_service_list,
    parse_services,
    parse_tasks,
    rollout_state,
)
from infra.app_stack.stack_secrets import BUILD_DIR, ensure_secrets, local_secret_contents, secrets_dir_for
from infra.docker_cli import DockerCommandError, DockerRunner

Progress = Callable[[str], None]
DEFAULT_TIMEOUT = 300.0
POLL_INTERVAL = 2.0
FAILED_TASKS_BEFORE_GIVING_UP = 3


def ensure_swarm_manager(runner: DockerRunner) -> None:
    """Raise unless the engine answers and is a swarm manager."""
    out = runner.run(commands.swarm_state_command()).stdout.split()
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


@dataclass(frozen=True)
class Baseline:
    """The stack's state just before a deploy: failures and rollbacks from earlier deploys do not count."""

    failed_tasks: Mapping[str, set[str]]
    updates: Mapping[str, UpdateStatus]


def take_baseline(runner: DockerRunner, services: Sequence[str]) -> Baseline:
    """Failed task IDs and update status of the services that exist already."""
    failed = {}
    for service in services:
        result = runner.run(commands.service_tasks_command(service), check=False)
        failed[service] = (
            {f.task_id for f in parse_failed_tasks(result.stdout)} if result.returncode == 0 else set()
        )
    inspected = (
        parse_services(runner.run(commands.service_inspect_command(services), check=False).stdout)
        if services
        else {}
    )
    return Baseline(failed_tasks=failed, updates={name: s.update for name, s in inspected.items()})


def observe_rollouts(
    runner: DockerRunner, stack: str, expected: Sequence[str], baseline: Baseline
) -> tuple[list[ServiceState], dict[str, Rollout]]:
    """One look at the stack: replica counts and, for each expected service, where its rollout stands."""
    states = parse_service_list(runner.run(commands.service_list_command(stack)).stdout)
    by_name = {s.name: s for s in states}
    present = [name for name in expected if name in by_name]
    # check=False: a service or task removed between two commands is simply missing from the output.
    services = (
        parse_services(runner.run(commands.service_inspect_command(present), check=False).stdout)
        if present
        else {}
    )
    task_ids = runner.run(commands.stack_running_tasks_command(stack), check=False).stdout.split()
    tasks = (
        parse_tasks(runner.run(commands.task_inspect_command(task_ids), check=False).stdout)
        if task_ids
        else []
    )
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

    A task refused because its host-mode port is still held is progress, not failure: during a
    stop-first update the old task keeps the port until it has stopped (Traefik: its grace period),
    and swarm retries. Only when such refusals persist until `timeout` is PortInUseError raised.
    """
    deadline = time.monotonic() + timeout
    last_report = ""
    port_refusals: dict[str, TaskFailure] = {}
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
            result = runner.run(commands.service_tasks_command(name), check=False)
            if result.returncode != 0:
                continue
            new = [
                f
                for f in parse_failed_tasks(result.stdout)
                if f.task_id not in baseline.failed_tasks.get(name, set())
            ]
            refused = [f for f in new if port_held(f.error)]
            if refused and name not in port_refusals:
                progress(f"{name}: its port is still held ({refused[0].error}); swarm retries")
            if refused:
                port_refusals[name] = refused[0]
            failures = [f for f in new if not port_held(f.error)]
            if len(failures) >= FAILED_TASKS_BEFORE_GIVING_UP:
                raise ConvergenceError(
                    failure_message(runner, name, f"{len(failures)} tasks failed, last: {failures[0].error}")
                )
        if time.monotonic() >= deadline:
            held = [r.service for r in pending if r.service in port_refusals]
            if held:
                raise PortInUseError(
                    f"{held[0]} could not publish its port for {timeout:.0f}s: "
                    f"{port_refusals[held[0]].error}. "
                    "Free the port or choose another one (spaced up local --http-port N / SPACED_HTTP_PORT, "
                    "SPACED_PROMETHEUS_PORT)"
                )
            raise ConvergenceError(
                failure_message(
                    runner, pending[0].service, f"not rolled out after {timeout:.0f}s: {pending[0].reason}"
                )
            )
        time.sleep(poll_interval)


def port_held(error: str) -> bool:
    """Whether a task error says its host-mode port was taken (by an old task or another program)."""
    return "port already in use" in error or "address already in use" in error


def failure_message(runner: DockerRunner, service: str, reason: str) -> str:
    """Roll `service` back unless swarm did already, and describe it with its last log lines."""
    snapshot = parse_services(
        runner.run(commands.service_inspect_command([service]), check=False).stdout
    ).get(service)
    state = snapshot.update.state if snapshot else ""
    if state in (ROLLING_BACK, "rollback_completed"):
        action = "swarm rolled it back to its previous version (update_config failure_action)"
    elif state == "rollback_paused":
        action = (
            "swarm's rollback failed too and is paused; inspect it with "
            f"`docker service ps {service}` and deploy a fixed version"
        )
    elif snapshot is not None and snapshot.has_previous_spec:
        rollback = runner.run(commands.service_rollback_command(service), check=False)
        action = (
            "rolled back to its previous version"
            if rollback.returncode == 0
            else f"rollback failed: {rollback.stderr.strip()}"
        )
    else:
        action = "first deploy of this service: nothing to roll back to"
    logs = runner.run(commands.service_logs_command(service), check=False)
    tail = (logs.stdout + logs.stderr).strip() or "(no log lines)"
    return (
        f"service {service}: {reason}; {action}.\n"
        f"Last {LOG_TAIL_LINES} log lines (docker service logs {service}):\n{tail}"
    )


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
    stale = [n for n in runner.run(commands.config_list_command(stack)).stdout.split() if n not in current]
    if stale:
        runner.run(commands.config_remove_command(stale), check=False)


def stale_secrets(secrets: Sequence[tuple[str, str]], current: Mapping[str, str]) -> list[str]:
    """Docker secrets to remove: for each key of `current` (key -> the name now deployed), every
    secret `<stack>_<key>_<hash>` but the current one and the newest other (the previous, kept for
    a rollback). `secrets`: (name, created as an ISO timestamp) of the stack's secrets."""
    stale = []
    for name in current.values():
        same_key = re.compile(re.escape(name.rsplit("_", 1)[0]) + r"_[0-9a-f]{12}")
        others = sorted(
            ((created, other) for other, created in secrets if same_key.fullmatch(other) and other != name),
            reverse=True,
        )
        stale += [other for _, other in others[1:]]
    return sorted(stale)


def prune_old_secrets(runner: DockerRunner, stack: str, current: Mapping[str, str]) -> None:
    """Remove the stack's secrets older than the current and previous of each key (in-use ones are
    refused by the engine and stay)."""
    names = runner.run(commands.secret_list_command(stack)).stdout.split()
    if not names:
        return
    inspected = json.loads(runner.run(commands.secret_inspect_command(names)).stdout or "[]")
    listed = [(s["Spec"]["Name"], s["CreatedAt"]) for s in inspected]
    stale = stale_secrets(listed, current)
    if stale:
        runner.run(commands.secret_remove_command(stale), check=False)


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
    contents = local_secret_contents(stack_secret_specs(settings), secrets_dir, env)
    names = ensure_secrets(runner, stack, contents, progress)
    rendered = render_stack(settings, secret_names=names)
    compose_file = write_stack(rendered, out_dir)
    progress(f"rendered {compose_file}")

    expected = [f"{stack}_{name}" for name in rendered.compose["services"]]
    existing = [s.name for s in parse_service_list(runner.run(commands.service_list_command(stack)).stdout)]
    baseline = take_baseline(runner, [s for s in expected if s in existing])

    if not settings.alerting.receivers:
        progress(
            "note: spaced:alerting names no receiver, so alerts go nowhere (README: Alerting); "
            "`spaced alerts` shows them"
        )
    progress(f"deploying stack {stack} to {runner.describe()}")
    runner.run(commands.stack_deploy_command(stack, compose_file, detach_flag=runner.supports_stack_detach()))
    states = wait_for_convergence(runner, stack, expected, baseline, timeout=timeout, progress=progress)
    prune_old_configs(runner, rendered)
    prune_old_secrets(runner, stack, names)
    progress(f"stack {stack} is up: " + ", ".join(f"{s.name} {s.running}/{s.desired}" for s in states))
    return DeployResult(compose_file=compose_file, services=states, secrets_dir=secrets_dir)


def remove(
    stack: str, docker_host: str | None = None, progress: Progress = print, timeout: float = 120.0
) -> None:
    """`docker stack rm`, then wait until the stack is gone (`wait_until_gone`). Volumes and secrets stay."""
    runner = DockerRunner(docker_host=docker_host)
    runner.run(commands.stack_remove_command(stack))
    wait_until_gone(runner, stack, progress, timeout)
    progress(f"stack {stack} removed (volumes and secrets kept)")


def wait_until_gone(runner: DockerRunner, stack: str, progress: Progress, timeout: float = 120.0) -> None:
    """Wait (bounded by `timeout` s) until the stack's services, containers and networks are gone,
    reporting what is left whenever that changes.

    Raises DockerCommandError naming what is still there after `timeout`.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while left := stack_leftovers(runner, stack):
        report = ", ".join(f"{count} {kind}" for kind, count in left.items())
        if report != last:
            progress(f"waiting for stack {stack} to go: {report} left")
            last = report
        if time.monotonic() >= deadline:
            raise DockerCommandError(
                f"stack {stack} still has {report} after {timeout:.0f}s; see `docker stack ps {stack}` "
                "and `docker network ls`"
            )
        time.sleep(POLL_INTERVAL)


def stack_leftovers(runner: DockerRunner, stack: str) -> dict[str, int]:
    """What of the stack still exists: {"services"|"containers"|"networks": count}, zero counts left out.

    Containers outlive their services for the stop grace period, and their networks outlive them:
    only when all three are gone can the same ports and network names be used again.
    """
    counts = {
        "services": len(parse_service_list(runner.run(commands.service_list_command(stack)).stdout)),
        "containers": len(runner.run(commands.stack_containers_command(stack)).stdout.split()),
        "networks": len(runner.run(commands.stack_networks_command(stack)).stdout.split()),
    }
    return {kind: count for kind, count in counts.items() if count}
