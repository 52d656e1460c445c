"""`spaced`: run the application stack locally and look at any environment.

    spaced up local [--no-cadvisor] [--http-port N] [--prometheus-port N] [--timeout S]
    spaced down local
    spaced status [ENV] [--docker-host ssh://user@manager]
    spaced render ENV [--out DIR] [--no-cadvisor]
    spaced token [ENV] [--doc GLOB] [--read-only] [--ttl SECONDS]
    spaced deploy [ENV] [--settings FILE|-] [--docker-host ssh://…] [--remove]
    spaced images [--only item_socket,…] [--json]
    spaced alerts [ENV] [--docker-host ssh://…] [--json]
    spaced backup [ENV] [--docker-host ssh://…]
    spaced restore [ENV] BACKUP --yes [--docker-host ssh://…]
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
import os
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.app_stack import backups, commands
from infra.app_stack.alerting import alert_rows
from infra.app_stack.deploy import DEFAULT_TIMEOUT, deploy, ensure_swarm_manager, remove
from infra.app_stack.environments import settings_for_environment
from infra.app_stack.local import mint_token, prepare_local, read_jwt_secret
from infra.app_stack.model import LOCAL_ENVIRONMENT, StackSettings
from infra.app_stack.render import render_stack, write_stack
from infra.ci.commands import add_ci_parser
from infra.dns_check.commands import add_dns_parser
from infra.docker_cli import DockerRunner
from infra.errors import CliError, SpacedError
from infra.images import BUILT_SERVICES, DEFAULT_CACHE_DIR, build_images


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
    """Remove the local stack and wait until its containers and networks are gone (volumes and
    secrets stay)."""
    _local_only("down", args.env)
    settings = _settings(args)
    DockerRunner().run(commands.engine_version_command())
    remove(settings.stack_name, progress=_progress, timeout=args.timeout)
    return 0


def service_ports(service: Mapping[str, Any]) -> str:
    """Published ports of one `docker service inspect` object, e.g. "8080->80/tcp (host)"."""
    ports = (service.get("Spec", {}).get("EndpointSpec") or {}).get("Ports") or []
    return ", ".join(
        f"{p['PublishedPort']}->{p['TargetPort']}/{p.get('Protocol', 'tcp')} "
        f"({p.get('PublishMode', 'ingress')})"
        for p in ports
        if "PublishedPort" in p
    )


def cmd_status(args: argparse.Namespace) -> int:
    """Table of the stack's services on the environment's engine, with their published ports."""
    settings = _settings(args)
    runner = DockerRunner(docker_host=args.docker_host)
    ensure_swarm_manager(runner)
    rows = [
        json.loads(line)
        for line in runner.run(commands.service_list_command(settings.stack_name)).stdout.splitlines()
    ]
    where = f"https://{settings.domain}/" if settings.domain else f"http://localhost:{settings.http_port}/"
    print(f"environment {settings.environment}, stack {settings.stack_name} at {where}")
    print(f"engine {runner.describe()}")
    if not rows:
        print("(no services: the stack is not deployed)")
        return 0
    inspected = json.loads(runner.run(commands.service_inspect_command([r["Name"] for r in rows])).stdout)
    ports = {service["Spec"]["Name"]: service_ports(service) for service in inspected}
    print(f"{'SERVICE':<24} {'MODE':<11} {'REPLICAS':<10} {'PORTS':<26} IMAGE")
    for row in sorted(rows, key=lambda r: r["Name"]):
        shown = ports.get(row["Name"]) or "-"
        print(f"{row['Name']:<24} {row['Mode']:<11} {row['Replicas']:<10} {shown:<26} {row['Image']}")
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy (or, with --remove, remove) an environment's stack and wait: what the Pulumi AppStack
    component and CI pipelines run. Settings come as JSON (`--settings FILE`, `-` = stdin, as the
    component passes them) or from the environment's stack file."""
    if args.settings:
        text = sys.stdin.read() if args.settings == "-" else Path(args.settings).read_text()
        settings = StackSettings.from_json(text)
    elif args.env:
        settings = settings_for_environment(args.env)
    else:
        raise CliError("BadArguments", "spaced deploy needs an environment name or --settings FILE|-")
    if args.remove:
        remove(settings.stack_name, docker_host=args.docker_host, progress=_progress, timeout=args.timeout)
        return 0
    if settings.is_local:
        settings = prepare_local(settings, DockerRunner(args.docker_host), _progress)
    deploy(settings, docker_host=args.docker_host, progress=_progress, timeout=args.timeout)
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    """What is firing (Alertmanager) or pending (Prometheus) now, as a table or JSON."""
    settings = _settings(args)
    runner = DockerRunner(docker_host=args.docker_host)
    ensure_swarm_manager(runner)
    stack = settings.stack_name
    image = runner.run(commands.service_image_command(f"{stack}_alertmanager")).stdout.strip()
    network = f"{stack}_monitoring"

    def get(service: str, port: int, path: str) -> Any:
        url = f"http://tasks.{stack}_{service}:{port}{path}"
        body = runner.run(commands.http_get_on_network_command(network, image, url), timeout=60).stdout
        return json.loads(body)

    rows = alert_rows(get("alertmanager", 9093, "/api/v2/alerts"), get("prometheus", 9090, "/api/v1/alerts"))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"environment {settings.environment}, stack {stack}: {len(rows)} alert(s)")
    if not settings.alerting.receivers:
        print("(no receivers in spaced:alerting: these reach nobody)")
    if rows:
        print(f"{'STATE':<11} {'ALERT':<22} {'SEVERITY':<9} {'SINCE':<20} {'WHERE':<22} SUMMARY")
    for row in rows:
        print(
            f"{row['state']:<11} {row['alertname']:<22} {row['severity']:<9} {row['since']:<20} "
            f"{row['where']:<22} {row['summary']}"
        )
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Back up the environment's PostgreSQL database now, verified like the scheduled backups."""
    settings = _settings(args)
    runner = DockerRunner(docker_host=args.docker_host)
    ensure_swarm_manager(runner)
    result = backups.backup_now(runner, settings.stack_name, _progress, timeout=args.timeout)
    print(f"backup {result.file}")
    print(f"  size       {result.size} bytes")
    print(f"  documents  {result.documents} (counted after restoring it into a scratch database)")
    print(f"  where      volume {backups.volume_name(settings.stack_name)} on the PostgreSQL node")
    print(f"  restore    spaced restore {settings.environment} {result.file} --yes")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup into the environment's database (item_socket stopped meanwhile)."""
    settings = _settings(args)
    backups.check_backup_name(args.backup)
    if not args.yes:
        raise CliError(
            "ConfirmationNeeded",
            f"`spaced restore {settings.environment} {args.backup}` replaces the documents in "
            f"{settings.environment}'s database with the backup's, and stops item_socket while it runs "
            "(clients reconnect afterwards); add --yes to do it",
        )
    runner = DockerRunner(docker_host=args.docker_host)
    ensure_swarm_manager(runner)
    result = backups.restore(runner, settings.stack_name, args.backup, _progress, timeout=args.timeout)
    print(f"restored {result.file} ({result.size} bytes): {result.documents} documents")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    """Build the stack's images (or find them by their content tags) on the engine."""
    services = [s.strip() for s in args.only.split(",") if s.strip()]
    progress = (lambda message: print(message, file=sys.stderr)) if args.json else print
    cache_dir = Path(os.environ.get("SPACED_CACHE_DIR", DEFAULT_CACHE_DIR))
    started = time.monotonic()
    results = build_images(services, docker_host=args.docker_host, cache_dir=cache_dir, progress=progress)
    if args.json:
        print(json.dumps({r.service: r.reference for r in results}, indent=2))
        return 0
    for result in results:
        state = f"built in {result.seconds:.1f}s" if result.built else "up to date"
        print(f"{result.service:14} {result.reference:40} {state}")
    print(f"images: done in {time.monotonic() - started:.1f}s")
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

    down = sub.add_parser("down", help="remove the local stack and wait until it is gone (volumes stay)")
    down.add_argument("env", help="local")
    down.add_argument("--timeout", type=float, default=120.0, help="seconds to wait until it is gone")
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
    deploy_parser = sub.add_parser(
        "deploy", help="deploy an environment's stack to a swarm and wait (what pulumi up runs)"
    )
    deploy_parser.add_argument("env", nargs="?", default=None, help="environment (or give --settings)")
    deploy_parser.add_argument("--settings", default=None, help="stack settings JSON file, - = stdin")
    deploy_parser.add_argument(
        "--docker-host", default=None, help="e.g. ssh://deploy@<manager> (default: DOCKER_HOST)"
    )
    deploy_parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait")
    deploy_parser.add_argument("--remove", action="store_true", help="remove the stack instead")
    deploy_parser.set_defaults(func=cmd_deploy)

    alerts = sub.add_parser("alerts", help="alerts firing (Alertmanager) or pending (Prometheus) now")
    alerts.add_argument("env", nargs="?", default=LOCAL_ENVIRONMENT)
    alerts.add_argument("--docker-host", default=None, help="ssh://deploy@<manager> (default: DOCKER_HOST)")
    alerts.add_argument("--json", action="store_true", help="print the rows as JSON")
    alerts.set_defaults(func=cmd_alerts)

    backup = sub.add_parser("backup", help="back up the PostgreSQL database now (verified), print the file")
    backup.add_argument("env", nargs="?", default=LOCAL_ENVIRONMENT)
    backup.add_argument("--docker-host", default=None, help="ssh://deploy@<manager> (default: DOCKER_HOST)")
    backup.add_argument("--timeout", type=float, default=backups.JOB_TIMEOUT, help="seconds to wait")
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser("restore", help="restore a backup into the database (needs --yes)")
    restore.add_argument("env", nargs="?", default=LOCAL_ENVIRONMENT)
    restore.add_argument("backup", help="the backup's file name, as `spaced backup` printed it")
    restore.add_argument("--yes", action="store_true", help="yes, replace the database's documents")
    restore.add_argument("--docker-host", default=None, help="ssh://deploy@<manager> (default: DOCKER_HOST)")
    restore.add_argument("--timeout", type=float, default=backups.JOB_TIMEOUT, help="seconds to wait")
    restore.set_defaults(func=cmd_restore)

    images = sub.add_parser("images", help="build the stack's images locally (no registry)")
    images.add_argument(
        "--only", default=",".join(BUILT_SERVICES), help=f"comma-separated, of {','.join(BUILT_SERVICES)}"
    )
    images.add_argument("--docker-host", default=None, help="engine address (default: DOCKER_HOST or local)")
    images.add_argument("--json", action="store_true", help="print {service: reference} as JSON on stdout")
    images.set_defaults(func=cmd_images)

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
    return exc.kind if isinstance(exc, SpacedError) else "InternalError"


if __name__ == "__main__":
    sys.exit(main())
