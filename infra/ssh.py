"""SSH for tools the toolkit runs locally (the docker CLI's `ssh://` connections): the stack's deploy
key and the server's pinned host key, never the operator's keys, agent, config or known_hosts.

`pinned_ssh(...)` is a context manager that writes a private temporary directory with

- `id_deploy`: the deploy key (mode 600),
- `known_hosts`: one line, the server's pinned host key under an alias that names the host,
- `config`: `ssh -F` configuration that uses only those two files (no agent, no other identity,
  strict host-key checking, batch mode),
- `bin/ssh`: a wrapper that runs the real ssh with `-F config`,

and yields an environment whose PATH starts with `bin/`. The docker CLI runs `ssh` from PATH for
`DOCKER_HOST=ssh://user@host` (then `docker system dial-stdio` on the server), so any docker command
run with that environment authenticates with the deploy key and refuses a server that presents
another host key; ssh's refusal names the host (`spaced-<name>`). The directory is removed when the
block ends, also on errors.

Shapes: `private_key` is an OpenSSH/PEM private key (text); `host_key` an OpenSSH public key line
("ssh-ed25519 AAAA...", an `ssh-keyscan` line is accepted too). Errors: `SshSetupError` for a host
key that is not a public key line or when no ssh client is installed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from infra.errors import SpacedError

_KEY_LINE = re.compile(r"^(?:\S+\s+)?((?:ssh|ecdsa|sk)-[A-Za-z0-9@.-]+)\s+(AAAA[A-Za-z0-9+/=]+)")
_ALIAS_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class SshSetupError(SpacedError, ValueError):
    """The pinned SSH setup cannot be made (bad host key, no ssh client, missing settings)."""

    kind = "SshSetup"


@dataclass(frozen=True)
class PinnedSsh:
    """What `pinned_ssh` made: the directory, the ssh config it passes with -F, and the environment
    (PATH with the wrapper first, SSH_AUTH_SOCK removed) to run the docker CLI with."""

    directory: Path
    config: Path
    env: dict[str, str]


def host_key_line(host_key: str) -> str:
    """`<type> <base64>` of an OpenSSH public key or `ssh-keyscan` line; SshSetupError otherwise."""
    match = _KEY_LINE.match(host_key.strip())
    if not match:
        raise SshSetupError(f"not an SSH host key line like 'ssh-ed25519 AAAA...': {host_key[:40]!r}")
    return f"{match.group(1)} {match.group(2)}"


def ssh_config(identity: Path, known_hosts: Path, alias: str) -> str:
    """The `ssh -F` configuration: only the deploy key, only the pinned host key, no agent."""
    return "\n".join(
        [
            "Host *",
            f"  IdentityFile {identity}",
            "  IdentitiesOnly yes",
            "  IdentityAgent none",
            f"  UserKnownHostsFile {known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
            # The key is looked up under this alias whatever address or port the connection uses, and
            # ssh names it when the key does not match.
            f"  HostKeyAlias {alias}",
            "  StrictHostKeyChecking yes",
            "  CheckHostIP no",
            "  UpdateHostKeys no",
            "  BatchMode yes",
            "  PasswordAuthentication no",
            "  KbdInteractiveAuthentication no",
            "  ControlMaster no",
            "  ControlPath none",
            "",
        ]
    )


@contextmanager
def pinned_ssh(
    private_key: str, host_key: str, *, host_name: str, environ: Mapping[str, str] | None = None
) -> Iterator[PinnedSsh]:
    """A temporary SSH setup for one server (see the module docstring); removed on exit.

    `host_name` names the server in ssh's messages (e.g. the topology node, or its address).
    `environ` is the environment to extend (default: this process's).
    """
    real_ssh = shutil.which("ssh")
    if real_ssh is None:
        raise SshSetupError("no ssh client on PATH; install openssh-client")
    pinned = host_key_line(host_key)
    alias = "spaced-" + _ALIAS_SAFE.sub("-", host_name)
    directory = Path(tempfile.mkdtemp(prefix="spaced-ssh-"))  # mode 700
    try:
        identity = directory / "id_deploy"
        identity.touch(mode=0o600)
        identity.write_text(private_key.strip() + "\n")
        known_hosts = directory / "known_hosts"
        known_hosts.write_text(f"{alias} {pinned}\n")
        config = directory / "config"
        config.write_text(ssh_config(identity, known_hosts, alias))
        wrapper = directory / "bin" / "ssh"
        wrapper.parent.mkdir(mode=0o700)
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(real_ssh)} -F {shlex.quote(str(config))} "$@"\n')
        wrapper.chmod(0o700)
        env = dict(os.environ if environ is None else environ)
        env.pop("SSH_AUTH_SOCK", None)
        env["PATH"] = f"{wrapper.parent}{os.pathsep}{env.get('PATH', os.defpath)}"
        yield PinnedSsh(directory=directory, config=config, env=env)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
