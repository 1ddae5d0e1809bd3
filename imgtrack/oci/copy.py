"""Copy an image between OCI layouts, layer-aware: only missing blobs move, every byte verified."""

from __future__ import annotations

from dataclasses import dataclass

from imgtrack.errors import TransferInterrupted
from imgtrack.oci.layout import ImageDescription, Layout, LayoutWriter


@dataclass(frozen=True)
class CopyStats:
    copied: int
    skipped: int
    bytes_copied: int


def copy_blobs(source: Layout, image: ImageDescription, dest: LayoutWriter) -> CopyStats:
    """Copy `image`'s blobs (in push order: layers and configs, child manifests, then the top manifest)
    that `dest` lacks. A blob appears in `dest` only complete and matching its digest."""
    copied = skipped = size = 0
    for blob in image.blobs:
        if dest.has_blob(blob.digest):
            skipped += 1
            continue
        _copy_with_retries(source, blob.digest, dest)
        copied += 1
        size += blob.size
    return CopyStats(copied, skipped, size)


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
