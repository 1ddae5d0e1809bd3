"""`imgtrack verify`: the whole ledger against itself, git and the policy; merges of two branches."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import LayoutFactory, commit_file, git, record_file, run, smuggle_tag


def record(project: Path, layouts: LayoutFactory, *args: str) -> dict:
    path, _ = layouts()
    result = run(["record", str(path), "--image", "api", "--json", *args], project)
    assert result.code == 0, result.err
    return result.json()


def test_clean_ledger_verifies(project: Path, layouts: LayoutFactory) -> None:
    git(project, "tag", "v1.0.0")
    record(project, layouts)
    commit_file(project)
    record(project, layouts)
    result = run(["verify", "--json"], project)
    assert result.code == 0, result.out
    assert result.json() == {"ok": True, "records": 2, "corroboration": {"uncorroborated": 2}, "findings": []}


def test_findings_one_line_each_and_exit_1(project: Path, layouts: LayoutFactory) -> None:
    first = record(project, layouts, "--tag", "qa")
    commit_file(project)
    second = record(project, layouts)
    # Hand edits that break the policy: an immutable tag on two digests, a bare latest,
    # a commit that does not exist, and a version contradicting a release tag added later.
    smuggle_tag(record_file(project, second), "qa")
    smuggle_tag(record_file(project, second), "latest")
    text = record_file(project, second).read_text()
    text = re.sub(r'commit = "[0-9a-f]{40}"', 'commit = "' + "e" * 40 + '"', text)
    record_file(project, second).write_text(text)
    git(project, "tag", "v5.0.0", first["commit"])
    result = run(["verify"], project)
    assert result.code == 1
    lines = result.out.strip().splitlines()
    assert any("immutable tag 'qa'" in line for line in lines)
    assert any("'latest' is refused" in line for line in lines)
    assert any("is not in this repository" in line for line in lines)
    assert any("contradicts the release tag v5.0.0" in line for line in lines)
    assert all(line.startswith(".imgtrack/ledger/api/") for line in lines)
    assert "4 findings" in result.err or "5 findings" in result.err


def test_floating_tag_moved_backwards_is_found(project: Path, layouts: LayoutFactory) -> None:
    git(project, "tag", "v1.2.0")
    old = record(project, layouts)
    commit_file(project)
    git(project, "tag", "v1.2.3")
    new = record(project, layouts)
    # Pretend the older build was tagged 1.2 after the newer one.
    text = record_file(project, old).read_text()
    text = re.sub(r"recorded_at = .*", "recorded_at = 2099-01-01T00:00:00Z", text)
    record_file(project, old).write_text(text)
    assert "1.2" in new["tags"]
    result = run(["verify"], project)
    assert result.code == 1 and "floating tag '1.2' of api moved back from 1.2.3 to 1.2.0" in result.out


def test_malformed_record_is_a_finding(project: Path, layouts: LayoutFactory) -> None:
    rec = record(project, layouts)
    record_file(project, rec).write_text("schema = 1\ndigest = 7\n")
    result = run(["verify"], project)
    assert result.code == 1 and record_file(project, rec).name in result.out


def test_shallow_clone_is_reported_as_shallow(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    record(project, layouts)
    git(project, "add", ".imgtrack")
    git(project, "commit", "-q", "-m", "record")
    commit_file(project)
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{project}", str(clone))
    result = run(["verify"], clone)
    assert result.code == 1
    assert "shallow clone" in result.out and "not in this repository" not in result.out


def test_two_branches_recording_different_builds_merge_without_conflict(project: Path, layouts: LayoutFactory) -> None:
    git(project, "checkout", "-q", "-b", "feature-a")
    commit_file(project, "a.txt")
    a = record(project, layouts)
    git(project, "add", ".imgtrack")
    git(project, "commit", "-q", "-m", "record a")
    git(project, "checkout", "-q", "main")
    git(project, "checkout", "-q", "-b", "feature-b")
    commit_file(project, "b.txt")
    b = record(project, layouts)
    git(project, "add", ".imgtrack")
    git(project, "commit", "-q", "-m", "record b")
    git(project, "checkout", "-q", "main")
    git(project, "merge", "-q", "--no-edit", "feature-a")
    git(project, "merge", "-q", "--no-edit", "feature-b")  # a real merge commit, not a fast-forward
    assert git(project, "status", "--porcelain") == ""
    assert record_file(project, a).exists() and record_file(project, b).exists()
    result = run(["verify", "--json"], project)
    assert result.code == 0, result.out
    assert result.json()["records"] == 2
    # The lookup cache saw the checkout and the merge.
    assert run(["show", a["digest"]], project).code == 0
    assert run(["show", b["digest"]], project).code == 0
    git(project, "checkout", "-q", "feature-a")
    assert run(["show", b["digest"]], project).code == 1
