"""`imgtrack verify`: check the whole ledger against itself, git and the policy; with `--remote`, every
recorded push against the registries and layouts it names."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from imgtrack.errors import ImgtrackError, InvalidTag
from imgtrack.ledger.schema import Build, Push
from imgtrack.oci.destination import Destination
from imgtrack.oci.pool import Registries
from imgtrack.oci.reference import parse_reference
from imgtrack.policy import TagHolder, TagKind, check_tags, floating_moves_backwards, tag_kind
from imgtrack.project import Project
from imgtrack.versions import (
    ReleaseTags,
    contradiction_message,
    parse_version,
    released_elsewhere_message,
    same_release,
    semver_of,
    version_from_tag,
)

_BUILD_SHA_RE = re.compile(r"g([0-9a-f]{7,40})")  # with fullmatch


@dataclass(frozen=True)
class Finding:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class VerifyReport:
    records: int = 0
    findings: list[Finding] = field(default_factory=list)
    corroboration: dict[str, int] = field(default_factory=dict)  # verdict -> records (the image's own word)

    @property
    def ok(self) -> bool:
        return not self.findings


def verify_ledger(project: Project) -> VerifyReport:
    """Every check docs/ledger.md lists under verify, over every record and fact file (read from the files, not the cache)."""
    ledger, repo, config = project.ledger, project.repo, project.config
    files = ledger.load_all()
    loaded = files.builds()
    report = VerifyReport(records=len(loaded))
    report.findings += [Finding(*_split(e)) for e in files.errors]
    root = project.ledger.root.relative_to(repo.work_tree)

    def add(rel: str, message: str) -> None:
        report.findings.append(Finding(f"{root}/{rel}", message))

    # Commits exist (one git process for all of them).
    missing = repo.missing_commits(r.commit for _, r in loaded)
    if missing and repo.is_shallow():
        report.findings.append(
            Finding(
                str(repo.work_tree),
                f"shallow clone: {len(missing)} recorded commits are outside the fetched history and cannot be "
                "checked; fetch the full history (git fetch --unshallow --tags, or fetch-depth: 0 in CI)",
            )
        )
        missing = set()

    # Release tags, read once a prefix: commit -> tags, version -> (tag, commit). The same judgement as
    # versions.release_conflicts, from maps built once (it would scan every tag for every record).
    release_tags = ReleaseTags(repo, config.prefixes(), project.config_path)
    by_prefix: dict[str, tuple[dict[str, list[str]], dict[str, tuple[str, str]]]] = {}

    def releases(prefix: str) -> tuple[dict[str, list[str]], dict[str, tuple[str, str]]]:
        if prefix not in by_prefix:
            tags_by_commit: dict[str, list[str]] = defaultdict(list)
            release_of: dict[str, tuple[str, str]] = {}
            for tag, commit in release_tags.of(prefix).items():
                tags_by_commit[commit].append(tag)
                if (v := version_from_tag(tag, prefix)) is not None:
                    release_of[str(v.replace(build=None))] = (tag, commit)
            by_prefix[prefix] = (tags_by_commit, release_of)
        return by_prefix[prefix]

    for prefix, images in config.prefixes().items():
        if images:
            releases(prefix)  # a tag that two images' prefixes both match is a config error, records or not

    tag_history: dict[tuple[str, str], list[tuple[str, TagHolder]]] = defaultdict(list)
    versions: dict[tuple[str, str], list[tuple[str, Build]]] = defaultdict(list)
    for rel, record in loaded:
        verdict, said = record.corroboration
        report.corroboration[verdict] = report.corroboration.get(verdict, 0) + 1
        if verdict == "corroborated":
            for statement in said:
                revision = statement.rpartition(": ")[2]
                if not (len(revision) >= 7 and record.commit.startswith(revision)):
                    add(
                        rel,
                        f"its source fact calls it corroborated, but {statement!r} names another commit than {record.commit[:7]}",
                    )
        if record.commit in missing:
            add(rel, f"commit {record.commit[:12]} is not in this repository; fetch it, or the record is untraceable")
        prefix = config.prefix_of(record.image)
        tags_by_commit, release_of = releases(prefix)
        tagged = tags_by_commit.get(record.commit, [])
        if tagged and not any(
            same_release(parse_version(record.version), v) for t in tagged if (v := version_from_tag(t, prefix))
        ):
            add(rel, contradiction_message(record.version, record.commit, tagged))
        released = release_of.get(record.version.split("+", 1)[0])
        if released is not None and released[1] != record.commit:
            add(rel, released_elsewhere_message(record.version, record.commit, *released))
        for part in record.version.partition("+")[2].split("."):  # the build metadata
            m = _BUILD_SHA_RE.fullmatch(part)
            if m and not record.commit.startswith(m.group(1)):
                add(
                    rel, f"version {record.version} names commit g{m.group(1)}, but the record says {record.commit[:7]}"
                )
        candidate = record.candidate()
        try:
            for problem in check_tags(config.rules, candidate, record.tags, {}):
                add(rel, problem)
        except InvalidTag as exc:
            add(rel, str(exc))
        holder = TagHolder(record.digest, record.version, record.commit, record.recorded_at)
        for tag in record.record.tags:
            tag_history[(record.image, tag)].append((rel, holder))
        for fact in record.facts:
            if fact.kind == "tag":  # a tag given later holds from when it was given
                given = TagHolder(record.digest, record.version, record.commit, fact.at)
                tag_history[(record.image, fact.tag)].append((rel, given))
        versions[(record.image, record.version)].append((rel, record))

    for (image, tag), history in tag_history.items():
        kind, _ = tag_kind(tag, config.rules)
        if kind is TagKind.IMMUTABLE:
            digests = {h.digest for _, h in history}
            if len(digests) > 1:
                names = ", ".join(sorted({rel for rel, _ in history}))
                add(history[0][0], f"immutable tag {tag!r} of {image} names {len(digests)} digests ({names})")
        else:
            by_holder = {h: rel for rel, h in history}
            for earlier, later in floating_moves_backwards([h for _, h in history]):
                add(
                    by_holder[later],
                    f"floating tag {tag!r} of {image} moved back from {earlier.version} to {later.version}",
                )
    for (image, version_text), entries in versions.items():
        if len({r.digest for _, r in entries}) > 1:
            add(
                entries[0][0],
                f"version {version_text} of {image} names {len(entries)} digests; each needs its own version",
            )

    report.findings.sort(key=lambda f: (f.file, f.message))
    # Refresh the lookup cache from the files, so that in-place edits are seen from here on.
    ledger.refresh_cache(files)
    return report


def _split(error: str) -> tuple[str, str]:
    where, sep, message = error.partition(": ")
    return (where, message) if sep else ("ledger", error)


def verify_pushes(project: Project, registries: Registries) -> list[Finding]:
    """`verify --remote`: for each record's newest push to each repository, the manifest is still there
    and every tag still names the recorded digest (a floating tag may have moved on to a newer release
    the ledger records)."""
    findings: list[Finding] = []
    ledger = project.ledger
    for _rel, record in ledger.load_all().builds():
        newest: dict[str, Push] = {p.repository: p for p in record.pushes}
        for push in newest.values():
            where = f"{record.image}@{record.version} in {push.repository}"
            try:
                dest = registries.destination(parse_reference(push.repository))
                existing = dest.tags(push.tags)
                present = record.digest in existing.values() or dest.holds(record.digest)
            except ImgtrackError as exc:
                findings.append(Finding(where, f"cannot be checked: {exc}"))
                continue
            if not present:
                findings.append(Finding(where, f"manifest {record.digest[:19]}… no longer exists there"))
            elif not _carries_record(dest, record):
                findings.append(
                    Finding(
                        where,
                        f"the image carries no imgtrack record for {record.commit[:7]} (copied by a tool that drops "
                        f"referrers?); attach it with `imgtrack push {record.image}@{record.version} --to "
                        f"{push.repository}`",
                    )
                )
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


def _carries_record(dest: Destination, record: Build) -> bool:
    """Whether the image has a record artifact naming the record's commit (read from the referrers'
    annotations: no blob is fetched)."""
    from imgtrack.artifact import RECORD_ARTIFACT_TYPE, REVISION

    return any(
        d.annotations.get(REVISION) == record.commit for d in dest.referrers(record.digest, RECORD_ARTIFACT_TYPE)
    )
