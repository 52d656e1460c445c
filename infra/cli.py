"""`spaced`: run the application stack locally and look at any environment.

    spaced up local [--no-cadvisor] [--http-port N] [--prometheus-port N] [--timeout S]
    spaced down local
    spaced status [ENV] [--docker-host ssh://user@manager]
    spaced render ENV [--out DIR] [--no-cadvisor]
    spaced token [ENV] [--doc GLOB] [--read-only] [--ttl SECONDS]
    spaced dns plan ENV [--outputs FILE] [--json]
    spaced dns check ENV [--resolver IP[:PORT]] [--outputs FILE] [--json]
    spaced ci affected-stacks [--base REV] [--head REV] [--files PATH...] [--all]
    spaced ci image-tag

Cloud environments are deployed by `pulumi up --stack <env>` (the same renderer and deploy function).
Every failure ends in one line `ERROR (<Kind>): <message>` that names what to do next; `--debug`
adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from infra.app_stack.deploy import (
    DEFAULT_TIMEOUT,
    DeployError,
    DockerRunner,
    deploy,
    ensure_swarm_manager,
    remove,
    service_list_command,
)
from infra.app_stack.environments import settings_for_environment
from infra.app_stack.model import LOCAL_ENVIRONMENT, StackSettings, StackSettingsError
from infra.app_stack.render import render_stack, write_stack


class CliError(Exception):
    """A failure the CLI reports as `ERROR (<kind>): <message>`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _progress(message: str) -> None:
    print(f"==> {message}", flush=True)


def _local_only(command: str, environment: str) -> None:
    if environment != LOCAL_ENVIRONMENT:
        raise CliError(
            "CloudEnvironment",
            f"`spaced {command} {environment}`: cloud environments are deployed with "
            f"`pulumi up --stack {environment}` (and removed with `pulumi destroy --stack {environment}`); "
            f"`spaced status {environment}` and `spaced render {environment}` work for any environment",
        )


def cmd_up(args: argparse.Namespace) -> int:
    """Local: swarm, ports, images, deploy, wait, print the URLs."""
    from infra.app_stack.local import mint_token, prepare_local, read_jwt_secret

    _local_only("up", args.env)
    settings = prepare_local(_settings(args), DockerRunner(), _progress)
    result = deploy(settings, progress=_progress, timeout=args.timeout)
    token = mint_token(read_jwt_secret(LOCAL_ENVIRONMENT), {"*": "write"}, 7 * 86400, time.time())
    print(_urls(settings, token, result.secrets_dir))
    return 0


def _urls(settings: StackSettings, token: str, secrets_dir: Path) -> str:
    base = f"http://localhost:{settings.http_port}"
    lines = [
        f"Spaced is up (stack {settings.stack_name}, environment {settings.environment}):",
        f"  board       {base}/#token={token}",
        f"  dashboard   {base}/dashboard/  (user admin, password in "
        f"{secrets_dir}/traefik_dashboard_password)",
    ]
    if settings.prometheus_port:
        lines.append(
            f"  prometheus  http://127.0.0.1:{settings.prometheus_port}/  "
            "(host-mode publishing listens on every address of this machine)"
        )
    lines.append("  more tokens: spaced token local --doc 'board*'")
    return "\n".join(lines)


def _env_with_prometheus_port(args: argparse.Namespace) -> dict[str, str] | None:
    import os

    if getattr(args, "prometheus_port", None) is None:
        return None
    return {**os.environ, "SPACED_PROMETHEUS_PORT": str(args.prometheus_port)}


def _settings(args: argparse.Namespace) -> StackSettings:
    return settings_for_environment(
        args.env,
        include_cadvisor=False if getattr(args, "no_cadvisor", False) else None,
        http_port=getattr(args, "http_port", None),
        env=_env_with_prometheus_port(args),
    )


def cmd_down(args: argparse.Namespace) -> int:
    """Remove the local stack (volumes and secrets stay)."""
    _local_only("down", args.env)
    settings = _settings(args)
    runner = DockerRunner()
    runner.run(["docker", "info", "--format", "{{.ServerVersion}}"])
    remove(settings.stack_name, progress=_progress)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Table of the stack's services on the environment's engine."""
    settings = _settings(args)
    runner = DockerRunner(docker_host=args.docker_host)
    ensure_swarm_manager(runner)
    rows = [
        json.loads(line) for line in runner.run(service_list_command(settings.stack_name)).stdout.splitlines()
    ]
    where = f"https://{settings.domain}/" if settings.domain else f"http://localhost:{settings.http_port}/"
    print(f"environment {settings.environment}, stack {settings.stack_name} at {where}")
    print(f"engine {runner.describe()}")
    if not rows:
        print("(no services: the stack is not deployed)")
        return 0
    print(f"{'SERVICE':<24} {'MODE':<11} {'REPLICAS':<10} {'PORTS':<22} IMAGE")
    for row in sorted(rows, key=lambda r: r["Name"]):
        ports = row.get("Ports", "")
        print(f"{row['Name']:<24} {row['Mode']:<11} {row['Replicas']:<10} {ports:<22} {row['Image']}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    """Print the compose file (or write it with its config files to --out)."""
    rendered = render_stack(_settings(args))
    if args.out:
        path = write_stack(rendered, Path(args.out))
        print(f"wrote {path} and {len(rendered.config_files)} config files", file=sys.stderr)
    else:
        sys.stdout.write(rendered.compose_yaml())
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    """Print a JWT for the board page / Yjs clients, signed with the environment's secret."""
    from infra.app_stack.local import mint_token, read_jwt_secret

    try:
        secret = read_jwt_secret(args.env)
    except FileNotFoundError as exc:
        raise CliError("NoSecret", str(exc)) from exc
    access = "read" if args.read_only else "write"
    print(mint_token(secret, {args.doc: access}, args.ttl, time.time()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `spaced` argument parser."""
    parser = argparse.ArgumentParser(prog="spaced", description="Run the Spaced application stack.")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_switches(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-cadvisor", action="store_true", help="leave cAdvisor out (SPACED_NO_CADVISOR=1)")
        p.add_argument("--http-port", type=int, default=None, help="local HTTP port (SPACED_HTTP_PORT, 8080)")
        p.add_argument(
            "--prometheus-port", type=int, default=None, help="local Prometheus port, 0 = none (9090)"
        )

    up = sub.add_parser("up", help="deploy the stack locally and wait until it is healthy")
    up.add_argument("env", help="local (cloud environments: pulumi up --stack <env>)")
    up.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for health")
    with_switches(up)
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove the local stack (volumes and secrets stay)")
    down.add_argument("env", help="local")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="the stack's services and their replicas")
    status.add_argument("env", nargs="?", default=LOCAL_ENVIRONMENT)
    status.add_argument(
        "--docker-host", default=None, help="e.g. ssh://deploy@<manager> (default: DOCKER_HOST)"
    )
    status.set_defaults(func=cmd_status)

    render = sub.add_parser("render", help="print the compose file of an environment")
    render.add_argument("env")
    render.add_argument(
        "--out", default=None, help="write the compose file and config files into this directory"
    )
    with_switches(render)
    render.set_defaults(func=cmd_render)

    token = sub.add_parser("token", help="print a JWT for item_socket signed with the deployed secret")
    token.add_argument("env", nargs="?", default=LOCAL_ENVIRONMENT)
    token.add_argument("--doc", default="*", help="glob of the documents the token grants (default *)")
    token.add_argument("--read-only", action="store_true")
    token.add_argument("--ttl", type=int, default=86400, help="seconds until it expires")
    token.set_defaults(func=cmd_token)

    # Imported here: these modules import CliError from this one.
    from infra.ci.commands import add_ci_parser
    from infra.dns_check.commands import add_dns_parser

    add_dns_parser(sub)
    add_ci_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `spaced` console script: the one error exit."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("ERROR (Interrupted): stopped by Ctrl-C; run the command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"ERROR ({_kind(exc)}): {exc}", file=sys.stderr)
        if not args.debug and _kind(exc) == "InternalError":
            print("(run with --debug for the traceback)", file=sys.stderr)
        return 1


def _kind(exc: Exception) -> str:
    if isinstance(exc, CliError | DeployError):
        return exc.kind
    if isinstance(exc, StackSettingsError):
        return "BadSettings"
    return "InternalError"


if __name__ == "__main__":
    sys.exit(main())
