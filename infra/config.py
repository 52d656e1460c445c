"""Reads the stack configuration once: the validated topology and the secrets the program needs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from infra.topology import CREDENTIALS, Topology, load_topology

TOPOLOGY_KEY = "topology"
SSH_PRIVATE_KEY = "sshPrivateKey"


@dataclass(frozen=True)
class StackConfig:
    """The stack's topology plus its secrets (as secret Outputs, never plain strings)."""

    topology: Topology
    ssh_private_key: pulumi.Output[str] | None


def credentials_available(environ: Mapping[str, str] | None = None) -> dict[str, bool]:
    """Credential name -> whether one of its config keys or environment variables is set."""
    environ = os.environ if environ is None else environ
    # The raw lookup: `pulumi.Config.get` would warn about reading secrets in plain text.
    return {
        name: any(pulumi.runtime.get_config(key) is not None for key in credential.config_keys)
        or any(environ.get(var) for var in credential.env_vars)
        for name, credential in CREDENTIALS.items()
    }


def load(environ: Mapping[str, str] | None = None) -> StackConfig:
    """The topology of the current stack; TopologyError (listing every problem) when it is invalid."""
    config = pulumi.Config("spaced")
    raw: Any = config.get_object(TOPOLOGY_KEY)
    if raw is None:
        stack = pulumi.get_stack()
        raise pulumi.RunError(
            f"spaced:topology is not set for stack {stack!r}: create stacks/Pulumi.{stack}.yaml with a "
            "`config: spaced:topology:` block (see stacks/Pulumi.dev.yaml for an example)"
        )
    topology = load_topology(raw, credentials=credentials_available(environ))
    ssh_private_key = config.get_secret(SSH_PRIVATE_KEY)
    return StackConfig(topology=topology, ssh_private_key=ssh_private_key)
