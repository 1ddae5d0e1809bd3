"""`imgtrack diff`: the commits between two builds (real git: ranges, configured paths, a rollback, a
diverged history) and what changed inside (real layouts: layers and image config per platform)."""

from __future__ import annotations

from pathlib import Path

from testkit.registries import Registry
from tests.conftest import LayoutFactory, commit_file, git, run


def _release(project: Path, layouts: LayoutFactory, version: str, dest: Path, **shape: object) -> dict:
    """Record a build of HEAD as `version` and push it to the layout `dest` (so diff can read it)."""
    path, _ = layouts(**shape)
    result = run(
        ["push", str(path), "--image", "api", "--version", version, "--to", f"oci:{dest}", "--json", "-q"], project
    )
    assert result.code == 0, result.err
    return result.json()  # type: ignore[return-value]


def test_commits_between_two_releases_newest_first_and_narrowed_to_the_images_paths(
    project: Path,
    layouts: LayoutFactory,
    tmp_path: Path,
) -> None:
    (project / "services" / "api").mkdir(parents=True)
    (project / "docs").mkdir()
    commit_file(project, "services/api/main.py", "v1\n", "api: first")
    first = _release(project, layouts, "1.0.0", tmp_path / "d1", base=1)
    commit_file(project, "services/api/main.py", "v2\n", "api: handle retries")
    commit_file(project, "docs/readme.md", "x\n", "docs: typo")
    commit_file(project, "services/api/main.py", "v3\n", "api: log less")
    second = _release(project, layouts, "1.1.0", tmp_path / "d2", base=1, config={"Cmd": ["serve", "--quiet"]})

    result = run(["diff", "api@1.0.0", "api@1.1.0", "--json"], project)
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["direction"] == "forward"  # type: ignore[index]
    assert [c["subject"] for c in doc["commits"]] == ["api: log less", "docs: typo", "api: handle retries"]  # type: ignore[index]
    assert doc["a"]["digest"] == first["digest"] and doc["b"]["digest"] == second["digest"]  # type: ignore[index]
    (platform,) = doc["platforms"]  # type: ignore[index]
    # The shared base layer is in neither list; the image's own layer changed; Cmd and Env changed.
    assert len(platform["layers_added"]) == 1 and len(platform["layers_removed"]) == 1
    assert platform["config"]["Cmd"] == {"a": None, "b": ["serve", "--quiet"]}
    assert set(platform["config"]) == {"Cmd", "Env"}

    # With the image's source paths configured, only the commits touching them.
    config = project / ".imgtrack" / "config.toml"
    config.write_text(
        config.read_text().replace(
            "\n[images.api]\nrepositories", '\n[images.api]\npaths = ["services/api"]\nrepositories'
        )
    )
    narrowed = run(["diff", "api@1.0.0", "api@1.1.0", "--json"], project).json()
    assert [c["subject"] for c in narrowed["commits"]] == ["api: log less", "api: handle retries"]  # type: ignore[index]
    text = run(["diff", "api@1.0.0", "api@1.1.0"], project).out
    assert "2 commits since 1.0.0, newest first, only those touching services/api:" in text
    assert '  Cmd: -  ->  ["serve", "--quiet"]' in text and "+ layer sha256:" in text


def test_a_rollback_is_marked_with_the_commits_it_undoes(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    commit_file(project)
    _release(project, layouts, "2.0.0", tmp_path / "d1")
    commit_file(project, message="fix: the bug 2.0.0 had")
    _release(project, layouts, "2.0.1", tmp_path / "d2")
    result = run(["diff", "api@2.0.1", "api@2.0.0"], project)
    assert result.code == 0, result.err
    assert "ROLLBACK: 2.0.0 is older than 2.0.1; going to it undoes 1 commits" in result.out
    assert "fix: the bug 2.0.0 had" in result.out
    assert run(["diff", "api@2.0.1", "api@2.0.0", "--json"], project).json()["direction"] == "rollback"  # type: ignore[index]


def test_a_diverged_history_and_a_runtime_reference(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    base = git(project, "rev-parse", "HEAD")
    commit_file(project, "a.txt")
    first = _release(project, layouts, "3.0.0", tmp_path / "d1")
    git(project, "switch", "-q", "-c", "hotfix", base)
    commit_file(project, "b.txt", message="hotfix on the old line")
    second = _release(project, layouts, "3.0.1-hotfix.1", tmp_path / "d2")
    # B as a runtime reports it: a repository the ledger knows nothing of, and the digest.
    runtime = f"registry.example.com/team/api@{second['digest']}"
    doc = run(["diff", f"api@{first['version']}", runtime, "--json"], project).json()
    assert doc["direction"] == "diverged"  # type: ignore[index]
    assert [c["subject"] for c in doc["commits"]] == ["hotfix on the old line"]  # type: ignore[index]


def test_contents_that_cannot_be_read_leave_the_commits_and_say_why(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    assert run(["record", str(path), "--image", "api", "--version", "4.0.0"], project).code == 0
    commit_file(project, message="later")
    other, _ = layouts()
    assert run(["record", str(other), "--image", "api", "--version", "4.1.0"], project).code == 0
    result = run(["diff", "api@4.0.0", "api@4.1.0", "--json"], project)
    assert result.code == 0, result.err
    doc = result.json()
    assert doc["platforms"] is None and "never pushed" in doc["contents_note"]  # type: ignore[index]
    assert [c["subject"] for c in doc["commits"]] == ["later"]  # type: ignore[index]


def test_an_unknown_build_is_exit_1_with_one_line(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    assert run(["record", str(path), "--image", "api", "--version", "5.0.0"], project).code == 0
    result = run(["diff", "api@5.0.0", "api@9.9.9"], project)
    assert result.code == 1 and len(result.err.strip().splitlines()) == 1 and "matches no record" in result.err
    bad = run(["diff", "api@5.0.0", "registry.example.com/team/api@sha256:" + "f" * 64], project)
    assert bad.code == 1, bad


def test_paths_in_the_config_are_checked(project: Path) -> None:
    config = project / ".imgtrack" / "config.toml"
    config.write_text(
        config.read_text().replace(
            "\n[images.api]\nrepositories", '\n[images.api]\npaths = ["../outside"]\nrepositories'
        )
    )
    result = run(["log"], project)
    assert result.code == 2 and "must be a path inside the repository" in result.err


def test_contents_are_read_from_the_registry_the_ledger_pushed_to(
    project: Path,
    layouts: LayoutFactory,
    plain_registry: Registry,
) -> None:
    repo = plain_registry.repo("diff")
    for version, seed in (("6.0.0", 61), ("6.1.0", 62)):
        commit_file(project, message=f"for {version}")
        path, _ = layouts(seed=seed, platforms=("linux/amd64", "linux/arm64"), base=1)
        assert run(["push", str(path), "--image", "api", "--version", version, "--to", repo, "-q"], project).code == 0
    doc = run(["diff", "api@6.0.0", "api@6.1.0", "--json"], project).json()
    assert doc["contents_note"] is None  # type: ignore[index]
    assert [p["platform"] for p in doc["platforms"]] == ["linux/amd64", "linux/arm64"]  # type: ignore[index]
    assert all(len(p["layers_added"]) == 1 and "Env" in p["config"] for p in doc["platforms"])  # type: ignore[index]
