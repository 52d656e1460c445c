"""What a newcomer does with the local stack: status, down and up back to back, up during a removal.

These leave the stack up again (redeployed with the same ports and secrets) for the tests after them.
"""

from __future__ import annotations

import pytest

from tests.support import docker, http_get, wait_until

from .conftest import STACK, LocalStack, spaced

pytestmark = [pytest.mark.docker, pytest.mark.slow]

UP_TIMEOUT = 420


def stack_objects(kind: str) -> list[str]:
    """IDs of the stack's containers (`ps`) or networks (`network`), whatever their state."""
    args = ["ps", "-aq"] if kind == "ps" else ["network", "ls", "-q"]
    return docker(*args, "--filter", f"label=com.docker.stack.namespace={STACK}").stdout.split()


def test_status_shows_the_published_ports(local_stack: LocalStack) -> None:
    result = spaced(["status", "local"], local_stack.environment(), timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith(f"{STACK}_")}
    assert f"{local_stack.http_port}->" in rows[f"{STACK}_traefik"] and "(host)" in rows[f"{STACK}_traefik"]
    assert f"{local_stack.prometheus_port}->9090/tcp (host)" in rows[f"{STACK}_prometheus"]
    assert rows[f"{STACK}_item_socket"].split()[3] == "-", "item_socket publishes no port"


def test_down_waits_until_the_stack_is_gone_and_up_follows_at_once(local_stack: LocalStack) -> None:
    env = local_stack.environment()
    down = spaced(["down", "local"], env, timeout=180)
    assert down.returncode == 0, down.stderr
    # `down` returned: nothing of the stack is left to hold a port or a network name.
    assert not stack_objects("ps") and not stack_objects("network"), down.stdout
    up = spaced(["up", "local", "--timeout", "300"], env, timeout=UP_TIMEOUT)
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
    wait_until(lambda: http_get(local_stack.url + "/")[0] == 200, 60, "the page after up")


def test_up_during_a_removal_waits_for_the_old_stack_and_says_so(local_stack: LocalStack) -> None:
    env = local_stack.environment()
    docker("stack", "rm", STACK)  # returns at once; containers keep their ports while they stop
    up = spaced(["up", "local", "--timeout", "300"], env, timeout=UP_TIMEOUT)
    assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
    assert f"stack {STACK} is still being removed" in up.stdout
    wait_until(lambda: http_get(local_stack.url + "/")[0] == 200, 60, "the page after up")
