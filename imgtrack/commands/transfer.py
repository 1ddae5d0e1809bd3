"""`imgtrack push` and `imgtrack pull` for OCI image layouts (`oci:PATH`), the destination that needs
no server. A push is appended to the record only after every blob and tag landed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgtrack.commands.record import RecordRequest, record_image
from imgtrack.config import TagRules
from imgtrack.errors import InvalidReference, NotFound, PolicyViolation, UsageError
from imgtrack.oci.copy import CopyStats, copy_blobs
from imgtrack.oci.layout import REF_NAME, Descriptor, ImageDescription, Layout, LayoutWriter, describe, open_layout
from imgtrack.oci.reference import Reference, parse_reference
from imgtrack.policy import TagKind, latest_alias, tag_kind
from imgtrack.project import Project
from imgtrack.record import Push, Record, now
from imgtrack.sources import read_source
from imgtrack.versions import encode_tag


@dataclass(frozen=True)
class PushResult:
    destination: str
    tags: tuple[str, ...]
    stats: CopyStats
    recorded: bool  # False: the same push was recorded before (a no-op)


@dataclass(frozen=True)
class PushOutcome:
    record: Record
    pushes: list[PushResult]


def _layout_destination(text: str) -> Reference:
    ref = parse_reference(text)
    if not ref.is_layout:
        raise UsageError(
            f"{ref.name}: pushing to a registry is not available in this version of imgtrack; "
            "push to an OCI layout (--to oci:PATH) and copy it with skopeo or crane"
        )
    if ref.tag or ref.digest:
        raise UsageError(f"--to {text}: give the layout without a tag; the record's tags are pushed")
    return ref


def push_image(
    project: Project, source: str, image: str | None, destinations: list[str], version: str | None = None,
    extra_tags: tuple[str, ...] = (),
) -> PushOutcome:
    """Record SOURCE if need be, then copy it to each destination with the tags its record carries."""
    explicit = [_layout_destination(t) for t in destinations]  # bad --to: refused before anything is recorded
    record, layout, description = _push_source(project, source, image, version, extra_tags)
    try:
        refs = explicit or [
            _layout_destination(t) for t in project.config.image(record.image, project.config_path).repositories
        ]
        if not refs:
            raise UsageError(
                f"no destination: give --to oci:PATH, or list repositories under [images.{record.image}] "
                f"in {project.config_path}"
            )
        tags = _push_tags(project, record)
        for ref in refs:  # policy before a byte is sent
            _check_destination_tags(ref, record, tags, project.config.rules)
        results = [_push_one(project, layout, description, record, ref, tags) for ref in refs]
    finally:
        layout.close()
    return PushOutcome(project.ledger.get(record.image, record.digest) or record, results)


def _push_source(
    project: Project, source: str, image: str | None, version: str | None, extra_tags: tuple[str, ...],
) -> tuple[Record, Layout, ImageDescription]:
    path = Path(source)
    if path.exists():
        description, layout = read_source(path)
        if layout is None:
            raise UsageError(f"{source} is build metadata: it names a digest but holds no blobs to push")
        try:
            if image is None:
                known = [r for r in project.ledger.find(description.digest) if r.digest == description.digest]
                if len(known) != 1:
                    raise UsageError(
                        f"{source} is not recorded yet; pass --image NAME (from .imgtrack/config.toml) to record it"
                    )
                image = known[0].image
            request = RecordRequest(image=image, source=path, version=version, tags=extra_tags)
            return record_image(project, request, description).record, layout, description
        except BaseException:
            layout.close()
            raise
    record = project.ledger.find_one(source)
    for push in reversed(record.pushes):
        if push.repository.startswith("oci:") and Path(push.repository[4:]).is_dir():
            layout = open_layout(Path(push.repository[4:]))
            try:
                return record, layout, describe(layout, digest=record.digest)
            except Exception:
                layout.close()
                raise
    raise NotFound(
        f"{record.image}@{record.version} was recorded but no OCI layout it was pushed to holds it; "
        "push it from its build output (imgtrack push PATH --image NAME)"
    )


def _push_tags(project: Project, record: Record) -> tuple[str, ...]:
    """The record's tags, plus `latest` when enabled and this is the highest release (never alone)."""
    tags = list(record.tags)
    if project.config.rules.latest and record.tags:
        if latest_alias(project.ledger.releases(record.image)) == record.version:
            tags.append("latest")
    return tuple(tags)


def _existing_tags(layout_dir: Path) -> dict[str, str]:
    if not (layout_dir / "index.json").exists():
        return {}
    return {d.annotations[REF_NAME]: d.digest for d in open_layout(layout_dir).entries() if REF_NAME in d.annotations}


def _check_destination_tags(ref: Reference, record: Record, tags: tuple[str, ...], rules: TagRules) -> None:
    """Refuse to move an immutable tag that the destination already holds for another digest."""
    existing = _existing_tags(Path(ref.repository))
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


def _push_one(
    project: Project, layout: Layout, description: ImageDescription, record: Record, ref: Reference,
    tags: tuple[str, ...],
) -> PushResult:
    writer = LayoutWriter(Path(ref.repository))
    stats = copy_blobs(layout, description, writer)
    writer.add_to_index(*(
        Descriptor(description.media_type, description.digest, description.size,
                   annotations={REF_NAME: tag} if tag else {})
        for tag in tags or ("",)
    ))
    appended = False

    def append_push(current: Record) -> Record:
        # Decided under the ledger lock, so concurrent identical pushes record one entry.
        nonlocal appended
        if any(p.repository == ref.name and tuple(p.tags) == tags for p in current.pushes):
            return current
        appended = True
        return current.with_push(Push(ref.name, tags, now()))

    # Only now, with every blob and tag in place, does the ledger say it was pushed.
    project.ledger.update(record.image, record.digest, append_push)
    return PushResult(ref.name, tags, stats, recorded=appended)


@dataclass(frozen=True)
class PullResult:
    record: Record | None
    source: str
    destination: Path
    stats: CopyStats


def pull_image(project: Project | None, source: str, destination: Path) -> PullResult:
    """Copy an image into the layout `destination`: by ledger record (`IMAGE@VERSION`, a digest, a tag)
    from a layout it was pushed to, or from `oci:PATH[:tag|@digest]`. Only missing blobs move."""
    record: Record | None = None
    if source.startswith("oci:"):
        ref = parse_reference(source)
        layout_dir = Path(ref.repository)
        wanted_digest, ref_name = ref.digest, ref.tag
    else:
        if project is None:
            raise UsageError(f"{source!r} is not oci:PATH; pulling by record needs a git repository with imgtrack")
        record = project.ledger.find_one(source)
        pushed = [p for p in reversed(record.pushes) if p.repository.startswith("oci:")]
        if not pushed:
            raise NotFound(f"{record.image}@{record.version} has no recorded push to an OCI layout to pull from")
        layout_dir = Path(pushed[0].repository[4:])
        wanted_digest, ref_name = record.digest, None
    if not layout_dir.is_dir():
        raise InvalidReference(f"{layout_dir} does not exist or is not a directory; check the layout path")
    layout = open_layout(layout_dir)
    try:
        description = describe(layout, ref_name, digest=None if ref_name else wanted_digest)
        if wanted_digest is not None and description.digest != wanted_digest:
            raise PolicyViolation(
                f"{layout_dir} serves {description.digest[:19]}… for {source}, but the ledger records "
                f"{wanted_digest[:19]}…; the source drifted: nothing was pulled"
            )
        writer = LayoutWriter(destination)
        stats = copy_blobs(layout, description, writer)
        name = encode_tag(record.version) if record else (ref_name or "")
        writer.add_to_index(Descriptor(description.media_type, description.digest, description.size,
                                       annotations={REF_NAME: name} if name else {}))
    finally:
        layout.close()
    return PullResult(record, str(layout_dir), destination, stats)
