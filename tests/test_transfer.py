"""`imgtrack push` and `pull` with OCI layouts (`oci:PATH`), checked against skopeo."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from imgtrack.errors import InvalidReference
from imgtrack.oci.reference import parse_reference
from testkit.layouts import biggest_blob
from testkit.registries import Registry
from tests.conftest import LayoutFactory, fact_files, git, record_file, run


def skopeo_digest(ref: str) -> str:
    """The manifest digest skopeo reads for `ref` (an independent OCI implementation)."""
    raw = subprocess.run(["skopeo", "inspect", "--raw", ref], check=True, capture_output=True).stdout
    import hashlib

    return "sha256:" + hashlib.sha256(raw).hexdigest()


def test_push_records_copies_tags_and_appends_one_push(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    git(project, "tag", "v1.2.0")
    path, digest = layouts(platforms=("linux/amd64", "linux/arm64"))
    dest = tmp_path / "registry"
    result = run(["push", str(path), "--image", "api", "--to", f"oci:{dest}", "--json"], project)
    assert result.code == 0, result.err
    data = result.json()
    assert data["digest"] == digest and data["version"] == "1.2.0"
    assert data["pushed"][0]["blobs_skipped"] == 0 and data["pushed"][0]["blobs_copied"] > 0
    for tag in ("1.2.0", "1.2", f"sha-{data['commit'][:7]}"):
        assert skopeo_digest(f"oci:{dest}:{tag}") == digest
    again = run(["push", "api@1.2.0", "--to", f"oci:{dest}", "--json"], project).json()
    assert again["pushed"][0]["blobs_copied"] == 0 and again["pushed"][0]["recorded"] is False
    pushes = fact_files(project, data, "push")
    assert len(pushes) == 1 and f'repository = "oci:{dest}"' in pushes[0].read_text()


def test_push_without_to_uses_configured_repositories(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    dest = tmp_path / "configured"
    with open(project / ".imgtrack" / "config.toml", "a") as f:
        f.write(f'\n[images.worker]\nrepositories = ["oci:{dest}"]\n')
    path, digest = layouts()
    assert run(["push", str(path), "--image", "worker"], project).code == 0
    assert json.loads((dest / "index.json").read_text())["manifests"][0]["digest"] == digest
    none = run(["push", str(layouts()[0]), "--image", "api"], project)
    assert none.code == 2 and "[images.api]" in none.err


def test_corrupt_source_blob_pushes_and_records_nothing(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    path, _ = layouts()
    biggest = biggest_blob(path)
    biggest.write_bytes(b"tampered" + biggest.read_bytes()[8:])
    dest = tmp_path / "registry"
    result = run(["push", str(path), "--image", "api", "--to", f"oci:{dest}"], project)
    assert result.code == 2 and biggest.name in result.err
    assert not dest.exists()
    assert not list((project / ".imgtrack" / "ledger").rglob("*.toml"))


def test_destination_drift_on_an_immutable_tag_is_refused(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    dest = tmp_path / "registry"
    first, _ = layouts()
    rec = run(["push", str(first), "--image", "api", "--to", f"oci:{dest}", "--json"], project).json()
    # Someone else writes another image under the same version tag, behind imgtrack's back.
    other, _ = layouts()
    version_tag = rec["tags"][0]
    subprocess.run(["skopeo", "copy", "-q", f"oci:{other}:latest-build", f"oci:{dest}:{version_tag}"], check=True)
    before = record_file(project, rec).read_text()
    result = run(["push", rec["digest"], "--to", f"oci:{dest}"], project)
    assert result.code == 1 and "drifted" in result.err and version_tag in result.err
    assert record_file(project, rec).read_text() == before


def test_pull_by_record_only_missing_blobs_and_skopeo_round_trip(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    path, digest = layouts(platforms=("linux/amd64", "linux/arm64/v8"))
    dest = tmp_path / "registry"
    assert run(["push", str(path), "--image", "api", "--version", "2.0.0", "--to", f"oci:{dest}"], project).code == 0
    target = tmp_path / "pulled"
    first = run(["pull", "api@2.0.0", "--to", str(target), "--json"], project).json()
    assert first["blobs_copied"] > 0 and first["digest"] == digest
    assert run(["pull", "api@2.0.0", "--to", str(target), "--json"], project).json()["blobs_copied"] == 0
    assert skopeo_digest(f"oci:{target}:2.0.0") == digest
    # What skopeo writes, imgtrack pulls (by tag and by digest), outside any git repository.
    copied = tmp_path / "by-skopeo"
    subprocess.run(["skopeo", "copy", "-q", "--all", f"oci:{target}:2.0.0", f"oci:{copied}:v"], check=True)
    for ref in (f"oci:{copied}:v", f"oci:{copied}@{digest}"):
        out = tmp_path / f"again-{len(ref)}"
        result = run(["pull", ref, "--to", str(out)], tmp_path)
        assert result.code == 0, result.err
        assert skopeo_digest(f"oci:{out}:v" if ref.endswith(":v") else f"oci:{out}") == digest


def test_pull_refuses_content_that_differs_from_the_ledger(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    path, _ = layouts()
    dest = tmp_path / "registry"
    rec = run(["push", str(path), "--image", "api", "--to", f"oci:{dest}", "--json"], project).json()
    index = dest / "index.json"
    doc = json.loads(index.read_text())
    doc["manifests"] = [m for m in doc["manifests"] if m["digest"] != rec["digest"]]
    index.write_text(json.dumps(doc))
    result = run(["pull", f"api@{rec['version']}", "--to", str(tmp_path / "out")], project)
    assert result.code == 2 and "does not list" in result.err and "no longer holds" in result.err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag"),
    [
        ("ubuntu", "docker.io", "library/ubuntu", None),
        ("ubuntu:22.04", "docker.io", "library/ubuntu", "22.04"),
        ("index.docker.io/team/app:1", "docker.io", "team/app", "1"),
        ("localhost:5000/team/api:1.0.0_build.2", "localhost:5000", "team/api", "1.0.0_build.2"),
        ("ghcr.io/org/a.b/c-d__e", "ghcr.io", "org/a.b/c-d__e", None),
        ("[::1]:5000/x", "[::1]:5000", "x", None),
    ],
)
def test_reference_grammar(text: str, registry: str, repository: str, tag: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag) == (registry, repository, tag)


@pytest.mark.parametrize(
    "text", ["team/Api", "a//b", "host:5000/x:", "x@sha256:abc", "x:-tag", "oci:", "api:" + "t" * 129]
)
def test_malformed_references(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(text)


def test_progress_lines_on_stderr_and_quiet(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    path, _ = layouts(layers=2)
    loud = run(["push", str(path), "--image", "api", "--to", f"oci:{tmp_path / 'a'}"], project)
    lines = [line for line in loud.err.splitlines() if line.startswith("imgtrack: copied")]
    assert len(lines) == len(list((path / "blobs" / "sha256").iterdir())), loud.err  # one line per blob
    assert "pushed api" in loud.out and "imgtrack: copied" not in loud.out
    quiet = run(["push", str(path), "--to", f"oci:{tmp_path / 'b'}", "--quiet"], project)
    assert quiet.code == 0 and quiet.err == ""


def test_a_layout_tar_pushes_from_its_blobs_in_place(
    project: Path,
    layouts: LayoutFactory,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    import gzip
    import hashlib

    from imgtrack.oci.layout import TarLayout
    from testkit.layouts import layout_tar

    path, digest = layouts(layers=2, layer_size=300_000)
    tar = layout_tar(path, tmp_path / "image.tar")
    layer = biggest_blob(path)
    reader = TarLayout(tar)
    extent = reader.blob_extent(f"sha256:{layer.name}")
    reader.close()
    assert extent is not None
    with open(extent[0], "rb") as f:  # the bytes a zero-copy upload sends are the blob's
        f.seek(extent[1])
        assert hashlib.sha256(f.read(layer.stat().st_size)).hexdigest() == layer.name
    gz = tmp_path / "image.tar.gz"
    gz.write_bytes(gzip.compress(tar.read_bytes()))
    compressed = TarLayout(gz)
    assert compressed.blob_extent(f"sha256:{layer.name}") is None  # compressed: streamed instead
    compressed.close()
    repo = plain_registry.repo()
    assert run(["push", str(tar), "--image", "api", "--to", repo, "-q"], project).code == 0
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{repo}@{digest}"],
        check=True,
        capture_output=True,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    copy = subprocess.run(
        ["skopeo", "copy", "-q", "--src-tls-verify=false", f"docker://{repo}@{digest}", f"oci:{tmp_path / 'check'}:x"],
        capture_output=True,
        text=True,
    )
    assert copy.returncode == 0, copy.stderr
