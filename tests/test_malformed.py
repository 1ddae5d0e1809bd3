"""A corpus of malformed inputs for every parser imgtrack has: each gives exit 2 and one line, never a
traceback, and writes nothing."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.layouts import biggest_blob
from tests.conftest import LayoutFactory, record_file, run
from tests.test_record import ledger_files

DIGEST = "sha256:" + "a" * 64


def _layout_with(index: object | None = None, manifest: bytes | None = None) -> Callable[[Path, LayoutFactory], Path]:
    def make(tmp: Path, layouts: LayoutFactory) -> Path:
        path, digest = layouts()
        if manifest is not None:
            import hashlib

            blob_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
            (path / "blobs" / "sha256" / blob_digest[7:]).write_bytes(manifest)
            (path / "index.json").write_text(
                json.dumps(
                    {
                        "schemaVersion": 2,
                        "manifests": [
                            {
                                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "digest": blob_digest,
                                "size": len(manifest),
                            }
                        ],
                    }
                )
            )
        if index is not None:
            (path / "index.json").write_text(index if isinstance(index, str) else json.dumps(index))
        return path

    return make


def _tar(
    members: dict[str, bytes], links: dict[str, str] | None = None, link_type: bytes = tarfile.SYMTYPE
) -> Callable[[Path, LayoutFactory], Path]:
    def make(tmp: Path, layouts: LayoutFactory) -> Path:
        target = tmp / "bad.tar"
        with tarfile.open(target, "w") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            for name, dest in (links or {}).items():
                info = tarfile.TarInfo(name)
                info.type = link_type
                info.linkname = dest
                tar.addfile(info)
        return target

    return make


def _file(text: str | bytes, name: str = "input") -> Callable[[Path, LayoutFactory], Path]:
    def make(tmp: Path, layouts: LayoutFactory) -> Path:
        target = tmp / name
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
        return target

    return make


def _many_members(target: Path, count: int) -> Path:
    with tarfile.open(target, "w") as tar:
        for i in range(count):
            tar.addfile(tarfile.TarInfo(f"x/{i}"))
    return target


def _sparse(path: Path, size: int) -> Path:
    with open(path, "r+b") as f:
        f.truncate(size)
    return path


SOURCES = {
    "index not json": _layout_with(index="{nope"),
    "index a list": _layout_with(index=[1, 2]),
    "index manifests not a list": _layout_with(index={"manifests": "x"}),
    "descriptor path traversal": _layout_with(
        index={"manifests": [{"digest": "sha256:../../../etc/passwd", "size": 1}]}
    ),
    "descriptor negative size": _layout_with(index={"manifests": [{"digest": DIGEST, "size": -1}]}),
    "descriptor not an object": _layout_with(index={"manifests": ["sha256:x"]}),
    "manifest not json": _layout_with(manifest=b"\xff\xfe not json"),
    "manifest a list": _layout_with(manifest=b"[]"),
    "manifest without config": _layout_with(manifest=json.dumps({"schemaVersion": 2, "layers": []}).encode()),
    "manifest odd media type": _layout_with(manifest=json.dumps({"mediaType": "text/plain"}).encode()),
    "manifest layers not a list": _layout_with(
        manifest=json.dumps({"config": {"digest": DIGEST, "size": 1, "mediaType": "x"}, "layers": 5}).encode()
    ),
    "manifest with both layers and manifests": _layout_with(
        manifest=json.dumps(
            {"config": {"digest": DIGEST, "size": 1, "mediaType": "x"}, "layers": [], "manifests": []}
        ).encode()
    ),
    "manifest whose mediaType contradicts its descriptor": _layout_with(
        manifest=json.dumps({"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}).encode()
    ),
    "tar without index": _tar({"oci-layout": b"{}"}),
    "tar with symlinked blob": _tar(
        {
            "index.json": json.dumps(
                {
                    "manifests": [
                        {"digest": DIGEST, "size": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
                    ]
                }
            ).encode()
        },
        links={f"blobs/sha256/{DIGEST[7:]}": "/etc/passwd"},
    ),
    "tar with hard-linked blob": _tar(
        {
            "index.json": json.dumps(
                {
                    "manifests": [
                        {"digest": DIGEST, "size": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
                    ]
                }
            ).encode()
        },
        links={f"blobs/sha256/{DIGEST[7:]}": "/etc/passwd"},
        link_type=tarfile.LNKTYPE,
    ),
    "tar with too many entries": lambda tmp, layouts: _many_members(tmp / "many.tar", 50_001),
    "truncated tar": lambda tmp, layouts: _file(b"\x00" * 700 + b"ustar", "t.tar")(tmp, layouts),
    "buildx metadata without digest": _file('{"image.name": "x"}', "meta.json"),
    "buildx metadata bad digest": _file('{"containerimage.digest": "sha256:xyz"}', "meta.json"),
    "buildx metadata truncated": _file('{"containerimage.digest": ', "meta.json"),
    "buildx metadata over its limit": lambda tmp, layouts: _sparse(
        _file(b'{"containerimage.digest": "', "meta.json")(tmp, layouts), 100 * 1024 * 1024
    ),
    "buildx metadata nested deep": _file("[" * 100_000 + "]" * 100_000, "meta.json"),
    "binary junk": _file(b"\x7fELF\x00\x01\x02", "junk.bin"),
    "empty file": _file(b"", "empty"),
}


@pytest.mark.parametrize("case", sorted(SOURCES))
def test_malformed_sources(case: str, project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    source = SOURCES[case](tmp_path, layouts)
    before = ledger_files(project)
    result = run(["record", str(source), "--image", "api"], project)
    assert result.code == 2, (case, result)
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err, result.err
    assert ledger_files(project) == before


CONFIGS = {
    "not toml": "[tags\n",
    "schema 2": "schema = 2\n",
    "templates not a list": '[tags]\ntemplates = "{version}"\n',
    "unknown placeholder": '[tags]\ntemplates = ["{sha}"]\n',
    "latest not a bool": '[tags]\nlatest = "yes"\n',
    "image name with slash": '[images."team/api"]\n',
    "images not a table": "images = 3\n",
    "registry not a table": '[registries]\n"r.example.com" = 1\n',
    "binary": "\udcff",
    "over its limit": "# " + "x" * (1024 * 1024) + "\n",
    "nested deep": "a = " + "[" * 50_000 + "]" * 50_000 + "\n",
    "repository not a reference": '[images.api]\nrepositories = ["registry.example.com/Team/api"]\n',
    "repository with a tag": '[images.api]\nrepositories = ["registry.example.com/team/api:1.0"]\n',
    "unknown key at the top": "schmea = 1\n",
    "unknown key in versions": '[versions]\ntag_prefx = "v"\n',
    "unknown key in an image": '[images.api]\nrepositories = []\ntag_prefx = "v"\n',
    "unknown key in a registry": '[registries."r.example.com"]\ninsecure = true\nverify = false\n',
    "registry host not a host": '[registries."r.example.com\\n"]\ninsecure = true\n',
    "tag prefix with a space": '[versions]\ntag_prefix = "v "\n',
    "tag pattern with a newline": '[tags]\nimmutable = ["{version}\\n"]\n',
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_malformed_config(case: str, project: Path) -> None:
    config = project / ".imgtrack" / "config.toml"
    config.write_bytes(CONFIGS[case].encode("utf-8", "surrogateescape"))
    result = run(["log"], project)
    assert result.code == 2, (case, result)
    assert len(result.err.strip().splitlines()) == 1 and "config.toml" in result.err


RECORDS = {
    "not toml": b"schema = 1\nimage = [\n",
    "not utf-8": b'schema = 1\nimage = "\xff"\n',
    "schema 9": b"schema = 9\n",
    "missing fields": b'schema = 1\nimage = "api"\n',
    "tags not strings": None,  # filled below from a valid record
    "naive timestamp": None,
    "bad commit": None,
    "digest differs from name": None,
}


@pytest.mark.parametrize("case", sorted(RECORDS))
def test_malformed_records(case: str, project: Path, layouts: LayoutFactory) -> None:
    path, digest = layouts()
    assert run(["record", str(path), "--image", "api"], project).code == 0
    record = record_file(project, {"image": "api", "digest": digest})
    good = record.read_text()
    replacements = {
        "tags not strings": lambda t: t.replace("tags = [\n", "tags = [\n    1,\n"),
        "naive timestamp": lambda t: "\n".join(
            "recorded_at = 2026-01-01T00:00:00" if line.startswith("recorded_at") else line for line in t.splitlines()
        ),
        "bad commit": lambda t: "\n".join(
            'commit = "zz"' if line.startswith("commit") else line for line in t.splitlines()
        ),
        "digest differs from name": lambda t: t.replace(digest, "sha256:" + "b" * 64, 1),
    }
    data = RECORDS[case]
    record.write_bytes(data if data is not None else replacements[case](good).encode())
    for args in (["log"], ["show", digest], ["record", str(path), "--image", "api"]):
        result = run(args, project)
        assert result.code == 2, (case, args, result)
        assert record.name in result.err and len(result.err.strip().splitlines()) == 1, result.err


AUDIT_INPUTS = {
    "json truncated": '{"kind": "List", "items": [',
    "yaml bad": "apiVersion: v1\nkind: Pod\nspec: {containers: [\n",
    "two words a line": "nginx latest\n",
}


@pytest.mark.parametrize("case", sorted(AUDIT_INPUTS))
def test_malformed_audit_inputs(case: str, project: Path) -> None:
    result = run(["audit", "-"], project, stdin=AUDIT_INPUTS[case])
    assert result.code == 2, (case, result)
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_symlinked_blob_in_a_layout_directory_is_not_followed(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    path, _ = layouts()
    secret = tmp_path / "secret"
    secret.write_text("not a blob")
    layer = biggest_blob(path)
    layer.unlink()
    layer.symlink_to(secret)
    result = run(["record", str(path), "--image", "api"], project)
    assert result.code == 2 and layer.name in result.err and "missing" in result.err


def test_oversized_index_json_is_refused(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    (path / "index.json").write_bytes(b'{"manifests": []' + b" " * (4 * 1024 * 1024) + b"}")
    result = run(["record", str(path), "--image", "api"], project)
    assert result.code == 2 and "over 4 MiB" in result.err
