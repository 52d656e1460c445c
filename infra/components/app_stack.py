"""The application stack as a Pulumi component: runs the same deploy function as `spaced up local`.

The Pulumi program builds the StackSettings from the topology it already loaded and hands them
here; the command is `python -m infra.cli deploy --settings -` on the machine running Pulumi, with
the settings as JSON on its stdin and DOCKER_HOST pointing at the swarm manager (ssh://...). The
digest of the rendered stack (compose file and config files) is part of the command's environment,
so changing the stack redeploys it.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
from pulumi_command import local

from infra.app_stack.environments import REPO_ROOT
from infra.app_stack.model import StackSettings
from infra.app_stack.render import render_stack
from infra.cloud_deploy import CloudDeployArgs, command_environment, wrap_command


@dataclass
class AppStackArgs:
    """What the component needs: the environment's stack settings and where its swarm manager's
    engine is (None = the local engine)."""

    settings: StackSettings
    docker_host: pulumi.Input[str] | None
    # A cloud deploy: the deploy key, the manager's pinned host key and the application secrets from
    # the Pulumi state (infra/cloud_deploy.py wraps the command with them).
    cloud: CloudDeployArgs | None = None
    # Provided Docker secrets (alert receivers' credentials): SPACED_SECRET_<KEY> -> secret value.
    secret_environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)


def deploy_command(*, remove: bool = False) -> str:
    """The shell command the component runs (the interpreter of this Pulumi program, the project's)."""
    argv = [sys.executable, "-m", "infra.cli", "deploy", "--settings", "-"]
    if remove:
        argv.append("--remove")
    return shlex.join(argv)


class AppStack(pulumi.ComponentResource):
    """Deploys the application stack onto a swarm and waits until every service is healthy."""

    digest: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(self, name: str, args: AppStackArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("spaced:app:AppStack", name, None, opts)
        settings = args.settings
        digest = render_stack(settings).digest()
        environment: dict[str, pulumi.Input[str]] = {"SPACED_STACK_DIGEST": digest}
        if args.docker_host is not None:
            environment["DOCKER_HOST"] = args.docker_host
        wrap = wrap_command if args.cloud is not None else (lambda command: command)
        if args.cloud is not None:
            environment |= command_environment(args.cloud)
        environment |= {name: pulumi.Output.secret(value) for name, value in args.secret_environment.items()}
        # The digest goes into the environment rather than `triggers`: a trigger change *replaces*
        # the command, which would run `delete` (docker stack rm) first and take the site down.
        # An input change runs `update` instead: a rolling `docker stack deploy`.
        self.command = local.Command(
            f"{name}-deploy",
            create=wrap(deploy_command()),
            update=wrap(deploy_command()),
            delete=wrap(deploy_command(remove=True)),
            stdin=settings.to_json(),
            environment=environment,
            dir=str(REPO_ROOT),
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["environment"]),
        )
        self.digest = pulumi.Output.from_input(digest)
        self.url = pulumi.Output.from_input(
            f"https://{settings.domain}/" if settings.domain else f"http://localhost:{settings.http_port}/"
        )
        self.register_outputs({"digest": self.digest, "url": self.url})
