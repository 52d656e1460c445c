"""User data for new servers, validated by the real `cloud-init schema`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from infra.plans.cloud_init import bootstrap_script, cloud_config

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJpVyd/+FNRD37TqRveeZU7KB8py0tVbPYZW8lZHKYvm test@spaced"
needs_cloud_init = pytest.mark.skipif(shutil.which("cloud-init") is None,
                                      reason="needs cloud-init (apt-get install cloud-init)")


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cloud-init", "schema", "--config-file", str(path)],
                          capture_output=True, text=True, timeout=60)


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
