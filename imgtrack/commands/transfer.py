"""`imgtrack push` and `imgtrack pull`: between OCI layouts (`oci:PATH`) and registries.

Policy is checked before a byte is sent, and a push is appended to the record only after every blob,
manifest and tag landed and the registry confirmed each digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from imgtrack.commands.record import RecordRequest, record_image
from imgtrack.config import Config, TagRules, env_int
from imgtrack.errors import InvalidReference, NotFound, PolicyViolation, UsageError
from imgtrack.fsutil import check_output
from imgtrack.ledger.schema import Build, Fact, Push, now
from imgtrack.oci.copy import BlobProgress, CopyStats, copy_blobs, no_progress
from imgtrack.oci.layout import REF_NAME, Descriptor, ImageDescription, Layout, LayoutWriter, describe, open_layout
from imgtrack.oci.reference import Reference, parse_reference, parse_repository
from imgtrack.policy import TagKind, latest_alias, tag_kind
from imgtrack.project import Project
from imgtrack.sources import read_source
from imgtrack.versions import encode_tag, semver_of

if TYPE_CHECKING:  # httpx is imported only by commands that talk to a registry
    from imgtrack.commands.verify import Finding
    from imgtrack.oci.registry import RegistryClient


@dataclass
class Registries:
    """One client per registry for the length of a command; flag > environment > config > default."""

    config: Config | None = None
    ca_file: Path | None = None
    insecure: bool = False
    username: str | None = None
    password: str | None = None
    jobs: int = 4
    timeout: float = 60.0
    progress: BlobProgress = no_progress
    # Blobs above this size upload in resumable chunks of it (IMGTRACK_CHUNK_SIZE, bytes).
    chunk_size: int = field(
        default_factory=lambda: env_int("IMGTRACK_CHUNK_SIZE", 128 * 1024 * 1024, 64 * 1024, 4 * 1024**3, " of bytes")
    )
    # The registries this command targets: only they get flag or environment credentials.
    targets: set[str] = field(default_factory=set)
    _clients: dict[str, RegistryClient] = field(default_factory=dict)

    def client(self, registry: str) -> RegistryClient:
        from imgtrack.oci.auth import find_credentials
        from imgtrack.oci.registry import RegistryClient

        if registry not in self._clients:
            configured = self.config.registries.get(registry) if self.config else None
            self._clients[registry] = RegistryClient(
                registry,
                find_credentials(registry, self.username, self.password, explicit=registry in self.targets),
                insecure=self.insecure or bool(configured and configured.insecure),
                ca_file=self.ca_file,
                jobs=self.jobs,
                timeout=self.timeout,
                chunk_size=self.chunk_size,
            )
        return self._clients[registry]

    def open(self, ref: Reference, reference: str) -> Layout:
        from imgtrack.oci.remote import RegistryLayout

        return RegistryLayout(self.client(ref.registry), ref.repository, reference)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


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

    def __init__(self, opener: Callable[[], tuple[Layout, ImageDescription]]) -> None:
        self._opener = opener
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
        existing = {ref: _existing_tags(ref, tags, registries) for ref in refs}
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
        try:
            if image is None:
                known = [r for r in project.ledger.find(description.digest) if r.digest == description.digest]
                if len(known) != 1:
                    raise UsageError(
                        f"{source} is not recorded yet; pass --image NAME (from .imgtrack/config.toml) to record it"
                    )
                image = known[0].image
            request = RecordRequest(image=image, source=path, version=version, tags=extra_tags)
            record = record_image(project, request, description).record
        except BaseException:
            layout.close()
            raise
        return record, _Source(lambda: (layout, description))
    record = project.ledger.find_one(source)

    def open_recorded() -> tuple[Layout, ImageDescription]:
        recorded = _recorded_copy(record, registries)
        try:
            return recorded, describe(recorded, digest=record.digest)
        except BaseException:
            recorded.close()
            raise

    return record, _Source(open_recorded)


def _recorded_copy(record: Build, registries: Registries) -> Layout:
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


def _push_tags(project: Project, record: Build) -> tuple[str, ...]:
    """The record's tags, plus `latest` when enabled and this is the highest release (never alone)."""
    tags = list(record.tags)
    if project.config.rules.latest and record.tags:
        if latest_alias(project.ledger.releases(record.image)) == record.version:
            tags.append("latest")
    return tuple(tags)


def _existing_tags(ref: Reference, tags: tuple[str, ...], registries: Registries) -> dict[str, str]:
    if not ref.is_layout:
        client = registries.client(ref.registry)
        return {t: d for t in tags if (d := client.manifest_digest(ref.repository, t))}
    layout_dir = Path(ref.repository)
    if not (layout_dir / "index.json").exists():
        return {}
    return {d.annotations[REF_NAME]: d.digest for d in open_layout(layout_dir).entries() if REF_NAME in d.annotations}


def verify_pushes(project: Project, registries: Registries) -> list[Finding]:
    """`verify --remote`: for each record's newest push to each repository, the manifest is still there
    and every tag still names the recorded digest (a floating tag may have moved on to a newer release
    the ledger records)."""
    from imgtrack.commands.verify import Finding
    from imgtrack.errors import ImgtrackError

    findings: list[Finding] = []
    ledger = project.ledger
    for _rel, record in ledger.load_all().builds():
        newest: dict[str, Push] = {p.repository: p for p in record.pushes}
        for push in newest.values():
            where = f"{record.image}@{record.version} in {push.repository}"
            try:
                ref = parse_reference(push.repository)
                existing = _existing_tags(ref, (*push.tags, record.digest), registries)
            except ImgtrackError as exc:
                findings.append(Finding(where, f"cannot be checked: {exc}"))
                continue
            if ref.is_layout:
                present = record.digest in existing.values() or _layout_lists(ref, record.digest)
            else:
                present = existing.get(record.digest) == record.digest
            if not present:
                findings.append(Finding(where, f"manifest {record.digest[:19]}… no longer exists there"))
            for tag in push.tags:
                held = existing.get(tag)
                if held == record.digest:
                    continue
                if held is None:
                    findings.append(Finding(where, f"tag {tag!r} no longer exists (it named {record.digest[:19]}…)"))
                    continue
                newer = [
                    r
                    for r in ledger.find(held)
                    if r.image == record.image and tag in r.tags and semver_of(r.version) > semver_of(record.version)
                ]
                if not newer or tag_kind(tag, project.config.rules)[0] is not TagKind.FLOATING:
                    findings.append(
                        Finding(
                            where,
                            f"tag {tag!r} now names {held[:19]}…, not the recorded "
                            f"{record.digest[:19]}… (moved behind imgtrack's back)",
                        )
                    )
    return findings


def _layout_lists(ref: Reference, digest: str) -> bool:
    layout_dir = Path(ref.repository)
    return (layout_dir / "index.json").exists() and any(d.digest == digest for d in open_layout(layout_dir).entries())


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
    if not ref.is_layout and tags and all(existing.get(t) == record.digest for t in tags):
        # Every tag already names this manifest, so it and all it references are there: nothing to read.
        stats = CopyStats(copied=0, skipped=len(record.all_digests()), bytes_copied=0)
    elif ref.is_layout:
        layout, description = source.get()
        writer = LayoutWriter(Path(ref.repository))
        stats = copy_blobs(layout, description, writer, jobs=registries.jobs, progress=registries.progress)
        writer.add_to_index(
            *(
                Descriptor(
                    description.media_type,
                    description.digest,
                    description.size,
                    annotations={REF_NAME: tag} if tag else {},
                )
                for tag in tags or ("",)
            )
        )
    else:
        from imgtrack.oci.remote import push_to_registry

        # The ledger knows this image's blobs in every repository of this registry it was pushed to.
        same_registry = tuple(
            other.repository
            for p in record.pushes
            if not (other := parse_reference(p.repository)).is_layout and other.registry == ref.registry
        )
        layout, description = source.get()
        stats = push_to_registry(
            registries.client(ref.registry),
            ref.repository,
            layout,
            description,
            tags,
            jobs=registries.jobs,
            mount_from=same_registry,
            progress=registries.progress,
        )
    # Only now, with every blob, manifest and tag in place, does the ledger say it was pushed. The same
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
        layout = _recorded_copy(record, registries)
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
    finally:
        layout.close()
    return PullResult(record, layout.name, destination, stats, description.digest)
