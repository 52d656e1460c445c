"""Every remote script that touches packages or services waits for cloud-init first.

cloud-init's `package_update`/`package_upgrade` hold apt's lists lock for minutes after sshd answers
(`DPkg::Lock::Timeout` covers the dpkg lock only) and its runcmd restarts services, so a script that
runs apt-get or systemctl before `cloud-init status --wait` races it on every new server.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.plans import swarm
from infra.plans.cloud_init import authorized_keys_script, bootstrap_script
from infra.plans.firewall import FirewallRule, firewall_install_script
from infra.plans.mesh import render_apply_script
from infra.plans.remote import CLOUD_INIT_WAIT_MARKER, wait_for_cloud_init

RULES = [FirewallRule("tcp", 22, ("198.51.100.0/24",), "SSH from the admin ranges")]
# Every script the toolkit runs on a server that touches packages or services.
REMOTE_SCRIPTS: dict[str, Callable[[], str]] = {
    "mesh apply": render_apply_script,
    "adopted-host bootstrap": lambda: bootstrap_script("deploy"),
    "adopted-host firewall": lambda: firewall_install_script(RULES),
    "swarm init": lambda: swarm.init_script("10.210.0.1"),
    "swarm join": lambda: swarm.join_script("10.210.0.1", "10.210.0.2"),
    "swarm manager probe": swarm.manager_probe_script,
    "authorized keys": lambda: authorized_keys_script("deploy", ["ssh-ed25519 AAAA k"]),
}
# Packages, services, and the files cloud-init's users module writes (~/.ssh/authorized_keys).
TOUCHES = re.compile(
    r"^\s*[^#\n]*\b(apt-get|apt|dpkg|systemctl|usermod|docker|authorized_keys)\b", re.MULTILINE
)


@pytest.mark.parametrize("name", sorted(REMOTE_SCRIPTS))
def test_the_cloud_init_wait_comes_before_any_package_or_service_command(name: str) -> None:
    script = REMOTE_SCRIPTS[name]()
    first = TOUCHES.search(script)
    assert first is not None, f"{name} touches no package or service: drop it from this list"
    wait = script.find(CLOUD_INIT_WAIT_MARKER)
    assert 0 <= wait < first.start(), f"{name}: {first.group(1)!r} runs before {CLOUD_INIT_WAIT_MARKER!r}"


def fake_cloud_init(tmp_path: Path, status: str, wait_rc: int) -> tuple[dict[str, str], Path]:
    """A `cloud-init` on PATH that prints `status` and exits `wait_rc` for `status --wait`; logs calls."""
    log = tmp_path / "calls"
    binary = tmp_path / "bin" / "cloud-init"
    binary.parent.mkdir()
    binary.write_text(f"""#!/bin/sh
echo "$*" >> {log}
if [ "$2" = "--wait" ]; then exit {wait_rc}; fi
echo "status: {status}"
""")
    binary.chmod(0o755)
    return {**os.environ, "PATH": f"{binary.parent}:{os.environ['PATH']}"}, log


@pytest.mark.parametrize(
    ("status", "wait_rc", "exit_code", "waited"),
    [
        ("running", 0, 0, True),
        ("done", 2, 0, True),  # recoverable errors: carry on
        ("running", 1, 1, True),  # cloud-init failed: stop
        ("not run", 0, 0, False),  # an adopted host without cloud-init: never wait
        ("disabled", 0, 0, False),
    ],
)
def test_the_wait_fragment_runs_under_sh(
    tmp_path: Path, status: str, wait_rc: int, exit_code: int, waited: bool
) -> None:
    env, log = fake_cloud_init(tmp_path, status, wait_rc)
    result = subprocess.run(
        ["sh", "-c", "set -eu\n" + wait_for_cloud_init(30) + "echo after\n"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == exit_code, result.stderr
    assert ("status --wait" in log.read_text()) is waited
    assert ("after" in result.stdout) is (exit_code == 0)
