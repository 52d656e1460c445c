"""`spaced backup` and `spaced restore`: the backup service's script, run now as a one-off swarm job.

The job is made from the deployed `backup` service's own spec (`commands.job_from_service_command`):
the same image, password secret, backups volume and placement on the PostgreSQL node, so it works
through any manager, also over `ssh://`, and writes where the scheduled backups are. Its result is
the `SPACED_BACKUP_RESULT {json}` line the script prints (images/postgres/backup.sh).

A restore stops item_socket first (scaled to 0, waited for) and always scales it back to its
replicas afterwards: replicas must not write snapshots or fencing positions into tables that are
being dropped and made again, and on their restart they load the restored documents (plus what
their Redis streams still hold, which merges: Yjs updates apply in any order).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.app_stack import commands
from infra.app_stack.services.backup import BACKUPS_VOLUME, SCRIPT
from infra.app_stack.services.backup import NAME as BACKUP_SERVICE
from infra.docker_cli import DockerRunner
from infra.errors import SpacedError

Progress = Callable[[str], None]
RESULT_MARKER = "SPACED_BACKUP_RESULT "
BACKUP_NAME = re.compile(r"^[A-Za-z0-9._-]+\.dump$")
JOB_TIMEOUT = 1800.0
SCALE_TIMEOUT = 180.0
POLL_INTERVAL = 1.0
FINISHED_STATES = {"Complete", "Failed", "Rejected", "Shutdown", "Orphaned", "Remove"}


class BackupError(SpacedError):
    """A backup or restore failed; the message says what happened and shows the job's last lines."""

    kind = "BackupFailed"


@dataclass(frozen=True)
class BackupResult:
    """What the script reported: the backup file (a name on the backups volume), its size, the
    documents it holds (counted after restoring it)."""

    file: str
    size: int
    documents: int


class BackupNameError(SpacedError):
    """A backup was named by something else than its file name on the backups volume."""

    kind = "BadArguments"


def check_backup_name(name: str) -> str:
    """The backup file name, or BackupNameError: a plain name on the backups volume (`*.dump`)."""
    if not BACKUP_NAME.fullmatch(name):
        raise BackupNameError(
            f"backup {name!r}: give the file name `spaced backup` printed "
            "(e.g. spaced-20260101T000000Z-manual.dump), not a path"
        )
    return name


def parse_result(logs: str) -> dict[str, Any] | None:
    """The last `SPACED_BACKUP_RESULT {json}` line of a job's output, or None."""
    found = None
    for line in logs.splitlines():
        at = line.find(RESULT_MARKER)
        if at >= 0:
            try:
                found = json.loads(line[at + len(RESULT_MARKER) :])
            except ValueError:
                continue
    return found


def backup_service_spec(runner: DockerRunner, stack: str) -> dict[str, Any]:
    """The deployed backup service's Spec; BackupError when the stack has none."""
    service = f"{stack}_{BACKUP_SERVICE}"
    inspected = runner.run(commands.service_inspect_command([service]), check=False)
    if inspected.returncode != 0:
        raise BackupError(
            f"stack {stack} at {runner.describe()} has no service {service}: deploy the stack with "
            "item_socket's scale-out (PostgreSQL and its backups; SPACED_ITEM_SOCKET_SCALE_OUT=1) first"
        )
    return json.loads(inspected.stdout)[0]["Spec"]


def run_job(
    runner: DockerRunner, stack: str, args: list[str], progress: Progress, timeout: float = JOB_TIMEOUT
) -> tuple[dict[str, Any], str]:
    """Run the backup script with `args` as a one-off job shaped like the backup service; wait
    (bounded by `timeout` s) until it ends; returns its result and its output. The job is always
    removed. Raises BackupError when it ends without a result line or does not end in time."""
    spec = backup_service_spec(runner, stack)
    name = f"{stack}_{BACKUP_SERVICE}_job_{uuid.uuid4().hex[:8]}"
    labels = {"spaced.stack": stack, "spaced.backup-job": args[0]}
    runner.run(commands.job_from_service_command(spec, name, labels, [SCRIPT, *args]))
    progress(f"running `{SCRIPT} {' '.join(args)}` as job {name} on the PostgreSQL node")
    try:
        deadline = time.monotonic() + timeout
        state, error = "", ""
        while True:
            rows = runner.run(commands.service_task_states_command(name), check=False).stdout.splitlines()
            if rows:
                state, _, error = rows[0].partition("|")
                if state.split(" ", 1)[0] in FINISHED_STATES:
                    break
            if time.monotonic() >= deadline:
                raise BackupError(
                    f"job {name} did not finish within {timeout:.0f}s (state: {state or 'none'})"
                )
            time.sleep(POLL_INTERVAL)
        # The log of a task that just ended can trail its state by a moment: read until the result
        # line is there (bounded).
        logs_deadline = time.monotonic() + 15
        while True:
            logs = runner.run(commands.service_raw_logs_command(name), check=False)
            output = logs.stdout + logs.stderr
            result = parse_result(output)
            if result is not None or time.monotonic() >= logs_deadline:
                break
            time.sleep(POLL_INTERVAL)
    finally:
        runner.run(commands.service_remove_command(name), check=False)
    if result is None:
        tail = "\n".join(output.strip().splitlines()[-20:]) or "(no output)"
        raise BackupError(
            f"job {name} ended ({state.strip()}{': ' + error if error else ''}) without a result:\n{tail}"
        )
    return result, output


def _result(result: dict[str, Any], output: str, what: str) -> BackupResult:
    if not result.get("ok"):
        tail = "\n".join(output.strip().splitlines()[-12:])
        raise BackupError(f"{what} failed: {result.get('error') or 'see the log'}\n{tail}")
    return BackupResult(
        file=str(result["file"]), size=int(result["size"]), documents=int(result["documents"])
    )


def backup_now(
    runner: DockerRunner, stack: str, progress: Progress, timeout: float = JOB_TIMEOUT
) -> BackupResult:
    """One backup now (a `manual` one: kept until removed by hand), verified like the scheduled ones."""
    result, output = run_job(runner, stack, ["once", "manual"], progress, timeout)
    return _result(result, output, "the backup")


def _replicas(runner: DockerRunner, service: str) -> int:
    inspected = json.loads(runner.run(commands.service_inspect_command([service])).stdout)[0]
    return int(inspected["Spec"]["Mode"]["Replicated"]["Replicas"])


def _running_tasks(runner: DockerRunner, service: str) -> int:
    states = runner.run(commands.service_task_states_command(service), check=False).stdout.splitlines()
    return sum(1 for state in states if state.startswith("Running"))


def _wait_running(runner: DockerRunner, service: str, wanted: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while (running := _running_tasks(runner, service)) != wanted:
        if time.monotonic() >= deadline:
            raise BackupError(f"{service}: {running} tasks run, not {wanted}, after {timeout:.0f}s ({what})")
        time.sleep(POLL_INTERVAL)


def restore(
    runner: DockerRunner, stack: str, backup: str, progress: Progress, timeout: float = JOB_TIMEOUT
) -> BackupResult:
    """Restore `backup` (a file on the backups volume) into the stack's database, with item_socket
    stopped meanwhile and always scaled back to its replicas afterwards."""
    check_backup_name(backup)
    backup_service_spec(runner, stack)  # the stack has backups at all, before anything is stopped
    item_socket = f"{stack}_item_socket"
    replicas = _replicas(runner, item_socket)
    progress(f"stopping {item_socket} ({replicas} replicas) for the restore")
    runner.run(commands.service_scale_command(item_socket, 0))
    try:
        _wait_running(runner, item_socket, 0, SCALE_TIMEOUT, "stopping it for the restore")
        result, output = run_job(runner, stack, ["restore", backup], progress, timeout)
    finally:
        progress(f"starting {item_socket} again ({replicas} replicas)")
        runner.run(commands.service_scale_command(item_socket, replicas))
    _wait_running(runner, item_socket, replicas, SCALE_TIMEOUT, "starting it again after the restore")
    return _result(result, output, f"the restore of {backup}")


def volume_name(stack: str) -> str:
    """The Docker volume the backups are on (on the PostgreSQL node)."""
    return f"{stack}_{BACKUPS_VOLUME}"
