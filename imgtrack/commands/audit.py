"""`imgtrack audit`: what is running, from which commit and version, and what never went through the
pipeline. Offline against the ledger; `--remote` resolves tag-only references through registries."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgtrack.errors import ImgtrackError, UsageError
from imgtrack.ledger.index import Recorded
from imgtrack.oci.digest import is_digest
from imgtrack.oci.reference import Reference, parse_reference
from imgtrack.policy import TagHolder
from imgtrack.project import Project
from imgtrack.versions import decode_tag, is_version, semver_of
from imgtrack.workloads import RunningImage

if TYPE_CHECKING:
    from imgtrack.oci.pool import Registries

STATUSES = ("ok", "unknown", "unpinned", "latest", "mismatch", "behind", "invalid", "uncorroborated", "attached")
DEFAULT_FAIL_ON = ("unknown", "latest", "mismatch", "invalid")


@dataclass(frozen=True)
class AuditRow:
    where: str
    reference: str
    status: str
    digest: str | None
    record: Recorded | None  # from the cache: audit reads no record file
    detail: str = ""


def parse_fail_on(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in STATUSES]
    if bad:
        raise UsageError(f"--fail-on {','.join(bad)}: unknown status; choose from {', '.join(STATUSES)}")
    return names


def audit_images(
    project: Project, images: list[RunningImage], registries: Registries | None = None, check_word: bool = False
) -> list[AuditRow]:
    """One row per running image: its record (if any) and one status. With `check_word` (`--fail-on
    uncorroborated`), a build that would be ok but whose image did not corroborate its commit at record
    time is `uncorroborated`."""
    index = project.ledger.index()
    newest_release: dict[str, str | None] = {}
    holders: dict[tuple[str, str], list[TagHolder]] = {}
    asked = {d for d in (_pinned_digest(i) for i in images) if d}
    known = index.recorded(asked)  # one pass for them all

    def record_of(digest: str) -> Recorded | None:
        if digest not in asked:  # resolved by --remote: not asked for above
            asked.add(digest)
            known.update(index.recorded([digest]))
        return known.get(digest)

    def tag_holders(image: str, tag: str) -> list[TagHolder]:
        if (image, tag) not in holders:
            holders[image, tag] = index.tag_holders(image, tag)
        return holders[image, tag]

    # A cluster runs many replicas of few references: each distinct one is parsed once.
    parsed: dict[str, tuple[bool, Reference | None, ImgtrackError | None]] = {}

    def parse(reference: str) -> tuple[bool, Reference | None, ImgtrackError | None]:
        if reference not in parsed:
            if is_digest(reference):
                parsed[reference] = (True, None, None)
            else:
                try:
                    parsed[reference] = (False, parse_reference(reference), None)
                except ImgtrackError as exc:
                    parsed[reference] = (False, None, exc)
        return parsed[reference]

    rows = []
    for image in images:
        bare_digest, ref, problem = parse(image.reference)
        if problem is not None:
            rows.append(AuditRow(image.where, image.reference, "invalid", image.digest, None, str(problem)))
            continue
        tag = ref.tag if ref else None
        digest = image.digest or (ref.digest if ref else None)
        if digest is None and registries is not None and ref is not None and not ref.is_layout:
            try:
                digest = registries.client(ref.registry).manifest_digest(ref.repository, tag or "latest")
            except ImgtrackError as exc:
                rows.append(AuditRow(image.where, image.reference, "unpinned", None, None, f"not resolved: {exc}"))
                continue
        record = record_of(digest) if digest else None
        if not bare_digest and (ref is None or ref.digest is None) and (tag is None or tag.lower() == "latest"):
            rows.append(
                AuditRow(
                    image.where,
                    image.reference,
                    "latest",
                    digest,
                    record,
                    "no tag, or latest: names no version; deploy by digest or version tag",
                )
            )
        elif digest is None:
            rows.append(
                AuditRow(
                    image.where,
                    image.reference,
                    "unpinned",
                    None,
                    None,
                    "tag only: --remote resolves it; deploy by digest (imgtrack resolve)",
                )
            )
        elif (
            record is None
            and registries is not None
            and ref is not None
            and not ref.is_layout
            and (attached := _attached_record(registries, ref, digest))
        ):
            found, said = attached
            rows.append(AuditRow(image.where, image.reference, "attached", digest, found, said))
        elif record is None:
            rows.append(
                AuditRow(
                    image.where,
                    image.reference,
                    "unknown",
                    digest,
                    None,
                    "digest not in the ledger: built outside the pipeline",
                )
            )
        elif tag and (why := _mismatch(tag_holders(record.image, tag), record, tag)):
            rows.append(AuditRow(image.where, image.reference, "mismatch", digest, record, why))
        else:
            if record.image not in newest_release:
                newest_release[record.image] = index.highest_release(record.image)
            newest = newest_release[record.image]
            if newest is not None and semver_of(newest) > semver_of(record.version):
                rows.append(
                    AuditRow(
                        image.where, image.reference, "behind", digest, record, f"{record.image} {newest} is recorded"
                    )
                )
            else:
                rows.append(AuditRow(image.where, image.reference, "ok", digest, record))
    if check_word:
        verdicts = index.verdicts(row.record.path for row in rows if row.status == "ok" and row.record)
        for i, row in enumerate(rows):
            verdict = verdicts.get(row.record.path, "uncorroborated") if row.record else ""
            if row.status == "ok" and row.record and verdict != "corroborated":
                why = (
                    f"recorded although the image named another commit than {row.record.commit[:7]} (--accept-mismatch)"
                    if verdict == "accepted-mismatch"
                    else f"nothing the image says names {row.record.commit[:7]}: its commit is the recorder's word"
                )
                rows[i] = AuditRow(row.where, row.reference, "uncorroborated", row.digest, row.record, why)
    return rows


_ATTACHED: dict[tuple[str, str], tuple[Recorded, str] | None] = {}


def _attached_record(registries: Registries, ref: Reference, digest: str) -> tuple[Recorded, str] | None:
    """`audit --remote`: for a digest this ledger does not know, the record attached to the image in its
    registry (another repository's ledger, say), as a row's record and detail; None if there is none."""
    from datetime import UTC, datetime

    from imgtrack.artifact import RECORD_ARTIFACT_TYPE, attached_record
    from imgtrack.oci.remote.images import RegistryLayout

    key = (ref.name, digest)
    if key in _ATTACHED:
        return _ATTACHED[key]
    found: tuple[Recorded, str] | None = None
    try:
        listed = registries.referrers(ref).of(digest, RECORD_ARTIFACT_TYPE)
        if listed:
            layout = RegistryLayout(registries.client(ref.registry), ref.repository, digest)
            doc, _ = attached_record(layout, listed, digest, ref.name)
            if doc is not None:
                try:
                    at = datetime.fromisoformat(str(doc.get("recorded_at", "")).replace("Z", "+00:00"))
                except ValueError:
                    at = datetime.fromtimestamp(0, UTC)
                record = Recorded(
                    "", doc["image"], digest, doc["version"], doc["commit"], at, str(doc.get("recorded_by", ""))
                )
                said = f"not in this ledger: the record attached in {ref.name} says {doc['image']} {doc['version']} from {doc['commit'][:7]}"
                found = (record, said)
    except ImgtrackError:
        found = None  # an unreadable attachment answers nothing: the digest stays unknown
    _ATTACHED[key] = found
    return found


def _pinned_digest(image: RunningImage) -> str | None:
    """The digest a running image names or reports, without asking a registry."""
    if image.digest:
        return image.digest
    if is_digest(image.reference):
        return image.reference
    if "@" not in image.reference:
        return None
    try:
        return parse_reference(image.reference).digest
    except ImgtrackError:
        return None


@functools.lru_cache(maxsize=4096)
def _tag_version(tag: str) -> str | None:
    """The version a tag spells (`1.4.0`, `1.4.1-dev.3_g1a2b3c4`), or None."""
    version = decode_tag(tag)
    return version if is_version(version) else None


def _mismatch(holders: list[TagHolder], record: Recorded, tag: str) -> str | None:
    """Why the tag names another version than the digest that runs, or None. `holders` are the builds of
    the image that carry the tag (by their record, or given it later)."""
    if any(h.digest == record.digest for h in holders):
        return None
    if holders:  # none of them the build that runs
        return f"tag {tag} names {holders[0].version}, but {record.version} runs"
    version = _tag_version(tag)
    if version is not None and version != record.version:
        return f"tag {tag} reads as {version}, but {record.version} runs"
    return None


def record_sightings(project: Project, rows: list[AuditRow], env: str) -> int:
    """`audit --env`: each recorded build seen running becomes a `seen` fact of that environment (one per
    build per audit, however many containers run it); the number written."""
    from imgtrack.ledger.schema import Fact, now

    project.config.environment(env, project.config_path)
    at, by = now(), project.repo.identity()
    builds = {row.record.digest: row.record for row in rows if row.record is not None}
    with project.ledger.locked():
        return sum(
            project.ledger.add_fact_locked(Fact(kind="seen", image=b.image, record=b.digest, at=at, by=by, env=env))
            for b in builds.values()
        )
