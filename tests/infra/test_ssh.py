"""The deploy's SSH mechanics for real: sshd on 127.0.0.1 with a generated host key, a user whose
authorized_keys holds a generated deploy key, and the docker CLI over ssh:// (`docker system
dial-stdio` on the "server", which is this machine's engine).

With the pinned host key the docker CLI reaches the engine; with any other host key it is refused,
and ssh's message names the host. The operator's own ~/.ssh (config, known_hosts, agent) plays no
part, and the temporary directory with the private key is gone after the block.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra import cloud_deploy
from infra.plans.cloud_init import authorized_keys_script
from infra.ssh import SshSetupError, host_key_line, pinned_ssh
from tests.support import free_port as _free_port

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class Target:
    user: str
    port: int
    host_key: str  # public line
    deploy_key: str  # private key text
    deploy_public: str
    docker_host: str


def keypair(path: Path, comment: str) -> tuple[str, str]:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        timeout=30,
    )
    return path.read_text(), path.with_suffix(".pub").read_text().strip()


def free_port() -> int:
    return _free_port("127.0.0.1")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if os.geteuid() != 0:
        pytest.skip("needs root (creates a local user for sshd)")
    for binary in (SSHD, "ssh", "ssh-keygen", "docker", "useradd"):
        assert shutil.which(binary), f"{binary} is missing: apt-get install openssh-server openssh-client"
    if subprocess.run(["docker", "version"], capture_output=True, timeout=60).returncode != 0:
        pytest.fail("the Docker engine does not answer; run scripts/start-services.sh")
    work = tmp_path_factory.mktemp("sshd")
    _, host_public = keypair(work / "host_ed25519", "host")
    deploy_private, deploy_public = keypair(work / "deploy", "deploy@spaced")
    user = f"spaced-t{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", "-G", "docker", user], check=True, timeout=30)
    sshd: subprocess.Popen[str] | None = None
    try:
        subprocess.run(["usermod", "-p", "*", user], check=True, timeout=30)  # not locked, no password
        home = Path(f"/home/{user}")
        (home / ".ssh").mkdir(mode=0o700)
        (home / ".ssh" / "authorized_keys").write_text(deploy_public + "\n")
        subprocess.run(["chown", "-R", f"{user}:{user}", str(home / ".ssh")], check=True, timeout=30)
        (home / ".ssh" / "authorized_keys").chmod(0o600)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        port = free_port()
        config = work / "sshd_config"
        config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {work / "host_ed25519"}
PidFile {work / "sshd.pid"}
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers {user}
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
LogLevel VERBOSE
""")
        sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
        assert sshd.stderr is not None
        for line in sshd.stderr:  # bounded: sshd either listens or exits
            if f"Server listening on 127.0.0.1 port {port}" in line:
                break
        else:
            pytest.fail(f"sshd did not start (exit {sshd.wait(timeout=10)})")
        yield Target(user, port, host_public, deploy_private, deploy_public, f"ssh://{user}@127.0.0.1:{port}")
    finally:
        if sshd is not None:
            sshd.terminate()
            try:
                sshd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                sshd.kill()
                sshd.wait(timeout=10)
            if sshd.stderr:
                sshd.stderr.close()
        subprocess.run(["userdel", "-r", "-f", user], capture_output=True, timeout=30)


@pytest.fixture
def operator_home(tmp_path: Path) -> dict[str, str]:
    """An operator environment whose own ssh setup would fail or skip checks if it were used."""
    home = tmp_path / "operator"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text("Host *\n  IdentityFile /nonexistent\n  StrictHostKeyChecking no\n")
    (home / ".ssh" / "known_hosts").write_text("")
    return {**os.environ, "HOME": str(home), "SSH_AUTH_SOCK": str(tmp_path / "no-agent.sock")}


def docker_version(env: dict[str, str], docker_host: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "-H", docker_host, "version", "--format", "{{.Server.Version}}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_docker_over_ssh_with_the_deploy_key_and_the_pinned_host_key(
    target: Target, operator_home: dict[str, str]
) -> None:
    local = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    with pinned_ssh(target.deploy_key, target.host_key, host_name="test-node", environ=operator_home) as ssh:
        assert "SSH_AUTH_SOCK" not in ssh.env
        result = docker_version(ssh.env, target.docker_host)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == local


def test_a_server_with_another_host_key_is_refused_naming_the_host(
    target: Target, tmp_path: Path, operator_home: dict[str, str]
) -> None:
    _, other = keypair(tmp_path / "impostor", "impostor")
    with pinned_ssh(target.deploy_key, other, host_name="test-node", environ=operator_home) as ssh:
        result = docker_version(ssh.env, target.docker_host)
    assert result.returncode != 0
    assert "Host key verification failed" in result.stderr
    assert "spaced-test-node" in result.stderr, result.stderr  # ssh names the pinned host


def test_without_the_setup_the_operator_environment_cannot_log_in(
    target: Target, operator_home: dict[str, str]
) -> None:
    # The control: the deploy key is not among the operator's keys, so it is the setup that works.
    result = docker_version({**operator_home, "PATH": os.environ["PATH"]}, target.docker_host)
    assert result.returncode != 0


def test_the_private_key_is_gone_after_the_block_even_on_errors(target: Target) -> None:
    with pytest.raises(RuntimeError), pinned_ssh(target.deploy_key, target.host_key, host_name="n") as ssh:
        directory = ssh.directory
        assert (directory / "id_deploy").stat().st_mode & 0o777 == 0o600
        assert directory.stat().st_mode & 0o777 == 0o700
        raise RuntimeError("deploy failed")
    assert not directory.exists()


def test_host_key_lines(target: Target) -> None:
    assert host_key_line(f"127.0.0.1 {target.host_key}") == " ".join(target.host_key.split()[:2])
    with pytest.raises(SshSetupError, match="not an SSH host key line"):
        host_key_line("nonsense")


def test_authorized_keys_rotation_script_replaces_the_deploy_users_keys(
    target: Target, tmp_path: Path
) -> None:
    """The per-node rotation command's script, run for real: afterwards only the new key logs in."""
    new_private, new_public = keypair(tmp_path / "next", "next@spaced")

    def login(private_key: str) -> int:
        with pinned_ssh(private_key, target.host_key, host_name="test-node") as ssh:
            return subprocess.run(
                ["ssh", "-p", str(target.port), f"{target.user}@127.0.0.1", "true"],
                env=ssh.env,
                capture_output=True,
                timeout=60,
            ).returncode

    try:
        assert login(target.deploy_key) == 0 and login(new_private) != 0
        for keys in ([target.deploy_public, new_public], [new_public]):
            subprocess.run(["sh", "-c", authorized_keys_script(target.user, keys)], check=True, timeout=60)
        assert login(new_private) == 0
        assert login(target.deploy_key) != 0
        mode = Path(f"/home/{target.user}/.ssh/authorized_keys").stat().st_mode & 0o777
        assert mode == 0o600
    finally:
        subprocess.run(
            ["sh", "-c", authorized_keys_script(target.user, [target.deploy_public])], check=True, timeout=60
        )


# --- the cloud deploy wrapper (infra/cloud_deploy.py) over the same sshd ------------------------


def test_the_cloud_deploy_wrapper_runs_docker_with_the_pinned_setup(
    target: Target, tmp_path: Path, operator_home: dict[str, str]
) -> None:
    environ = {
        **operator_home,
        "DOCKER_HOST": target.docker_host,
        cloud_deploy.PRIVATE_KEY_VAR: target.deploy_key,
        cloud_deploy.HOST_KEY_VAR: target.host_key,
        cloud_deploy.HOST_NAME_VAR: "test-node",
    }
    out = tmp_path / "out"
    command = ["sh", "-c", f'docker version --format "{{{{.Server.Version}}}}" > {out} && env > {out}.env']
    assert cloud_deploy.run(command, environ) == 0
    assert out.read_text().strip()
    assert target.deploy_key.strip().splitlines()[1] not in Path(f"{out}.env").read_text()  # key not in env
    _, other = keypair(tmp_path / "impostor", "impostor")
    assert cloud_deploy.run(command, {**environ, cloud_deploy.HOST_KEY_VAR: other}) != 0


def test_app_secrets_from_the_state_are_written_once_where_the_deploy_reads_them(tmp_path: Path) -> None:
    values = {
        cloud_deploy.JWT_KEY: "j" * 64,
        cloud_deploy.DASHBOARD_PASSWORD_KEY: "p" * 24,
        cloud_deploy.REDIS_PASSWORD_KEY: "r" * 40,
        cloud_deploy.POSTGRES_PASSWORD_KEY: "q" * 40,
    }
    environ = {
        "PATH": os.environ["PATH"],
        cloud_deploy.APP_SECRETS_VAR: json.dumps(values),
        cloud_deploy.ENVIRONMENT_VAR: "dev",
    }
    assert cloud_deploy.run(["true"], environ, build_dir=tmp_path) == 0
    secrets_dir = tmp_path / "dev" / "secrets"
    assert (secrets_dir / "item_socket_jwt_secret").read_text() == "j" * 64
    assert (secrets_dir / "redis_password").read_text() == "r" * 40
    assert (secrets_dir / "postgres_password").read_text() == "q" * 40
    users = (secrets_dir / "traefik_dashboard_users").read_text()
    assert (
        users.startswith("admin:$2") and (secrets_dir / "traefik_dashboard_password").read_text() == "p" * 24
    )
    assert all((secrets_dir / name).stat().st_mode & 0o777 == 0o600 for name in os.listdir(secrets_dir))
    # Unchanged values change nothing (a new bcrypt salt would roll Traefik on every deploy).
    assert cloud_deploy.write_app_secrets(values, secrets_dir) == []
    assert (secrets_dir / "traefik_dashboard_users").read_text() == users


def test_the_wrapper_reports_an_incomplete_setup_as_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (cloud_deploy.PRIVATE_KEY_VAR, cloud_deploy.HOST_KEY_VAR, cloud_deploy.APP_SECRETS_VAR):
        monkeypatch.delenv(name, raising=False)
    assert cloud_deploy.main(["--", "true"]) == 0  # nothing to set up: the command just runs
    monkeypatch.setenv(
        cloud_deploy.HOST_KEY_VAR,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDsAv6Gu3peoqR+hx8LYO3CIRaglqPFuXSwT0C1/nnSh",
    )
    assert cloud_deploy.main(["--", "true"]) == 2
    assert capsys.readouterr().err.startswith("ERROR (SshSetup): set both SPACED_SSH_PRIVATE_KEY")
