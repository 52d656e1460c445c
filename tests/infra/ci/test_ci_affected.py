"""Which stacks a change affects, and the image tag: the rules, and real git repositories in tmp_path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from infra.ci.affected import (
    AffectedError,
    affected_stacks,
    changed_files,
    cloud_stacks,
    image_tag,
    main,
    stacks_for_path,
)
from infra.cli import main as spaced

STACKS = ("dev", "prod", "staging")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("stacks/Pulumi.dev.yaml", ("dev",)),
        ("stacks/Pulumi.prod.yaml", ("prod",)),
        ("stacks/Pulumi.local.yaml", ()),  # not a cloud stack
        ("stacks/Pulumi.gone.yaml", ()),  # a stack file deleted by the change has nothing to preview
        ("infra/topology.py", STACKS),
        ("infra/dns/route53.py", STACKS),
        ("item_socket/rooms.py", STACKS),
        ("item_socket/Dockerfile", STACKS),
        ("web/index.html", STACKS),
        ("images/nginx/nginx.conf", STACKS),
        ("Pulumi.yaml", STACKS),
        ("pyproject.toml", STACKS),
        ("package-lock.json", STACKS),  # the board bundle is built from the npm packages
        (".github/workflows/deploy.yml", STACKS),  # the pipeline itself changed
        ("scripts/ci/item-socket-context.py", STACKS),
        ("something/new.txt", STACKS),  # unknown paths: every stack, on purpose
        ("tests/infra/test_x.py", ()),
        ("docs/runbook.md", ()),
        ("README.md", ()),
        ("infra/app_stack/README.md", ()),
        ("benchmarks/run.py", ()),
        (".github/workflows/test.yml", ()),
        (".github/workflows/lighthouse.yml", ()),
    ],
)
def test_rules(path: str, expected: tuple[str, ...]) -> None:
    assert stacks_for_path(path, STACKS) == expected


def test_affected_stacks_collects_reasons() -> None:
    result = affected_stacks(["stacks/Pulumi.dev.yaml", "README.md", "stacks/Pulumi.prod.yaml"], STACKS)
    assert result.stacks == ("dev", "prod")
    assert result.reasons == {"dev": ("stacks/Pulumi.dev.yaml",), "prod": ("stacks/Pulumi.prod.yaml",)}
    assert affected_stacks(["tests/a.py", "docs/b.md"], STACKS).stacks == ()


def test_the_repository_stacks_are_dev_and_prod() -> None:
    assert cloud_stacks() == ["dev", "prod"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@spaced.test", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    commit(
        tmp_path,
        {
            "stacks/Pulumi.dev.yaml": "dev\n",
            "stacks/Pulumi.prod.yaml": "prod\n",
            "stacks/Pulumi.local.yaml": "l\n",
            "item_socket/app.py": "v1\n",
            "pyproject.toml": "[project]\n",
            "infra/x.py": "x\n",
            "README.md": "r\n",
        },
        "initial",
    )
    return tmp_path


def test_a_pull_request_touching_one_stack_file(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, {"stacks/Pulumi.dev.yaml": "dev 2\n", "README.md": "r2\n"}, "dev only")
    # main moves on meanwhile: the diff is from the merge base, so main's own change does not count
    git(repo, "checkout", "-q", "main")
    commit(repo, {"infra/x.py": "x2\n"}, "main moves on")
    git(repo, "checkout", "-q", "feature")
    assert changed_files("main", "HEAD", repo) == ["README.md", "stacks/Pulumi.dev.yaml"]
    assert main(["stacks", "--base", "main", "--repo", str(repo)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == ["dev"]
    assert "dev: stacks/Pulumi.dev.yaml" in captured.err
    assert base != git(repo, "rev-parse", "main")


def test_a_program_change_affects_every_cloud_stack(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = git(repo, "rev-parse", "HEAD")
    commit(repo, {"infra/x.py": "x2\n"}, "program")
    assert main(["stacks", "--base", before, "--repo", str(repo)]) == 0
    assert json.loads(capsys.readouterr().out) == ["dev", "prod"]


def test_docs_only_affect_nothing_and_github_output_says_so(
    repo: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = git(repo, "rev-parse", "HEAD")
    commit(repo, {"README.md": "docs\n"}, "docs")
    output = tmp_path_factory.mktemp("gh") / "output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert main(["stacks", "--base", before, "--repo", str(repo), "--github-output"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert output.read_text() == "stacks=[]\nany=false\n"


def test_a_new_branch_push_has_no_base_and_previews_everything(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stacks", "--base", "0" * 40, "--repo", str(repo)]) == 0
    assert json.loads(capsys.readouterr().out) == ["dev", "prod"]


def test_image_tag_is_the_last_commit_that_changed_the_image(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    assert image_tag(repo) == first
    commit(repo, {"infra/x.py": "x3\n", "stacks/Pulumi.dev.yaml": "dev 3\n"}, "no image input")
    assert image_tag(repo) == first  # a deploy of this commit keeps the running image
    changed = commit(repo, {"item_socket/app.py": "v2\n"}, "image input")
    assert image_tag(repo) == changed


def test_image_reference_for_an_owner(
    repo: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sha = git(repo, "rev-parse", "HEAD")
    output = tmp_path_factory.mktemp("gh") / "output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert main(["image-tag", "--repo", str(repo), "--owner", "Spaced-Fun", "--github-output"]) == 0
    assert capsys.readouterr().out.strip() == f"ghcr.io/spaced-fun/spaced-item-socket:{sha}"
    assert output.read_text() == (
        f"tag={sha}\nrepository=ghcr.io/spaced-fun/spaced-item-socket\n"
        f"image=ghcr.io/spaced-fun/spaced-item-socket:{sha}\n"
    )


def test_git_errors_are_one_line(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(AffectedError, match="fetch-depth: 0"):
        changed_files("no-such-rev", "HEAD", repo)
    assert spaced(["ci", "affected-stacks", "--base", "no-such-rev"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR (GitError): git diff") and err.count("\n") == 1


def test_spaced_ci_matches_the_module(capsys: pytest.CaptureFixture[str]) -> None:
    assert spaced(["ci", "affected-stacks", "--files", "stacks/Pulumi.prod.yaml", "docs/x.md"]) == 0
    assert json.loads(capsys.readouterr().out) == ["prod"]
    assert spaced(["ci", "affected-stacks", "--all"]) == 0
    assert json.loads(capsys.readouterr().out) == ["dev", "prod"]
