"""First-boot configuration of a new server (cloud-init user data) and its SSH twin for adopted hosts.

Both install the same things: Docker (docker.io from the distribution's own repositories),
WireGuard, unattended security upgrades; both leave a non-root deploy user with the deploy key and
SSH without passwords or root logins.
"""

from __future__ import annotations

import shlex

import yaml

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


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks so the user data reads like the files it writes."""


_Dumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    ),
)


def cloud_config(hostname: str, ssh_user: str, ssh_public_key: str) -> str:
    """The `#cloud-config` user data for a new server named `hostname`."""
    config = {
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
        "package_update": True,
        "package_upgrade": True,
        "packages": list(PACKAGES),
        "write_files": [
            {"path": SSHD_HARDENING_PATH, "permissions": "0644", "content": SSHD_HARDENING},
            {"path": AUTO_UPGRADES_PATH, "permissions": "0644", "content": AUTO_UPGRADES},
        ],
        "runcmd": [
            # The docker group only exists once docker.io is installed, after the users module ran.
            ["usermod", "-aG", "docker", ssh_user],
            ["systemctl", "enable", "--now", "docker", "unattended-upgrades"],
            ["systemctl", "try-reload-or-restart", "ssh"],
        ],
    }
    return "#cloud-config\n" + yaml.dump(config, Dumper=_Dumper, sort_keys=False, width=1000)


def bootstrap_script(ssh_user: str) -> str:
    """Shell script for an adopted host (run with sudo by the deploy user): the same end state.

    The deploy user must already exist with the deploy key (see README "Adopting a server"): this
    script turns root and password logins off, so it must never be the only way in.
    """
    user = shlex.quote(ssh_user)
    return f"""#!/bin/sh
set -eu
export DEBIAN_FRONTEND=noninteractive
{wait_for_cloud_init()}id {user} >/dev/null
test -s ~{ssh_user}/.ssh/authorized_keys
apt-get update -q
apt-get install -y -q --no-install-recommends {" ".join(PACKAGES)}
cat > {SSHD_HARDENING_PATH} <<'SPACED_EOF'
{SSHD_HARDENING}SPACED_EOF
cat > {AUTO_UPGRADES_PATH} <<'SPACED_EOF'
{AUTO_UPGRADES}SPACED_EOF
usermod -aG docker {user}
systemctl enable --now docker unattended-upgrades
sshd -t
systemctl try-reload-or-restart ssh
"""
