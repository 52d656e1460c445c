"""The stack's application secrets: content generated once on the deploying machine, Docker secrets
named by content hash (`<stack>_<key>_<sha256[:12]>`), so new content makes a new secret and rolls
the services that use it. Files under `build/<env>/secrets/` are mode 0600 and never committed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from infra.app_stack import commands
from infra.app_stack.environments import REPO_ROOT
from infra.app_stack.model import SecretSpec, StackSettingsError, content_hash
from infra.app_stack.services.item_socket import JWT_SECRET
from infra.app_stack.services.postgres import PASSWORD_SECRET as POSTGRES_PASSWORD
from infra.app_stack.services.redis import PASSWORD_SECRET as REDIS_PASSWORD
from infra.app_stack.services.traefik import DASHBOARD_USERS
from infra.docker_cli import DockerRunner

Progress = Callable[[str], None]
BUILD_DIR = REPO_ROOT / "build"
DASHBOARD_USER = "admin"
DASHBOARD_PASSWORD_FILE = "traefik_dashboard_password"


def generate_secret(key: str, secrets_dir: Path, env: Mapping[str, str]) -> bytes:
    """Fresh content for secret `key` (also writes the dashboard password file next to it)."""
    if key == JWT_SECRET:
        return secrets.token_urlsafe(48).encode()
    if key in (REDIS_PASSWORD, POSTGRES_PASSWORD):
        # URL-safe characters only: no quoting in Redis' configuration or libpq's password file.
        return secrets.token_urlsafe(32).encode()
    if key == DASHBOARD_USERS:
        import bcrypt  # only needed when a new users file is made

        password = env.get("SPACED_DASHBOARD_PASSWORD") or secrets.token_urlsafe(18)
        _write_private(secrets_dir / DASHBOARD_PASSWORD_FILE, password.encode())
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        return f"{DASHBOARD_USER}:{hashed}\n".encode()
    raise ValueError(f"no generator for secret {key!r}")


def _write_private(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)


def secrets_dir_for(environment: str, build_dir: Path = BUILD_DIR) -> Path:
    """Where an environment's generated secrets live on the deploying machine (gitignored, 0600)."""
    return build_dir / environment / "secrets"


def local_secret_contents(
    specs: Sequence[SecretSpec], secrets_dir: Path, env: Mapping[str, str]
) -> dict[str, bytes]:
    """Each secret's content: a provided one from its environment variable, a generated one read
    from `secrets_dir` (generated there on first use).

    Raises StackSettingsError naming the variable of a provided secret that is not set.
    """
    contents = {}
    missing = [spec for spec in specs if spec.provided and not env.get(spec.env_name)]
    if missing:
        raise StackSettingsError(
            "; ".join(
                f"{spec.description}: set {spec.env_name} (in the cloud: pulumi config set --secret "
                f"spaced:{spec.key.replace('_', '-')} <value>)"
                for spec in missing
            )
        )
    for spec in specs:
        if spec.provided:
            contents[spec.key] = env[spec.env_name].encode()
            continue
        path = secrets_dir / spec.key
        if not path.is_file():
            _write_private(path, generate_secret(spec.key, secrets_dir, env))
        contents[spec.key] = path.read_bytes()
    return contents


def secret_docker_names(stack: str, contents: Mapping[str, bytes]) -> dict[str, str]:
    """Content-hashed Docker names of the secrets: new content, new secret, rolled services."""
    return {key: f"{stack}_{key}_{content_hash(data)}" for key, data in contents.items()}


def ensure_secrets(
    runner: DockerRunner, stack: str, contents: Mapping[str, bytes], progress: Progress
) -> dict[str, str]:
    """Create the Docker secrets that do not exist yet; returns key -> Docker name."""
    names = secret_docker_names(stack, contents)
    existing = set(runner.run(commands.secret_list_command(stack)).stdout.split())
    for key, name in names.items():
        if name not in existing:
            progress(f"creating Docker secret {name}")
            runner.run(commands.secret_create_command(stack, name), stdin=contents[key])
    return names
