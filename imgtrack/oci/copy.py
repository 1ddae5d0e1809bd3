"""Copy an image between OCI layouts, layer-aware: only missing blobs move, every byte verified."""

from __future__ import annotations

from dataclasses import dataclass

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
        dest.copy_from(source, blob.digest)
        copied += 1
        size += blob.size
    return CopyStats(copied, skipped, size)
