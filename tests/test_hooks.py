"""The pre-push hook, installed for real and driven by real `git push` to a local bare remote."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import LayoutFactory, commit_file, git, record_file, run, smuggle_tag


def push(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A real `git push`, which runs the installed hook; the hook never fails with an internal error."""
    result = subprocess.run(["git", "push", *args], cwd=repo, capture_output=True, text=True, timeout=120)
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    return result


def record(repo: Path, layouts: LayoutFactory, *args: str) -> dict:
    path, _ = layouts()
    result = run(["record", str(path), "--image", "api", "--json", *args], repo)
    assert result.code == 0, result.err
    return result.json()


def commit_ledger(repo: Path, message: str = "record") -> str:
    git(repo, "add", ".imgtrack")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def pushed(project: Path, tmp_path: Path) -> Path:
    """`project` with the hook installed and main pushed to a bare remote `origin`."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(project, "remote", "add", "origin", str(remote))
    assert run(["hooks", "install"], project).code == 0
    result = push(project, "-q", "origin", "main")
    assert result.returncode == 0, result.stderr
    return project


def test_install_is_idempotent_and_status_reports_it(project: Path) -> None:
    first = run(["hooks", "install", "--json"], project).json()
    hook = Path(first["path"])
    content = hook.read_text()
    assert first["installed"] and os.access(hook, os.X_OK)
    assert run(["hooks", "install"], project).code == 0
    assert hook.read_text() == content and not (hook.parent / "pre-push.legacy").exists()
    assert "installed at" in run(["hooks", "status"], project).out
    assert run(["hooks", "uninstall"], project).code == 0
    assert not hook.exists()
    assert "not installed" in run(["hooks", "status"], project).out


def test_clean_record_push_is_allowed(pushed: Path, layouts: LayoutFactory) -> None:
    git(pushed, "tag", "v1.0.0")
    record(pushed, layouts)
    commit_ledger(pushed)
    result = push(pushed, "origin", "main", "v1.0.0")
    assert result.returncode == 0, result.stderr


def test_record_whose_commit_is_not_pushed_is_refused(pushed: Path, layouts: LayoutFactory) -> None:
    git(pushed, "checkout", "-q", "-b", "side")
    side = commit_file(pushed, "side.txt")
    git(pushed, "checkout", "-q", "main")
    record(pushed, layouts, "--commit", side)
    commit_ledger(pushed)
    result = push(pushed, "origin", "main")
    assert result.returncode != 0
    assert "not in the pushed history" in result.stderr and side[:7] in result.stderr
    # Pushing the commit along (merged into main) makes the same record traceable.
    git(pushed, "merge", "-q", "--no-edit", "side")
    assert push(pushed, "origin", "main").returncode == 0


def test_record_contradicting_release_tag_is_refused(pushed: Path, layouts: LayoutFactory) -> None:
    rec = record(pushed, layouts)
    git(pushed, "tag", "v3.0.0", rec["commit"])
    commit_ledger(pushed)
    result = push(pushed, "origin", "main")
    assert result.returncode != 0 and "contradicts the release tag v3.0.0" in result.stderr


def test_record_breaking_tag_policy_is_refused(pushed: Path, layouts: LayoutFactory) -> None:
    rec = record(pushed, layouts)
    smuggle_tag(record_file(pushed, rec), "latest")
    commit_ledger(pushed)
    result = push(pushed, "origin", "main")
    assert result.returncode != 0 and "'latest' is refused" in result.stderr


def test_record_moving_an_immutable_tag_is_refused(pushed: Path, layouts: LayoutFactory) -> None:
    record(pushed, layouts, "--tag", "qa-approved")
    commit_ledger(pushed)
    assert push(pushed, "origin", "main").returncode == 0
    commit_file(pushed)
    second = record(pushed, layouts)
    smuggle_tag(record_file(pushed, second), "qa-approved")
    commit_ledger(pushed)
    result = push(pushed, "origin", "main")
    assert result.returncode != 0 and "immutable tags never move" in result.stderr


def test_release_tag_move_delete_and_reuse(pushed: Path, layouts: LayoutFactory) -> None:
    git(pushed, "tag", "v1.0.0")
    record(pushed, layouts)
    commit_ledger(pushed)
    assert push(pushed, "origin", "main", "v1.0.0").returncode == 0
    # Move: force-push the tag to another commit.
    git(pushed, "tag", "-f", "v1.0.0", "HEAD")
    moved = push(pushed, "--force", "origin", "v1.0.0")
    assert moved.returncode != 0 and "moving release tag v1.0.0" in moved.stderr
    git(pushed, "tag", "-f", "v1.0.0", "HEAD~1")
    # Delete.
    deleted = push(pushed, "origin", ":refs/tags/v1.0.0")
    assert deleted.returncode != 0 and "deleting release tag v1.0.0" in deleted.stderr
    # Reuse: the same version tagged elsewhere, pushed from a clone that lacks the tag.
    other = pushed.parent / "other"
    git(pushed.parent, "clone", "-q", str(pushed.parent / "remote.git"), str(other))
    assert run(["hooks", "install"], other).code == 0
    git(other, "tag", "-d", "v1.0.0")
    commit_file(other, "other.txt")
    git(other, "tag", "v1.0.0")
    assert run(["log"], other).code == 0
    reused = push(other, "--force", "origin", "refs/tags/v1.0.0")
    assert reused.returncode != 0 and "binds api 1.0.0" in reused.stderr
    # A tag for a version the ledger does not know is fine.
    git(pushed, "tag", "v1.1.0")
    assert push(pushed, "origin", "v1.1.0").returncode == 0


def test_new_branch_several_refs_and_branch_deletion(pushed: Path, layouts: LayoutFactory) -> None:
    git(pushed, "checkout", "-q", "-b", "feature")
    commit_file(pushed, "f.txt")
    good = record(pushed, layouts)
    commit_ledger(pushed)
    assert push(pushed, "origin", "feature").returncode == 0  # a new branch: zero remote oid
    git(pushed, "checkout", "-q", "-b", "bad")
    rec = record(pushed, layouts, "--tag", "staging-7")
    path = record_file(pushed, rec)
    path.write_text(re.sub(r'commit = "[0-9a-f]{40}"', 'commit = "' + "a" * 40 + '"', path.read_text()))
    commit_ledger(pushed)
    both = push(pushed, "origin", "feature", "bad")
    assert both.returncode != 0 and "not in the pushed history" in both.stderr
    assert good["digest"] not in both.stderr
    assert push(pushed, "origin", ":feature").returncode == 0  # deleting a branch checks nothing


def test_force_push_rewriting_the_ledger_is_checked(pushed: Path, layouts: LayoutFactory) -> None:
    record(pushed, layouts)
    commit_ledger(pushed)
    assert push(pushed, "origin", "main").returncode == 0
    git(pushed, "reset", "-q", "--hard", "HEAD~1")
    git(pushed, "checkout", "-q", "-b", "tmp")
    orphan = commit_file(pushed, "x.txt")
    git(pushed, "checkout", "-q", "main")
    record(pushed, layouts, "--commit", orphan)
    commit_ledger(pushed)
    result = push(pushed, "--force", "origin", "main")
    assert result.returncode != 0 and "not in the pushed history" in result.stderr


def test_worktree_and_hooks_path_and_chained_foreign_hook(pushed: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    # A push from a worktree uses the hook in the common git dir.
    tree = tmp_path / "wt"
    git(pushed, "worktree", "add", "-q", "-b", "wt-branch", str(tree))
    rec = record(tree, layouts)
    smuggle_tag(record_file(tree, rec), "latest")
    commit_ledger(tree)
    result = push(tree, "origin", "wt-branch")
    assert result.returncode != 0 and "'latest' is refused" in result.stderr

    # core.hooksPath: install goes there, and a foreign hook is kept and run first.
    hooks = pushed / "githooks"
    hooks.mkdir()
    foreign = hooks / "pre-push"
    marker = tmp_path / "foreign-ran"
    foreign.write_text(f"#!/bin/sh\ncat > /dev/null\necho ran >> {marker}\nexit 0\n")
    foreign.chmod(0o755)
    git(pushed, "config", "core.hooksPath", "githooks")
    status = run(["hooks", "install", "--json"], pushed).json()
    assert Path(status["path"]) == hooks / "pre-push" and status["chained"]
    assert f"echo ran >> {marker}" in (hooks / "pre-push.legacy").read_text()
    assert "imgtrack-managed-hook" in foreign.read_text()
    commit_file(pushed, "y.txt")
    assert push(pushed, "origin", "main").returncode == 0
    assert marker.read_text().count("ran") == 1
    # A failing foreign hook still stops the push.
    (hooks / "pre-push.legacy").write_text("#!/bin/sh\necho foreign says no >&2\nexit 3\n")
    commit_file(pushed, "z.txt")
    refused = push(pushed, "origin", "main")
    assert refused.returncode != 0 and "foreign says no" in refused.stderr
    # Uninstall restores the foreign hook.
    assert run(["hooks", "uninstall"], pushed).code == 0
    assert "foreign says no" in (hooks / "pre-push").read_text()


def test_no_verify_skips_the_hook_and_verify_catches_it(pushed: Path, layouts: LayoutFactory) -> None:
    rec = record(pushed, layouts)
    smuggle_tag(record_file(pushed, rec), "latest")
    commit_ledger(pushed)
    assert push(pushed, "origin", "main").returncode != 0
    assert push(pushed, "--no-verify", "origin", "main").returncode == 0
    assert run(["verify"], pushed).code == 1


def test_pre_commit_framework_runs_the_same_check(pushed: Path, layouts: LayoutFactory) -> None:
    """`.pre-commit-hooks.yaml` from this project, run by the pre-commit framework at its pre-push stage."""
    root = Path(__file__).resolve().parent.parent
    config = pushed / ".pre-commit-config.yaml"
    config.write_text(
        "repos:\n- repo: local\n  hooks:\n" + "".join(f"  {line}\n" for line in _hook_definition(root).splitlines())
    )
    git(pushed, "add", ".pre-commit-config.yaml")
    git(pushed, "commit", "-q", "-m", "pre-commit")
    base = git(pushed, "rev-parse", "HEAD")
    rec = record(pushed, layouts)
    smuggle_tag(record_file(pushed, rec), "latest")
    bad = commit_ledger(pushed)
    env = {**os.environ, "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    args = [
        "pre_commit",
        "run",
        "--hook-stage",
        "pre-push",
        "--from-ref",
        base,
        "--to-ref",
        bad,
        "--remote-branch",
        "refs/heads/main",
        "--local-branch",
        "refs/heads/main",
    ]
    refused = subprocess.run([os.sys.executable, "-m", *args], cwd=pushed, capture_output=True, text=True, env=env)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "'latest' is refused" in refused.stdout + refused.stderr
    git(pushed, "reset", "-q", "--hard", base)
    record(pushed, layouts)
    good = commit_ledger(pushed)
    args[args.index(bad)] = good
    allowed = subprocess.run([os.sys.executable, "-m", *args], cwd=pushed, capture_output=True, text=True, env=env)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def _hook_definition(root: Path) -> str:
    """The hook entry of `.pre-commit-hooks.yaml`, run from the installed imgtrack (language: system)."""
    import yaml  # pre-commit depends on PyYAML

    (hook,) = yaml.safe_load((root / ".pre-commit-hooks.yaml").read_text())
    hook["language"] = "system"
    return yaml.safe_dump([hook], sort_keys=False)


def test_install_keeps_the_old_hook_until_the_new_one_replaces_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic form of the crash test: the hook write fails after the old hook was kept."""
    from imgtrack.commands import hooks as hooks_module
    from imgtrack.gitrepo import GitRepo

    hook = project / ".git" / "hooks" / "pre-push"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\necho foreign\n")
    real = hooks_module.write_atomic

    def fail_on_the_hook(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name == "pre-push":
            raise OSError("disk full")
        real(path, data, mode)

    monkeypatch.setattr(hooks_module, "write_atomic", fail_on_the_hook)
    with pytest.raises(OSError):
        hooks_module.install_hooks(GitRepo(project))
    assert hook.read_text() == "#!/bin/sh\necho foreign\n", "the old hook is still in place"
    assert (hook.parent / "pre-push.legacy").read_text() == hook.read_text()


def test_an_ordinary_release_history_passes_the_hook(pushed: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    # Several releases of one line in one push, each in its own commit.
    for version in ("1.0.0", "1.0.1", "1.0.2"):
        commit_file(pushed)
        git(pushed, "tag", f"v{version}")
        assert record(pushed, layouts)["version"] == version
        commit_ledger(pushed, f"record {version}")
    result = push(pushed, "origin", "main", "v1.0.0", "v1.0.1", "v1.0.2")
    assert result.returncode == 0, result.stderr
    # Two releases recorded with --version, committed together.
    for version in ("1.1.0", "1.1.1"):
        commit_file(pushed)
        record(pushed, layouts, "--version", version)
    commit_ledger(pushed, "two releases")
    result = push(pushed, "origin", "main")
    assert result.returncode == 0, result.stderr
    # The whole history, tags and all, to a remote that has nothing yet.
    fresh = tmp_path / "fresh.git"
    git(tmp_path, "init", "-q", "--bare", str(fresh))
    result = push(pushed, str(fresh), "main", "--tags")
    assert result.returncode == 0, result.stderr
    assert run(["verify"], pushed).code == 0


def test_a_floating_tag_moved_backwards_is_still_refused(pushed: Path, layouts: LayoutFactory) -> None:
    base = git(pushed, "rev-parse", "HEAD")
    commit_file(pushed)
    record(pushed, layouts, "--version", "2.0.1")
    commit_ledger(pushed, "2.0.1")
    assert push(pushed, "origin", "main").returncode == 0
    # A branch that never saw 2.0.1 records 2.0.0 later, with the same floating tag 2.0.
    git(pushed, "switch", "-q", "-c", "old", base)
    commit_file(pushed, "old.txt")
    record(pushed, layouts, "--version", "2.0.0")
    commit_ledger(pushed, "2.0.0, later")
    git(pushed, "switch", "-q", "main")
    git(pushed, "merge", "-q", "--no-edit", "old")
    result = push(pushed, "origin", "main")
    assert result.returncode != 0
    assert "floating tag '2.0' already names 2.0.1" in result.stderr and "2.0.0 is older" in result.stderr
    verify = run(["verify"], pushed)
    assert verify.code == 1 and "floating tag '2.0' of api moved back from 2.0.1 to 2.0.0" in verify.out


def test_a_rewrite_that_drops_a_recorded_commit_is_refused(pushed: Path, layouts: LayoutFactory) -> None:
    base = git(pushed, "rev-parse", "HEAD")
    built = commit_file(pushed, "feature.txt")
    rec = record(pushed, layouts)
    ledger_commit = commit_ledger(pushed, "record the feature build")
    assert push(pushed, "origin", "main").returncode == 0
    # Rewrite: the code commit replaced by another, the ledger commit cherry-picked on top unchanged.
    git(pushed, "reset", "-q", "--hard", base)
    commit_file(pushed, "other.txt")
    git(pushed, "cherry-pick", ledger_commit)
    result = push(pushed, "--force", "origin", "main")
    assert result.returncode != 0
    assert f"names commit {built[:7]}, which this push drops from refs/heads/main" in result.stderr
    assert record_file(pushed, rec).name in result.stderr
    # A rewrite that keeps the recorded commit (a reworded later commit) passes.
    git(pushed, "reset", "-q", "--hard", ledger_commit)
    commit_file(pushed, "later.txt")
    assert push(pushed, "origin", "main").returncode == 0
    git(pushed, "commit", "-q", "--amend", "-m", "later, reworded")
    result = push(pushed, "--force", "origin", "main")
    assert result.returncode == 0, result.stderr
