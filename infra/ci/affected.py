"""Which stacks a change affects, and which commit the item_socket image is tagged with.

The deploy, drift and image workflows call this module; a person runs the same commands:

    python -m infra.ci.affected stacks --base origin/main --head HEAD     # ["dev", "prod"]
    python -m infra.ci.affected stacks --files stacks/Pulumi.dev.yaml     # ["dev"]
    python -m infra.ci.affected stacks --all                              # every cloud stack
    python -m infra.ci.affected image-tag                                 # 40-hex commit id
    python -m infra.ci.affected image-tag --owner Spaced-Fun   # ghcr.io/spaced-fun/spaced-item-socket:<id>

(also `spaced ci affected-stacks` and `spaced ci image-tag`). Standard library only, so a workflow can
run it from a bare checkout. Rules, first match wins, for each changed path:

1. `stacks/Pulumi.<env>.yaml` -> that stack only;
2. paths that cannot change what a stack deploys (`NO_STACK`: tests, docs, benchmarks, Markdown, the
   workflows that only test) -> none;
3. anything else (the Pulumi program, item_socket and its image, web/, images/, dependencies, the
   deploy workflow itself, or a path no rule knows) -> every cloud stack.

Unknown paths count as "every stack" on purpose: a preview too many is cheap, a missed one is not.
`local` is not a cloud stack (it runs on the local Docker engine) and is never listed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STACKS_DIR = "stacks"
LOCAL_STACK = "local"
_STACK_FILE = re.compile(r"^stacks/Pulumi\.([a-z][a-z0-9-]*)\.yaml$")
# Changes here never change what `pulumi up` does.
NO_STACK: tuple[str, ...] = (
    "tests/*",
    "docs/*",
    "benchmarks/*",
    ".ci/*",
    "*.md",
    ".gitignore",
    "LICENSE",
    ".github/workflows/test.yml",
    ".github/workflows/lighthouse.yml",
    ".github/workflows/drift.yml",
    "lighthouserc.json",
)
# The inputs of the item_socket image (item_socket/Dockerfile is inside item_socket/).
IMAGE_INPUTS: tuple[str, ...] = ("item_socket", "pyproject.toml", "scripts/ci/item-socket-context.py")
# The image's repository name, as infra/app_stack/environments.py names it: spaced-<service with dashes>.
IMAGE_REPOSITORY = "spaced-item-socket"
# A git "before" of a new branch or a force-push without history.
_NULL_SHA = "0" * 40


class AffectedError(Exception):
    """git could not answer (unknown revision, not a repository); the message says which command."""


@dataclass(frozen=True)
class Affected:
    """The affected stacks (sorted) and, per stack, the changed paths that made it affected."""

    stacks: tuple[str, ...]
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)


def cloud_stacks(repo_root: Path = REPO_ROOT) -> list[str]:
    """Every stack with a file `stacks/Pulumi.<env>.yaml`, except `local`, sorted."""
    names = (
        _STACK_FILE.match(f"{STACKS_DIR}/{p.name}") for p in (repo_root / STACKS_DIR).glob("Pulumi.*.yaml")
    )
    return sorted(m.group(1) for m in names if m and m.group(1) != LOCAL_STACK)


def stacks_for_path(path: str, stacks: Sequence[str]) -> tuple[str, ...]:
    """The stacks one changed path affects (see the module docstring for the rules)."""
    match = _STACK_FILE.match(path)
    if match:
        return (match.group(1),) if match.group(1) in stacks else ()
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in NO_STACK):
        return ()
    return tuple(stacks)


def affected_stacks(changed: Iterable[str], stacks: Sequence[str]) -> Affected:
    """The stacks of `stacks` that the changed paths affect, with the paths that affect each."""
    reasons: dict[str, list[str]] = {}
    for path in changed:
        for stack in stacks_for_path(path, stacks):
            reasons.setdefault(stack, []).append(path)
    return Affected(stacks=tuple(sorted(reasons)), reasons={s: tuple(p) for s, p in sorted(reasons.items())})


def _git(args: Sequence[str], repo_root: Path) -> str:
    try:
        result = subprocess.run(
            ["git", *args], cwd=repo_root, capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise AffectedError(f"git {' '.join(args)}: {error}") from None
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[0]
        raise AffectedError(
            f"git {' '.join(args)}: {first} (fetch enough history: actions/checkout with fetch-depth: 0)"
        )
    return result.stdout


def changed_files(base: str, head: str, repo_root: Path = REPO_ROOT) -> list[str] | None:
    """Paths changed between the merge base of `base` and `head`, and `head`; None when `base` is
    unusable (empty or the all-zero id of a new branch): the caller treats that as "everything".

    Renames count as both paths. Raises AffectedError when git fails.
    """
    if not base or base == _NULL_SHA:
        return None
    output = _git(["diff", "--name-only", "--no-renames", f"{base}...{head}", "--"], repo_root)
    return [line for line in output.splitlines() if line]


def image_tag(repo_root: Path = REPO_ROOT, head: str = "HEAD") -> str:
    """The commit the item_socket image is tagged with: the last commit up to `head` that changed one
    of IMAGE_INPUTS. Commits that leave the image's inputs alone keep the tag, so a deploy of such a
    commit does not roll item_socket. Raises AffectedError (e.g. a shallow clone without that commit).
    """
    sha = _git(["log", "-1", "--format=%H", head, "--", *IMAGE_INPUTS], repo_root).strip()
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise AffectedError(
            f"no commit touches {', '.join(IMAGE_INPUTS)} up to {head} "
            "(a shallow clone? use actions/checkout with fetch-depth: 0)"
        )
    return sha


def image_repository(owner: str, registry: str = "ghcr.io") -> str:
    """`<registry>/<owner>/spaced-item-socket`, lower-cased (registries refuse capitals)."""
    return f"{registry}/{owner}/{IMAGE_REPOSITORY}".lower()


def _write_github_output(values: dict[str, str]) -> None:
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        raise AffectedError("--github-output: GITHUB_OUTPUT is not set (it is, inside a GitHub Actions step)")
    with open(path, "a", encoding="utf-8") as handle:
        for key, value in values.items():
            handle.write(f"{key}={value}\n")


def run(args: argparse.Namespace) -> int:
    """Run one subcommand of `build_parser`; prints the result on stdout, reasons on stderr."""
    repo_root = Path(args.repo)
    if args.command == "image-tag":
        tag = image_tag(repo_root, args.head)
        values = {"tag": tag}
        if args.owner:
            values["repository"] = image_repository(args.owner, args.registry)
            values["image"] = f"{values['repository']}:{tag}"
        print(values.get("image", tag))
        if args.github_output:
            _write_github_output(values)
        return 0
    stacks = cloud_stacks(repo_root)
    changed: list[str] | None
    if args.all:
        changed = None
    elif args.files is not None:
        changed = list(args.files)
    else:
        changed = changed_files(args.base, args.head, repo_root)
    result = (
        Affected(tuple(stacks), {s: ("(every stack)",) for s in stacks})
        if changed is None
        else (affected_stacks(changed, stacks))
    )
    for stack, paths in result.reasons.items():
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        print(f"{stack}: {shown}", file=sys.stderr)
    if not result.stacks:
        print("no stack is affected", file=sys.stderr)
    print(json.dumps(list(result.stacks)))
    if args.github_output:
        _write_github_output(
            {"stacks": json.dumps(list(result.stacks)), "any": str(bool(result.stacks)).lower()}
        )
    return 0


def add_arguments(sub: argparse._SubParsersAction, prefix: str = "") -> None:  # type: ignore[type-arg]
    """The `stacks` and `image-tag` subcommands (named `<prefix>stacks`, `image-tag` under `spaced ci`)."""
    stacks = sub.add_parser(f"{prefix}stacks", help="the cloud stacks a change affects, as a JSON list")
    stacks.add_argument(
        "--base", default="", help="base revision (e.g. origin/main, the PR base, push 'before')"
    )
    stacks.add_argument("--head", default="HEAD", help="head revision (default HEAD)")
    stacks.add_argument("--files", nargs="*", default=None, help="changed paths instead of a git diff")
    stacks.add_argument("--all", action="store_true", help="every cloud stack (e.g. a scheduled run)")
    stacks.add_argument(
        "--github-output",
        action="store_true",
        help="also append stacks=<json> and any=true|false to $GITHUB_OUTPUT",
    )
    stacks.add_argument("--repo", default=str(REPO_ROOT), help=argparse.SUPPRESS)
    stacks.set_defaults(command="stacks")
    tag = sub.add_parser("image-tag", help="the commit the item_socket image of HEAD is tagged with")
    tag.add_argument("--head", default="HEAD")
    tag.add_argument("--owner", default="", help="print <registry>/<owner>/spaced-item-socket:<tag> instead")
    tag.add_argument("--registry", default="ghcr.io")
    tag.add_argument(
        "--github-output",
        action="store_true",
        help="also append tag=<sha> (and repository=, image= with --owner) to $GITHUB_OUTPUT",
    )
    tag.add_argument("--repo", default=str(REPO_ROOT), help=argparse.SUPPRESS)
    tag.set_defaults(command="image-tag")


def build_parser() -> argparse.ArgumentParser:
    """`python -m infra.ci.affected`."""
    parser = argparse.ArgumentParser(prog="python -m infra.ci.affected", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point without the rest of the project: errors as `ERROR (<Kind>): <message>`, exit 1."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except AffectedError as error:
        print(f"ERROR (GitError): {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
