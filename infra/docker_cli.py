"""The one Docker runner: runs docker CLI argv lists against one engine, bounded, with clear errors.

Argv lists are built elsewhere by pure functions (`infra.app_stack.commands`, `infra.images`);
this module only executes them. The engine is the local socket or `docker_host` (e.g. ssh://…).
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from infra.errors import SpacedError

log = logging.getLogger(__name__)

DEFAULT_COMMAND_TIMEOUT = 120.0
ERROR_TAIL_LINES = 25


class DockerUnavailableError(SpacedError):
    """The docker CLI is missing or the engine does not answer."""

    kind = "DockerUnavailable"


class DockerCommandError(SpacedError):
    """A docker command failed or did not finish in time; the message carries its output's tail."""

    kind = "DockerCommandFailed"


def docker_environment(docker_host: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Process environment for docker commands: DOCKER_HOST for a remote engine, the classic builder
    (`DOCKER_BUILDKIT=0`: Debian's docker.io ships no buildx plugin)."""
    env = dict(os.environ if base is None else base)
    env["DOCKER_BUILDKIT"] = "0"
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return env


def engine_unreachable(stderr: str) -> bool:
    """True when the CLI's error says that no engine answered (rather than that a command failed)."""
    markers = ("Cannot connect to the Docker daemon", "error during connect", "Is the docker daemon running")
    return any(m.lower() in stderr.lower() for m in markers)


@dataclass
class DockerRunner:
    """Runs docker commands against one engine; every call is bounded by `command_timeout` seconds
    unless the call gives its own `timeout`."""

    docker_host: str | None = None
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = docker_environment(self.docker_host)

    def run(
        self,
        cmd: Sequence[str],
        *,
        stdin: bytes | str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` (an argv list starting with "docker").

        Raises DockerUnavailableError when the CLI is missing or the engine does not answer, and,
        with `check`, DockerCommandError on a non-zero exit or after the timeout.
        """
        log.debug("running %s", " ".join(cmd))
        limit = self.command_timeout if timeout is None else timeout
        try:
            result = subprocess.run(
                list(cmd),
                input=stdin.decode() if isinstance(stdin, bytes) else stdin,
                capture_output=True,
                text=True,
                env=self.env,
                timeout=limit,
                check=False,
            )
        except FileNotFoundError:
            raise DockerUnavailableError(
                "the docker CLI is not installed; run `make deps` (installs docker.io)"
            ) from None
        except subprocess.TimeoutExpired:
            raise DockerCommandError(
                f"`{' '.join(cmd[:4])}` did not finish within {limit:.0f}s; "
                f"check the engine at {self.describe()}"
            ) from None
        if check and result.returncode != 0:
            stderr = result.stderr.strip()
            if engine_unreachable(stderr):
                raise DockerUnavailableError(self.unreachable_message(stderr))
            output = (stderr or result.stdout.strip()).splitlines()
            tail = "\n".join(output[-ERROR_TAIL_LINES:])
            raise DockerCommandError(f"`{' '.join(cmd[:4])}` failed (exit {result.returncode}): {tail}")
        return result

    def describe(self) -> str:
        """Where the engine is, for messages."""
        return (
            self.docker_host
            or self.env.get("DOCKER_HOST")
            or "the local engine (unix:///var/run/docker.sock)"
        )

    def unreachable_message(self, stderr: str) -> str:
        """What to do when the engine does not answer."""
        first_line = stderr.splitlines()[0] if stderr else "no answer"
        if self.describe().startswith("ssh://"):
            return (
                f"no Docker engine answers at {self.describe()} ({first_line}); "
                "check --docker-host / DOCKER_HOST and that the manager is reachable over SSH"
            )
        return (
            f"no Docker engine answers at {self.describe()} ({first_line}); start dockerd (make services)"
            " or point DOCKER_HOST at a running engine"
        )

    def check_engine(self) -> None:
        """Raise DockerUnavailableError unless the engine answers `docker version`."""
        result = self.run(["docker", "version", "--format", "{{.Server.Version}}"], check=False)
        if result.returncode != 0:
            raise DockerUnavailableError(self.unreachable_message(result.stderr.strip()))

    def image_exists(self, reference: str) -> bool:
        """True when the engine has an image with this reference."""
        return (
            self.run(["docker", "image", "inspect", "--format", "{{.Id}}", reference], check=False).returncode
            == 0
        )

    def supports_stack_detach(self) -> bool:
        """Whether this docker CLI has `docker stack deploy --detach` (CLI 25+)."""
        help_text = self.run(["docker", "stack", "deploy", "--help"], check=False).stdout
        return "--detach" in help_text
