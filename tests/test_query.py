"""`imgtrack log`, `show` and `resolve`: answers from the ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import LayoutFactory, commit_file, run


@pytest.fixture
def history(project: Path, layouts: LayoutFactory) -> dict[str, dict]:
    """api 1.3.0, 1.4.0, 1.4.2, 2.0.0-rc.1 and web 1.4.0, each from its own commit, recorded in that order."""
    out: dict[str, dict] = {}
    for image, version in [
        ("api", "1.3.0"),
        ("api", "1.4.0"),
        ("web", "1.4.0"),
        ("api", "1.4.2"),
        ("api", "2.0.0-rc.1"),
    ]:
        commit_file(project)
        path, _ = layouts(platforms=("linux/amd64", "linux/arm64"))
        result = run(["record", str(path), "--image", image, "--version", version, "--json"], project)
        assert result.code == 0, result.err
        out[f"{image}@{version}"] = result.json()
    return out


def test_log_newest_first_limit_and_image(project: Path, history: dict[str, dict]) -> None:
    data = run(["log", "--json"], project).json()
    assert [f"{r['image']}@{r['version']}" for r in data] == list(reversed(history))
    assert [r["version"] for r in run(["log", "api", "-n", "2", "--json"], project).json()] == ["2.0.0-rc.1", "1.4.2"]
    text = run(["log", "-n", "1"], project)
    assert text.code == 0 and "2.0.0-rc.1" in text.out and len(text.out.strip().splitlines()) == 1
    bad = run(["log", "nope"], project)
    assert bad.code == 2 and "'nope'" in bad.err


def test_show_by_every_kind_of_reference(project: Path, history: dict[str, dict]) -> None:
    rec = history["api@1.4.2"]
    platform_manifest = rec["manifests"][1]["digest"]
    config = rec["manifests"][0]["config"]
    for ref in [
        rec["digest"],
        rec["digest"][:19],  # unambiguous prefix
        platform_manifest,
        config,
        "api@1.4.2",
        "1.4.2",
        "sha-" + rec["commit"][:7],
        rec["commit"],
        rec["commit"][:8],
    ]:
        result = run(["show", ref, "--json"], project)
        assert result.code == 0, (ref, result.err)
        assert result.json()["digest"] == rec["digest"], ref
    text = run(["show", "api@1.4.2"], project).out
    assert rec["commit"] in text and "linux/arm64" in text


def test_show_ambiguous_and_unknown(project: Path, history: dict[str, dict]) -> None:
    result = run(["show", "1.4.0"], project)
    assert result.code == 2 and "matches 2 records" in result.err and "IMAGE@VERSION" in result.err
    assert run(["show", "web@1.4.0", "--json"], project).json()["image"] == "web"
    missing = run(["show", "9.9.9"], project)
    assert missing.code == 1 and "matches no record" in missing.err
    assert run(["show", "worker@1.0.0"], project).code == 2


@pytest.mark.parametrize(
    ("spec", "version"),
    [
        ("api@^1.3", "1.4.2"),
        ("api@~1.4.0", "1.4.2"),
        ("api@1.x", "1.4.2"),
        ("api@1.3", "1.3.0"),
        ("api@>=1.0.0 <1.4.0", "1.3.0"),
        ("api@1.4.0", "1.4.0"),
        ("api@^2.0.0-rc.0", "2.0.0-rc.1"),
        ("web@*", "1.4.0"),
    ],
)
def test_resolve_ranges(project: Path, history: dict[str, dict], spec: str, version: str) -> None:
    result = run(["resolve", spec], project)
    assert result.code == 0, result.err
    assert result.out.strip() == f"{spec.split('@')[0]}@{history[spec.split('@')[0] + '@' + version]['digest']}"


def test_resolve_repository_no_match_and_bad_range(project: Path, history: dict[str, dict]) -> None:
    pinned = run(["resolve", "api@^1", "--repository", "registry.example.com/team/api"], project)
    assert pinned.out.strip() == f"registry.example.com/team/api@{history['api@1.4.2']['digest']}"
    none = run(["resolve", "api@^3"], project)
    assert none.code == 1 and "no recorded version of api satisfies" in none.err
    assert run(["resolve", "api@banana"], project).code == 2
    assert run(["resolve", "api"], project).code == 2


def test_image_names_that_look_like_digest_algorithms(project: Path, layouts: LayoutFactory) -> None:
    with open(project / ".imgtrack" / "config.toml", "a") as f:
        f.write("\n[images.shadow]\nrepositories = []\n")
    path, digest = layouts()
    assert run(["record", str(path), "--image", "shadow", "--version", "1.0.0"], project).code == 0
    shown = run(["show", "shadow@1.0.0", "--json"], project)
    assert shown.code == 0, shown.err
    assert shown.json()["digest"] == digest
    assert run(["show", f"shadow@{digest}", "--json"], project).json()["image"] == "shadow"


def test_an_argument_that_is_not_utf8_is_one_line_and_exit_2(project: Path) -> None:
    result = run(["show", "api@\udcff\udcfe"], project)  # the bytes ff fe, as Python hands them over
    assert result.code == 2 and "is not UTF-8 text" in result.err and len(result.err.strip().splitlines()) == 1


def test_an_exact_digest_shows_its_own_record_and_lists_the_others_after(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts(platforms=("linux/amd64", "linux/arm64"))
    multi = run(["record", str(path), "--image", "api", "--version", "1.0.0", "--json"], project).json()
    platform = multi["manifests"][0]["digest"]  # type: ignore[index]
    # The same platform manifest recorded as an image of its own (a single-platform build of web).
    assert run(["record", "--digest", platform, "--image", "web", "--version", "1.0.0"], project).code == 0
    shown = run(["show", platform, "--json"], project)
    assert shown.code == 0, shown.err
    assert shown.json()["image"] == "web"  # type: ignore[index]
    assert shown.json()["also_named_by"] == [  # type: ignore[index]
        {"image": "api", "version": "1.0.0", "digest": multi["digest"]}
    ]  # type: ignore[index]
    text = run(["show", platform], project).out
    assert "also in      api 1.0.0" in text
    # A prefix of it stays ambiguous: nothing says which was meant.
    assert run(["show", platform[:19]], project).code == 2
