"""The CI job behind action.yml and the GitLab include, run as GitHub and GitLab run it: a process with
their variables pointing at temp files. And the CI realities that break versioning elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imgtrack.ci_job import INPUTS
from tests.conftest import ROOT, LayoutFactory, commit_file, git, run


def ci_job(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "imgtrack.ci_job"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert proc.returncode != 70 and "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def upstream(project: Path, tmp_path: Path) -> Path:
    remote = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(project, "remote", "add", "origin", str(remote))
    git(project, "push", "-q", "-u", "origin", "main")
    return remote


def read_outputs(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT as GitHub reads it: name=value lines and name<<DELIMITER blocks."""
    found, lines = {}, path.read_text().splitlines()
    i = 0
    while i < len(lines):
        if "<<" in lines[i] and "=" not in lines[i].split("<<")[0]:
            name, delimiter = lines[i].split("<<", 1)
            end = lines.index(delimiter, i + 1)
            found[name] = "\n".join(lines[i + 1 : end])
            i = end + 1
        else:
            name, _, value = lines[i].partition("=")
            found[name] = value
            i += 1
    return found


def test_the_github_action_records_pushes_commits_and_reports(
    project: Path, upstream: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    layout, digest = layouts()
    outputs, summary = tmp_path / "github_output", tmp_path / "step_summary"
    outputs.write_text("earlier=step\n")  # GitHub's file holds other steps' outputs: appended to, not replaced
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        "INPUT_SOURCE": str(layout),
        "INPUT_IMAGE": "api",
        "INPUT_PUSH_TO": f"oci:{tmp_path / 'pushed'}",
        "INPUT_TAGS": "qa-ready",
        "INPUT_COMMIT_LEDGER": "true",
    }
    proc = ci_job(project, env)
    assert proc.returncode == 0, proc.stderr
    shown = run(["show", digest, "--json"], project).json()
    got = read_outputs(outputs)
    assert got["earlier"] == "step"
    assert got["digest"] == digest and got["version"] == shown["version"]
    assert got["tags"].splitlines() == shown["tags"] and "qa-ready" in shown["tags"]
    text = summary.read_text()
    assert f"| digest | `{digest}` |" in text and f"| version | `{shown['version']}` |" in text
    assert f"oci:{tmp_path / 'pushed'}" in text and "| ledger commit |" in text
    # The ledger commit landed on the remote, holding only .imgtrack/.
    assert git(upstream, "rev-parse", "main") == git(project, "rev-parse", "HEAD")
    assert all(p.startswith(".imgtrack/") for p in git(project, "show", "--name-only", "--format=", "HEAD").split())


def test_the_job_refuses_bad_inputs_in_one_line_and_writes_no_output(project: Path, tmp_path: Path) -> None:
    outputs = tmp_path / "github_output"
    for env, words in (
        ({"INPUT_SOURCE": "x"}, "input image is empty"),
        ({"INPUT_IMAGE": "api"}, "exactly one of the inputs source"),
        ({"INPUT_IMAGE": "api", "INPUT_SOURCE": "x", "INPUT_COMMIT_LEDGER": "yes"}, "give true or false"),
    ):
        proc = ci_job(project, {"GITHUB_OUTPUT": str(outputs), **env})
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
    missing = ci_job(project, {"GITHUB_OUTPUT": str(outputs), "INPUT_IMAGE": "api", "INPUT_SOURCE": "nowhere"})
    assert missing.returncode == 2 and "nowhere" in missing.stderr  # imgtrack's own line, its exit code
    assert not outputs.exists()


def test_gitlab_gets_a_dotenv_report(project: Path, layouts: LayoutFactory) -> None:
    layout, digest = layouts()
    proc = ci_job(project, {"GITLAB_CI": "true", "IMGTRACK_SOURCE": str(layout), "IMGTRACK_IMAGE": "api"})
    assert proc.returncode == 0, proc.stderr
    dotenv = dict(line.split("=", 1) for line in (project / "imgtrack.env").read_text().splitlines())
    assert dotenv["IMGTRACK_RECORDED_DIGEST"] == digest and dotenv["IMGTRACK_RECORDED_VERSION"] in proc.stdout


def test_action_yml_passes_every_input_the_job_reads() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    step = action["runs"]["steps"][-1]
    assert step["run"] == "python3 -m imgtrack.ci_job"
    passed = {key.removeprefix("INPUT_").lower() for key in step["env"]}
    assert passed == set(INPUTS) == {name.replace("-", "_") for name in action["inputs"]}
    assert set(action["outputs"]) == {"digest", "version", "tags"}
    gitlab = yaml.safe_load((ROOT / "ci" / "gitlab" / "imgtrack.yml").read_text())[".imgtrack"]
    assert {k.removeprefix("IMGTRACK_").lower() for k in gitlab["variables"] if k.startswith("IMGTRACK_")} == set(
        INPUTS
    )
    assert "python3 -m imgtrack.ci_job" in gitlab["script"]


# --- CI realities --------------------------------------------------------------------------------


def test_a_detached_head_at_a_release_tag_records_the_release(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    git(project, "tag", "-a", "v1.4.0", "-m", "release 1.4.0")
    commit_file(project, message="after the release")
    clone = tmp_path / "ci"
    git(tmp_path, "clone", "-q", "--depth", "1", "--branch", "v1.4.0", f"file://{project}", str(clone))
    assert git(clone, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached, and shallow too
    layout, _ = layouts()
    result = run(["record", str(layout), "--image", "api", "--json"], clone)
    assert result.code == 0, result.err
    assert result.json()["version"] == "1.4.0"


def test_a_pull_request_test_merge_is_refused_with_the_head_to_record(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    git(project, "checkout", "-q", "-b", "feature")
    pr_head = commit_file(project, "feature.txt", "work\n")
    git(project, "checkout", "-q", "main")
    commit_file(project, "main.txt", "moved on\n")
    git(project, "merge", "-q", "--no-ff", "-m", "Merge pull request 7", "feature")
    merge = git(project, "rev-parse", "HEAD")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7, "head": {"sha": pr_head}}}))
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request",
        "GITHUB_SHA": merge,
        "GITHUB_EVENT_PATH": str(event),
    }
    layout, _ = layouts()
    refused = run(["record", str(layout), "--image", "api"], project, env=env)
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert "GitHub's test merge" in refused.err and f"--commit {pr_head}" in refused.err
    recorded = run(["record", str(layout), "--image", "api", "--commit", pr_head, "--json"], project, env=env)
    assert recorded.code == 0, recorded.err
    assert recorded.json()["commit"] == pr_head
    # GitLab's merged results pipelines alike.
    other, _ = layouts()
    gitlab = {
        "GITLAB_CI": "true",
        "CI_MERGE_REQUEST_EVENT_TYPE": "merged_result",
        "CI_COMMIT_SHA": merge,
        "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": pr_head,
    }
    refused = run(["record", str(other), "--image", "api"], project, env=gitlab)
    assert refused.code == 2 and "GitLab's merged result" in refused.err and f"--commit {pr_head}" in refused.err


def test_a_build_without_a_checkout_is_recorded_from_any_clone(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    built_from = git(project, "rev-parse", "HEAD")
    commit_file(project, message="later work")
    nowhere = tmp_path / "no-checkout"
    nowhere.mkdir()
    digest = "sha256:" + "ab" * 32
    args = ["record", "--digest", digest, "--image", "api", "--commit", built_from, "--version", "2.0.0"]
    outside = run(args, nowhere)
    assert outside.code == 2 and outside.err.count("\n") == 1
    assert "not inside a git work tree" in outside.err and "--digest" in outside.err
    clone = tmp_path / "any-clone"
    git(tmp_path, "clone", "-q", f"file://{project}", str(clone))
    recorded = run([*args, "--json"], clone)
    assert recorded.code == 0, recorded.err
    assert recorded.json()["commit"] == built_from and recorded.json()["version"] == "2.0.0"
