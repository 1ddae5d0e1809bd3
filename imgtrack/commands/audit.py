"""`imgtrack audit`: what is running, from which commit and version, and what never went through the
pipeline. Offline against the ledger; `--remote` resolves tag-only references through registries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from imgtrack.errors import ImgtrackError, UsageError
from imgtrack.ledger.index import LedgerIndex
from imgtrack.ledger.schema import Build
from imgtrack.oci.digest import is_digest
from imgtrack.oci.reference import parse_reference
from imgtrack.project import Project
from imgtrack.versions import decode_tag, is_version, semver_of
from imgtrack.workloads import RunningImage

if TYPE_CHECKING:
    from imgtrack.oci.pool import Registries

STATUSES = ("ok", "unknown", "unpinned", "latest", "mismatch", "behind", "invalid")
DEFAULT_FAIL_ON = ("unknown", "latest", "mismatch", "invalid")


@dataclass(frozen=True)
class AuditRow:
    where: str
    reference: str
    status: str
    digest: str | None
    record: Build | None
    detail: str = ""


def parse_fail_on(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in STATUSES]
    if bad:
        raise UsageError(f"--fail-on {','.join(bad)}: unknown status; choose from {', '.join(STATUSES)}")
    return names


def audit_images(project: Project, images: list[RunningImage], registries: Registries | None = None) -> list[AuditRow]:
    """One row per running image: its record (if any) and one status."""
    ledger = project.ledger
    index = ledger.index()
    by_digest: dict[str, Build | None] = {}
    newest_release: dict[str, str | None] = {}

    def record_of(digest: str) -> Build | None:
        if digest not in by_digest:
            found = [r for r in ledger.find(digest) if digest in r.all_digests()]
            by_digest[digest] = found[0] if found else None
        return by_digest[digest]

    rows = []
    for image in images:
        try:
            ref = None if is_digest(image.reference) else parse_reference(image.reference)
        except ImgtrackError as exc:
            rows.append(AuditRow(image.where, image.reference, "invalid", image.digest, None, str(exc)))
            continue
        tag = ref.tag if ref else None
        digest = image.digest or (ref.digest if ref else None)
        bare_digest = is_digest(image.reference)
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
        elif tag and (problem := _mismatch(index, record, tag)):
            rows.append(AuditRow(image.where, image.reference, "mismatch", digest, record, problem))
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
    return rows


def _mismatch(index: LedgerIndex, record: Build, tag: str) -> str | None:
    """Why the tag names another version than the digest that runs, or None."""
    if tag in record.tags:
        return None
    holders = index.tag_holders(record.image, tag)
    other = [h for h in holders if h.digest != record.digest]
    if other:
        return f"tag {tag} names {other[0].version}, but {record.version} runs"
    version = decode_tag(tag)
    if is_version(version) and version != record.version:
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
