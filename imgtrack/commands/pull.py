"""`imgtrack pull`: an image into an OCI layout directory, by ledger record or by reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgtrack.errors import InvalidReference, PolicyViolation
from imgtrack.fsutil import check_output
from imgtrack.ledger.schema import Build
from imgtrack.oci.carry import carry_to_layout, referrers_at, subjects_of
from imgtrack.oci.copy import CopyStats, copy_blobs
from imgtrack.oci.layout import REF_NAME, Descriptor, LayoutWriter, describe, open_layout
from imgtrack.oci.pool import Registries
from imgtrack.oci.reference import parse_reference
from imgtrack.project import Project
from imgtrack.sources import recorded_copy
from imgtrack.versions import encode_tag


@dataclass(frozen=True)
class PullResult:
    record: Build | None
    source: str
    destination: Path
    stats: CopyStats
    digest: str  # what was pulled: the record's digest, or what the reference named


def pull_image(project: Project | None, source: str, destination: Path, registries: Registries) -> PullResult:
    """Copy an image into the layout `destination`: by ledger record (`IMAGE@VERSION`, a digest, a tag)
    from where it was pushed, or from a reference (`host/repo:tag`, `oci:PATH[:tag|@digest]`).
    Only missing blobs move; every byte is verified before it becomes visible."""
    check_output(destination, "--to", folder=True)
    record: Build | None = None
    wanted_digest: str | None
    ref_name: str | None
    if project is not None and not source.startswith("oci:") and "/" not in source:
        record = project.ledger.find_one(source)
        registries.targets.update(
            r.registry for p in record.pushes if not (r := parse_reference(p.repository)).is_layout
        )
        layout = recorded_copy(record, registries)
        wanted_digest, ref_name = record.digest, None
        name = encode_tag(record.version)
    else:
        ref = parse_reference(source)
        if ref.is_layout:
            if not Path(ref.repository).is_dir():
                raise InvalidReference(f"{ref.repository} does not exist or is not a directory; check the layout path")
            layout = open_layout(Path(ref.repository))
        else:
            registries.targets.add(ref.registry)
            layout = registries.open(ref, ref.digest or ref.tag or "latest")
        # With both a tag and a digest the digest wins and the tag is not consulted (as docker does).
        wanted_digest, ref_name = ref.digest, None if ref.digest else ref.tag
        name = ref_name or ""
    try:
        description = describe(layout, ref_name, digest=None if ref_name else wanted_digest)
        if wanted_digest is not None and description.digest != wanted_digest:
            raise PolicyViolation(
                f"{layout.name} serves {description.digest[:19]}… for {source}, but "
                f"{'the ledger records' if record else 'the reference names'} {wanted_digest[:19]}…; nothing was pulled"
            )
        writer = LayoutWriter(destination)
        stats = copy_blobs(layout, description, writer, jobs=registries.jobs, progress=registries.progress)
        writer.add_to_index(
            Descriptor(
                description.media_type,
                description.digest,
                description.size,
                annotations={REF_NAME: name} if name else {},
            )
        )
        if registries.carry_referrers:  # the layout keeps them, so that a push from it carries them on
            found = referrers_at(layout, subjects_of(description))
            carry_to_layout(layout, found, writer, jobs=registries.jobs, progress=registries.progress)
    finally:
        layout.close()
    return PullResult(record, layout.name, destination, stats, description.digest)
