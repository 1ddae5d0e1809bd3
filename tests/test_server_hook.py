"""The server side: `imgtrack hooks install --server` in a bare repository, driven by real `git push
--no-verify` (which skips every client hook) from a clone. git runs the hook inside its quarantine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import LayoutFactory, commit_file, git, record_file, run, smuggle_tag


def push(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["git", "push", "--no-verify", *args], cwd=repo, capture_output=True, text=True, timeout=120
    )
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    return result


def record(repo: Path, layouts: LayoutFactory, *args: str) -> dict:
    path, _ = layouts()
    result = run(["record", str(path), "--image", "api", "--json", *args], repo)
    assert result.code == 0, result.err
    return result.json()


def commit_ledger(repo: Path, message: str = "record") -> None:
    git(repo, "add", ".imgtrack")
    git(repo, "commit", "-q", "-m", message)


def remote_refs(server: Path) -> str:
    return git(server, "for-each-ref", "--format=%(refname) %(objectname)")


def refusals(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.rstrip() for line in result.stderr.splitlines() if line.startswith("remote: imgtrack:")]


@pytest.fixture
def server(project: Path, tmp_path: Path) -> Path:
    """A bare repository with the server hook, `project` pushed to it as `origin` (no client hook)."""
    bare = tmp_path / "server.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(project, "remote", "add", "origin", str(bare))
    assert push(project, "-q", "origin", "main").returncode == 0
    installed = run(["hooks", "install", "--server", "--json"], bare)
    assert installed.code == 0, installed.err
    assert installed.json()["installed"] and Path(installed.json()["path"]) == bare / "hooks" / "pre-receive"
    assert "installed at" in run(["hooks", "status", "--server"], bare).out
    return bare


def test_a_clean_push_lands(project: Path, server: Path, layouts: LayoutFactory) -> None:
    record(project, layouts)
    commit_ledger(project)
    result = push(project, "origin", "main")
    assert result.returncode == 0, result.stderr
    assert git(server, "rev-parse", "main") == git(project, "rev-parse", "HEAD")


def test_an_untraceable_record_is_refused_by_the_server(project: Path, server: Path, layouts: LayoutFactory) -> None:
    git(project, "checkout", "-q", "-b", "side")
    side = commit_file(project, "side.txt", "never pushed\n")
    git(project, "checkout", "-q", "main")
    record(project, layouts, "--commit", side)
    commit_ledger(project)
    before = remote_refs(server)
    result = push(project, "origin", "main")
    assert result.returncode != 0
    lines = refusals(result)
    assert any(f"names commit {side[:7]}, which is not in the pushed history" in line for line in lines), lines
    assert lines[-1].endswith(
        "push refused by imgtrack's pre-receive hook on this server; fix the above and push again"
    )
    assert remote_refs(server) == before


def test_a_moved_release_tag_is_refused_by_the_server(project: Path, server: Path, layouts: LayoutFactory) -> None:
    git(project, "tag", "v1.0.0")
    record(project, layouts)
    commit_ledger(project, "record 1.0.0")
    assert push(project, "origin", "main", "v1.0.0").returncode == 0
    git(project, "tag", "-f", "v1.0.0", "HEAD")  # the ledger commit, not the released one
    before = remote_refs(server)
    result = push(project, "-f", "origin", "v1.0.0")
    assert result.returncode != 0
    assert any("moving release tag v1.0.0" in line and "api 1.0.0" in line for line in refusals(result))
    assert remote_refs(server) == before


def test_a_latest_tagged_record_is_refused_by_the_server(project: Path, server: Path, layouts: LayoutFactory) -> None:
    rec = record(project, layouts)
    smuggle_tag(record_file(project, rec), "latest")
    commit_ledger(project, "sneak latest in")
    before = remote_refs(server)
    result = push(project, "origin", "main")
    assert result.returncode != 0
    assert any("'latest' is refused" in line for line in refusals(result)), result.stderr
    assert remote_refs(server) == before
    # The same push without the smuggled tag lands: the refused one left nothing behind on the server.
    git(project, "reset", "-q", "--hard", "HEAD~1")
    record(project, layouts)
    commit_ledger(project)
    landed = push(project, "origin", "main")
    assert landed.returncode == 0, landed.stderr


def test_a_new_branch_brings_only_its_own_commits_under_check(
    project: Path, server: Path, layouts: LayoutFactory
) -> None:
    git(project, "checkout", "-q", "-b", "feature")
    record(project, layouts)
    commit_ledger(project)
    assert push(project, "origin", "feature").returncode == 0
    rec = record(project, layouts)
    smuggle_tag(record_file(project, rec), "latest")
    commit_ledger(project)
    refused = push(project, "origin", "feature:other")
    assert refused.returncode != 0 and refusals(refused)


def test_server_install_needs_a_bare_repository(project: Path) -> None:
    result = run(["hooks", "install", "--server"], project)
    assert result.code == 2 and result.err.count("\n") == 1 and "not a bare repository" in result.err
