"""The GitHub workflows: actionlint and the GitHub workflow JSON schema accept every one, and they keep
the rules of the README's "CI/CD pipelines": actions pinned by version, logic in scripts, OIDC instead
of keys, previews per affected stack, dev before prod behind an approval, one deploy group per stack.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO_ROOT / ".github/workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
BIN = Path(sys.executable).parent
ACTIONLINT = BIN / "actionlint"
CHECK_JSONSCHEMA = BIN / "check-jsonschema"
BROKEN = """\
on: push
jobs:
  build:
    runs-on: ubuntu-24.04
    steps:
      - run: echo ${{ github.no_such_property }}
      - uses: actions/checkout@v4.2.2
        with:
          fetch-depth: [not, a, number]
    timeout-minutes: soon
"""


def load(path: Path) -> dict[str, Any]:
    """A workflow as a mapping; PyYAML reads the key `on` as True, so it is put back."""
    document = yaml.safe_load(path.read_text())
    if True in document:
        document["on"] = document.pop(True)
    return document


def steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_the_workflows_exist() -> None:
    assert {f.name for f in FILES} == {
        "test.yml",
        "image.yml",
        "deploy.yml",
        "drift.yml",
        "lighthouse.yml",
        "pulumi-stack.yml",
    }


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actionlint(path: Path) -> None:
    result = run([str(ACTIONLINT), "-no-color", str(path.relative_to(REPO_ROOT))])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_github_workflow_schema(path: Path) -> None:
    result = run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_checkers_reject_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(BROKEN)
    lint = run([str(ACTIONLINT), "-no-color", str(broken)])
    assert lint.returncode != 0 and "no_such_property" in lint.stdout
    schema = run([str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(broken)])
    assert schema.returncode != 0


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_by_version(path: Path) -> None:
    for step in steps(load(path)):
        uses = step.get("uses")
        if uses is None or uses.startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})", uses), (
            f"{path.name}: {uses} is not pinned to a version (vX.Y.Z) or a commit"
        )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_logic_lives_in_scripts_not_yaml(path: Path) -> None:
    """Run steps call a script or command a person runs too; none grows into a program of its own."""
    for step in steps(load(path)):
        script = step.get("run")
        if script is not None:
            lines = [line for line in script.strip().splitlines() if line.strip()]
            assert len(lines) <= 3, f"{path.name}: step {step.get('name')!r} has {len(lines)} lines of shell"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_long_lived_keys_and_least_privilege(path: Path) -> None:
    text = path.read_text()
    for forbidden in (
        "aws-access-key-id",
        "aws-secret-access-key",
        "AWS_SECRET_ACCESS_KEY",
        "credentials_json",
        "HCLOUD_TOKEN",
        "DIGITALOCEAN_TOKEN",
        "IONOS_TOKEN",
    ):
        assert forbidden not in text, f"{path.name} mentions {forbidden}: use OIDC or Pulumi config secrets"
    assert load(path)["permissions"] == {"contents": "read"}, "workflow-wide permissions are read-only"


def test_scripts_the_workflows_call_exist_and_are_executable() -> None:
    called = set()
    for path in FILES:
        called |= set(re.findall(r"scripts/ci/[\w.-]+", path.read_text()))
    assert called >= {
        "scripts/ci/pulumi-stack.sh",
        "scripts/ci/lighthouse.sh",
        "scripts/ci/image-digest.sh",
        "scripts/ci/item-socket-context.py",
    }
    for script in called:
        assert os.access(REPO_ROOT / script, os.X_OK), f"{script} is missing or not executable"


def test_the_test_workflow_runs_make_test_on_every_push_and_pr() -> None:
    workflow = load(WORKFLOWS / "test.yml")
    assert set(workflow["on"]) == {"push", "pull_request"}
    assert any("make test" in step.get("run", "") for step in steps(workflow))


def test_deploy_previews_affected_stacks_then_ups_dev_then_prod_behind_approval() -> None:
    workflow = load(WORKFLOWS / "deploy.yml")
    jobs = workflow["jobs"]
    assert set(workflow["on"]) == {"pull_request", "push", "workflow_dispatch"}
    assert workflow["on"]["push"] == {"branches": ["main"]}
    assert "python3 -m infra.ci.affected stacks" in jobs["changes"]["steps"][1]["run"]
    preview = jobs["preview"]
    assert preview["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.changes.outputs.stacks) }}"
    assert preview["with"]["operation"] == "preview" and "pull_request" in preview["if"]
    assert jobs["up-dev"]["with"] == {
        **jobs["up-dev"]["with"],
        "operation": "up",
        "stack": "dev",
        "environment": "dev",
    }
    assert jobs["up-prod"]["with"]["environment"] == "prod" and "up-dev" in jobs["up-prod"]["needs"]
    assert "needs.up-dev.result == 'success'" in jobs["up-prod"]["if"]
    for job in ("up-dev", "up-prod"):
        assert jobs[job]["with"]["image"] == "${{ needs.image.outputs.image }}"
        assert jobs[job]["uses"] == "./.github/workflows/pulumi-stack.yml"


def test_the_stack_job_has_one_deploy_group_per_stack_and_oidc() -> None:
    workflow = load(WORKFLOWS / "pulumi-stack.yml")
    job = workflow["jobs"]["pulumi"]
    group = job["concurrency"]["group"]
    assert "format('pulumi-{0}', inputs.stack)" in group  # up: the stack's own group
    assert job["environment"] == "${{ inputs.environment }}"
    assert job["permissions"]["id-token"] == "write"
    uses = {step.get("uses", "").split("@")[0] for step in job["steps"]}
    assert {
        "aws-actions/configure-aws-credentials",
        "google-github-actions/auth",
        "pulumi/auth-actions",
    } <= uses
    aws = next(s for s in job["steps"] if s.get("uses", "").startswith("aws-actions/"))
    assert "role-to-assume" in aws["with"]
    assert "PULUMI_BACKEND_URL" in job["env"] and "PULUMI_CONFIG_PASSPHRASE" in job["env"]
    assert "scripts/ci/pulumi-stack.sh" in next(s for s in job["steps"] if s.get("id") == "pulumi")["run"]
    assert job["env"]["SPACED_IMAGE_ITEM_SOCKET"] == "${{ vars.SPACED_IMAGE_ITEM_SOCKET || inputs.image }}"


def test_image_is_pushed_with_sbom_and_provenance() -> None:
    job = load(WORKFLOWS / "image.yml")["jobs"]["build"]
    build = next(s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["push"] is True and build["with"]["sbom"] is True
    assert build["with"]["provenance"] == "mode=max"
    assert "${{ steps.ref.outputs.image }}" in build["with"]["tags"]
    assert job["permissions"] == {"contents": "read", "packages": "write"}


def test_drift_is_scheduled_and_uses_refresh_with_expect_no_changes() -> None:
    workflow = load(WORKFLOWS / "drift.yml")
    assert "schedule" in workflow["on"]
    assert workflow["jobs"]["drift"]["with"]["operation"] == "drift"
    script = (REPO_ROOT / "scripts/ci/pulumi-stack.sh").read_text()
    assert "--refresh --expect-no-changes" in script


def test_lighthouse_runs_the_same_script_as_the_tests() -> None:
    workflow = load(WORKFLOWS / "lighthouse.yml")
    assert any("scripts/ci/lighthouse.sh" in step.get("run", "") for step in steps(workflow))
