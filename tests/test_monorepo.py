"""One repository, two images, each with its own release tags (`tag_prefix`) and source folders (`paths`):
versions, dirtiness, rendered tags, verify and the pre-push hook, with real git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import LayoutFactory, commit_file, git, run

MONOREPO_CONFIG = """
[images.api]
tag_prefix = "api/v"
paths = ["services/api", "libs/common"]

[images.web]
tag_prefix = "web-v"
paths = ["web"]
"""


@pytest.fixture
def monorepo(tmp_path: Path) -> Path:
    repo = tmp_path / "mono"
    repo.mkdir()
    git(repo, "init", "-q")
    for folder in ("services/api", "libs/common", "web"):
        (repo / folder).mkdir(parents=True)
        commit_file(repo, f"{folder}/main.txt", "one\n", f"start {folder}")
    assert run(["init"], repo).code == 0
    with open(repo / ".imgtrack" / "config.toml", "a") as f:
        f.write(MONOREPO_CONFIG)
    git(repo, "add", ".imgtrack")
    git(repo, "commit", "-q", "-m", "imgtrack init")
    return repo


def record(repo: Path, layouts: LayoutFactory, image: str, *args: str) -> dict:
    path, _ = layouts()
    result = run(["record", str(path), "--image", image, "--json", *args], repo)
    assert result.code == 0, result.err
    return result.json()


def short(repo: Path) -> str:
    return git(repo, "rev-parse", "--short=7", "HEAD")


def test_each_image_takes_its_version_from_its_own_tags_and_counts_only_its_paths(
    monorepo: Path, layouts: LayoutFactory
) -> None:
    git(monorepo, "tag", "api/v1.2.0")
    assert record(monorepo, layouts, "api")["version"] == "1.2.0"
    # web has no release yet: its dev count is the commits that touched web/ (one), not all five.
    assert record(monorepo, layouts, "web")["version"] == f"0.0.0-dev.1+g{short(monorepo)}"

    commit_file(monorepo, "web/main.txt", message="web only")
    git(monorepo, "tag", "web-v2.0.0")
    # A release of web changes nothing for api: no commit under api's paths since api/v1.2.0.
    assert record(monorepo, layouts, "api")["version"] == f"1.2.1-dev.0+g{short(monorepo)}"
    assert record(monorepo, layouts, "web")["version"] == "2.0.0"

    commit_file(monorepo, "libs/common/main.txt", message="shared library")
    commit_file(monorepo, "web/main.txt", message="web again")
    api = record(monorepo, layouts, "api")
    web = record(monorepo, layouts, "web")
    assert api["version"] == f"1.2.1-dev.1+g{short(monorepo)}"  # the library is one of api's paths
    assert web["version"] == f"2.0.1-dev.1+g{short(monorepo)}"
    # Registry tags never carry the git prefix (a tag cannot hold '/').
    assert all("/" not in tag and not tag.startswith(("api", "web")) for tag in api["tags"] + web["tags"])
    assert run(["verify"], monorepo).code == 0


def test_dirtiness_is_judged_on_the_images_own_paths(monorepo: Path, layouts: LayoutFactory) -> None:
    (monorepo / "web" / "main.txt").write_text("edited, not committed\n")
    api = record(monorepo, layouts, "api")
    assert api["tree"] == "clean" and "dirty" not in api["version"]
    path, _ = layouts()
    refused = run(["record", str(path), "--image", "web"], monorepo)
    assert refused.code == 2
    assert refused.err.count("\n") == 1 and "uncommitted changes under web" in refused.err
    assert record(monorepo, layouts, "web", "--allow-dirty")["tree"] == "dirty"


def test_record_version_is_checked_against_the_images_own_release_tags(monorepo: Path, layouts: LayoutFactory) -> None:
    git(monorepo, "tag", "api/v1.2.0")
    commit_file(monorepo, "services/api/main.txt", message="after the release")
    path, _ = layouts()
    refused = run(["record", str(path), "--image", "api", "--version", "1.2.0"], monorepo)
    assert refused.code == 2 and "already released from commit" in refused.err
    # web's 1.2.0 is its own: api's tag says nothing about it, for record and for verify.
    assert record(monorepo, layouts, "web", "--version", "1.2.0")["version"] == "1.2.0"
    assert run(["verify"], monorepo).code == 0
    # web's own tag does: a web-v1.3.0 on that commit contradicts web's record of 1.2.0.
    git(monorepo, "tag", "web-v1.3.0")
    found = run(["verify"], monorepo)
    assert found.code == 1 and "version 1.2.0 contradicts the release tag web-v1.3.0" in found.out, found.out


def test_a_prefix_two_images_answer_to_is_a_config_error(monorepo: Path, layouts: LayoutFactory) -> None:
    config = monorepo / ".imgtrack" / "config.toml"
    text = config.read_text()
    config.write_text(text.replace('tag_prefix = "web-v"', 'tag_prefix = "api/v"'))
    path, _ = layouts()
    same = run(["record", str(path), "--image", "api"], monorepo)
    assert same.code == 2 and same.err.count("\n") == 1
    assert "images.api and images.web both take their versions from release tags api/v*" in same.err

    # Distinct prefixes, but one tag is a release under both: refused when that tag is met.
    config.write_text(text.replace('tag_prefix = "web-v"', 'tag_prefix = "api/v1.0.0-"'))
    git(monorepo, "tag", "api/v1.0.0-2.0.0")
    clash = run(["record", str(path), "--image", "api"], monorepo)
    assert clash.code == 2 and clash.err.count("\n") == 1
    assert "git tag api/v1.0.0-2.0.0 is a release tag of api" in clash.err and "and of web" in clash.err
    assert run(["verify"], monorepo).code == 2


def push(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "push", *args], cwd=repo, capture_output=True, text=True, timeout=120)


def test_the_hook_guards_each_images_release_tags_on_their_own(
    monorepo: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(monorepo, "remote", "add", "origin", str(remote))
    assert run(["hooks", "install"], monorepo).code == 0
    git(monorepo, "tag", "api/v1.2.0")
    record(monorepo, layouts, "api")
    git(monorepo, "add", ".imgtrack")
    git(monorepo, "commit", "-q", "-m", "record api 1.2.0")
    assert push(monorepo, "-q", "origin", "main", "api/v1.2.0").returncode == 0

    commit_file(monorepo, "web/main.txt", message="web work")
    # web/v1.2.0 on another commit is web's own release: api's 1.2.0 record does not bind it.
    git(monorepo, "tag", "web-v1.2.0")
    assert push(monorepo, "-q", "origin", "main", "web-v1.2.0").returncode == 0
    # Moving api/v1.2.0 is refused, one line naming the tag.
    git(monorepo, "tag", "-f", "api/v1.2.0")
    moved = push(monorepo, "-f", "origin", "api/v1.2.0")
    assert moved.returncode != 0
    assert "moving release tag api/v1.2.0" in moved.stderr and "api 1.2.0" in moved.stderr
    assert git(remote, "rev-parse", "api/v1.2.0") != git(monorepo, "rev-parse", "api/v1.2.0")
