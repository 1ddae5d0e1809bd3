"""`imgtrack ledger commit [--push]`: the CI hand-off, with real clones of one bare remote racing."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LayoutFactory, commit_file, git, run


def clone(remote: Path, where: Path) -> Path:
    git(where.parent, "clone", "-q", str(remote), str(where))
    return where


@pytest.fixture
def remote(project: Path, layouts: LayoutFactory, tmp_path: Path) -> tuple[Path, dict]:
    """A bare remote whose main holds one recorded, pushed build (api 1.0.0)."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(project, "remote", "add", "origin", str(bare))
    git(project, "tag", "v1.0.0")
    path, _ = layouts()
    pushed = run(["push", str(path), "--image", "api", "--to", f"oci:{tmp_path / 'first'}", "--json", "-q"], project)
    assert pushed.code == 0, pushed.err
    assert run(["ledger", "commit"], project).code == 0
    git(project, "push", "-q", "--tags", "origin", "main")
    return bare, pushed.json()


def test_commit_lists_what_changed_and_takes_only_the_ledger(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    rec = run(["record", str(path), "--image", "api", "--json"], project).json()
    shown = run(["show", rec["digest"], "--json"], project).json()
    (project / "app.txt").write_text("dirty, not part of the ledger\n")
    (project / "staged.txt").write_text("staged, not part of the ledger\n")
    git(project, "add", "staged.txt")
    result = run(["ledger", "commit", "--json"], project)
    assert result.code == 0, result.err
    assert result.json()["changes"] == [f"record api {rec['version']} ({rec['digest'][:19]}…)"]
    committed = git(project, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert len(committed) == 1 and re.fullmatch(
        rf"\.imgtrack/ledger/api/{rec['digest'][7:9]}/segment-[0-9a-f]{{16}}\.seg", committed[0]
    ), "the record went into a segment of its bucket, and nothing else was committed"
    assert not git(project, "status", "--porcelain", "--", ".imgtrack"), "its own file is gone"
    assert run(["show", rec["digest"], "--json"], project).json() == shown
    assert f"record api {rec['version']}" in git(project, "log", "-1", "--format=%s")
    assert git(project, "diff", "--name-only") == "app.txt", "other changes stay as they were"
    assert git(project, "diff", "--cached", "--name-only") == "staged.txt"
    again = run(["ledger", "commit"], project)
    assert again.code == 0 and "nothing to commit" in again.out


def test_two_ci_jobs_push_at_the_same_moment_and_both_land(
    remote: tuple[Path, dict],
    layouts: LayoutFactory,
    tmp_path: Path,
) -> None:
    bare, first = remote
    job_a, job_b, job_c = (clone(bare, tmp_path / name) for name in ("job-a", "job-b", "job-c"))
    # Job A records and pushes a new build; job B pushes the existing build to another destination.
    commit_file(job_a, "a.txt", "a\n")
    git(job_a, "push", "-q", "origin", "main")
    git(job_b, "pull", "-q", "--ff-only")
    new_layout, new_digest = layouts()
    assert run(["push", str(new_layout), "--image", "api", "--to", f"oci:{tmp_path / 'dest-a'}", "-q"], job_a).code == 0
    assert run(["push", "api@1.0.0", "--to", f"oci:{tmp_path / 'dest-b'}", "-q"], job_b).code == 0
    # Job C: an unrelated dirty file, and main will have moved under it too.
    third_layout, third_digest = layouts()
    assert run(["record", str(third_layout), "--image", "web", "--version", "0.1.0"], job_c).code == 0
    (job_c / "app.txt").write_text("work in progress\n")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "ledger", "commit", "--push", "--json"],
            cwd=job,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for job in (job_a, job_b, job_c)
    ]
    outcomes = [(p.communicate(timeout=120), p.returncode) for p in procs]
    assert all(code == 0 for _, code in outcomes), outcomes
    # At most one push can land first; C was behind from the start: the others fetched and rebased.
    assert sum(json.loads(out)["attempts"] for (out, _), _ in outcomes) >= 4, outcomes
    # Job C committed only the ledger; its dirty file is still only in its work tree.
    assert (job_c / "app.txt").read_text() == "work in progress\n"
    assert all(p.startswith(".imgtrack/") for p in git(job_c, "show", "--name-only", "--format=", "HEAD").splitlines())
    check = clone(bare, tmp_path / "check")
    verify = run(["verify", "--json"], check)
    assert verify.code == 0 and verify.json()["records"] == 3, verify.out
    shown = run(["show", "api@1.0.0", "--json"], check).json()
    assert {p["repository"] for p in shown["pushes"]} == {f"oci:{tmp_path / n}" for n in ("first", "dest-b")}
    assert run(["show", new_digest], check).code == 0 and run(["show", third_digest], check).code == 0
    assert first["digest"] == shown["digest"]
    assert "app.txt" not in git(check, "log", "--name-only", "--format=", "-3")


def test_a_rebase_that_would_move_code_is_abandoned_with_one_line(
    remote: tuple[Path, dict],
    layouts: LayoutFactory,
    tmp_path: Path,
) -> None:
    bare, _ = remote
    mover, job = clone(bare, tmp_path / "mover"), clone(bare, tmp_path / "job")
    commit_file(mover, "other.txt", "moved\n")
    git(mover, "push", "-q", "origin", "main")
    commit_file(job, "app.txt", "a code change not yet pushed\n")
    head = git(job, "rev-parse", "HEAD")
    path, _ = layouts()
    assert run(["record", str(path), "--image", "api", "--version", "1.1.0-rc.1"], job).code == 0
    result = run(["ledger", "commit", "--push"], job)
    assert result.code == 1, result
    assert len(result.err.strip().splitlines()) == 1 and "app.txt" in result.err and "rebase" in result.err
    assert git(job, "rev-parse", "HEAD~1") == head, "the ledger commit is made, nothing rebased"
    assert not (job / ".git" / "rebase-merge").exists() and not (job / ".git" / "rebase-apply").exists()
    assert git(tmp_path, "--git-dir", str(bare), "rev-parse", "main") == git(mover, "rev-parse", "HEAD")


def test_push_to_a_remote_that_is_not_there_exits_3(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    git(project, "remote", "add", "origin", str(tmp_path / "missing.git"))
    path, _ = layouts()
    assert run(["record", str(path), "--image", "api"], project).code == 0
    result = run(["ledger", "commit", "--push"], project)
    assert result.code == 3 and len(result.err.strip().splitlines()) == 1, result
    git(project, "switch", "-q", "--detach")
    detached = run(["ledger", "commit", "--push"], project)
    assert detached.code == 2 and "detached" in detached.err


def test_a_malformed_ledger_is_not_committed(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    rec = run(["record", str(path), "--image", "api", "--json"], project).json()
    folder = project / ".imgtrack" / "ledger" / "api" / rec["digest"][7:9] / rec["digest"].replace(":", "-")
    folder.mkdir()
    (folder / "push-0123456789abcdef.toml").write_bytes(b"garbage\x00\xff")
    head = git(project, "rev-parse", "HEAD")
    result = run(["ledger", "commit"], project)
    assert result.code == 2 and "not UTF-8" in result.err and len(result.err.strip().splitlines()) == 1, result
    assert git(project, "rev-parse", "HEAD") == head
    assert git(project, "diff", "--cached", "--name-only") == "", "nothing staged either"


def test_a_config_change_and_a_removed_file_are_committed_with_the_records(
    project: Path, layouts: LayoutFactory
) -> None:
    path, _ = layouts()
    first = run(["record", str(path), "--image", "api", "--json"], project).json()
    assert run(["ledger", "commit"], project).code == 0
    path, _ = layouts()
    second = run(["record", str(path), "--image", "api", "--version", "2.0.0-rc.1", "--json"], project).json()
    config = project / ".imgtrack" / "config.toml"
    config.write_text(config.read_text() + "\n# reviewed\n")
    (first_segment,) = git(project, "show", "--name-only", "--format=", "HEAD").splitlines()
    (project / first_segment).unlink()  # removed by hand: git add -A would stage the removal too
    result = run(["ledger", "commit", "--json"], project)
    assert result.code == 0, result.err
    lines = git(project, "show", "--no-renames", "--name-status", "--format=", "HEAD").splitlines()
    committed = dict(reversed(line.split("\t")) for line in lines)
    added = [path for path, status in committed.items() if status == "A"]
    assert len(committed) == 3 and committed[first_segment] == "D" and committed[".imgtrack/config.toml"] == "M"
    assert len(added) == 1 and added[0].startswith(f".imgtrack/ledger/api/{second['digest'][7:9]}/segment-")
    assert run(["show", first["digest"]], project).code == 1, "the removal was committed"
    assert run(["show", second["digest"], "--json"], project).json()["version"] == "2.0.0-rc.1"
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_commit_of_many_changes_lists_the_first_two_hundred(project: Path) -> None:
    """git reads a commit's whole message whenever it reads the commit: a ledger commit of a million
    records once made `git rev-parse HEAD^{commit}` take 0.25 s."""
    import random
    from datetime import UTC, datetime

    from imgtrack.ledger.schema import Record
    from imgtrack.ledger.store import record_rel

    commit = git(project, "rev-parse", "HEAD")
    rng = random.Random(3)
    for i in range(250):
        digest = f"sha256:{rng.getrandbits(256):064x}"
        rec = Record(
            "api",
            digest,
            "application/vnd.oci.image.manifest.v1+json",
            f"1.0.{i}",
            commit,
            "clean",
            (f"1.0.{i}",),
            datetime(2026, 1, 1, tzinfo=UTC),
            "Dev <dev@example.com>",
        )
        target = project / ".imgtrack" / "ledger" / record_rel("api", digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(rec.to_toml())
    result = run(["ledger", "commit"], project)
    assert result.code == 0 and "250 changes in all" in result.out and len(result.out) < 500
    body = git(project, "log", "-1", "--format=%b").splitlines()
    assert len(body) == 201 and body[-1] == "* … and 50 more (imgtrack log)"
    assert len(run(["log", "--json"], project).json()) == 250
