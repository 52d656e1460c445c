"""When has a service rolled? The pure decision, on `docker service inspect` / `docker inspect <task>`
output captured from a real engine (fixtures/rollout_*.json: a probe service right after a stop-first
update from release capture-a to capture-b; engine 20.10.24, the version Debian 12 ships).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from infra.app_stack.rollout import (
    ServiceSnapshot,
    TaskSnapshot,
    UpdateStatus,
    parse_services,
    parse_tasks,
    rollout_state,
    spec_difference,
    task_runs_spec,
)

FIXTURES = Path(__file__).parent / "fixtures"
SERVICE = "spacedcapture_app"


def raw_service() -> dict[str, Any]:
    """The captured service, as `docker service inspect` printed it."""
    return json.loads((FIXTURES / "rollout_service_inspect.json").read_text())[0]


def raw_tasks() -> list[dict[str, Any]]:
    """The captured tasks of that service: the new one running, the old one shut down."""
    return json.loads((FIXTURES / "rollout_task_inspect.json").read_text())


@pytest.fixture
def service() -> ServiceSnapshot:
    return parse_services(json.dumps([raw_service()]))[SERVICE]


@pytest.fixture
def new_task() -> TaskSnapshot:
    (task,) = [t for t in parse_tasks(json.dumps(raw_tasks())) if t.desired_state == "running"]
    return task


@pytest.fixture
def old_task() -> TaskSnapshot:
    (task,) = [t for t in parse_tasks(json.dumps(raw_tasks())) if t.desired_state == "shutdown"]
    return task


def with_status(service: ServiceSnapshot, state: str, started_at: str = "t-new") -> ServiceSnapshot:
    return dataclasses.replace(service, update=UpdateStatus(state=state, started_at=started_at))


def test_captured_output_parses(
    service: ServiceSnapshot, new_task: TaskSnapshot, old_task: TaskSnapshot
) -> None:
    assert service.update.state == "completed" and service.has_previous_spec
    assert new_task.service_id == old_task.service_id == service.id
    assert (new_task.state, new_task.image) == ("running", "spaced/rollout-probe:capture-b")
    assert (old_task.state, old_task.image) == ("shutdown", "spaced/rollout-probe:capture-a")


def test_a_task_matches_its_service_although_the_api_renders_them_differently(
    service: ServiceSnapshot, new_task: TaskSnapshot
) -> None:
    # Not vacuous: the raw JSON differs (defaults filled into the service only, false/empty omitted
    # from the task), yet swarm created this task from exactly this template.
    assert raw_service()["Spec"]["TaskTemplate"] != new_task.spec
    assert task_runs_spec(new_task.spec, service.task_template)


def test_the_replaced_task_runs_the_previous_spec(service: ServiceSnapshot, old_task: TaskSnapshot) -> None:
    assert not task_runs_spec(old_task.spec, service.task_template)
    assert spec_difference(old_task.spec, service.task_template) in {
        "ContainerSpec.Args",
        "ContainerSpec.Image",
    }
    assert task_runs_spec(old_task.spec, raw_service()["PreviousSpec"]["TaskTemplate"])


def test_a_placement_only_change_replaces_no_task(service: ServiceSnapshot, new_task: TaskSnapshot) -> None:
    template = copy.deepcopy(dict(service.task_template))
    template["Placement"] = {"Constraints": ["node.labels.edge == true"]}
    assert task_runs_spec(new_task.spec, template)


def test_a_changed_environment_is_a_new_spec(service: ServiceSnapshot, new_task: TaskSnapshot) -> None:
    template = copy.deepcopy(dict(service.task_template))
    template["ContainerSpec"]["Env"] = ["FEATURE=on"]
    assert spec_difference(new_task.spec, template) == "ContainerSpec.Env"


def test_a_completed_update_with_healthy_current_tasks_is_done(
    service: ServiceSnapshot, new_task: TaskSnapshot, old_task: TaskSnapshot
) -> None:
    assert rollout_state(service, [new_task, old_task], desired=1, baseline=None).phase == "done"


def test_right_after_the_deploy_the_old_healthy_task_is_not_enough(
    service: ServiceSnapshot, old_task: TaskSnapshot
) -> None:
    # What `docker service ls` calls 1/1: the old task still runs, swarm has not started the update.
    still_running = dataclasses.replace(old_task, desired_state="running", state="running")
    rollout = rollout_state(with_status(service, ""), [still_running], desired=1, baseline=None)
    assert rollout.phase == "pending" and "older spec" in rollout.reason


def test_an_update_in_progress_is_pending_even_with_current_tasks(
    service: ServiceSnapshot, new_task: TaskSnapshot
) -> None:
    # The monitor period: the new task runs, but swarm may still roll it back.
    assert rollout_state(with_status(service, "updating"), [new_task], 1, None).phase == "pending"


def test_a_task_not_yet_healthy_is_pending(service: ServiceSnapshot, new_task: TaskSnapshot) -> None:
    starting = dataclasses.replace(new_task, state="starting")
    rollout = rollout_state(with_status(service, ""), [starting], desired=1, baseline=None)
    assert rollout.phase == "pending" and "starting" in rollout.reason


@pytest.mark.parametrize("state", ["rollback_completed", "paused", "rollback_paused"])
def test_a_failed_update_fails(state: str, service: ServiceSnapshot, new_task: TaskSnapshot) -> None:
    baseline = UpdateStatus(state="completed", started_at="t-old")
    rollout = rollout_state(with_status(service, state), [new_task], desired=1, baseline=baseline)
    assert rollout.phase == "failed" and state in rollout.reason


def test_a_rollback_in_progress_is_awaited(service: ServiceSnapshot, new_task: TaskSnapshot) -> None:
    rollout = rollout_state(with_status(service, "rollback_started"), [new_task], 1, UpdateStatus())
    assert rollout.phase == "pending"


def test_a_rollback_from_an_earlier_deploy_does_not_fail_this_one(
    service: ServiceSnapshot, new_task: TaskSnapshot
) -> None:
    earlier = UpdateStatus(state="rollback_completed", started_at="t-earlier")
    current = with_status(service, "rollback_completed", started_at="t-earlier")
    assert rollout_state(current, [new_task], desired=1, baseline=earlier).phase == "done"


def test_fewer_tasks_than_desired_is_pending(service: ServiceSnapshot, new_task: TaskSnapshot) -> None:
    assert rollout_state(service, [new_task], desired=2, baseline=None).phase == "pending"
    assert rollout_state(service, [], desired=0, baseline=None).phase == "pending"
