"""Helpers every test package shares: free ports, bounded waits on a condition, the docker CLI.

One copy for the whole suite (tests/conftest.py builds the engine fixtures on it). Waits poll a
condition with a deadline; none sleeps for a fixed time in place of a condition.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DockerEngine:
    """The engine the tests use (fixtures of tests/conftest.py), and its swarm state before the session."""

    was_in_swarm: bool


def free_port(host: str = "0.0.0.0") -> int:
    """A TCP port nothing listened on at `host` a moment ago.

    The default binds every address: host-mode publishing and servers on 0.0.0.0 need a port free on
    all of them, which also makes it free on 127.0.0.1.
    """
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    An exception from `predicate` counts as "not yet" (a service still starting) and is reported if
    the deadline passes; an AssertionError from it (a check that failed for good) ends the wait at
    once. Raises AssertionError naming `what` and the last value after `timeout` s.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except AssertionError:
            raise
        except Exception as error:  # transient while a service starts: keep polling, report the last one
            last = error
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}; last: {last!r:.800}")
        time.sleep(interval)


def docker(
    *args: str, timeout: float = 120.0, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI, bounded by `timeout` seconds; with `check`, a failure raises AssertionError."""
    result = subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def docker_answers() -> bool:
    """True when a Docker engine answers `docker info` within 20 s."""
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def swarm_info() -> dict[str, Any]:
    """The engine's `.Swarm` section of `docker info` (LocalNodeState, ControlAvailable, Nodes, …)."""
    return json.loads(docker("info", "--format", "{{json .Swarm}}").stdout)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET `url`: (status, body); HTTP error statuses are returned, connection errors raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def http_json(url: str, timeout: float = 5.0) -> Any:
    """GET `url` and decode its JSON body; a status other than 200 raises AssertionError."""
    status, body = http_get(url, timeout)
    assert status == 200, f"GET {url}: HTTP {status}: {body[:300]!r}"
    return json.loads(body)


def remove_stack(stack: str, timeout: float = 90.0) -> None:
    """`docker stack rm`, then wait (bounded) until its containers and networks are gone, and remove
    the configs and secrets labelled with its namespace (external secrets are not removed by rm)."""
    namespace = f"label=com.docker.stack.namespace={stack}"
    docker("stack", "rm", stack, check=False)
    for kind in ("ps -aq", "network ls -q"):
        wait_until(
            lambda kind=kind: not docker(*kind.split(), "--filter", namespace, check=False).stdout.strip(),
            timeout,
            f"the {kind.split()[0]} objects of stack {stack} to go",
            interval=0.5,
        )
    for kind in ("config", "secret"):
        names = docker(kind, "ls", "-q", "--filter", namespace, check=False).stdout.split()
        if names:
            docker(kind, "rm", *names, check=False)
