"""User data for new servers, validated by the real `cloud-init schema`."""

from __future__ import annotations

import configparser
import itertools
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.app_stack.model import LogRotation
from infra.plans.cloud_init import (
    DOCKER_AFTER_WIREGUARD,
    DOCKER_AFTER_WIREGUARD_PATH,
    UNATTENDED_UPGRADES,
    UNATTENDED_UPGRADES_PATH,
    UPGRADE_TIMER_PATH,
    SshHostKey,
    bootstrap_script,
    cloud_config,
    system_files,
    upgrade_timer,
    upgrade_times,
)

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJpVyd/+FNRD37TqRveeZU7KB8py0tVbPYZW8lZHKYvm test@spaced"
needs_cloud_init = pytest.mark.skipif(
    shutil.which("cloud-init") is None, reason="needs cloud-init (apt-get install cloud-init)"
)


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, timeout=60
    )


@needs_cloud_init
def test_user_data_passes_the_cloud_init_schema(tmp_path: Path) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text(cloud_config("aws-1", "deploy", KEY))
    result = schema_check(user_data)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


@needs_cloud_init
def test_the_schema_check_does_reject_bad_user_data(tmp_path: Path) -> None:
    config = yaml.safe_load(cloud_config("aws-1", "deploy", KEY))
    config["ssh_pwauth"] = "perhaps"
    config["packages"] = "docker.io"  # a string, not a list
    user_data = tmp_path / "user-data"
    user_data.write_text("#cloud-config\n" + yaml.safe_dump(config))
    assert schema_check(user_data).returncode != 0


def test_user_data_content() -> None:
    text = cloud_config("hetzner-1", "deploy", KEY)
    assert text.startswith("#cloud-config\n")
    config = yaml.safe_load(text)
    [user] = config["users"]
    assert user["name"] == "deploy" and user["ssh_authorized_keys"] == [KEY] and user["lock_passwd"] is True
    assert config["ssh_pwauth"] is False and config["disable_root"] is True
    assert {"docker.io", "wireguard", "unattended-upgrades"} <= set(config["packages"])
    files = {f["path"]: f["content"] for f in config["write_files"]}
    sshd = files["/etc/ssh/sshd_config.d/10-spaced.conf"]
    assert "PasswordAuthentication no" in sshd and "PermitRootLogin no" in sshd
    assert 'Unattended-Upgrade "1"' in files["/etc/apt/apt.conf.d/20auto-upgrades"]
    assert ["usermod", "-aG", "docker", "deploy"] in config["runcmd"]


def test_bootstrap_script_for_adopted_hosts_is_valid_shell() -> None:
    script = bootstrap_script("deploy")
    result = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "apt-get install -y -q --no-install-recommends docker.io wireguard" in script
    assert "PermitRootLogin no" in script
    # It refuses to harden SSH on a host where the deploy user could not log in afterwards.
    assert script.index("test -s ~deploy/.ssh/authorized_keys") < script.index("PermitRootLogin no")


# --- host keys, the Docker-after-WireGuard drop-in, staggered upgrades -----------------------------

HOST_KEY = SshHostKey(
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsAv6Gu3peoqR+hx8LYO3CIRaglqPFuXSwT0C1/nnSh\n",
)
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (apt-get install systemd)"
)


@needs_cloud_init
def test_user_data_with_a_host_key_passes_the_schema_and_installs_only_that_key(tmp_path: Path) -> None:
    text = cloud_config("aws-1", "deploy", KEY, host_key=HOST_KEY, upgrade_time="02:10")
    user_data = tmp_path / "user-data"
    user_data.write_text(text)
    result = schema_check(user_data)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(text)
    assert config["ssh_keys"] == {
        "ed25519_private": HOST_KEY.private_openssh,
        "ed25519_public": HOST_KEY.public_openssh.strip(),
    }
    assert config["ssh_genkeytypes"] == ["ed25519"] and config["ssh_deletekeys"] is True


def test_new_and_adopted_servers_write_the_same_system_files() -> None:
    config = yaml.safe_load(cloud_config("n", "deploy", KEY, upgrade_time="02:10"))
    written = {f["path"]: f["content"] for f in config["write_files"]}
    script = bootstrap_script("deploy", "02:10")
    for file in system_files("02:10"):
        assert written[file.path] == file.content
        assert f"cat > {file.path} <<'SPACED_EOF'\n{file.content}SPACED_EOF\n" in script
    assert DOCKER_AFTER_WIREGUARD_PATH in written and UPGRADE_TIMER_PATH in written


def unit_dir(tmp_path: Path, upgrade_time: str) -> Path:
    """A unit directory holding our drop-ins, searched before the system's units."""
    units = tmp_path / "units"
    for file in system_files(upgrade_time):
        if file.path.startswith("/etc/systemd/system/"):
            target = units / file.path.removeprefix("/etc/systemd/system/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(file.content)
    return units


def analyze_verify(units: Path, *unit_names: str) -> str:
    result = subprocess.run(
        ["systemd-analyze", "verify", *unit_names],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    return result.stdout + result.stderr


@needs_systemd_analyze
def test_docker_starts_after_wg_quick_and_the_drop_ins_verify(tmp_path: Path) -> None:
    for unit in ("/lib/systemd/system/docker.service", "/lib/systemd/system/wg-quick@.service"):
        assert Path(unit).exists(), f"{unit} is missing: apt-get install docker.io wireguard-tools"
    units = unit_dir(tmp_path, "02:10")
    output = analyze_verify(units, "docker.service", "apt-daily-upgrade.timer")
    assert str(units) not in output, output  # nothing in our drop-ins is ignored or wrong
    ini = configparser.ConfigParser(strict=False)
    ini.read_string(DOCKER_AFTER_WIREGUARD)
    assert "wg-quick@wg0.service" in ini["Unit"]["After"].split()
    # The check is real: the same verify reports a broken drop-in in that directory.
    broken = units / "docker.service.d" / "10-spaced-after-wireguard.conf"
    broken.write_text("[Unit]\nAfter=wg-quick@wg0.service\nBogusSetting=1\n")
    assert "BogusSetting" in analyze_verify(units, "docker.service")


@needs_systemd_analyze
def test_upgrades_are_staggered_per_node_and_never_reboot() -> None:
    names = ["ionos-apex", "ionos-2", "ionos-3", "aws-1", "gcp-1", "hetzner-1", "do-1"]
    times = upgrade_times(names)
    assert len(set(times.values())) == len(names)  # no two nodes in the same slot
    minutes = sorted(int(t[:2]) * 60 + int(t[3:]) for t in times.values())
    assert min(b - a for a, b in itertools.pairwise(minutes)) >= 30  # a Docker restart settles in between
    assert upgrade_times(list(reversed(names))) == times  # stable: order of the topology does not matter
    for time in times.values():
        spec = upgrade_timer(time).split("OnCalendar=")[-1].splitlines()[0]
        result = subprocess.run(
            ["systemd-analyze", "calendar", spec], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
    assert 'Unattended-Upgrade::Automatic-Reboot "false";' in UNATTENDED_UPGRADES
    assert UNATTENDED_UPGRADES_PATH in {f.path for f in system_files("01:00")}


def test_the_engine_default_caps_container_logs_like_the_stack_services() -> None:
    """New servers (user data) and adopted hosts (bootstrap) get a daemon.json whose json-file cap is
    the one every stack service sets, so no container on a node logs without bound."""
    user_data = yaml.safe_load(cloud_config("hetzner-1", "deploy", KEY))
    files = {f["path"]: f["content"] for f in user_data["write_files"]}
    daemon = json.loads(files["/etc/docker/daemon.json"])
    stack_cap = LogRotation().to_compose()
    assert daemon == {"log-driver": stack_cap["driver"], "log-opts": stack_cap["options"]}
    assert "/etc/docker/daemon.json" in bootstrap_script("deploy")
