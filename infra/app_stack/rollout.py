"""Has a deploy rolled? Pure functions over `docker service inspect` and `docker inspect <task>` JSON.

Right after `docker stack deploy` every service still shows N/N in `docker service ls`: the old tasks
run and are healthy, the update has not started. So "converged" is decided here from three facts,
as swarm itself reports them:

1. the service's UpdateStatus: absent (a new service, or an update that replaced no task; swarm
   resets it on every spec change) or `completed`. `updating` and `rollback_started` are not done
   yet; `paused`, `rollback_paused` and `rollback_completed` mean the update failed.
2. every task swarm wants running runs the service's current task spec (the comparison mirrors
   swarm's own "is this task dirty" check: placement-only changes and defaults the API fills in
   do not count);
3. those tasks are in state `running`, which swarm reports only once the container's healthcheck
   has passed (until then the task is `starting`), and there are as many as desired.

No I/O here: `infra.app_stack.deploy` runs the docker commands and feeds their output in.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

COMPLETED = "completed"
UPDATING = "updating"
ROLLING_BACK = "rollback_started"
FAILED_UPDATE_STATES = frozenset({"paused", "rollback_paused", "rollback_completed"})
"""Terminal states of an update that did not go through (failure_action rollback, or pause)."""

# What the engine fills into `docker service inspect` (the CLI asks for insertDefaults) but not into
# a task's copy of the spec; from swarmkit's api/defaults.Service.Task as the engine API renders it.
_TASK_SPEC_DEFAULTS: dict[str, Any] = {
    "ContainerSpec": {"StopGracePeriod": 10_000_000_000},
    "RestartPolicy": {"Condition": "any", "Delay": 5_000_000_000},
    "Runtime": "container",
}
# Swarm does not replace a task when only the placement changed and its node still fits.
_IGNORED_TASK_SPEC_KEYS = ("Placement",)


@dataclass(frozen=True)
class UpdateStatus:
    """A service's last update as swarm reports it ("" state: no update since the last spec change)."""

    state: str = ""
    started_at: str = ""
    message: str = ""

    def same_update(self, other: UpdateStatus | None) -> bool:
        """True when `other` is this very update in this very state (nothing happened in between)."""
        return other is not None and (self.state, self.started_at) == (other.state, other.started_at)


@dataclass(frozen=True)
class ServiceSnapshot:
    """What `docker service inspect` says about one service."""

    id: str
    name: str
    version: int
    update: UpdateStatus
    has_previous_spec: bool
    task_template: Mapping[str, Any]


@dataclass(frozen=True)
class TaskSnapshot:
    """What `docker inspect <task>` says about one task."""

    id: str
    service_id: str
    state: str
    """Current state: new, pending, assigned, accepted, preparing, starting, running, failed, ..."""
    desired_state: str
    spec: Mapping[str, Any]
    image: str
    error: str


def parse_services(inspect_output: str) -> dict[str, ServiceSnapshot]:
    """Service name -> snapshot, from `docker service inspect` JSON (an array)."""
    services = {}
    for service in json.loads(inspect_output or "[]"):
        status = service.get("UpdateStatus") or {}
        spec = service["Spec"]
        services[spec["Name"]] = ServiceSnapshot(
            id=service["ID"],
            name=spec["Name"],
            version=int((service.get("Version") or {}).get("Index", 0)),
            update=UpdateStatus(
                state=status.get("State", ""),
                started_at=status.get("StartedAt", ""),
                message=status.get("Message", ""),
            ),
            has_previous_spec=service.get("PreviousSpec") is not None,
            task_template=spec.get("TaskTemplate") or {},
        )
    return services


def parse_tasks(inspect_output: str) -> list[TaskSnapshot]:
    """Tasks from `docker inspect --type task` JSON (an array; tasks gone meanwhile are simply absent)."""
    tasks = []
    for task in json.loads(inspect_output or "[]"):
        spec = task.get("Spec") or {}
        status = task.get("Status") or {}
        tasks.append(
            TaskSnapshot(
                id=task["ID"],
                service_id=task["ServiceID"],
                state=status.get("State", ""),
                desired_state=task.get("DesiredState", ""),
                spec=spec,
                image=(spec.get("ContainerSpec") or {}).get("Image", ""),
                error=status.get("Err", ""),
            )
        )
    return tasks


def _with_defaults(spec: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(spec))
    for key, default in defaults.items():
        if key not in merged:
            merged[key] = copy.deepcopy(default)
        elif isinstance(default, Mapping) and isinstance(merged[key], Mapping):
            merged[key] = _with_defaults(merged[key], default)
    return merged


def _without_zero_values(value: Any) -> Any:
    # The API renders a service and a task from the same protobuf differently: one shows
    # `"NoNewPrivileges": false` or `"DNSConfig": {}`, the other leaves them out. In protobuf absent
    # and zero are the same thing, so both sides drop them.
    if isinstance(value, Mapping):
        kept = {k: _without_zero_values(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, False, 0, "", {}, [])}
    if isinstance(value, list):
        return [_without_zero_values(item) for item in value]
    return value


def _comparable(spec: Mapping[str, Any]) -> dict[str, Any]:
    # Defaults are filled before zeros are dropped; an explicit zero where swarm has a non-zero
    # default (a stop grace or restart delay of 0) would look different, which this stack never sets.
    normalized = _without_zero_values(_with_defaults(spec, _TASK_SPEC_DEFAULTS))
    for key in _IGNORED_TASK_SPEC_KEYS:
        normalized.pop(key, None)
    return normalized


def spec_difference(task_spec: Mapping[str, Any], task_template: Mapping[str, Any]) -> str | None:
    """Where a task's spec differs from the service's task template (a dotted path), None if it does not."""

    def walk(ours: Any, theirs: Any, path: str) -> str | None:
        if isinstance(ours, Mapping) and isinstance(theirs, Mapping):
            for key in sorted(set(ours) | set(theirs)):
                found = walk(ours.get(key), theirs.get(key), f"{path}.{key}" if path else key)
                if found:
                    return found
            return None
        return None if ours == theirs else (path or "spec")

    return walk(_comparable(task_spec), _comparable(task_template), "")


def task_runs_spec(task_spec: Mapping[str, Any], task_template: Mapping[str, Any]) -> bool:
    """Whether a task was created from the service's current task template (swarm would keep it)."""
    return spec_difference(task_spec, task_template) is None


@dataclass(frozen=True)
class Rollout:
    """Where one service's rollout stands: `done`, `pending` (keep waiting) or `failed`."""

    service: str
    phase: Literal["done", "pending", "failed"]
    reason: str


def rollout_state(
    service: ServiceSnapshot,
    tasks: Sequence[TaskSnapshot],
    desired: int,
    baseline: UpdateStatus | None,
) -> Rollout:
    """Decide whether `service` has rolled.

    `tasks` are the service's tasks (any state), `desired` its desired task count (`docker service
    ls`; for a global service the number of eligible nodes), `baseline` its UpdateStatus before the
    deploy (None for a service the deploy creates). A failed update counts only when it is not the
    very status the service already had before this deploy.
    """
    status = service.update
    fresh = not status.same_update(baseline)

    def result(phase: Literal["done", "pending", "failed"], reason: str) -> Rollout:
        return Rollout(service=service.name, phase=phase, reason=reason)

    if status.state in FAILED_UPDATE_STATES and fresh:
        detail = f": {status.message}" if status.message else ""
        return result("failed", f"swarm's update ended in state {status.state}{detail}")
    if status.state == ROLLING_BACK and fresh:
        return result("pending", f"swarm is rolling the update back ({status.message or 'no message'})")
    if status.state == UPDATING:
        return result("pending", "rolling update in progress")
    # Absent/completed, or a failed state left over from before this deploy: the tasks decide.
    wanted = [t for t in tasks if t.desired_state == "running"]
    not_running = [t for t in wanted if t.state != "running"]
    if not_running:
        states = ", ".join(sorted({t.state for t in not_running}))
        return result("pending", f"{len(not_running)} task(s) not running and healthy yet ({states})")
    outdated = [t for t in wanted if not task_runs_spec(t.spec, service.task_template)]
    if outdated:
        where = spec_difference(outdated[0].spec, service.task_template)
        return result("pending", f"{len(outdated)} task(s) still run an older spec (differs in {where})")
    if desired <= 0 or len(wanted) != desired:
        return result("pending", f"{len(wanted)} of {desired} desired tasks running")
    return result("done", f"{len(wanted)}/{desired} tasks run the current spec and are healthy")


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
