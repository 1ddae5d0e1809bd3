"""`imgtrack record`: what gets recorded, and every bad input refused with nothing written."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest

from testkit.layouts import biggest_blob, layout_tar
from tests.conftest import LayoutFactory, commit_file, git, record_file, run


def ledger_files(repo: Path) -> dict[str, bytes]:
    root = repo / ".imgtrack" / "ledger"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(repo: Path, args: list[str], code: int, *words: str) -> str:
    """Run a command that must fail with `code`, one clear message, and no change to the ledger."""
    before = ledger_files(repo)
    result = run(args, repo)
    assert result.code == code, result
    assert "Traceback" not in result.err
    for word in words:
        assert word in result.err, (word, result.err)
    assert ledger_files(repo) == before
    return result.err


def test_record_layout_binds_digest_commit_version_and_platforms(project: Path, layouts: LayoutFactory) -> None:
    path, digest = layouts(platforms=("linux/amd64", "linux/arm64/v8"))
    head = git(project, "rev-parse", "HEAD")
    result = run(["record", str(path), "--image", "api", "--json"], project)
    assert result.code == 0, result.err
    data = result.json()
    assert data["digest"] == digest
    assert data["commit"] == head
    assert data["version"] == f"0.0.0-dev.2+g{head[:7]}"
    assert data["tags"] == [f"0.0.0-dev.2_g{head[:7]}", f"sha-{head[:7]}"]
    assert data["media_type"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"] for m in data["manifests"]] == ["linux/amd64", "linux/arm64/v8"]
    assert data["created"] is True
    stored = tomllib.loads(record_file(project, data).read_text())
    assert stored["schema"] == 2 and stored["tree"] == "clean"
    assert stored["recorded_by"] == "Test Dev <dev@example.com>"
    assert all(m["config"].startswith("sha256:") for m in stored["manifests"])


def test_release_tag_gives_version_and_floating_tags(project: Path, layouts: LayoutFactory) -> None:
    git(project, "tag", "v1.4.0")
    path, _ = layouts()
    data = run(["record", str(path), "--image", "api", "--json"], project).json()
    head = git(project, "rev-parse", "HEAD")
    assert data["version"] == "1.4.0"
    assert data["tags"] == ["1.4.0", "1.4", f"sha-{head[:7]}"]


def test_dev_version_counts_commits_since_release(project: Path, layouts: LayoutFactory) -> None:
    git(project, "tag", "-a", "v1.4.0", "-m", "release")
    commit_file(project)
    head = commit_file(project)
    path, _ = layouts()
    data = run(["record", str(path), "--image", "api", "--json"], project).json()
    assert data["version"] == f"1.4.1-dev.2+g{head[:7]}"
    assert "1.4" not in data["tags"], "floating tags go to releases only"


def test_dev_version_after_prerelease_sorts_after_it(project: Path, layouts: LayoutFactory) -> None:
    git(project, "tag", "v2.0.0-rc.1")
    head = commit_file(project)
    path, _ = layouts()
    data = run(["record", str(path), "--image", "api", "--json"], project).json()
    assert data["version"] == f"2.0.0-rc.1.dev.1+g{head[:7]}"


def test_tar_and_buildx_metadata_and_digest_sources(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    path, digest = layouts()
    tar = layout_tar(path, tmp_path / "image.tar")
    data = run(["record", str(tar), "--image", "api", "--json"], project).json()
    assert data["digest"] == digest and data["manifests"]

    meta = tmp_path / "metadata.json"
    other = "sha256:" + "c" * 64
    meta.write_text(
        json.dumps(
            {
                "containerimage.digest": other,
                "containerimage.descriptor": {
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": other,
                    "size": 1,
                },
                "image.name": "registry.example.com/api:1",
            }
        )
    )
    data = run(["record", str(meta), "--image", "web", "--json"], project).json()
    assert data["digest"] == other and data["media_type"].endswith("index.v1+json")

    pushed = "sha256:" + "d" * 64
    data = run(["record", "--digest", pushed, "--image", "web", "--version", "0.1.0-alpha.1", "--json"], project).json()
    assert data["digest"] == pushed and data["version"] == "0.1.0-alpha.1"


def test_recording_the_same_digest_again_is_idempotent(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    assert run(["record", str(path), "--image", "api"], project).code == 0
    before = ledger_files(project)
    again = run(["record", str(path), "--image", "api", "--json"], project)
    assert again.code == 0 and again.json()["created"] is False
    assert ledger_files(project) == before
    # Adding a tag to the digest that already carries the others is allowed and kept.
    tagged = run(["record", str(path), "--image", "api", "--tag", "canary-7", "--json"], project)
    assert tagged.code == 0 and "canary-7" in tagged.json()["tags"]


def test_explicit_version(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    data = run(["record", str(path), "--image", "api", "--version", "3.1.0+build.7", "--json"], project).json()
    assert data["version"] == "3.1.0+build.7"
    assert "3.1.0_build.7" in data["tags"], "'+' is written '_' in tags"
    assert "3.1" in data["tags"]


def test_bad_versions(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    refused(project, ["record", str(path), "--image", "api", "--version", "1.4"], 2, "1.4", "semantic version")
    git(project, "tag", "v1.4.0")
    refused(project, ["record", str(path), "--image", "api", "--version", "1.5.0"], 2, "contradicts", "v1.4.0")
    refused(project, ["record", str(path), "--image", "api", "--version", "1.4.0-rc.1"], 2, "contradicts")
    commit_file(project)
    refused(project, ["record", str(path), "--image", "api", "--version", "1.4.0"], 2, "already released")
    # Build metadata on the tagged commit's own version is fine.
    git(project, "checkout", "-q", "v1.4.0")
    assert run(["record", str(path), "--image", "api", "--version", "1.4.0+build.2"], project).code == 0


@pytest.mark.parametrize(
    ("tag", "code", "word"),
    [
        ("latest", 1, "latest"),
        ("LATEST", 1, "latest"),
        ("a" * 129, 2, "129 characters"),
        ("-dash", 2, "starts with '-'"),
        (".dot", 2, "starts with '.'"),
        ("1.0.0+b", 2, "'+'"),
        ("team/api", 2, "'/'"),
        ("", 2, "is empty"),
    ],
)
def test_tags_breaking_policy_or_grammar(project: Path, layouts: LayoutFactory, tag: str, code: int, word: str) -> None:
    path, _ = layouts()
    refused(project, ["record", str(path), "--image", "api", f"--tag={tag}"], code, word)


def test_immutable_tag_never_moves(project: Path, layouts: LayoutFactory) -> None:
    first, _ = layouts()
    second, _ = layouts()
    assert run(["record", str(first), "--image", "api", "--tag", "qa-approved"], project).code == 0
    commit_file(project)
    refused(
        project,
        ["record", str(second), "--image", "api", "--tag", "qa-approved"],
        1,
        "qa-approved",
        "immutable tags never move",
    )


def test_rebuild_of_one_commit_needs_a_distinct_version(project: Path, layouts: LayoutFactory) -> None:
    git(project, "tag", "v2.0.0")
    first, _ = layouts()
    second, _ = layouts()
    assert run(["record", str(first), "--image", "api"], project).code == 0
    err = refused(project, ["record", str(second), "--image", "api"], 1, "2.0.0", "distinct version", "+build.2")
    assert len(err.splitlines()) >= 2, "one line per reason"
    ok = run(["record", str(second), "--image", "api", "--version", "2.0.0+build.2", "--json"], project)
    assert ok.code == 0, ok.err
    head = git(project, "rev-parse", "HEAD")
    # The commit's sha tag stays with its first build; the rebuild has its own version tag.
    assert ok.json()["tags"] == ["2.0.0_build.2", "2.0"]
    shown = run(["show", f"sha-{head[:7]}", "--json"], project).json()
    assert shown["version"] == "2.0.0"


def test_floating_tag_only_moves_forward(project: Path, layouts: LayoutFactory) -> None:
    git(project, "tag", "v1.2.0")
    old_commit = git(project, "rev-parse", "HEAD")
    commit_file(project)
    git(project, "tag", "v1.2.5")
    newer, _ = layouts()
    older, _ = layouts()
    assert run(["record", str(newer), "--image", "api"], project).code == 0
    refused(
        project,
        ["record", str(older), "--image", "api", "--commit", old_commit],
        1,
        "floating tag '1.2'",
        "only move forward",
    )
    commit_file(project)
    refused(
        project, ["record", str(older), "--image", "api", "--version", "1.3.0-rc.1", "--tag", "1.3"], 1, "releases only"
    )


def test_dirty_tree(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    (project / "app.txt").write_text("edited\n")
    refused(project, ["record", str(path), "--image", "api"], 2, "uncommitted changes", "--allow-dirty")
    data = run(["record", str(path), "--image", "api", "--allow-dirty", "--json"], project).json()
    assert data["tree"] == "dirty"
    assert data["version"].endswith(".dirty")
    assert data["tags"] == [data["version"].replace("+", "_")], "a dirty build carries only its version tag"
    other, _ = layouts()
    refused(project, ["record", str(other), "--image", "api", "--allow-dirty", "--tag", "qa"], 1, "dirty tree")
    refused(project, ["record", str(other), "--image", "api", "--allow-dirty", "--version", "9.0.0"], 2, "dirty")


def test_changes_under_imgtrack_are_not_dirty(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    with open(project / ".imgtrack" / "config.toml", "a") as f:
        f.write("\n# a comment\n")
    data = run(["record", str(path), "--image", "api", "--json"], project).json()
    assert data["tree"] == "clean"


def test_not_a_git_repository_and_no_commits(tmp_path: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    plain = tmp_path / "plain"
    plain.mkdir()
    result = run(["record", str(path), "--image", "api"], plain)
    assert result.code == 2 and "not inside a git work tree" in result.err
    assert run(["init"], plain).code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    assert run(["init"], empty).code == 0
    (empty / ".imgtrack" / "config.toml").write_text("[images.api]\n")
    result = run(["record", str(path), "--image", "api"], empty)
    assert result.code == 2 and "no commits" in result.err
    assert not list((empty / ".imgtrack" / "ledger").rglob("*.toml"))


def test_shallow_clone(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    commit_file(project)
    commit_file(project)
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{project}", str(clone))
    path, _ = layouts()
    refused(clone, ["record", str(path), "--image", "api"], 2, "shallow clone", "--unshallow")
    assert run(["record", str(path), "--image", "api", "--version", "0.3.0"], clone).code == 0


def test_unknown_image_and_missing_config(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    refused(project, ["record", str(path), "--image", "worker"], 2, "'worker'", "[images.worker]")
    (project / ".imgtrack" / "config.toml").unlink()
    result = run(["record", str(path), "--image", "api"], project)
    assert result.code == 2 and "imgtrack init" in result.err


def test_layout_with_missing_or_corrupt_blob(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    layer = biggest_blob(path)
    data = layer.read_bytes()
    layer.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    refused(project, ["record", str(path), "--image", "api"], 2, layer.name, "corrupt")
    layer.unlink()
    refused(project, ["record", str(path), "--image", "api"], 2, layer.name, "missing")


def test_layout_index_json_problems(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    path, _ = layouts()
    index = path / "index.json"
    good = index.read_text()
    index.write_text("{not json")
    refused(project, ["record", str(path), "--image", "api"], 2, "index.json", "not valid JSON")
    index.write_text('{"schemaVersion": 2}')
    refused(project, ["record", str(path), "--image", "api"], 2, "no manifests")
    index.write_text(json.dumps({"manifests": [{"digest": "sha256:../../etc/passwd", "size": 1}]}))
    refused(project, ["record", str(path), "--image", "api"], 2, "not a digest")
    index.unlink()
    refused(project, ["record", str(path), "--image", "api"], 2, "no index.json", "not an OCI image layout")
    index.write_text(good)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not a layout at all")
    refused(project, ["record", str(junk), "--image", "api"], 2, "neither an OCI image layout")


def test_several_manifests_need_ref_name(project: Path, tmp_path: Path) -> None:
    from testkit.layouts import build_layout

    path = tmp_path / "multi"
    build_layout(path, seed=1, ref_name="one")
    second = build_layout(path, seed=2, ref_name="two")
    refused(project, ["record", str(path), "--image", "api"], 2, "2 manifests", "one", "two", "--ref-name")
    refused(project, ["record", str(path), "--image", "api", "--ref-name", "three"], 2, "three")
    data = run(["record", str(path), "--image", "api", "--ref-name", "two", "--json"], project).json()
    assert data["digest"] == second.digest


def test_malformed_record_is_named_with_file_and_line(project: Path, layouts: LayoutFactory) -> None:
    path, digest = layouts()
    assert run(["record", str(path), "--image", "api"], project).code == 0
    record = record_file(project, {"image": "api", "digest": digest})
    lines = record.read_text().splitlines()
    line_no = next(i for i, line in enumerate(lines, 1) if line.startswith("version"))
    lines[line_no - 1] = 'version = "not-a-version"'
    record.write_text("\n".join(lines) + "\n")
    other, _ = layouts()
    commit_file(project)
    err = refused(project, ["record", str(other), "--image", "api"], 2, f"{record.name}:{line_no}", "version")
    assert len(err.strip().splitlines()) == 1
    assert run(["log"], project).code == 2
    record.write_text("schema = 1\nimage = [unclosed\n")
    refused(project, ["show", digest], 2, f"{record.name}:2", "not valid TOML")


def test_umoci_built_layout(project: Path, tmp_path: Path) -> None:
    """A layout built by a different tool (umoci) records with the digest umoci reports."""
    import subprocess

    umoci = shutil.which("umoci")
    assert umoci, "umoci is installed by the test command (scripts/test)"
    image = tmp_path / "umoci-layout"
    subprocess.run([umoci, "init", "--layout", str(image)], check=True)
    subprocess.run([umoci, "new", "--image", f"{image}:v1"], check=True)
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--rootless", "--image", f"{image}:v1", str(bundle)], check=True)
    (bundle / "rootfs" / "hello.txt").write_text("hello from umoci\n")
    subprocess.run([umoci, "repack", "--image", f"{image}:v1", str(bundle)], check=True)
    subprocess.run([umoci, "config", "--image", f"{image}:v1", "--config.cmd", "/hello"], check=True)
    index = json.loads((image / "index.json").read_text())
    expected = index["manifests"][0]["digest"]
    data = run(["record", str(image), "--image", "api", "--json"], project).json()
    assert data["digest"] == expected
    assert data["media_type"] == "application/vnd.oci.image.manifest.v1+json"
    assert data["manifests"][0]["platform"].startswith("linux/")
