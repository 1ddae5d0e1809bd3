"""Copy an image between OCI layouts, layer-aware: only missing blobs move, every byte verified."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from imgtrack.errors import TransferInterrupted
from imgtrack.oci.mediatypes import ALL_MANIFEST_TYPES
from imgtrack.oci.layout import ImageDescription, Layout, LayoutWriter


@dataclass(frozen=True)
class CopyStats:
    copied: int
    skipped: int
    bytes_copied: int


def copy_blobs(source: Layout, image: ImageDescription, dest: LayoutWriter, jobs: int = 1) -> CopyStats:
    """Copy the blobs of `image` that `dest` lacks, `jobs` at a time; manifests last, children before
    their index. A blob appears in `dest` only complete and matching its digest."""
    missing = [b for b in image.blobs if not dest.has_blob(b.digest)]
    manifests = [b for b in missing if b.media_type in ALL_MANIFEST_TYPES]
    blobs = [b for b in missing if b.media_type not in ALL_MANIFEST_TYPES]
    if jobs > 1 and len(blobs) > 1:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(lambda b: _copy_with_retries(source, b.digest, dest), blobs))
    else:
        for blob in blobs:
            _copy_with_retries(source, blob.digest, dest)
    for manifest in manifests:
        _copy_with_retries(source, manifest.digest, dest)
    return CopyStats(len(missing), len(image.blobs) - len(missing), sum(b.size for b in missing))


BLOB_TRIES = 3


def _copy_with_retries(source: Layout, digest: str, dest: LayoutWriter) -> None:
    """A blob whose download broke off is fetched again from its start (the partial copy is never kept)."""
    for attempt in range(1, BLOB_TRIES + 1):
        try:
            dest.copy_from(source, digest)
            return
        except TransferInterrupted:
            if attempt == BLOB_TRIES:
                raise
