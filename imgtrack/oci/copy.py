"""Copy an image between OCI layouts, layer-aware: only missing blobs move, every byte verified."""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass

from imgtrack.errors import LayoutError, LocalIOError, RegistryError, TransferInterrupted
from imgtrack.oci.layout import Descriptor, ImageDescription, Layout, LayoutWriter
from imgtrack.oci.mediatypes import ALL_MANIFEST_TYPES

# Told of each blob as it is settled: ("copied" | "present" | "mounted", its descriptor). May be called
# from several threads at once.
BlobProgress = Callable[[str, Descriptor], None]


def no_progress(event: str, blob: Descriptor) -> None:
    """The progress callback that says nothing."""


@dataclass(frozen=True)
class CopyStats:
    copied: int
    skipped: int
    bytes_copied: int


def copy_blobs(
    source: Layout,
    image: ImageDescription,
    dest: LayoutWriter,
    jobs: int = 1,
    progress: BlobProgress = no_progress,
) -> CopyStats:
    """Copy the blobs of `image` that `dest` lacks, `jobs` at a time; manifests last, children before
    their index. A blob appears in `dest` only complete and matching its digest."""
    missing = [b for b in image.blobs if not dest.has_blob(b.digest)]
    for blob in image.blobs:
        if blob not in missing:
            progress("present", blob)
    manifests = [b for b in missing if b.media_type in ALL_MANIFEST_TYPES]
    blobs = [b for b in missing if b.media_type not in ALL_MANIFEST_TYPES]

    def copy(blob: Descriptor) -> None:
        _copy_with_retries(source, blob, dest)
        progress("copied", blob)

    try:
        if jobs > 1 and len(blobs) > 1:
            from concurrent.futures import ThreadPoolExecutor  # here: a push with nothing to copy never loads it

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                list(pool.map(copy, blobs))
        else:
            for blob in blobs:
                copy(blob)
        for manifest in manifests:
            copy(manifest)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        still = sum(b.size for b in missing if not dest.has_blob(b.digest))
        raise LocalIOError(
            f"no space left in {dest.path}: {_mib(still)} of this image's blobs are still to be written; free that "
            "much and run the command again (the blobs already there are kept, nothing partial is)"
        ) from None
    return CopyStats(len(missing), len(image.blobs) - len(missing), sum(b.size for b in missing))


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"


BLOB_TRIES = 3


def _copy_with_retries(source: Layout, blob: Descriptor, dest: LayoutWriter) -> None:
    """A blob whose download broke off is fetched again from its start (the partial copy is never kept)."""
    for attempt in range(1, BLOB_TRIES + 1):
        try:
            dest.copy_from(source, blob.digest, blob.size)
            return
        except TransferInterrupted:
            if attempt == BLOB_TRIES:
                raise
        except LayoutError as exc:
            if source.local:
                raise
            # Bytes from a registry that do not match their digest: the registry's failure (exit 3).
            raise RegistryError(
                f"{source.name} served other content for {blob.digest[:19]}…; nothing was kept"
            ) from exc
