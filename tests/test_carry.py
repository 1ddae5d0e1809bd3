"""Referrers travel with the image: promote and pull carry them (imgtrack's record and everyone else's, of
the index and of each platform manifest), a pulled layout keeps them, and a push from it carries them on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from testkit.registries import Registry
from tests.conftest import LayoutFactory, run

RECORD_TYPE = "application/vnd.imgtrack.record.v1+json"
SIGNATURE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"  # what cosign attaches


def _referrers(repo: str, digest: str) -> list[dict]:
    host, _, path = repo.partition("/")
    response = httpx.get(
        f"http://{host}/v2/{path}/manifests/sha256-{digest[7:]}",
        headers={"Accept": "application/vnd.oci.image.index.v1+json"},
    )
    return response.json()["manifests"] if response.status_code == 200 else []


def attach_signature(repo: str, subject: str, subject_size: int) -> str:
    """A cosign-shaped signature referrer of `subject`, written as a third-party tool would: blobs, the
    artifact manifest, and the fallback tag's index (this registry has no referrers API)."""
    host, _, path = repo.partition("/")
    base = f"http://{host}/v2/{path}"
    bundle = json.dumps({"mediaType": SIGNATURE_TYPE, "verificationMaterial": {}, "signature": "c2ln"}).encode()
    for blob in (b"{}", bundle):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        start = httpx.post(f"{base}/blobs/uploads/")
        location = start.headers["Location"]
        location = location if location.startswith("http") else f"http://{host}{location}"
        sep = "&" if "?" in location else "?"
        assert httpx.put(f"{location}{sep}digest={digest}", content=blob).status_code == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": SIGNATURE_TYPE,
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": SIGNATURE_TYPE,
                    "digest": "sha256:" + hashlib.sha256(bundle).hexdigest(),
                    "size": len(bundle),
                }
            ],
            "subject": {
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": subject,
                "size": subject_size,
            },
        }
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    content_type = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    assert httpx.put(f"{base}/manifests/{digest}", content=manifest, headers=content_type).status_code == 201
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            *_referrers(repo, subject),
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": len(manifest),
                "artifactType": SIGNATURE_TYPE,
            },
        ],
    }
    index_type = {"Content-Type": "application/vnd.oci.image.index.v1+json"}
    assert (
        httpx.put(
            f"{base}/manifests/sha256-{subject[7:]}", content=json.dumps(index).encode(), headers=index_type
        ).status_code
        == 201
    )
    return digest


def test_promote_and_pull_carry_every_referrer(
    project: Path, layouts: LayoutFactory, plain_registry: Registry, tmp_path: Path
) -> None:
    layout, digest = layouts(platforms=("linux/amd64", "linux/arm64"))
    first = plain_registry.repo("first")
    record = run(["push", str(layout), "--image", "api", "--to", first, "--json", "-q"], project).json()
    size = len(
        httpx.get(
            f"http://{first.partition('/')[0]}/v2/{first.partition('/')[2]}/manifests/{digest}",
            headers={"Accept": "application/vnd.oci.image.index.v1+json"},
        ).content
    )
    signature = attach_signature(first, digest, size)
    assert {r["artifactType"] for r in _referrers(first, digest)} == {RECORD_TYPE, SIGNATURE_TYPE}

    prod = plain_registry.repo("prod")
    promoted = run(["promote", f"api@{record['version']}", "--to", prod, "-q"], project)
    assert promoted.code == 0, promoted.err
    carried = {r["artifactType"]: r["digest"] for r in _referrers(prod, digest)}
    assert carried[SIGNATURE_TYPE] == signature and RECORD_TYPE in carried
    assert len(_referrers(prod, digest)) == 2  # the record carried and the record attached are one

    pulled = tmp_path / "pulled"
    assert run(["pull", f"{prod}@{digest}", "--to", str(pulled), "-q"], tmp_path).code == 0
    assert [e["digest"] for e in json.loads((pulled / "index.json").read_text())["manifests"]] == [digest]
    kept = run(["inspect", f"oci:{pulled}", "--json"], tmp_path).json()["referrers"]
    assert {r["artifact_type"] for r in kept} == {RECORD_TYPE, SIGNATURE_TYPE}
    assert (pulled / "blobs" / "sha256" / signature[7:]).exists()

    # A push from the pulled layout carries them on.
    third = plain_registry.repo("third")
    assert run(["push", str(pulled), "--to", third, "-q"], project).code == 0
    assert {r["artifactType"] for r in _referrers(third, digest)} == {RECORD_TYPE, SIGNATURE_TYPE}

    # --no-referrers leaves them behind (the record is still attached: it is this push's own).
    bare = plain_registry.repo("bare")
    assert run(["promote", f"api@{record['version']}", "--to", bare, "--no-referrers", "-q"], project).code == 0
    assert {r["artifactType"] for r in _referrers(bare, digest)} == {RECORD_TYPE}
    plain = tmp_path / "plain"
    assert run(["pull", f"{prod}@{digest}", "--to", str(plain), "--no-referrers", "-q"], tmp_path).code == 0
    assert run(["inspect", f"oci:{plain}", "--json"], tmp_path).json()["referrers"] == []


def test_a_push_whose_tags_are_in_place_still_carries_the_layouts_referrers(
    project: Path, layouts: LayoutFactory, plain_registry: Registry, tmp_path: Path
) -> None:
    layout, digest = layouts(platforms=("linux/amd64",))
    first = plain_registry.repo("carry-first")
    assert run(["push", str(layout), "--image", "api", "--to", first, "-q"], project).code == 0
    host, _, path = first.partition("/")
    accept = {"Accept": "application/vnd.oci.image.index.v1+json"}
    size = len(httpx.get(f"http://{host}/v2/{path}/manifests/{digest}", headers=accept).content)
    signature = attach_signature(first, digest, size)
    pulled = tmp_path / "pulled"
    assert run(["pull", f"{first}@{digest}", "--to", str(pulled), "-q"], tmp_path).code == 0

    # The image and its tags reach a second repository without the signature (a copy that drops referrers).
    second = plain_registry.repo("carry-second")
    assert run(["push", str(layout), "--to", second, "--no-referrers", "-q"], project).code == 0
    assert {r["artifactType"] for r in _referrers(second, digest)} == {RECORD_TYPE}

    # Pushing the pulled layout there moves no image (every tag is in place) but carries what is missing.
    again = run(["push", str(pulled), "--to", second, "--json", "-q"], project)
    assert again.code == 0, again.err
    assert {r["digest"] for r in _referrers(second, digest)} >= {signature}
    assert len(_referrers(second, digest)) == 2  # nothing listed twice
    assert run(["push", str(pulled), "--to", second, "-q"], project).code == 0
    assert len(_referrers(second, digest)) == 2
