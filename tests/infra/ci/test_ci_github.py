"""infra/ci/github.py against a local fake of the GitHub REST API: one PR comment per key, edited on
later runs; one drift issue per stack, commented on while open, closed when resolved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.ci.github import MAX_BODY, main, marker, render_body
from tests.infra.ci.fake_github import TOKEN, State, fake_github

REPO = "spaced-fun/infra"


@pytest.fixture
def github() -> Iterator[tuple[dict[str, str], State]]:
    with fake_github(REPO) as (api, state):
        yield {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": REPO, "GITHUB_API_URL": api}, state


def body_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "body.txt"
    path.write_text(text)
    return str(path)


def test_the_preview_comment_is_added_once_then_edited(github, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, state = github
    state.issues[7] = {
        "number": 7,
        "title": "a PR",
        "body": "",
        "state": "open",
        "pull_request": {},
        "html_url": "u",
    }
    args = ["comment", "--pr", "7", "--key", "preview-dev", "--title", "pulumi preview: dev"]
    assert main([*args, "--body-file", body_file(tmp_path, "+ 1 to create")], env) == 0
    assert main([*args, "--body-file", body_file(tmp_path, "~ 2 to update")], env) == 0
    assert (
        main(["comment", "--pr", "7", "--key", "preview-prod", "--body-file", body_file(tmp_path, "x")], env)
        == 0
    )
    comments = [c for c in state.comments.values() if c["issue"] == 7]
    assert len(comments) == 2  # one per stack, the dev one edited in place
    dev = next(c for c in comments if marker("preview-dev") in c["body"])
    assert "~ 2 to update" in dev["body"] and "+ 1 to create" not in dev["body"]
    assert dev["body"].startswith("<!-- spaced:preview-dev -->\n### pulumi preview: dev\n")


def test_drift_opens_one_issue_comments_while_open_and_closes_when_resolved(  # type: ignore[no-untyped-def]
    github, tmp_path: Path
) -> None:
    env, state = github
    args = ["issue", "--key", "drift-prod", "--title", "Drift in stack prod", "--label", "drift"]
    assert main([*args, "--body-file", body_file(tmp_path, "~ aws:ec2:Instance changed")], env) == 0
    assert main([*args, "--body-file", body_file(tmp_path, "still drifted")], env) == 0
    assert len(state.issues) == 1
    (issue,) = state.issues.values()
    assert issue["title"] == "Drift in stack prod" and issue["labels"] == ["drift"]
    assert [c["body"].count("still drifted") for c in state.comments.values()] == [1]
    assert (
        main(["issue", "--key", "drift-prod", "--resolved", "--body-file", body_file(tmp_path, "clean")], env)
        == 0
    )
    assert issue["state"] == "closed"
    # the next drift opens a new issue
    assert main([*args, "--body-file", body_file(tmp_path, "again")], env) == 0
    assert sorted(i["state"] for i in state.issues.values()) == ["closed", "open"]


def test_resolved_without_an_open_issue_does_nothing(github, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    env, state = github
    assert (
        main(["issue", "--key", "drift-dev", "--resolved", "--body-file", body_file(tmp_path, "ok")], env)
        == 0
    )
    assert capsys.readouterr().out.strip() == "no open issue"
    assert not state.issues


def test_errors_are_one_line(github, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    env, _ = github
    assert (
        main(
            ["comment", "--pr", "1", "--key", "k", "--body-file", body_file(tmp_path, "x")],
            {**env, "GITHUB_TOKEN": "wrong"},
        )
        == 1
    )
    assert capsys.readouterr().err.startswith(
        "ERROR (GitHubError): GET /repos/spaced-fun/infra/issues/1/comments"
    )
    assert main(["comment", "--pr", "1", "--key", "k", "--body-file", "x"], {}) == 1
    assert "set GITHUB_TOKEN and GITHUB_REPOSITORY" in capsys.readouterr().err
    assert main(["comment", "--pr", "1", "--key", "k", "--body-file", "nope1", "nope2"], env) == 1
    assert "ERROR (GitHubError): --body-file: none of nope1, nope2 exists" in capsys.readouterr().err


def test_several_body_files_are_joined_and_missing_ones_skipped(github, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, state = github
    drift, dns = tmp_path / "drift.txt", tmp_path / "dns.txt"
    drift.write_text("~ 1 to update\n")
    dns.write_text("WRONG www.spaced.fun A\n")
    args = ["issue", "--key", "drift-dev", "--title", "Drift: dev", "--body-file"]
    assert main([*args, str(drift), str(tmp_path / "missing.txt"), str(dns)], env) == 0
    (issue,) = state.issues.values()
    assert "~ 1 to update\n\nWRONG www.spaced.fun A" in issue["body"]


def test_long_output_is_cut_to_fit() -> None:
    body = render_body("k", "t", "x" * (MAX_BODY * 2))
    assert len(body) < 65536 and "cut" in body
