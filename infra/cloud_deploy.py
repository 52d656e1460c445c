"""Runs the application deploy of a cloud environment with what the Pulumi state holds.

`python -m infra.cloud_deploy -- <command...>` (the AppStack component's local command) runs
`<command>` (the deploy CLI; stdin passes through) after two preparations, both from environment
variables the component sets from Pulumi secrets:

- SSH: `SPACED_SSH_PRIVATE_KEY` (the stack's deploy key), `SPACED_SSH_HOST_KEY` (the swarm
  manager's pinned host key) and `SPACED_SSH_HOST_NAME` (its node name, for messages) become a
  temporary `infra.ssh.pinned_ssh` setup, so the docker CLI's `DOCKER_HOST=ssh://…` connection uses
  the deploy key and refuses any other host key; the key never reaches the command's environment
  and the setup is removed afterwards.
- Application secrets: `SPACED_APP_SECRETS` (JSON: `{"item_socket_jwt_secret": …,
  "traefik_dashboard_password": …, "redis_password": …, "postgres_password": …}`, made by
  pulumi_random and kept in the state) are written to the
  environment's secrets directory (`build/<env>/secrets`, mode 600) where the deploy reads them,
  instead of being generated anew on each machine that runs `pulumi up`. The dashboard's users file
  is rewritten only when its password changed (a bcrypt hash is salted: rewriting it every time
  would roll Traefik on every deploy).

Exit status: the command's; 2 with a one-line message when the environment is incomplete.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi

from infra.app_stack.services.item_socket import JWT_SECRET
from infra.app_stack.services.postgres import PASSWORD_SECRET as POSTGRES_PASSWORD_KEY
from infra.app_stack.services.redis import PASSWORD_SECRET as REDIS_PASSWORD_KEY
from infra.app_stack.services.traefik import DASHBOARD_USERS
from infra.app_stack.stack_secrets import DASHBOARD_PASSWORD_FILE, DASHBOARD_USER, secrets_dir_for
from infra.errors import SpacedError
from infra.ssh import SshSetupError, pinned_ssh

PRIVATE_KEY_VAR = "SPACED_SSH_PRIVATE_KEY"
HOST_KEY_VAR = "SPACED_SSH_HOST_KEY"
HOST_NAME_VAR = "SPACED_SSH_HOST_NAME"
APP_SECRETS_VAR = "SPACED_APP_SECRETS"
ENVIRONMENT_VAR = "SPACED_ENVIRONMENT"
# The keys of SPACED_APP_SECRETS.
JWT_KEY = JWT_SECRET
DASHBOARD_PASSWORD_KEY = DASHBOARD_PASSWORD_FILE
PLAIN_SECRET_KEYS = (JWT_KEY, REDIS_PASSWORD_KEY, POSTGRES_PASSWORD_KEY)
"""Keys written as they are (the dashboard's password becomes a users file instead)."""


@dataclass(frozen=True)
class CloudDeployArgs:
    """What a cloud deploy needs from the Pulumi program (all secrets stay Outputs)."""

    private_key: pulumi.Input[str]  # the stack's deploy key (spaced:sshPrivateKey)
    host_key: pulumi.Input[str]  # the swarm manager's SSH host key line
    host_name: str  # the swarm manager's node name
    environment: str
    app_secrets: pulumi.Input[Mapping[str, str]]  # JWT_KEY / DASHBOARD_PASSWORD_KEY -> value


def wrap_command(command: str) -> str:
    """`command` run through this module (the local interpreter of the Pulumi program)."""
    return shlex.join([sys.executable, "-m", "infra.cloud_deploy", "--"]) + " " + command


def command_environment(args: CloudDeployArgs) -> dict[str, pulumi.Input[str]]:
    """The environment variables `run` reads, as (secret) Outputs for a local.Command."""
    return {
        PRIVATE_KEY_VAR: pulumi.Output.secret(args.private_key),
        HOST_KEY_VAR: args.host_key,
        HOST_NAME_VAR: args.host_name,
        ENVIRONMENT_VAR: args.environment,
        APP_SECRETS_VAR: pulumi.Output.secret(
            pulumi.Output.from_input(args.app_secrets).apply(
                lambda values: json.dumps(dict(values), sort_keys=True)
            )
        ),
    }


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def write_app_secrets(values: Mapping[str, str], secrets_dir: Path) -> list[str]:
    """Write the state's application secrets where the deploy reads them; returns the files changed.

    `values` maps PLAIN_SECRET_KEYS and/or DASHBOARD_PASSWORD_KEY to their plain values.
    """
    changed = []
    for key in PLAIN_SECRET_KEYS:
        if key not in values:
            continue
        path = secrets_dir / key
        content = values[key].encode()
        if not path.is_file() or path.read_bytes() != content:
            _write_private(path, content)
            changed.append(key)
    if DASHBOARD_PASSWORD_KEY in values:
        password = values[DASHBOARD_PASSWORD_KEY].encode()
        password_path, users_path = secrets_dir / DASHBOARD_PASSWORD_FILE, secrets_dir / DASHBOARD_USERS
        if not (password_path.is_file() and password_path.read_bytes() == password and users_path.is_file()):
            import bcrypt  # only when the users file must be made

            hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=10)).decode()
            _write_private(password_path, password)
            _write_private(users_path, f"{DASHBOARD_USER}:{hashed}\n".encode())
            changed += [DASHBOARD_PASSWORD_FILE, DASHBOARD_USERS]
    return changed


def run(command: Sequence[str], environ: Mapping[str, str], build_dir: Path | None = None) -> int:
    """Prepare secrets and SSH from `environ`, run `command`, return its exit status."""
    child_env = {k: v for k, v in environ.items() if k not in (PRIVATE_KEY_VAR, APP_SECRETS_VAR)}
    if environ.get(APP_SECRETS_VAR):
        environment = environ.get(ENVIRONMENT_VAR)
        if not environment:
            raise SshSetupError(f"{APP_SECRETS_VAR} is set but {ENVIRONMENT_VAR} is not")
        secrets_dir = (
            secrets_dir_for(environment) if build_dir is None else secrets_dir_for(environment, build_dir)
        )
        write_app_secrets(json.loads(environ[APP_SECRETS_VAR]), secrets_dir)
    private_key, host_key = environ.get(PRIVATE_KEY_VAR), environ.get(HOST_KEY_VAR)
    if not private_key and not host_key:
        return subprocess.run(list(command), env=child_env, check=False).returncode
    if not (private_key and host_key):
        raise SshSetupError(
            f"set both {PRIVATE_KEY_VAR} and {HOST_KEY_VAR} (the deploy key and the pinned host key)"
        )
    host_name = environ.get(HOST_NAME_VAR) or "swarm-manager"
    with pinned_ssh(private_key, host_key, host_name=host_name, environ=child_env) as ssh:
        return subprocess.run(list(command), env=ssh.env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m infra.cloud_deploy -- <command...>`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m infra.cloud_deploy -- <command...>", file=sys.stderr)
        return 2
    try:
        return run(args, os.environ)
    except SpacedError as error:
        print(f"ERROR ({error.kind}): {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # SPACED_APP_SECRETS that is not JSON
        print(f"ERROR (CloudDeploy): {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
