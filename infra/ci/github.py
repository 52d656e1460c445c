"""The two things the pipelines tell GitHub: a preview as one PR comment, drift as one open issue.

    python -m infra.ci.github comment --pr 12 --key preview-dev --title "pulumi preview: dev" --body-file F
    python -m infra.ci.github issue --key drift-prod --title "Drift: prod" --body-file F [--label drift]
    python -m infra.ci.github issue --key drift-prod --resolved --body-file F   # closes it again

Both are idempotent: the comment (or issue) carries a hidden marker `<!-- spaced:<key> -->`; a later run
edits that comment, or comments on that open issue, instead of adding another. Standard library only.
Environment: `GITHUB_TOKEN`, `GITHUB_REPOSITORY` (owner/name), `GITHUB_API_URL` (default
https://api.github.com; the tests point it at a local fake). Bounded: at most `MAX_PAGES` pages of
listings, `TIMEOUT` seconds per request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_API = "https://api.github.com"
TIMEOUT = 30.0  # seconds per request
MAX_PAGES = 10  # x 100 items: the newest 1000 comments or open issues are searched
MAX_BODY = 60000  # GitHub refuses bodies over 65536 characters
USER_AGENT = "spaced-ci"


class GitHubError(Exception):
    """GitHub refused a request or could not be reached; the message names the request."""


def marker(key: str) -> str:
    """The hidden HTML comment that identifies our comment or issue."""
    return f"<!-- spaced:{key} -->"


def render_body(key: str, title: str, text: str) -> str:
    """Markdown body: marker, title, and `text` in a code block, cut to fit GitHub's limit."""
    if len(text) > MAX_BODY:
        text = text[-MAX_BODY:]
        text = "(… cut: only the last part is shown; the whole output is in the job log)\n" + text
    fence = "````" if "```" in text else "```"
    return f"{marker(key)}\n### {title}\n\n{fence}\n{text.rstrip()}\n{fence}\n"


@dataclass
class GitHub:
    """A tiny REST client for one repository (`repo` = owner/name)."""

    token: str
    repo: str
    api: str = DEFAULT_API

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request; returns the decoded JSON. Raises GitHubError on any HTTP or network error."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.api.rstrip('/')}{path}",
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": USER_AGENT,
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read()[:300].decode(errors="replace")
            raise GitHubError(f"{method} {path}: HTTP {error.code} {detail}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise GitHubError(f"{method} {path}: {getattr(error, 'reason', error)}") from None
        return json.loads(payload) if payload else None

    def _pages(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        separator = "&" if "?" in path else "?"
        for page in range(1, MAX_PAGES + 1):
            batch = self.request("GET", f"{path}{separator}per_page=100&page={page}")
            items += batch
            if len(batch) < 100:
                break
        return items

    def upsert_comment(self, number: int, key: str, body: str) -> str:
        """Edit our comment on issue/PR `number` (found by its marker) or add it. Returns its URL."""
        for comment in self._pages(f"/repos/{self.repo}/issues/{number}/comments"):
            if marker(key) in (comment.get("body") or ""):
                edited = self.request(
                    "PATCH", f"/repos/{self.repo}/issues/comments/{comment['id']}", {"body": body}
                )
                return str(edited["html_url"])
        created = self.request("POST", f"/repos/{self.repo}/issues/{number}/comments", {"body": body})
        return str(created["html_url"])

    def open_issue(self, key: str) -> dict[str, Any] | None:
        """Our open issue for `key`, if any (pull requests in the listing are skipped)."""
        for issue in self._pages(f"/repos/{self.repo}/issues?state=open"):
            if "pull_request" not in issue and marker(key) in (issue.get("body") or ""):
                return issue
        return None

    def report_issue(self, key: str, title: str, body: str, labels: Sequence[str]) -> str:
        """Open an issue for `key`, or comment on the one already open. Returns the issue's URL."""
        issue = self.open_issue(key)
        if issue is None:
            created = self.request(
                "POST", f"/repos/{self.repo}/issues", {"title": title, "body": body, "labels": list(labels)}
            )
            return str(created["html_url"])
        self.request("POST", f"/repos/{self.repo}/issues/{issue['number']}/comments", {"body": body})
        return str(issue["html_url"])

    def resolve_issue(self, key: str, body: str) -> str | None:
        """Comment on and close our open issue for `key`; None when there is none."""
        issue = self.open_issue(key)
        if issue is None:
            return None
        self.request("POST", f"/repos/{self.repo}/issues/{issue['number']}/comments", {"body": body})
        self.request("PATCH", f"/repos/{self.repo}/issues/{issue['number']}", {"state": "closed"})
        return str(issue["html_url"])


def client_from_env(environ: dict[str, str] | None = None) -> GitHub:
    """A client from GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL; GitHubError naming what is missing."""
    env = dict(os.environ if environ is None else environ)
    missing = [name for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY") if not env.get(name)]
    if missing:
        raise GitHubError(
            f"set {' and '.join(missing)} (in a workflow: env: GITHUB_TOKEN: "
            "${{ github.token }}; GITHUB_REPOSITORY is set by the runner)"
        )
    return GitHub(
        token=env["GITHUB_TOKEN"], repo=env["GITHUB_REPOSITORY"], api=env.get("GITHUB_API_URL") or DEFAULT_API
    )


def read_bodies(paths: Sequence[str]) -> str:
    """The files joined by a blank line; missing ones are skipped (a step that never ran wrote none).
    Raises GitHubError when none exists."""
    texts = [Path(path).read_text(errors="replace") for path in paths if Path(path).is_file()]
    if not texts:
        raise GitHubError(f"--body-file: none of {', '.join(paths)} exists")
    return "\n".join(text.rstrip() + "\n" for text in texts)


def build_parser() -> argparse.ArgumentParser:
    """`python -m infra.ci.github comment|issue`."""
    parser = argparse.ArgumentParser(prog="python -m infra.ci.github", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    comment = sub.add_parser("comment", help="add or edit the PR comment for KEY")
    comment.add_argument("--pr", type=int, required=True)
    issue = sub.add_parser("issue", help="open (or comment on) the issue for KEY; --resolved closes it")
    issue.add_argument("--label", action="append", default=[])
    issue.add_argument("--resolved", action="store_true")
    for p in (comment, issue):
        p.add_argument("--key", required=True, help="identifies the comment/issue across runs")
        p.add_argument("--title", default="", help="heading (and the issue's title)")
        p.add_argument(
            "--body-file",
            required=True,
            nargs="+",
            help="text to show, e.g. the pulumi output; several files are joined, missing ones skipped",
        )
    return parser


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    """Entry point: prints the URL; errors as `ERROR (GitHubError): ...`, exit 1."""
    args = build_parser().parse_args(argv)
    try:
        github = client_from_env(environ)
        text = read_bodies(args.body_file)
        body = render_body(args.key, args.title or args.key, text)
        if args.command == "comment":
            url: str | None = github.upsert_comment(args.pr, args.key, body)
        elif args.resolved:
            url = github.resolve_issue(args.key, body)
        else:
            url = github.report_issue(args.key, args.title or args.key, body, args.label)
    except GitHubError as error:
        print(f"ERROR (GitHubError): {error}", file=sys.stderr)
        return 1
    print(url or "no open issue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
