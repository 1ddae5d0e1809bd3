"""The record travels with the image: push attaches it as an OCI artifact whose subject is the image.

Against the real distribution registry (2.8: no referrers API, so the spec's fallback tag), read back
with skopeo, and into OCI layouts."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.referrers_registry import referrers_registry
from testkit.registries import Registry
from tests.conftest import LayoutFactory, commit_file, git, run

RECORD_TYPE = "application/vnd.imgtrack.record.v1+json"


def skopeo_raw(reference: str) -> dict:
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def skopeo_blob(repo: str, digest: str, tmp: Path) -> bytes:
    """A blob as skopeo reads it (it copies the artifact into a layout)."""
    target = tmp / f"copy-{digest[7:19]}"
    proc = subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{repo}@{digest}", f"oci:{target}:x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((target / "blobs" / "sha256" / digest[7:]).read_text())
    layer = manifest["layers"][0]["digest"]
    return (target / "blobs" / "sha256" / layer[7:]).read_bytes()


def test_push_attaches_the_record_under_the_fallback_tag(
    project: Path, layouts: LayoutFactory, plain_registry: Registry, tmp_path: Path
) -> None:
    layout, digest = layouts()
    repo = plain_registry.repo()
    pushed = run(["push", str(layout), "--image", "api", "--to", repo, "--json", "-q"], project)
    assert pushed.code == 0, pushed.err
    record = pushed.json()
    index = skopeo_raw(f"{repo}:sha256-{digest[7:]}")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    [entry] = index["manifests"]
    assert entry["artifactType"] == RECORD_TYPE
    assert entry["annotations"]["org.opencontainers.image.revision"] == record["commit"]
    assert entry["annotations"]["org.opencontainers.image.version"] == record["version"]
    artifact = skopeo_raw(f"{repo}@{entry['digest']}")
    assert artifact["subject"]["digest"] == digest and artifact["artifactType"] == RECORD_TYPE
    assert artifact["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    payload = json.loads(skopeo_blob(repo, entry["digest"], tmp_path))
    assert payload["commit"] == record["commit"] and payload["version"] == record["version"]
    assert payload["digest"] == digest and payload["tags"] == record["tags"]

    # Pushing again, or to the same repository as part of another push, attaches nothing twice.
    again = run(["push", f"api@{record['version']}", "--to", repo, "-q"], project)
    assert again.code == 0, again.err
    assert [m["digest"] for m in skopeo_raw(f"{repo}:sha256-{digest[7:]}")["manifests"]] == [entry["digest"]]


def test_push_to_a_layout_keeps_the_record_beside_the_image(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    layout, digest = layouts()
    target = tmp_path / "out"
    pushed = run(["push", str(layout), "--image", "api", "--to", f"oci:{target}", "--json", "-q"], project)
    assert pushed.code == 0, pushed.err
    index = json.loads((target / "index.json").read_text())
    # index.json lists the image alone (under each of its tags), so other tools read the layout as before...
    assert {e["digest"] for e in index["manifests"]} == {digest}
    proc = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{target}:{pushed.json()['tags'][0]}"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    # ...and its annotation names the list of referrers, where the record is.
    listed = json.loads((target / "blobs" / "sha256" / index["annotations"]["vnd.imgtrack.referrers"][7:]).read_text())
    [artifact] = listed["referrers"][digest]
    assert artifact["artifactType"] == RECORD_TYPE
    manifest = json.loads((target / "blobs" / "sha256" / artifact["digest"][7:]).read_text())
    assert manifest["subject"]["digest"] == digest
    # The layout still reads as one image: pushing from it needs no --ref-name, and carries the record.
    again = run(["push", str(target), "--to", f"oci:{tmp_path / 'second'}", "-q"], project)
    assert again.code == 0, again.err
    assert run(["push", str(target), "--to", f"oci:{target}", "-q"], project).code == 0
    assert (
        json.loads(
            (
                target
                / "blobs"
                / "sha256"
                / json.loads((target / "index.json").read_text())["annotations"]["vnd.imgtrack.referrers"][7:]
            ).read_text()
        )
        == listed
    )


def test_inspect_answers_from_the_registry_alone(
    project: Path, layouts: LayoutFactory, plain_registry: Registry, tmp_path: Path
) -> None:
    layout, digest = layouts()
    repo = plain_registry.repo()
    record = run(["push", str(layout), "--image", "api", "--to", repo, "--json", "-q"], project).json()
    nowhere = tmp_path / "no-git"
    nowhere.mkdir()
    shown = run(["inspect", f"{repo}@{digest}", "--json"], nowhere)
    assert shown.code == 0, shown.err
    found = shown.json()
    assert found["digest"] == digest and found["record"]["version"] == record["version"]
    assert found["record"]["commit"] == record["commit"] and found["record"]["tags"] == record["tags"]
    assert [r["artifact_type"] for r in found["referrers"]] == [RECORD_TYPE]
    by_tag = run(["inspect", f"{repo}:{record['tags'][0]}"], nowhere)
    assert by_tag.code == 0 and f"api {record['version']} from {record['commit']}" in by_tag.out

    # A copy by a tool that drops referrers carries no record: exit 1, one line saying so.
    copy = plain_registry.repo("copy")
    proc = subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{repo}@{digest}",
            f"docker://{copy}:x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    bare = run(["inspect", f"{copy}:x"], nowhere)
    assert bare.code == 1 and "carries no imgtrack record" in bare.err and "none attached" in bare.out


def test_inspect_reads_a_layout(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    layout, digest = layouts()
    target = tmp_path / "out"
    record = run(["push", str(layout), "--image", "api", "--to", f"oci:{target}", "--json", "-q"], project).json()
    found = run(["inspect", f"oci:{target}", "--json"], tmp_path)
    assert found.code == 0, found.err
    assert found.json()["record"]["version"] == record["version"] and found.json()["digest"] == digest
    plain = run(["inspect", f"oci:{layout}"], tmp_path)
    assert plain.code == 1 and "carries no imgtrack record" in plain.err


def test_a_tag_of_the_referrers_shape_is_refused(project: Path, layouts: LayoutFactory) -> None:
    layout, _ = layouts()
    refused = run(["record", str(layout), "--image", "api", "--tag", "sha256-" + "a" * 64], project)
    assert refused.code == 2 and "shape of a referrers tag" in refused.err


def test_verify_remote_reports_an_image_restored_without_its_record(
    project: Path, layouts: LayoutFactory, plain_registry: Registry
) -> None:
    layout, digest = layouts()
    repo = plain_registry.repo()
    record = run(["push", str(layout), "--image", "api", "--to", repo, "--json", "-q"], project).json()
    assert run(["verify", "--remote"], project).code == 0
    # A backup made with skopeo, the repository emptied, and the image restored from the backup: skopeo
    # copies the image and its tags, not what refers to it.
    backup = plain_registry.repo("backup")
    skopeo = ["skopeo", "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false"]
    tag = record["tags"][0]
    assert (
        subprocess.run([*skopeo, f"docker://{repo}:{tag}", f"docker://{backup}:{tag}"], capture_output=True).returncode
        == 0
    )
    host, _, path = repo.partition("/")
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{repo}:sha256-{digest[7:]}"],
        capture_output=True,
        check=True,
    ).stdout
    assert json.loads(raw)["manifests"]
    index_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    for gone in (index_digest, digest):
        assert httpx.delete(f"http://{host}/v2/{path}/manifests/{gone}").status_code == 202
    for t in record["tags"]:
        proc = subprocess.run(
            [*skopeo, f"docker://{backup}:{tag}", f"docker://{repo}:{t}"], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
    found = run(["verify", "--remote"], project)
    assert found.code == 1
    assert f"carries no imgtrack record for {record['commit'][:7]}" in found.out, found.out
    # Pushing it again with imgtrack attaches the record, and verify is clean again.
    assert run(["push", f"api@{record['version']}", "--to", repo, "-q"], project).code == 0
    assert run(["verify", "--remote"], project).code == 0


@pytest.fixture(scope="module")
def api_registry() -> Iterator[tuple[str, Any]]:
    """A registry with the referrers API (testkit/referrers_registry.py: none is packaged here)."""
    with referrers_registry() as running:
        yield running


def _put_signature(host: str, path: str, subject: str, size: int) -> str:
    base = f"http://{host}/v2/{path}"
    bundle = b'{"signature":"c2ln"}'
    for blob in (b"{}", bundle):
        location = httpx.post(f"{base}/blobs/uploads/").headers["Location"]
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        assert httpx.put(f"http://{host}{location}?digest={digest}", content=blob).status_code == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                    "digest": "sha256:" + hashlib.sha256(bundle).hexdigest(),
                    "size": len(bundle),
                }
            ],
            "subject": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": subject, "size": size},
        }
    ).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    response = httpx.put(
        f"{base}/manifests/{digest}",
        content=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert response.status_code == 201 and response.headers["OCI-Subject"] == subject
    return digest


def test_the_referrers_api_is_used_where_the_registry_has_it(
    project: Path, layouts: LayoutFactory, api_registry: tuple[str, Any], tmp_path: Path
) -> None:
    host, store = api_registry
    layout, digest = layouts(platforms=("linux/amd64", "linux/arm64"))
    pushed = run(["push", str(layout), "--image", "api", "--to", f"{host}/team/api", "--json", "-q"], project)
    assert pushed.code == 0, pushed.err
    # The registry indexed the record itself: no fallback tag was written.
    assert ("team/api", f"sha256-{digest[7:]}") not in store.manifests
    [listed] = store.referrers[("team/api", digest)]
    assert listed["artifactType"] == RECORD_TYPE
    size = len(store.manifests[("team/api", digest)][0])
    signature = _put_signature(host, "team/api", digest, size)

    found = run(["inspect", f"{host}/team/api@{digest}", "--json"], tmp_path)
    assert found.code == 0, found.err
    assert {r["artifact_type"] for r in found.json()["referrers"]} == {
        RECORD_TYPE,
        "application/vnd.dev.sigstore.bundle.v0.3+json",
    }
    assert found.json()["record"]["version"] == pushed.json()["version"]
    assert any("last=1" in r for r in store.requests), "the Link header's next page was followed"

    assert run(["verify", "--remote"], project).code == 0
    assert any(
        r.startswith("GET") and "artifactType=application%2Fvnd.imgtrack.record.v1%2Bjson" in r for r in store.requests
    )

    # Promoted within the registry, the signature goes along, indexed by the API again.
    promoted = run(["promote", f"api@{pushed.json()['version']}", "--to", f"{host}/prod/api", "-q"], project)
    assert promoted.code == 0, promoted.err
    assert {d["digest"] for d in store.referrers[("prod/api", digest)]} == {listed["digest"], signature}
    assert ("prod/api", f"sha256-{digest[7:]}") not in store.manifests


def test_audit_remote_answers_from_the_attached_record(
    project: Path, layouts: LayoutFactory, plain_registry: Registry, tmp_path: Path
) -> None:
    layout, digest = layouts()
    repo = plain_registry.repo()
    record = run(["push", str(layout), "--image", "api", "--to", repo, "--json", "-q"], project).json()
    # Another project's ledger, which never recorded this build.
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    commit_file(other, "x.txt", "x\n")
    assert run(["init"], other).code == 0
    line = f"{repo}@{digest}\n"
    unknown = run(["audit", "-", "--json"], other, stdin=line)
    assert unknown.code == 1 and unknown.json()[0]["status"] == "unknown"
    answered = run(["audit", "-", "--json", "--remote"], other, stdin=line)
    assert answered.code == 0, answered.out
    [row] = answered.json()
    assert row["status"] == "attached" and row["version"] == record["version"] and row["commit"] == record["commit"]
    assert f"the record attached in {repo}" in row["detail"]


def test_a_hostile_layout_list_of_referrers_or_record_is_refused_in_one_line(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    layout, digest = layouts()
    target = tmp_path / "out"
    assert run(["push", str(layout), "--image", "api", "--to", f"oci:{target}", "-q"], project).code == 0
    index = json.loads((target / "index.json").read_text())
    listed_digest = index["annotations"]["vnd.imgtrack.referrers"]
    listed = json.loads((target / "blobs" / "sha256" / listed_digest[7:]).read_text())
    [artifact] = listed["referrers"][digest]

    def replace_list(doc: object) -> None:
        data = json.dumps(doc).encode()
        new = "sha256:" + hashlib.sha256(data).hexdigest()
        (target / "blobs" / "sha256" / new[7:]).write_bytes(data)
        index["annotations"]["vnd.imgtrack.referrers"] = new
        (target / "index.json").write_text(json.dumps(index))

    replace_list({"referrers": [1, 2, 3]})  # not a map: no referrers, and no crash
    found = run(["inspect", f"oci:{target}"], tmp_path)
    assert found.code == 1 and "carries no imgtrack record" in found.err
    # A record listed under this image that says it is about another one is refused, not shown.
    other = "sha256:" + "e" * 64
    manifest = json.loads((target / "blobs" / "sha256" / artifact["digest"][7:]).read_text())
    payload = json.loads((target / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]).read_text())
    forged = json.dumps({**payload, "digest": other}).encode()
    forged_digest = "sha256:" + hashlib.sha256(forged).hexdigest()
    (target / "blobs" / "sha256" / forged_digest[7:]).write_bytes(forged)
    manifest["layers"][0].update(digest=forged_digest, size=len(forged))
    data = json.dumps(manifest).encode()
    manifest_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (target / "blobs" / "sha256" / manifest_digest[7:]).write_bytes(data)
    replace_list({"referrers": {digest: [{**artifact, "digest": manifest_digest, "size": len(data)}]}})
    refused = run(["inspect", f"oci:{target}"], tmp_path)
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert "is about sha256:eeeeeeeeeeee" in refused.err and "attached to the wrong image" in refused.err
