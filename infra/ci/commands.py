"""`spaced ci affected-stacks` and `spaced ci image-tag` (the same as `python -m infra.ci.affected`).

Failures raise the CLI's `CliError` (`ERROR (GitError): ...`).
"""

from __future__ import annotations

import argparse

from infra.ci import affected
from infra.errors import CliError


def cmd_ci(args: argparse.Namespace) -> int:
    """Run `stacks` or `image-tag` of infra.ci.affected."""
    try:
        return affected.run(args)
    except affected.AffectedError as error:
        raise CliError("GitError", str(error)) from error


def add_ci_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `spaced ci affected-stacks|image-tag` on the CLI's subparsers."""
    ci = sub.add_parser("ci", help="what the CI pipelines run: affected stacks, the image tag")
    ci_sub = ci.add_subparsers(dest="ci_command", required=True, metavar="SUBCOMMAND")
    affected.add_arguments(ci_sub, prefix="affected-")
    for parser in ci_sub.choices.values():
        parser.set_defaults(func=cmd_ci)
