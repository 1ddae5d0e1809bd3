"""Where an image's bytes come from: what `record` and `push` accept as SOURCE (an OCI layout
directory, an OCI layout tar, or the `docker buildx --metadata-file` JSON of a build another tool
pushed), and, for a recorded image, the newest place it was pushed to that still holds it."""

from __future__ import annotations

import json
from pathlib import Path

from imgtrack.errors import LayoutError, NotFound
from imgtrack.ledger.schema import Build
from imgtrack.oci.digest import check_digest
from imgtrack.oci.layout import ImageDescription, Layout, describe, open_layout
from imgtrack.oci.mediatypes import ALL_MANIFEST_TYPES
from imgtrack.oci.pool import Registries
from imgtrack.oci.reference import parse_reference

_METADATA_LIMIT = 16 * 1024 * 1024


def read_source(path: Path, ref_name: str | None = None) -> tuple[ImageDescription, Layout | None]:
    """The image SOURCE describes, and the layout holding its blobs (None for build metadata).

    The caller closes the layout."""
    if not path.exists():
        raise LayoutError(f"{path} does not exist; pass an OCI layout directory, layout tar or buildx metadata file")
    if path.is_file() and _looks_like_json(path):
        return read_buildx_metadata(path), None
    layout = open_layout(path)
    try:
        return describe(layout, ref_name), layout
    except BaseException:
        layout.close()
        raise


def _looks_like_json(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head.startswith(b"{")


def read_buildx_metadata(path: Path) -> ImageDescription:
    """The image digest from `docker buildx build --metadata-file` output."""
    with open(path, "rb") as f:
        data = f.read(_METADATA_LIMIT + 1)
    if len(data) > _METADATA_LIMIT:
        raise LayoutError(
            f"{path} is over {_METADATA_LIMIT // 2**20} MiB; refused: build metadata is a few KB "
            "(pass the file `docker buildx --metadata-file` wrote)"
        )
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise LayoutError(
            f"{path} is not valid JSON ({str(exc)[:120]}); pass the file `docker buildx --metadata-file` wrote"
        ) from None
    digest = doc.get("containerimage.digest") if isinstance(doc, dict) else None
    if not isinstance(digest, str):
        raise LayoutError(
            f'{path} has no "containerimage.digest", so it is not buildx build metadata; '
            "build with `docker buildx build --push --metadata-file FILE`"
        )
    check_digest(digest, f"{path}: containerimage.digest")
    descriptor = doc.get("containerimage.descriptor")
    media_type, size = "", 0
    if isinstance(descriptor, dict):
        if descriptor.get("digest") not in (None, digest):
            raise LayoutError(f"{path}: containerimage.descriptor names another digest than containerimage.digest")
        if descriptor.get("mediaType") in ALL_MANIFEST_TYPES:
            media_type = descriptor["mediaType"]
        if isinstance(descriptor.get("size"), int):
            size = descriptor["size"]
    return ImageDescription(digest=digest, media_type=media_type, size=size, manifests=())


def digest_only(digest: str, media_type: str = "") -> ImageDescription:
    """A build known only by its digest (`record --digest`)."""
    return ImageDescription(digest=check_digest(digest, "--digest"), media_type=media_type, size=0, manifests=())


def recorded_copy(record: Build, registries: Registries) -> Layout:
    """Where a recorded image can be read from: the newest push whose destination still exists."""
    for push in reversed(record.pushes):
        ref = parse_reference(push.repository)
        if ref.is_layout:
            if Path(ref.repository).is_dir():
                return open_layout(Path(ref.repository))
        else:
            return registries.open(ref, record.digest)
    raise NotFound(
        f"{record.image}@{record.version} was recorded but never pushed anywhere imgtrack can read it from; "
        "push it from its build output (imgtrack push PATH)"
    )
