"""`imgtrack push` and `imgtrack promote`: an image to registries and OCI layouts (`oci:PATH`).

Policy is checked before a byte is sent, and a push is appended to the record only after every blob,
manifest and tag landed and the registry confirmed each digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from imgtrack.artifact import RECORD_ARTIFACT_TYPE, REVISION, VERSION, record_artifact
from imgtrack.errors import PolicyViolation, UsageError
from imgtrack.fsutil import check_output
from imgtrack.ledger.schema import Build, Fact, now
from imgtrack.oci.copy import CopyStats
from imgtrack.oci.destination import Destination
from imgtrack.oci.layout import ImageDescription, Layout, describe
from imgtrack.oci.pool import Registries
from imgtrack.oci.reference import Reference, parse_reference, parse_repository
from imgtrack.policy import TagKind, TagRules, latest_alias, tag_kind
from imgtrack.project import Project
from imgtrack.sources import read_source, recorded_copy


@dataclass(frozen=True)
class PushResult:
    destination: str
    tags: tuple[str, ...]
    stats: CopyStats
    recorded: bool  # False: the same push was recorded before (a no-op)


@dataclass(frozen=True)
class PushOutcome:
    record: Build
    pushes: list[PushResult]


def _destination(text: str) -> Reference:
    ref = parse_repository(text, "--to")
    if ref.is_layout:
        check_output(Path(ref.repository), "--to", folder=True)
    return ref


class _Source:
    """The layout and image a push reads from, opened only when a destination needs its bytes."""

    def __init__(self, opener: Callable[[], tuple[Layout, ImageDescription]], local: bool = False) -> None:
        self._opener = opener
        self.local = local  # a layout on this machine: its referrers are listed without a request
        self._opened: tuple[Layout, ImageDescription] | None = None

    def get(self) -> tuple[Layout, ImageDescription]:
        if self._opened is None:
            self._opened = self._opener()
        return self._opened

    def close(self) -> None:
        if self._opened is not None:
            self._opened[0].close()


def push_image(
    project: Project,
    source: str,
    image: str | None,
    destinations: list[str],
    registries: Registries,
    version: str | None = None,
    extra_tags: tuple[str, ...] = (),
    promote: bool = False,
) -> PushOutcome:
    """Record SOURCE if need be, then copy it to each destination with the tags its record carries."""
    explicit = [_destination(t) for t in destinations]  # bad --to: refused before anything is recorded
    record, source_image = _push_source(project, source, image, version, extra_tags, registries)
    try:
        refs = explicit or [
            _destination(t) for t in project.config.image(record.image, project.config_path).repositories
        ]
        if not refs:
            raise UsageError(
                f"no destination: give --to REPOSITORY or --to oci:PATH, or list repositories under "
                f"[images.{record.image}] in {project.config_path}"
            )
        registries.targets.update(ref.registry for ref in refs if not ref.is_layout)
        tags = _push_tags(project, record)
        # Policy before a byte is sent: what each destination's tags name now.
        existing = {ref: registries.tags_at(ref, tags) for ref in refs}
        for ref in refs:
            _check_destination_tags(ref, record, tags, existing[ref], project.config.rules)
        results = [
            _push_one(project, source_image, record, ref, tags, existing[ref], registries, promote) for ref in refs
        ]
    finally:
        source_image.close()
    return PushOutcome(project.ledger.get(record.image, record.digest) or record, results)


def _push_source(
    project: Project,
    source: str,
    image: str | None,
    version: str | None,
    extra_tags: tuple[str, ...],
    registries: Registries,
) -> tuple[Build, _Source]:
    path = Path(source)
    if path.exists():
        description, layout = read_source(path)
        if layout is None:
            raise UsageError(f"{source} is build metadata: it names a digest but holds no blobs to push")
        from imgtrack.commands.record import RecordRequest, image_statements, record_image  # a layout to record

        try:
            if image is None:
                known = [r for r in project.ledger.find(description.digest) if r.digest == description.digest]
                if len(known) != 1:
                    raise UsageError(
                        f"{source} is not recorded yet; pass --image NAME (from .imgtrack/config.toml) to record it"
                    )
                image = known[0].image
            request = RecordRequest(image=image, source=path, version=version, tags=extra_tags)
            record = record_image(project, request, description, image_statements(layout, description)).record
        except BaseException:
            layout.close()
            raise
        return record, _Source(lambda: (layout, description), local=True)
    record = project.ledger.find_one(source)

    def open_recorded() -> tuple[Layout, ImageDescription]:
        recorded = recorded_copy(record, registries)
        try:
            return recorded, describe(recorded, digest=record.digest)
        except BaseException:
            recorded.close()
            raise

    return record, _Source(open_recorded)


def _push_tags(project: Project, record: Build) -> tuple[str, ...]:
    """The record's tags, plus `latest` when enabled and this is the highest release (never alone)."""
    tags = list(record.tags)
    if project.config.rules.latest and record.tags:
        if latest_alias(project.ledger.releases(record.image)) == record.version:
            tags.append("latest")
    return tuple(tags)


def _check_destination_tags(
    ref: Reference,
    record: Build,
    tags: tuple[str, ...],
    existing: dict[str, str],
    rules: TagRules,
) -> None:
    """Refuse to move an immutable tag that the destination already holds for another digest."""
    problems = [
        f"{ref.name}: tag {tag!r} already names {existing[tag][:19]}… there, not {record.digest[:19]}…; "
        "immutable tags never move: the destination drifted from the ledger"
        for tag in tags
        if existing.get(tag, record.digest) != record.digest
        and tag != "latest"
        and tag_kind(tag, rules)[0] is not TagKind.FLOATING  # floating tags move forward; policy checked that
    ]
    if problems:
        raise PolicyViolation("\n".join(problems))


def _carries_record(dest: Destination, record: Build) -> bool:
    """Whether the image already carries its record there: an imgtrack record referrer naming its commit
    and version (read from the referrers' annotations: no blob is fetched)."""
    return any(
        d.annotations.get(REVISION) == record.commit and d.annotations.get(VERSION) == record.version
        for d in dest.referrers(record.digest, RECORD_ARTIFACT_TYPE)
    )


def _push_one(
    project: Project,
    source: _Source,
    record: Build,
    ref: Reference,
    tags: tuple[str, ...],
    existing: dict[str, str],
    registries: Registries,
    promote: bool = False,
) -> PushResult:
    dest = registries.destination(ref)
    source_url = project.config.images[record.image].source if record.image in project.config.images else ""
    subject_size = None
    if tags and all(existing.get(t) == record.digest for t in tags):
        # Every tag already names this manifest, so it and all it references are there: nothing to read.
        stats = CopyStats(copied=0, skipped=len(record.all_digests()), bytes_copied=0)
        if registries.carry_referrers and source.local:
            # Its referrers may not be: a layout's are listed for free, and only a subject that has some is
            # asked about at the destination.
            layout, description = source.get()
            dest.carry(layout, description, jobs=registries.jobs, progress=registries.progress)
    else:
        # The ledger knows this image's blobs in every repository of this registry it was pushed to.
        same_registry = tuple(
            other.repository
            for p in record.pushes
            if not (other := parse_reference(p.repository)).is_layout and other.registry == ref.registry
        )
        layout, description = source.get()
        stats = dest.write_image(
            layout, description, tags, jobs=registries.jobs, progress=registries.progress, mount_from=same_registry
        )
        subject_size = description.size
        if registries.carry_referrers:
            dest.carry(layout, description, jobs=registries.jobs, progress=registries.progress)
    # The record travels with the image: an artifact whose subject is it (docs/security.md). A push that
    # moved nothing first asks whether the image carries it already (by the referrers' annotations), so
    # that a no-op re-push stays cheap.
    if subject_size is not None or not _carries_record(dest, record):
        size = subject_size if subject_size is not None else dest.subject_size(record.digest)
        dest.attach(record.digest, record_artifact(record.record, size, source_url))
    # Only now, with every blob, manifest, tag and the record in place, does the ledger say it was pushed. The same
    # push recorded before (decided under the ledger lock) adds nothing.
    appended = project.ledger.add_fact(
        Fact(
            kind="promote" if promote else "push",
            image=record.image,
            record=record.digest,
            at=now(),
            by=project.repo.identity(),
            repository=ref.name,
            tags=tags,
        )
    )
    return PushResult(ref.name, tags, stats, recorded=appended)
