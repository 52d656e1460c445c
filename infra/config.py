"""Reads the stack configuration once: the validated topology and the secrets the program needs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi

from infra.app_stack.alerting import Alerting, parse_alerting
from infra.app_stack.model import StackSettingsError
from infra.topology import CREDENTIALS, Topology, load_topology

ALERTING_KEY = "alerting"
TOPOLOGY_KEY = "topology"
SSH_PRIVATE_KEY = "sshPrivateKey"
# Stack config keys of the AWS credential settings -> the aws.Provider argument each one feeds.
# Pulumi hands `aws:*` config only to the *default* provider (pulumi-aws issues 1307 and 3259), and
# every AWS node uses an explicit regional provider, so the program passes them on itself.
AWS_PROVIDER_SETTINGS: dict[str, str] = {
    "aws:accessKey": "access_key",
    "aws:secretKey": "secret_key",
    "aws:token": "token",
    "aws:profile": "profile",
    "aws:sharedCredentialsFiles": "shared_credentials_files",
}
SECRET_PROVIDER_SETTINGS = frozenset({"aws:secretKey", "aws:token"})


@dataclass(frozen=True)
class StackConfig:
    """The stack's topology plus its secrets (as secret Outputs, never plain strings)."""

    topology: Topology
    ssh_private_key: pulumi.Output[str] | None
    # aws.Provider keyword -> value, for the explicit regional providers (secrets stay Outputs).
    aws_provider_settings: Mapping[str, pulumi.Input[Any]] = field(default_factory=dict)
    # spaced:alerting, and its receivers' credentials: SPACED_SECRET_<KEY> -> secret Output.
    alerting: Alerting = field(default_factory=Alerting)
    alert_secrets: Mapping[str, pulumi.Output[str]] = field(default_factory=dict)


def credentials_available(environ: Mapping[str, str] | None = None) -> dict[str, bool]:
    """Credential name -> whether one of its config keys or environment variables is set."""
    environ = os.environ if environ is None else environ
    # The raw lookup: `pulumi.Config.get` would warn about reading secrets in plain text.
    return {
        name: any(pulumi.runtime.get_config(key) is not None for key in credential.config_keys)
        or any(environ.get(var) for var in credential.env_vars)
        for name, credential in CREDENTIALS.items()
    }


def provider_settings(settings: Mapping[str, str]) -> dict[str, pulumi.Input[Any]]:
    """Provider keyword -> value for each config key of `settings` (config key -> keyword) that is set.

    Secret keys come back as secret Outputs; list-valued settings (JSON arrays) as lists.
    """
    found: dict[str, pulumi.Input[Any]] = {}
    for key, keyword in settings.items():
        namespace, name = key.split(":", 1)
        config = pulumi.Config(namespace)
        if pulumi.runtime.get_config(key) is None:
            continue
        if key in SECRET_PROVIDER_SETTINGS:
            found[keyword] = config.require_secret(name)
        elif keyword.endswith("_files"):
            found[keyword] = config.require_object(name)
        else:
            found[keyword] = config.require(name)
    return found


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
    try:
        alerting = parse_alerting(config.get_object(ALERTING_KEY), f"spaced:{ALERTING_KEY}")
    except StackSettingsError as error:
        stack = pulumi.get_stack()
        raise pulumi.RunError(f"{error}\nFix stacks/Pulumi.{stack}.yaml and run again.") from None
    # Each receiver credential is a config secret named after its Docker secret, e.g.
    # spaced:alertmanager-ops-slack-slack-url; a missing one stops the run naming the key.
    alert_secrets = {
        f"SPACED_SECRET_{key.upper()}": config.require_secret(key.replace("_", "-"))
        for receiver in alerting.receivers
        for key in receiver.secret_keys()
    }
    return StackConfig(
        topology=topology,
        ssh_private_key=ssh_private_key,
        aws_provider_settings=provider_settings(AWS_PROVIDER_SETTINGS),
        alerting=alerting,
        alert_secrets=alert_secrets,
    )
