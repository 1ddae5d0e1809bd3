"""Team flows on two branches merge with no conflict, and `verify` sees one ledger afterwards (real git)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import LayoutFactory, commit_file, git, run

Action = Callable[[Path, str], None]


def ok(args: list[str], cwd: Path) -> dict:
    result = run([*args, "--json"], cwd)
    assert result.code == 0, result.err
    return result.json()  # type: ignore[return-value]


def ledger_commit(repo: Path) -> None:
    result = run(["ledger", "commit"], repo)
    assert result.code == 0, result.err


@pytest.fixture
def recorded(project: Path, layouts: LayoutFactory, tmp_path: Path) -> tuple[Path, dict, Path]:
    """`project` with one build recorded, pushed to an OCI layout and committed on main."""
    git(project, "tag", "v1.0.0")
    path, _ = layouts(platforms=("linux/amd64", "linux/arm64"))
    rec = ok(["push", str(path), "--image", "api", "--to", f"oci:{tmp_path / 'main-dest'}", "-q"], project)
    ledger_commit(project)
    return project, rec, path


def merge_both(repo: Path) -> None:
    for branch in ("staging", "prod"):
        proc = subprocess.run(["git", "merge", "--no-edit", "-q", branch], cwd=repo, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr  # no CONFLICT
    assert "CONFLICT" not in git(repo, "log", "-1", "--format=%B")


def on_branches(repo: Path, act: Callable[[str], None]) -> None:
    """Do `act(name)` on branch staging and on branch prod, each from main, then merge both into main."""
    for branch in ("staging", "prod"):
        git(repo, "switch", "-q", "-c", branch, "main")
        act(branch)
        ledger_commit(repo)
    git(repo, "switch", "-q", "main")
    commit_file(repo, "main.txt", "main moved on\n")  # so that both merges are real merges
    merge_both(repo)


@pytest.mark.parametrize("flow", ["push", "promote", "tag", "same push"])
def test_one_build_changed_on_two_branches_merges_cleanly(
    flow: str,
    recorded: tuple[Path, dict, Path],
    tmp_path: Path,
) -> None:
    repo, rec, layout = recorded
    ref = f"api@{rec['version']}"

    def act(branch: str) -> None:
        if flow == "push":
            ok(["push", str(layout), "--to", f"oci:{tmp_path / branch}", "-q"], repo)
        elif flow == "same push":  # both branches push to one place: two facts, by when they happened
            ok(["push", str(layout), "--to", f"oci:{tmp_path / 'shared'}", "-q"], repo)
        elif flow == "promote":
            ok(["promote", ref, "--to", f"oci:{tmp_path / branch}", "-q"], repo)
        else:
            ok(["record", str(layout), "--image", "api", "--tag", f"{branch}-approved"], repo)

    on_branches(repo, act)
    assert run(["verify"], repo).code == 0, run(["verify"], repo).out
    shown = ok(["show", ref], repo)
    if flow == "tag":
        assert {"staging-approved", "prod-approved"} <= set(shown["tags"])
        tag_facts = [f for f in shown["facts"] if f["kind"] == "tag"]
        assert all(f["by"] == "Test Dev <dev@example.com>" and f["at"] for f in tag_facts)
    elif flow == "same push":
        assert [p["repository"] for p in shown["pushes"]].count(f"oci:{tmp_path / 'shared'}") == 2
    else:
        where = {p["repository"] for p in shown["pushes"]}
        assert {f"oci:{tmp_path / 'staging'}", f"oci:{tmp_path / 'prod'}", f"oci:{tmp_path / 'main-dest'}"} == where
        assert any(p.get("promoted") for p in shown["pushes"]) == (flow == "promote")
    # The same fact applied again adds no file.
    before = sorted(p.name for p in (repo / ".imgtrack" / "ledger").rglob("*.toml"))
    if flow == "tag":
        ok(["record", str(layout), "--image", "api", "--tag", "staging-approved"], repo)
    else:
        ok(["push", ref, "--to", f"oci:{tmp_path / ('shared' if flow == 'same push' else 'staging')}", "-q"], repo)
    assert sorted(p.name for p in (repo / ".imgtrack" / "ledger").rglob("*.toml")) == before


def test_two_different_builds_on_two_branches_merge_cleanly(
    recorded: tuple[Path, dict, Path],
    layouts: LayoutFactory,
) -> None:
    repo, _, _ = recorded
    digests = {}

    def act(branch: str) -> None:
        commit_file(repo, f"{branch}.txt", f"{branch}\n")
        path, digests[branch] = layouts()
        ok(["record", str(path), "--image", "api"], repo)

    on_branches(repo, act)
    assert run(["verify"], repo).code == 0
    assert {r["digest"] for r in ok(["log"], repo)} >= set(digests.values())


def test_one_immutable_tag_claimed_on_two_branches_merges_but_is_reported(
    recorded: tuple[Path, dict, Path],
    layouts: LayoutFactory,
    tmp_path: Path,
) -> None:
    repo, _, _ = recorded
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    assert run(["hooks", "install"], repo).code == 0
    claimed = {}

    def act(branch: str) -> None:
        commit_file(repo, f"{branch}.txt", f"{branch}\n")
        path, claimed[branch] = layouts()
        ok(["record", str(path), "--image", "api", "--tag", "qa-approved"], repo)

    on_branches(repo, act)
    result = run(["verify"], repo)
    assert result.code == 1
    lines = [line for line in result.out.splitlines() if "qa-approved" in line]
    assert len(lines) == 1, result.out
    assert all(d.replace(":", "-") in lines[0] for d in claimed.values()), "one line naming both records"
    push = subprocess.run(["git", "push", "origin", "main"], cwd=repo, capture_output=True, text=True)
    assert push.returncode != 0 and "qa-approved" in push.stderr, push.stderr
    assert git(tmp_path, "--git-dir", str(remote), "rev-parse", "main") != git(repo, "rev-parse", "main")


def test_a_tag_added_later_on_two_branches_to_two_builds_is_refused_at_push(
    recorded: tuple[Path, dict, Path],
    layouts: LayoutFactory,
    tmp_path: Path,
) -> None:
    repo, first, first_layout = recorded
    commit_file(repo)
    second_layout, _ = layouts(seed=77)
    second = ok(["record", str(second_layout), "--image", "api"], repo)
    ledger_commit(repo)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))
    git(repo, "push", "-q", "origin", "main")
    assert run(["hooks", "install"], repo).code == 0
    layouts_by_branch = {"staging": first_layout, "prod": second_layout}
    on_branches(
        repo,
        lambda branch: (
            ok(["record", str(layouts_by_branch[branch]), "--image", "api", "--tag", "customer-x"], repo) and None
        ),
    )
    result = run(["verify"], repo)
    assert result.code == 1 and "'customer-x'" in result.out
    assert first["digest"] != second["digest"]
    push = subprocess.run(["git", "push", "origin", "main"], cwd=repo, capture_output=True, text=True)
    assert push.returncode != 0 and "customer-x" in push.stderr, push.stderr
