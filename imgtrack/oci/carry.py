"""Carry an image's referrers along with it: signatures, SBOMs, attestations and imgtrack's record, of the
image and of each platform manifest of an index, from wherever it is read to wherever it is written."""

from __future__ import annotations

from collections.abc import Iterable

from imgtrack.oci.copy import BlobProgress, CopyStats, copy_blobs, no_progress
from imgtrack.oci.layout import Descriptor, ImageDescription, Layout, LayoutWriter, describe
from imgtrack.oci.referrers import RegistryReferrers, add_layout_referrer, layout_referrers


def referrers_at(source: Layout, subjects: Iterable[str]) -> list[tuple[str, Descriptor]]:
    """(subject, referrer) for every referrer of each of `subjects` where `source` is (a layout or a
    registry repository read as one)."""
    from imgtrack.oci.remote.images import RegistryLayout

    found: list[tuple[str, Descriptor]] = []
    lister = RegistryReferrers(source.client, source.repo) if isinstance(source, RegistryLayout) else None
    for subject in dict.fromkeys(subjects):
        listed = lister.of(subject) if lister is not None else layout_referrers(source, subject)
        found += [(subject, d) for d in listed]
    return found


def _open(source: Layout, digest: str) -> Layout:
    """`source` for reading the manifest `digest` as an image (a registry layout is opened at it)."""
    from imgtrack.oci.remote.images import RegistryLayout

    if isinstance(source, RegistryLayout):
        return RegistryLayout(source.client, source.repo, digest)
    return source


def subjects_of(image: ImageDescription) -> list[str]:
    """The digests referrers may name: the image's own, and each platform manifest's of an index."""
    return [image.digest, *(m.digest for m in image.manifests if m.digest != image.digest)]


def carry_to_layout(
    source: Layout,
    found: list[tuple[str, Descriptor]],
    writer: LayoutWriter,
    jobs: int = 1,
    progress: BlobProgress = no_progress,
) -> int:
    """Copy each (subject, referrer) of `found` at `source` into the layout, listed beside its images (the
    number newly listed)."""
    count = 0
    for subject, ref in found:
        reader = _open(source, ref.digest)
        try:
            copy_blobs(reader, describe(reader, verify=False, entry=ref), writer, jobs=jobs, progress=progress)
        finally:
            if reader is not source:
                reader.close()
        count += add_layout_referrer(writer, subject, ref)
    return count


def carry_to_registry(
    source: Layout,
    found: list[tuple[str, Descriptor]],
    dest: RegistryReferrers,
    jobs: int = 1,
    progress: BlobProgress = no_progress,
) -> CopyStats:
    """Copy each (subject, referrer) of `found` at `source` to the destination repository and list it there
    (the referrers API, or the fallback tag)."""
    from imgtrack.oci.remote.images import push_to_registry

    copied = skipped = size = 0
    for subject, ref in found:
        reader = _open(source, ref.digest)
        try:
            described = describe(reader, verify=reader.local, entry=ref)
            stats = push_to_registry(dest.client, dest.repo, reader, described, (), jobs=jobs, progress=progress)  # type: ignore[arg-type]
        finally:
            if reader is not source:
                reader.close()
        dest.register(subject, ref)
        copied, skipped, size = copied + stats.copied, skipped + stats.skipped, size + stats.bytes_copied
    return CopyStats(copied, skipped, size)
