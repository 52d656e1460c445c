"""The `spaced dns plan` and `spaced dns check` subcommands.

    spaced dns plan ENV [--outputs FILE] [--stack-file PATH] [--json]
    spaced dns check ENV [--resolver IP[:PORT]] [--outputs FILE] [--stack-file PATH]
                         [--timeout S] [--attempts N] [--json]

Every failure raises the CLI's `CliError`, so `spaced` prints one `ERROR (<Kind>): <message>` line:
`NoStack`, `BadTopology`, `BadOutputs`, `BadArgument`, and `DnsMismatch` (exit 1) when any record set
is not served as planned (the table above that line says which and why).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from infra.dns_check import compare, resolve
from infra.dns_check.plan import Plan, PlanError, format_plan_table, plan_for
from infra.errors import CliError


def _plan(args: argparse.Namespace) -> Plan:
    try:
        return plan_for(
            args.env,
            stack_path=Path(args.stack_file) if args.stack_file else None,
            outputs_path=Path(args.outputs) if args.outputs else None,
        )
    except PlanError as error:
        raise CliError(error.kind, str(error)) from error


def cmd_dns_plan(args: argparse.Namespace) -> int:
    """Print the records the stack wants (table, or JSON with --json)."""
    plan = _plan(args)
    if args.json:
        print(
            json.dumps(
                {
                    "environment": plan.environment,
                    "zone": plan.domain,
                    "backend": plan.backend,
                    "records": [r.as_json() for r in plan.records],
                    "warnings": list(plan.warnings),
                },
                indent=2,
            )
        )
    else:
        print(format_plan_table(plan))
    return 0


def cmd_dns_check(args: argparse.Namespace) -> int:
    """Resolve every planned record and report missing, wrong and extra ones; DnsMismatch on any."""
    plan = _plan(args)
    try:
        server, port = resolve.parse_resolver(args.resolver) if args.resolver else resolve.system_resolver()
        client = resolve.DnsClient(server, port, timeout=args.timeout, attempts=args.attempts)
    except ValueError as error:
        raise CliError("BadArgument", f"--resolver/--timeout/--attempts: {error}") from error
    where = f"[{server}]:{port}" if ":" in server else f"{server}:{port}"
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    findings = compare.check_records(plan.records, client.query)
    if args.json:
        print(
            json.dumps(
                {
                    "environment": plan.environment,
                    "resolver": where,
                    "findings": [f.as_json() for f in findings],
                },
                indent=2,
            )
        )
    else:
        print(format_check_header(plan))
        print(compare.format_findings(findings, where))
    failed = [f for f in findings if f.status != compare.OK]
    if failed:
        hint = (
            " (pass --outputs FILE for the values known after provisioning)"
            if any(f.status == compare.UNVERIFIED for f in failed)
            else ""
        )
        raise CliError("DnsMismatch", f"environment {plan.environment}: {compare.summary(findings)}{hint}")
    return 0


def format_check_header(plan: Plan) -> str:
    """The first line of the check's table output."""
    return f"environment {plan.environment}, zone {plan.domain or '-'}, DNS backend {plan.backend}"


def add_dns_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `spaced dns plan|check` on the CLI's subparsers."""
    dns_parser = sub.add_parser("dns", help="the DNS records of an environment: plan, check")
    dns_sub = dns_parser.add_subparsers(dest="dns_command", required=True, metavar="SUBCOMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("env", help="environment: stacks/Pulumi.<env>.yaml")
        p.add_argument(
            "--outputs",
            metavar="FILE",
            default=None,
            help="JSON of `pulumi stack output --json` (addresses of provisioned nodes)",
        )
        p.add_argument(
            "--stack-file",
            metavar="PATH",
            default=None,
            help="read this stack file instead of stacks/Pulumi.<env>.yaml",
        )
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    plan = dns_sub.add_parser("plan", help="the records the stack wants (name, type, value, TTL, backend)")
    common(plan)
    plan.set_defaults(func=cmd_dns_plan)

    check = dns_sub.add_parser("check", help="resolve every planned record; exit 1 on any mismatch")
    common(check)
    check.add_argument(
        "--resolver",
        metavar="IP[:PORT]",
        default=None,
        help="DNS server to ask (default: the first nameserver of /etc/resolv.conf)",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=resolve.DEFAULT_TIMEOUT,
        help=f"seconds per query attempt (default {resolve.DEFAULT_TIMEOUT:g})",
    )
    check.add_argument(
        "--attempts",
        type=int,
        default=resolve.DEFAULT_ATTEMPTS,
        help=f"attempts per record on timeout or SERVFAIL (default {resolve.DEFAULT_ATTEMPTS})",
    )
    check.set_defaults(func=cmd_dns_check)
