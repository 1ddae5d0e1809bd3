"""The image's own word on its source, checked at `record`: config labels, annotations and BuildKit
provenance attestations in both of BuildKit's forms, against the commit being recorded."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

from testkit.layouts import build_layout
from tests.conftest import Result, git, run

REVISION = "org.opencontainers.image.revision"
IN_TOTO = "application/vnd.in-toto+json"


def _put(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(data)
    return digest


def labelled(
    tmp: Path, name: str, seed: int, revision: str | None, platforms: tuple[str, ...] = ("linux/amd64",)
) -> Path:
    path = tmp / name
    config = {"Labels": {REVISION: revision}} if revision else None
    build_layout(path, seed=seed, platforms=platforms, index=True, config=config)
    return path


def attested(layout: Path, form: str, predicate_type: str, revision: str) -> None:
    """Add a BuildKit provenance attestation for the index's first platform, in BuildKit's older form
    ("unknown": an `unknown/unknown` entry with reference annotations) or its 0.32 form ("artifact")."""
    index_json = json.loads((layout / "index.json").read_text())
    top = index_json["manifests"][0]
    index = json.loads((layout / "blobs" / "sha256" / top["digest"][7:]).read_text())
    subject = index["manifests"][0]
    if predicate_type.endswith("v1"):
        predicate = {
            "buildDefinition": {
                "buildType": "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md",
                "externalParameters": {"configSource": {"uri": "https://git.example.com/app.git"}},
            },
            "runDetails": {"metadata": {"buildkit_metadata": {"vcs": {"revision": revision, "source": "x"}}}},
        }
    else:
        predicate = {
            "buildType": "https://mobyproject.org/buildkit@v1",
            "invocation": {"configSource": {"digest": {"sha1": revision.removesuffix("-dirty")}}},
            "metadata": {"https://mobyproject.org/buildkit@v1#metadata": {"vcs": {"revision": revision}}},
        }
    statement = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": predicate_type,
            "subject": [{"name": "pkg:docker/app", "digest": {"sha256": subject["digest"][7:]}}],
            "predicate": predicate,
        }
    ).encode()
    config = json.dumps(
        {"architecture": "unknown", "os": "unknown", "config": {}, "rootfs": {"type": "layers"}}
    ).encode()
    manifest: dict = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _put(layout, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": IN_TOTO,
                "digest": _put(layout, statement),
                "size": len(statement),
                "annotations": {"in-toto.io/predicate-type": predicate_type},
            }
        ],
    }
    entry: dict = {"mediaType": "application/vnd.oci.image.manifest.v1+json"}
    if form == "artifact":
        manifest["artifactType"] = "application/vnd.docker.attestation.manifest.v1+json"
        manifest["subject"] = {k: subject[k] for k in ("mediaType", "digest", "size")}
        entry["artifactType"] = manifest["artifactType"]
    else:
        entry["platform"] = {"os": "unknown", "architecture": "unknown"}
        entry["annotations"] = {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": subject["digest"],
        }
    data = json.dumps(manifest).encode()
    entry.update(digest=_put(layout, data), size=len(data))
    index["manifests"].append(entry)
    data = json.dumps(index).encode()
    top.update(digest=_put(layout, data), size=len(data))
    (layout / "index.json").write_text(json.dumps(index_json))


_versions = itertools.count(1)


def record(project: Path, layout: Path, *args: str) -> Result:
    """Record `layout` as a version of its own (several builds of one commit in a test)."""
    return run(
        ["record", str(layout), "--image", "api", "--json", "--version", f"1.0.{next(_versions)}", *args], project
    )


def test_a_matching_label_corroborates_and_a_short_one_counts(project: Path, tmp_path: Path) -> None:
    head = git(project, "rev-parse", "HEAD")
    result = record(project, labelled(tmp_path, "full", 1, head))
    assert result.code == 0, result.err
    assert result.json()["corroboration"] == {
        "verdict": "corroborated",
        "said": [f"config label of linux/amd64 {REVISION}: {head}"],
    }
    short = record(project, labelled(tmp_path, "short", 2, head[:7]))
    assert short.code == 0 and short.json()["corroboration"]["verdict"] == "corroborated"
    shown = run(["show", short.json()["digest"]], project)
    assert "source       corroborated (config label" in shown.out


def test_a_mismatching_label_is_refused_unless_accepted(project: Path, tmp_path: Path) -> None:
    head = git(project, "rev-parse", "HEAD")
    other = "1234567890abcdef1234567890abcdef12345678"
    layout = labelled(tmp_path, "other", 3, other)
    refused = record(project, layout)
    assert refused.code == 1 and refused.err.count("\n") == 1
    assert f"says it was built from {other}, not {head[:7]}" in refused.err and "config label" in refused.err
    assert not list((project / ".imgtrack" / "ledger").rglob("*.toml"))
    accepted = record(project, layout, "--accept-mismatch")
    assert accepted.code == 0, accepted.err
    assert accepted.json()["corroboration"]["verdict"] == "accepted-mismatch"
    assert other in accepted.json()["corroboration"]["said"][0]


def test_no_statement_is_uncorroborated(project: Path, tmp_path: Path) -> None:
    result = record(project, labelled(tmp_path, "plain", 4, None))
    assert result.code == 0 and result.json()["corroboration"] == {"verdict": "uncorroborated", "said": []}


def test_buildkit_attestations_in_both_forms(project: Path, tmp_path: Path) -> None:
    head = git(project, "rev-parse", "HEAD")
    other = "abcdef1234567890abcdef1234567890abcdef12"
    for n, (form, predicate) in enumerate(
        (("unknown", "https://slsa.dev/provenance/v0.2"), ("artifact", "https://slsa.dev/provenance/v1"))
    ):
        good = labelled(tmp_path, f"good-{form}", 10 + n, None, ("linux/amd64", "linux/arm64"))
        attested(good, form, predicate, head)
        result = record(project, good)
        assert result.code == 0, result.err
        assert result.json()["corroboration"]["verdict"] == "corroborated", result.json()
        assert "BuildKit attestation" in result.json()["corroboration"]["said"][0]
        # Attestation manifests are never platforms of a record.
        assert [m["platform"] for m in result.json()["manifests"]] == ["linux/amd64", "linux/arm64"]

        bad = labelled(tmp_path, f"bad-{form}", 20 + n, None)
        attested(bad, form, predicate, other)
        refused = record(project, bad)
        assert refused.code == 1 and f"built from {other}" in refused.err and "SLSA provenance" in refused.err

        dirty = labelled(tmp_path, f"dirty-{form}", 30 + n, None)
        attested(dirty, form, predicate, f"{head}-dirty")
        refused = record(project, dirty)
        assert refused.code == 1 and "-dirty" in refused.err and "recorded clean" in refused.err


def buildah_image(tmp: Path, revision: str) -> tuple[Path, Path]:
    """An image built by buildah with the revision label, written as an OCI layout and an OCI archive."""
    import os
    import subprocess

    store = ["--storage-driver", "vfs", "--root", str(tmp / "storage"), "--runroot", str(tmp / "run")]
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_CONFIG"}  # the tests' points at no file

    def buildah(*args: str) -> str:
        proc = subprocess.run(["buildah", *store, *args], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""

    (tmp / "hello.txt").write_text(f"built from {revision}\n")
    container = buildah("from", "scratch")
    buildah("copy", container, str(tmp / "hello.txt"), "/hello.txt")
    buildah("config", "--os", "linux", "--arch", "amd64", "--label", f"{REVISION}={revision}", container)
    layout, archive = tmp / f"buildah-{revision[:7]}", tmp / f"buildah-{revision[:7]}.tar"
    buildah("commit", "--format", "oci", container, f"oci:{layout}:app")
    buildah("commit", "--format", "oci", container, f"oci-archive:{archive}:app")
    buildah("rm", container)
    return layout, archive


def test_buildah_built_images_with_matching_and_mismatching_labels(project: Path, tmp_path: Path) -> None:
    head = git(project, "rev-parse", "HEAD")
    layout, archive = buildah_image(tmp_path, head)
    for source in (layout, archive):
        result = record(project, source)
        assert result.code == 0, result.err
        assert result.json()["corroboration"]["verdict"] == "corroborated"
        assert result.json()["corroboration"]["said"] == [f"config label {REVISION}: {head}"]
    other = "fedcba9876543210fedcba9876543210fedcba98"
    layout, archive = buildah_image(tmp_path, other)
    for source in (layout, archive):
        refused = record(project, source)
        assert refused.code == 1 and f"config label {REVISION} says it was built from {other}" in refused.err


def test_audit_fail_on_uncorroborated(project: Path, tmp_path: Path) -> None:
    head = git(project, "rev-parse", "HEAD")
    # Pre-releases, so that none is behind another release.
    good = record(project, labelled(tmp_path, "good", 40, head), "--version", "2.0.0-rc.1").json()
    plain = record(project, labelled(tmp_path, "plain", 41, None), "--version", "2.0.0-rc.2").json()
    odd = labelled(tmp_path, "odd", 42, "0" * 40)
    accepted = record(project, odd, "--accept-mismatch", "--version", "2.0.0-rc.3").json()
    lines = "\n".join(f"registry.example.com/api@{r['digest']}" for r in (good, plain, accepted)) + "\n"
    default = run(["audit", "-", "--json"], project, stdin=lines)
    assert default.code == 0 and [r["status"] for r in default.json()] == ["ok", "ok", "ok"]
    strict = run(["audit", "-", "--json", "--fail-on", "unknown,uncorroborated"], project, stdin=lines)
    assert strict.code == 1
    assert [r["status"] for r in strict.json()] == ["ok", "uncorroborated", "uncorroborated"]


def test_verify_counts_the_images_word_and_checks_its_facts(project: Path, tmp_path: Path) -> None:
    head = git(project, "rev-parse", "HEAD")
    good = record(project, labelled(tmp_path, "good", 50, head)).json()
    record(project, labelled(tmp_path, "plain", 51, None))
    result = run(["verify"], project)
    assert result.code == 0 and "2 records (1 corroborated, 1 uncorroborated), 0 findings" in result.err
    # A source fact edited by hand to claim what the image did not say is a finding.
    [fact] = (project / ".imgtrack" / "ledger").rglob("source-*.toml")
    assert good["digest"].replace(":", "-") in str(fact)
    forged = fact.read_text().replace(head, "f" * 40).encode()  # and named by its bytes, as a fact must be
    fact.unlink()
    (fact.parent / f"source-{hashlib.sha256(forged).hexdigest()[:16]}.toml").write_bytes(forged)
    edited = run(["verify"], project)
    assert edited.code == 1 and "names another commit" in edited.out
