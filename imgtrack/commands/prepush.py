"""`imgtrack hook pre-push`: what the installed hook runs. Refuses a push that makes an image untraceable.

It reads only what the push touches — the ledger files changed in the pushed commits and the pushed
tags — and looks up everything else in the ledger's cache, so its cost does not grow with the ledger. On
a fresh clone whose cache is not built yet, it asks only the files holding the tags, versions and commits
it looks up, as `record` does (docs/ledger.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from imgtrack.config import CONFIG_DIR, LEDGER_DIR, config_path
from imgtrack.errors import ImgtrackError, InvalidTag
from imgtrack.gitrepo import GitRepo
from imgtrack.ledger.index import LedgerIndex
from imgtrack.ledger.schema import Build, Fact, Record, parse_fact, parse_record
from imgtrack.ledger.store import (
    check_fact_placement,
    check_record_placement,
    classify,
    record_rel,
    segment_entries,
    segment_name_problem,
)
from imgtrack.policy import check_tags, check_version_unique
from imgtrack.project import Project
from imgtrack.versions import (
    ReleaseTags,
    contradiction_message,
    release_conflicts,
    released_elsewhere_message,
    version_from_tag,
)

ZERO = "0" * 40
LEDGER_PATH = f"{CONFIG_DIR}/{LEDGER_DIR}"


@dataclass(frozen=True)
class PushedRef:
    local_ref: str
    local_oid: str
    remote_ref: str
    remote_oid: str

    @property
    def deleting(self) -> bool:
        return set(self.local_oid) == {"0"}

    @property
    def creating(self) -> bool:
        return set(self.remote_oid) == {"0"}


def parse_push_lines(text: str) -> list[PushedRef]:
    """git's pre-push stdin: `<local ref> <local oid> <remote ref> <remote oid>` a line."""
    refs = []
    for line in text.splitlines():
        parts = line.rsplit(maxsplit=3)
        if len(parts) == 4:
            refs.append(PushedRef(*parts))
    return refs


def refs_from_pre_commit(environ: dict[str, str]) -> list[PushedRef]:
    """The one ref the pre-commit framework describes in its environment (it does not pass stdin on)."""
    to_ref = environ.get("PRE_COMMIT_TO_REF") or environ.get("PRE_COMMIT_LOCAL_BRANCH")
    if not to_ref:
        return []
    return [
        PushedRef(
            local_ref=environ.get("PRE_COMMIT_LOCAL_BRANCH", to_ref),
            local_oid=to_ref,
            remote_ref=environ.get("PRE_COMMIT_REMOTE_BRANCH", environ.get("PRE_COMMIT_LOCAL_BRANCH", "")),
            remote_oid=environ.get("PRE_COMMIT_FROM_REF") or ZERO,
        )
    ]


def pre_push_problems(cwd: Path, remote: str, stdin: TextIO | None, environ: dict[str, str]) -> list[str]:
    """What `git push` (stdin lines) or the pre-commit framework (environment) asks the hook to check."""
    refs = parse_push_lines("" if stdin is None or stdin.isatty() else stdin.read())
    if not refs:
        refs = refs_from_pre_commit(environ)
        remote = remote or environ.get("PRE_COMMIT_REMOTE_NAME", "")
    if not config_path(GitRepo(cwd).work_tree).exists():
        return []  # this repository does not use imgtrack
    return check_push(Project.open(cwd), remote, refs)


def check_push(project: Project, remote: str, refs: list[PushedRef], known: tuple[str, ...] | None = None) -> list[str]:
    """Every reason to refuse this push, one line each with its fix; empty when the push may go.

    A new ref brings the commits the remote does not have: those not on `remote`'s tracking branches,
    or, given `known` (a server knows its own refs: `--all`), those not reachable from `known`."""
    problems: list[str] = []
    repo = project.repo
    project.ledger.ready()  # a schema-1 (or, cache built, malformed) ledger is refused before anything is judged
    release_tags = ReleaseTags(repo, project.config.prefixes(), project.config_path)  # each prefix read once
    for ref in refs:
        if ref.remote_ref.startswith("refs/tags/"):
            problems += _check_tag(project, ref, release_tags)
        if ref.deleting:
            continue
        tip, old = repo.peel_commits(ref.local_oid, None if ref.creating else ref.remote_oid)
        if tip is None:
            continue
        dropped = None
        if old is None:
            # A new ref: what the remote does not have yet, as far as we know.
            if known is not None:
                revs = [tip, "--not", *known]
            else:
                revs = [tip, "--not", f"--remotes={remote}"] if remote and not _is_url(remote) else [tip]
        else:
            revs = [old, tip]
            dropped = repo.start_dropped_commits(old, tip)  # runs beside the diff below
        changed = repo.changed_blobs(revs, LEDGER_PATH)
        contents = repo.read_blobs(changed.values())
        pushed, unreadable = _expand_segments({path: contents.get(blob) for path, blob in changed.items()})
        problems += [f"{problem} (pushed in {ref.remote_ref})" for problem in unreadable]
        pushed_records = {path.removeprefix(LEDGER_PATH + "/") for path in pushed}
        files = [(path, *_parse_ledger_file(path, data, ref.remote_ref)) for path, data in pushed.items()]
        lookups = _lookup_values([item for _, item, _ in files])
        index = project.ledger.index_of(None, lookups, exact=True) if lookups else None
        for path, item, problem in files:
            if problem:
                problems.append(problem)
            elif isinstance(item, Record) and index is not None:  # its version is always looked up
                problems += [f"{path}: {p}" for p in _check_record(project, index, tip, item, release_tags)]
            elif isinstance(item, Fact):
                problems += [f"{path}: {p}" for p in _check_fact(project, index, item, pushed_records)]
        if dropped is not None:
            problems += _check_rewrite(project, tip, dropped(), ref.remote_ref, set(changed))
    return list(dict.fromkeys(problems))


def _check_rewrite(project: Project, tip: str, dropped: list[str], remote_ref: str, checked: set[str]) -> list[str]:
    """A push that rewrites history (the remote's tip is not in the new one) drops commits; a record the
    new tip keeps but whose commit is among them has become untraceable though its file did not change.
    Only the records of dropped commits are looked at (the cache finds them by commit), so the cost
    follows the rewrite, not the ledger."""
    if not dropped:
        return []
    index = project.ledger.index_of(None, tuple(dropped), exact=True)  # a record holds its commit whole
    candidates = {f"{LEDGER_PATH}/{rel}": commit for commit in dropped for rel in index.paths_by_commit_prefix(commit)}
    kept = project.repo.paths_in_tree(tip, [p for p in candidates if p not in checked])
    problems = []
    for path in sorted(kept):  # a dropped commit is one the new tip does not reach
        record = project.ledger.read(path.removeprefix(LEDGER_PATH + "/"))
        problems.append(
            f"{path}: {record.image} {record.version} names commit {record.commit[:7]}, which this push drops "
            f"from {remote_ref} (history rewritten); keep that commit in the pushed history, or remove the record"
        )
    return problems


def _is_url(remote: str) -> bool:
    return "/" in remote or ":" in remote


def _check_tag(project: Project, ref: PushedRef, release_tags: ReleaseTags) -> list[str]:
    repo, config = project.repo, project.config
    tag = ref.remote_ref.removeprefix("refs/tags/")
    try:
        prefixes = release_tags.prefixes_of(tag)
    except ImgtrackError as exc:
        return [str(exc)]
    if not prefixes:
        return []
    prefix = prefixes[0]
    version = version_from_tag(tag, prefix)
    if version is None:
        return []
    # Only the images that take their versions from this prefix: web/v1.2.0 binds no api record.
    bound = [r for r in _commits_bound_to(project, str(version)) if config.prefix_of(r.image) == prefix]
    if not bound:
        return []
    new = None if ref.deleting else repo.peel_commit(ref.local_oid)
    old = None if ref.creating else repo.peel_commit(ref.remote_oid)
    names = ", ".join(f"{r.image} {r.version} ({r.commit[:7]})" for r in bound)
    if ref.deleting:
        return [f"deleting release tag {tag} is refused: the ledger binds {names} to it; keep the tag"]
    if old is not None and old != new:
        return [
            f"moving release tag {tag} from {old[:7]} to {(new or '?')[:7]} is refused: the ledger binds "
            f"{names}; release tags never move, tag a new version instead"
        ]
    others = [r for r in bound if r.commit != new]
    if others:
        names = ", ".join(f"{r.image} {r.version} ({r.commit[:7]})" for r in others)
        return [
            f"release tag {tag} on {(new or '?')[:7]} is refused: the ledger binds {names} to another commit; "
            "tag that commit, or release a new version"
        ]
    return []


def _commits_bound_to(project: Project, version: str) -> list[Build]:
    """Records of this release, with or without build metadata."""
    ledger = project.ledger
    # `"1.4.0` starts every value of this release, `"1.4.0+build.2"` included
    return [ledger.read(path) for path in ledger.index_of(None, (version,)).paths_by_release(version)]


def _parse_ledger_file(path: str, data: bytes | None, remote_ref: str) -> tuple[Record | Fact | None, str | None]:
    """A pushed ledger file read and placed: (record or fact, None), (None, the problem), or (None, None)
    for a file that is not the ledger's to judge."""
    rel = path.removeprefix(LEDGER_PATH + "/")
    kind = classify(rel)
    if kind not in ("record", "fact") or data is None:
        return None, None
    item: Record | Fact
    try:
        if kind == "record":
            item = parse_record(data, path)
            problem = check_record_placement(item, rel, path)
        else:
            item = parse_fact(data, path)
            problem = check_fact_placement(item, data, rel, path)
    except ImgtrackError as exc:
        return None, f"{exc} (pushed in {remote_ref})"
    return (None, f"{problem} (pushed in {remote_ref})") if problem else (item, None)


def _expand_segments(files: dict[str, bytes | None]) -> tuple[dict[str, bytes | None], list[str]]:
    """The pushed ledger files with each segment replaced by its entries (checked as files the push adds),
    and what is wrong with the segments that cannot be read so."""
    out: dict[str, bytes | None] = {}
    problems: list[str] = []
    for path, data in files.items():
        rel = path.removeprefix(LEDGER_PATH + "/")
        if classify(rel) != "segment" or data is None:
            out.setdefault(path, data)
            continue
        try:
            entries = segment_entries(rel, data, path)
        except ImgtrackError as exc:
            problems.append(str(exc))
            continue
        named_wrong = segment_name_problem(rel, data, path)
        if named_wrong:
            problems.append(named_wrong)
        for entry, entry_data in entries.items():
            out.setdefault(f"{LEDGER_PATH}/{entry}", entry_data)
    return out, problems


def _lookup_values(items: list[Record | Fact | None]) -> tuple[str, ...]:
    """Every value the checks of these files look up in the ledger: each record's tags and version, each
    tag fact's tag. On a fresh clone the files holding them are all the checks need to read."""
    values: dict[str, None] = {}
    for item in items:
        if isinstance(item, Record):
            values.update(dict.fromkeys((*item.tags, item.version)))
        elif isinstance(item, Fact) and item.kind == "tag":
            values[item.tag] = None
    return tuple(values)


def _check_fact(project: Project, index: LedgerIndex | None, fact: Fact, pushed: set[str]) -> list[str]:
    """A fact names a record the remote will have, and a tag it adds obeys the policy."""
    owner = record_rel(fact.image, fact.record)
    build = project.ledger.get(fact.image, fact.record)
    if build is None and owner not in pushed:
        return [
            f"names record {fact.record[:19]}… of {fact.image}, which is in neither the pushed history nor "
            "the ledger; push the record too"
        ]
    if fact.kind != "tag" or build is None or index is None:
        return []
    candidate = build.candidate()
    try:
        return check_tags(
            project.config.rules,
            candidate,
            [fact.tag],
            {fact.tag: index.tag_holders(build.image, fact.tag)},
            given_at=fact.at,
        )
    except InvalidTag as exc:
        return [str(exc)]


def _check_record(
    project: Project, index: LedgerIndex, tip: str, record: Record, release_tags: ReleaseTags
) -> list[str]:
    repo, config = project.repo, project.config
    problems: list[str] = []
    if not repo.is_ancestor(record.commit, tip):
        problems.append(
            f"{record.image} {record.version} names commit {record.commit[:7]}, which is not in the pushed history; "
            "push that commit too, or record the build from a commit you push"
        )
    prefix = config.prefix_of(record.image)
    contradicted, elsewhere = release_conflicts(record.version, record.commit, release_tags.of(prefix), prefix)
    if contradicted:
        problems.append(
            contradiction_message(record.version, record.commit, contradicted)
            + "; record the build again with that version"
        )
    problems += [
        released_elsewhere_message(record.version, record.commit, tag, commit) + "; record it with another version"
        for tag, commit in elsewhere
    ]
    candidate = record.candidate()
    holders = {t: index.tag_holders(record.image, t) for t in record.tags}
    try:
        problems += check_tags(config.rules, candidate, record.tags, holders, given_at=record.recorded_at)
    except InvalidTag as exc:
        problems.append(str(exc))
    problems += check_version_unique(candidate, index.version_holders(record.image, record.version))
    return problems
