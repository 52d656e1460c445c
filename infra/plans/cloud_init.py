"""First-boot configuration of a new server (cloud-init user data) and its SSH twin for adopted hosts.

Both install the same things: Docker (docker.io from the distribution's own repositories),
WireGuard, unattended security upgrades; both leave a non-root deploy user with the deploy key and
SSH without passwords or root logins, and write the same system files (`system_files`):

- Docker starts after the WireGuard interface (the swarm listens on the mesh address);
- unattended upgrades run at a per-node time (`upgrade_times`), so upgrades that restart Docker never
  hit every node in the same hour, and never reboot a node by themselves.

New servers also get the SSH host key Pulumi generated for them (`SshHostKey`), and only that one,
so every connection can pin it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from infra.app_stack.model import LogRotation
from infra.plans.mesh import INTERFACE
from infra.plans.remote import wait_for_cloud_init

PACKAGES: tuple[str, ...] = ("docker.io", "wireguard", "unattended-upgrades", "nftables")
# Debian 12 reads sshd_config.d first and keeps the first value it sees: "10-" beats cloud-init's "50-".
SSHD_HARDENING_PATH = "/etc/ssh/sshd_config.d/10-spaced.conf"
SSHD_HARDENING = (
    "# Written by spaced: keys only, no root\n"
    "PasswordAuthentication no\n"
    "KbdInteractiveAuthentication no\n"
    "PermitRootLogin no\n"
)
AUTO_UPGRADES_PATH = "/etc/apt/apt.conf.d/20auto-upgrades"
AUTO_UPGRADES = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'
UNATTENDED_UPGRADES_PATH = "/etc/apt/apt.conf.d/52spaced-unattended-upgrades"
# A reboot is an operator's decision (drain the node first), never an upgrade's.
UNATTENDED_UPGRADES = 'Unattended-Upgrade::Automatic-Reboot "false";\n'
DOCKER_AFTER_WIREGUARD_PATH = "/etc/systemd/system/docker.service.d/10-spaced-after-wireguard.conf"
DOCKER_AFTER_WIREGUARD = (
    "# Written by spaced: the swarm listens on the WireGuard mesh address, so Docker starts after wg0.\n"
    "[Unit]\n"
    f"Wants=wg-quick@{INTERFACE}.service\n"
    f"After=wg-quick@{INTERFACE}.service\n"
)
DOCKER_DAEMON_PATH = "/etc/docker/daemon.json"
# The engine's default log driver with the stack services' own cap: a container started outside the
# stack (a one-off `docker run`) cannot fill the disk either. New servers get it before Docker first
# starts; on an adopted host it applies from Docker's next restart.
DOCKER_DAEMON = (
    json.dumps(
        {
            "log-driver": "json-file",
            "log-opts": {"max-size": LogRotation().max_size, "max-file": str(LogRotation().max_file)},
        },
        indent=2,
    )
    + "\n"
)
UPGRADE_TIMER_PATH = "/etc/systemd/system/apt-daily-upgrade.timer.d/10-spaced-stagger.conf"
# Upgrades run between 01:00 and 05:00 UTC, nodes spread evenly over the window.
UPGRADE_WINDOW_START_MIN = 60
UPGRADE_WINDOW_MIN = 240


@dataclass(frozen=True)
class SshHostKey:
    """An ed25519 SSH host key pair in OpenSSH format (the private half is a secret)."""

    private_openssh: str
    public_openssh: str


@dataclass(frozen=True)
class SystemFile:
    """A file both cloud-init and the adopted-host bootstrap write."""

    path: str
    permissions: str
    content: str


# Google's guest agent makes new SSH host keys on an instance's first boot, racing the one cloud-init
# installs (a known conflict, e.g. cloudfoundry/bosh#1389). Written in cloud-init's first stage,
# before the agent starts, this keeps the pinned key.
GCE_GUEST_AGENT_CONFIG = SystemFile(
    "/etc/default/instance_configs.cfg",
    "0644",
    "# Written by spaced: the SSH host key comes from cloud-init and is pinned by Pulumi.\n"
    "[InstanceSetup]\nset_host_keys = false\n",
)


def upgrade_times(node_names: Sequence[str]) -> dict[str, str]:
    """Node name -> "HH:MM" (UTC) of its daily unattended upgrade, nodes spread evenly over the
    01:00-05:00 window in name order, so two nodes never upgrade (and restart Docker) together
    while there are fewer nodes than minutes in the window."""
    names = sorted(node_names)
    step = UPGRADE_WINDOW_MIN // max(len(names), 1)
    times = {}
    for index, name in enumerate(names):
        minute = UPGRADE_WINDOW_START_MIN + index * step
        times[name] = f"{minute // 60:02d}:{minute % 60:02d}"
    return times


def upgrade_timer(upgrade_time: str) -> str:
    """The apt-daily-upgrade.timer drop-in that runs the upgrade at `upgrade_time` ("HH:MM", UTC)."""
    return (
        "# Written by spaced: this node's own upgrade time, apart from the other nodes'.\n"
        "[Timer]\n"
        "OnCalendar=\n"
        f"OnCalendar=*-*-* {upgrade_time}:00 UTC\n"
        "RandomizedDelaySec=0\n"
        "Persistent=true\n"
    )


def system_files(upgrade_time: str) -> list[SystemFile]:
    """The files every node gets, new or adopted."""
    return [
        SystemFile(SSHD_HARDENING_PATH, "0644", SSHD_HARDENING),
        SystemFile(AUTO_UPGRADES_PATH, "0644", AUTO_UPGRADES),
        SystemFile(UNATTENDED_UPGRADES_PATH, "0644", UNATTENDED_UPGRADES),
        SystemFile(DOCKER_AFTER_WIREGUARD_PATH, "0644", DOCKER_AFTER_WIREGUARD),
        SystemFile(DOCKER_DAEMON_PATH, "0644", DOCKER_DAEMON),
        SystemFile(UPGRADE_TIMER_PATH, "0644", upgrade_timer(upgrade_time)),
    ]


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks so the user data reads like the files it writes."""


_Dumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    ),
)


def cloud_config(
    hostname: str,
    ssh_user: str,
    ssh_public_key: str,
    *,
    host_key: SshHostKey | None = None,
    upgrade_time: str = "03:00",
    extra_files: Sequence[SystemFile] = (),
) -> str:
    """The `#cloud-config` user data for a new server named `hostname`.

    With `host_key`, sshd gets exactly that ed25519 key (no other key type is generated), so a
    connection that pins it cannot be answered by another key; the user data then holds a secret.
    """
    config: dict[str, object] = {
        "hostname": hostname,
        "users": [
            {
                "name": ssh_user,
                "shell": "/bin/bash",
                "lock_passwd": True,
                # Passwordless sudo: the mesh and swarm steps configure WireGuard and Docker over SSH.
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": [ssh_public_key],
            }
        ],
        "disable_root": True,
        "ssh_pwauth": False,
    }
    if host_key is not None:
        config["ssh_deletekeys"] = True
        # Only ed25519, and that one exists already (ssh_keys): cloud-init generates nothing.
        config["ssh_genkeytypes"] = ["ed25519"]
        config["ssh_keys"] = {
            "ed25519_private": host_key.private_openssh.strip() + "\n",
            "ed25519_public": host_key.public_openssh.strip(),
        }
    config |= {
        "package_update": True,
        "package_upgrade": True,
        "packages": list(PACKAGES),
        "write_files": [
            {"path": f.path, "permissions": f.permissions, "content": f.content}
            for f in (*system_files(upgrade_time), *extra_files)
        ],
        "runcmd": [
            # The docker group only exists once docker.io is installed, after the users module ran.
            ["usermod", "-aG", "docker", ssh_user],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "docker", "unattended-upgrades"],
            ["systemctl", "try-reload-or-restart", "ssh"],
        ],
    }
    return "#cloud-config\n" + yaml.dump(config, Dumper=_Dumper, sort_keys=False, width=1000)


def bootstrap_script(ssh_user: str, upgrade_time: str = "03:00") -> str:
    """Shell script for an adopted host (run with sudo by the deploy user): the same end state.

    The deploy user must already exist with the deploy key (see README "Adopting a server"): this
    script turns root and password logins off, so it must never be the only way in.
    """
    user = shlex.quote(ssh_user)
    writes = "".join(
        f"mkdir -p {shlex.quote(f.path.rsplit('/', 1)[0])}\n"
        f"cat > {shlex.quote(f.path)} <<'SPACED_EOF'\n{f.content}SPACED_EOF\n"
        f"chmod {f.permissions} {shlex.quote(f.path)}\n"
        for f in system_files(upgrade_time)
    )
    return f"""#!/bin/sh
set -eu
export DEBIAN_FRONTEND=noninteractive
{wait_for_cloud_init()}id {user} >/dev/null
test -s ~{ssh_user}/.ssh/authorized_keys
apt-get update -q
apt-get install -y -q --no-install-recommends {" ".join(PACKAGES)}
{writes}usermod -aG docker {user}
systemctl daemon-reload
systemctl enable --now docker unattended-upgrades
systemctl restart apt-daily-upgrade.timer
sshd -t
systemctl try-reload-or-restart ssh
"""


def authorized_keys_script(ssh_user: str, keys: Sequence[str]) -> str:
    """Shell script (run as root) that makes `keys` the deploy user's whole authorized_keys, atomically.

    It waits for cloud-init first (cloud-init's users module writes the same file on a new server).
    """
    user = shlex.quote(ssh_user)
    lines = "".join(f"{key.strip()}\n" for key in keys)
    return f"""set -eu
{wait_for_cloud_init()}home=$(getent passwd {user} | cut -d: -f6)
install -d -m 700 -o {user} -g {user} "$home/.ssh"
tmp=$(mktemp "$home/.ssh/.authorized_keys.XXXXXX")
cat > "$tmp" <<'SPACED_EOF'
{lines}SPACED_EOF
chown {user}:{user} "$tmp"
chmod 600 "$tmp"
mv -f "$tmp" "$home/.ssh/authorized_keys"
"""
