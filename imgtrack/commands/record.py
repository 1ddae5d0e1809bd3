"""`imgtrack record`: bind a built image digest to its commit and version, under the tag policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgtrack.errors import GitStateError, InvalidVersion, PolicyViolation, UsageError
from imgtrack.ledger.schema import Build, Fact, Record, now
from imgtrack.oci.layout import ImageDescription, Layout, select_entry
from imgtrack.policy import Candidate, check_tags, check_version_unique, drop_tags_of_earlier_build, render_tags
from imgtrack.project import Project
from imgtrack.provenance import Statement, judge, statements
from imgtrack.sources import digest_only, read_source
from imgtrack.versions import (
    ReleaseTags,
    check_explicit_version,
    derive_version,
    parse_version,
    same_release,
    version_from_tag,
)


@dataclass(frozen=True)
class RecordRequest:
    image: str
    source: Path | None = None
    digest: str | None = None
    version: str | None = None
    tags: tuple[str, ...] = ()
    commit: str | None = None
    allow_dirty: bool = False
    ref_name: str | None = None
    accept_mismatch: bool = False  # record even when the image names another commit (itself recorded)


@dataclass(frozen=True)
class RecordResult:
    record: Build
    path: Path
    created: bool  # False: this digest was recorded already (idempotent success)


def describe_request(req: RecordRequest) -> tuple[ImageDescription, list[Statement] | None]:
    """The image a request names, read and verified (no ledger involved), and what it says of its own
    source (None when only its digest is known)."""
    if req.source is not None and req.digest is not None:
        raise UsageError("give SOURCE or --digest, not both; --digest is for builds another tool pushed")
    if req.source is None:
        if req.digest is None:
            raise UsageError(
                "nothing to record: give SOURCE (an OCI layout, layout tar or buildx metadata) or --digest"
            )
        return digest_only(req.digest), None
    description, layout = read_source(req.source, req.ref_name)
    if layout is None:
        return description, None
    try:
        return description, image_statements(layout, description)
    finally:
        layout.close()


def image_statements(layout: Layout, description: ImageDescription) -> list[Statement]:
    return statements(layout, select_entry(layout, None, description.digest))


def record_image(
    project: Project,
    req: RecordRequest,
    description: ImageDescription | None = None,
    said: list[Statement] | None = None,
) -> RecordResult:
    """Record one build; idempotent for a digest already recorded.

    A digest names one build forever, so recording it again (say, after the ledger commit moved HEAD)
    returns its record; only a --commit or --version that contradicts it is refused. New --tags are added.
    """
    config, repo = project.config, project.repo
    config.image(req.image, project.config_path)
    head = repo.head_commit()
    if req.commit is None:  # what git will be asked, answered while the image and the ledger are read
        repo.prefetch_dirty(config.paths_of(req.image))
    if req.version is not None:
        repo.prefetch_tags(config.prefix_of(req.image))
    repo.prefetch_identity()
    try:
        return _record(project, req, head, description, said)
    finally:
        repo.drop_prefetched()


def _record(
    project: Project,
    req: RecordRequest,
    head: str,
    description: ImageDescription | None,
    said: list[Statement] | None,
) -> RecordResult:
    config, repo, ledger = project.config, project.repo, project.ledger
    if description is None:
        description, said = describe_request(req)
    existing = ledger.get(req.image, description.digest)  # writes are atomic: reading needs no lock
    if existing is not None:
        return _record_again(project, req, existing)
    if req.commit is None:
        _refuse_test_merge(head)
    ledger.warm()  # while git, started earlier, looks at the work tree
    commit = repo.resolve_commit(req.commit) if req.commit else head
    paths = config.paths_of(req.image)
    dirty = commit == head and repo.is_dirty(paths=paths)
    if dirty and not req.allow_dirty:
        where = f" under {', '.join(paths)}" if paths else ""
        raise GitStateError(
            f"{repo.work_tree} has uncommitted changes{where}, so this build is not traceable to {commit[:7]}; "
            "commit them, or pass --allow-dirty for a dev record"
        )
    version = _version(project, req.image, commit, req.version, dirty)
    word = _judge_the_image(said or [], commit, dirty, req.accept_mismatch)
    candidate = Candidate(image=req.image, digest=description.digest, version=version, commit=commit, dirty=dirty)
    rendered = render_tags(config.rules, candidate)

    with ledger.locked():
        raced = ledger.get(req.image, description.digest)
        if raced is None:
            record = _write_new(project, req, description, candidate, rendered, word)
    if raced is not None:  # recorded meanwhile by another process (handled outside the lock it retakes)
        return _record_again(project, req, raced)
    build = ledger.get(req.image, description.digest) or Build(record)  # with the fact written beside it
    return RecordResult(build, ledger.path_of(req.image, description.digest), created=True)


def _refuse_test_merge(head: str) -> None:
    """A CI service's test merge of a pull request is no branch's commit: refuse to record it unasked."""
    import os

    from imgtrack.cienv import pull_request_merge

    merge = pull_request_merge(os.environ, head)
    if merge is None:
        return
    made_by, pr_head = merge
    instead = f"--commit {pr_head}" if pr_head else "--commit with the pull request's head commit"
    raise GitStateError(
        f"HEAD {head[:7]} is {made_by}, which no branch keeps, so a record of it could never be traced; pass "
        f"{instead}, best with that commit checked out and built (docs/ci.md), or --commit HEAD to record the "
        "merge anyway"
    )


def _write_new(
    project: Project,
    req: RecordRequest,
    description: ImageDescription,
    candidate: Candidate,
    rendered: list[str],
    word: tuple[str, tuple[str, ...]] | None = None,
) -> Record:
    """Check policy against the ledger and write the new record; the caller holds the ledger lock."""
    config, ledger = project.config, project.ledger
    # Policy asks only who holds these tags and this version: on a fresh clone, the files that hold them.
    index = ledger.index_of(req.image, (*rendered, *req.tags, candidate.version), exact=True)
    holders = {t: index.tag_holders(req.image, t) for t in (*rendered, *req.tags)}
    tags = drop_tags_of_earlier_build(config.rules, candidate, rendered, holders)
    tags += [t for t in req.tags if t not in tags]
    problems = check_tags(config.rules, candidate, tags, holders)
    problems += check_version_unique(candidate, index.version_holders(req.image, candidate.version))
    if problems:
        raise PolicyViolation("\n".join(problems))
    record = Record(
        image=req.image,
        digest=description.digest,
        media_type=description.media_type,
        version=candidate.version,
        commit=candidate.commit,
        tree="dirty" if candidate.dirty else "clean",
        tags=tuple(tags),
        recorded_at=now(),
        recorded_by=project.repo.identity(),
        manifests=description.manifests,
    )
    ledger.write(record)
    if word is not None:  # what the image said of its source; nothing said writes nothing (uncorroborated)
        verdict, said = word
        ledger.add_fact_locked(
            Fact(
                kind="source",
                image=record.image,
                record=record.digest,
                at=record.recorded_at,
                by=record.recorded_by,
                verdict=verdict,
                said=said,
            )
        )
    return record


def _judge_the_image(
    said: list[Statement], commit: str, dirty: bool, accept: bool
) -> tuple[str, tuple[str, ...]] | None:
    """The image's own word against the commit being recorded: (verdict, the statements) to record, None
    when it said nothing; a contradiction is refused unless accepted (and the acceptance recorded)."""
    verdict = judge(said, commit, dirty)
    if verdict.status == "uncorroborated":
        return None
    if verdict.status == "corroborated":
        return "corroborated", tuple(f"{s.source}: {s.revision}" for s in verdict.agreed)
    shown = tuple(f"{s.source}: {s.revision}{'-dirty' if s.dirty else ''}" for s in verdict.disagreed)
    if accept:
        return "accepted-mismatch", tuple(
            f"{s.source}: {s.revision}{'-dirty' if s.dirty else ''}" for s in dict.fromkeys(said)
        )
    first = verdict.disagreed[0]
    if verdict.status == "dirty":
        why = f"the {first.source} says {first.revision}-dirty: built from uncommitted changes, but {commit[:7]} is recorded clean"
    else:
        why = f"the {first.source} says it was built from {first.revision}, not {commit[:7]}, the commit being recorded"
    others = f" (and {len(shown) - 1} more)" if len(shown) > 1 else ""
    raise PolicyViolation(
        f"{why}{others}; record it from the commit it was built from (--commit {first.revision}), or pass "
        "--accept-mismatch to record it anyway (the mismatch is recorded)"
    )


def _record_again(project: Project, req: RecordRequest, existing: Build) -> RecordResult:
    """The digest is recorded: succeed unchanged, add new --tags (a fact each), or refuse a contradiction."""
    ledger, config = project.ledger, project.config
    path = ledger.path_of(existing.image, existing.digest)
    said_commit = project.repo.resolve_commit(req.commit) if req.commit else existing.commit
    if said_commit != existing.commit or (req.version is not None and req.version != existing.version):
        raise PolicyViolation(
            f"{existing.digest[:19]}… is already recorded as {existing.image} {existing.version} from "
            f"{existing.commit[:7]}; a digest has one commit and one version"
        )
    if not [t for t in req.tags if t not in existing.tags]:
        return RecordResult(existing, path, created=False)
    with ledger.locked():
        index = ledger.index()
        current = ledger.get(existing.image, existing.digest) or existing
        new_tags = [t for t in dict.fromkeys(req.tags) if t not in current.tags]
        candidate = current.candidate()
        holders = {t: index.tag_holders(current.image, t) for t in new_tags}
        problems = check_tags(config.rules, candidate, new_tags, holders)
        if problems:
            raise PolicyViolation("\n".join(problems))
        who, when = project.repo.identity(), now()
        for tag in new_tags:
            ledger.add_fact_locked(
                Fact(kind="tag", image=current.image, record=current.digest, at=when, by=who, tag=tag)
            )
        updated = ledger.get(current.image, current.digest) or current
    return RecordResult(updated, path, created=False)


def _version(project: Project, image: str, commit: str, explicit: str | None, dirty: bool) -> str:
    config, repo = project.config, project.repo
    prefix = config.prefix_of(image)
    owners = config.prefixes()
    releases = ReleaseTags(repo, owners, project.config_path)
    if explicit is None:
        if len(owners) > 1:
            releases.of(prefix)  # a tag two images' prefixes both match is refused before it is used
        derived = derive_version(repo, commit, prefix, dirty, config.paths_of(image))
        parse_version(derived, f"the version derived from git for {commit[:7]},")  # a near-limit tag can outgrow it
        return derived
    parsed = parse_version(explicit, "--version")
    tagged = releases.of(prefix)  # every release tag, read once
    release_tags = sorted(
        ((t, v) for t, c in tagged.items() if c == commit and (v := version_from_tag(t, prefix))),
        key=lambda tv: tv[1],
        reverse=True,
    )
    tagged_elsewhere = None
    for tag, tag_commit in tagged.items():
        v = version_from_tag(tag, prefix)
        if v is not None and same_release(v, parsed) and tag_commit != commit:
            tagged_elsewhere = tag_commit
    check_explicit_version(explicit, commit, release_tags, tagged_elsewhere)
    if dirty:
        if not parsed.prerelease:
            raise InvalidVersion(
                f"--version {explicit} is a release, and a build from a dirty tree cannot be one; "
                "commit your changes, or give a pre-release such as 1.5.0-dev.1"
            )
        if "dirty" not in (parsed.build or "").split("."):
            parsed = parsed.replace(build=f"{parsed.build}.dirty" if parsed.build else "dirty")
            parse_version(str(parsed), "--version with the build metadata `dirty`")
    return str(parsed)
