"""`imgtrack ledger migrate` and `imgtrack ledger commit`: the ledger's own upkeep in git.

`ledger commit` is the hand-off at the end of a CI job: it commits `.imgtrack/` alone, with a message
that says what was recorded, pushed or promoted, and with `--push` lands that commit on the remote
branch even when the branch moved during the job: the push is retried after fetching and rebasing
onto the remote branch, which cannot conflict because ledger changes only ever add files.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from imgtrack.config import CONFIG_DIR
from imgtrack.errors import GitStateError, LedgerError, PolicyViolation, RegistryError
from imgtrack.ledger.migrate import MigrateResult, migrate
from imgtrack.ledger.schema import ENV_KINDS, parse_fact, parse_record
from imgtrack.ledger.store import classify
from imgtrack.project import Project

MESSAGE_LINES = 200  # changes a commit message lists, at most
PUSH_ATTEMPTS = 6
BACKOFF_S = 0.2
LEDGER_PREFIX = f"{CONFIG_DIR}/ledger/"


def migrate_ledger(project: Project) -> MigrateResult:
    return migrate(project.ledger.store)


@dataclass
class CommitResult:
    commit: str | None  # None: nothing to commit
    summary: list[str] = field(default_factory=list)
    pushed_to: str | None = None
    attempts: int = 0


def describe_changes(project: Project, changes: list[tuple[str, str]]) -> list[str]:
    """One line per thing a ledger change does: `record api 1.4.0`, `push api 1.4.0 to REPO`, …"""
    lines: list[str] = []
    root = project.ledger.root
    for status, path in changes:
        rel = path.removeprefix(LEDGER_PREFIX)
        kind = classify(rel) if path.startswith(LEDGER_PREFIX) else None
        if status != "A" or kind is None:  # the config, or a ledger file changed by hand
            verb = {"A": "add", "D": "remove"}.get(status, "change")
            lines.append(f"{verb} {path}")
            continue
        try:
            data = (root / rel).read_bytes()
            if kind == "record":
                r = parse_record(data, path)
                lines.append(f"record {r.image} {r.version} ({r.digest[:19]}…)")
                continue
            fact = parse_fact(data, path)
        except (LedgerError, OSError):
            lines.append(f"add {path}")
            continue
        build = project.ledger.get(fact.image, fact.record)
        name = f"{fact.image} {build.version if build else fact.record[:19] + '…'}"
        if fact.kind == "tag":
            lines.append(f"tag {name} {fact.tag}")
        elif fact.kind in ENV_KINDS:
            lines.append(f"{fact.kind} {name} in {fact.env}")
        else:
            lines.append(f"{fact.kind} {name} to {fact.repository}")
    return lines


def commit_ledger(project: Project, message: str | None, push: bool, remote: str | None) -> CommitResult:
    """Commit `.imgtrack/` alone; with `push`, land the branch on the remote (rebasing as needed)."""
    repo = project.repo
    if push:
        branch = repo.current_branch()
        if branch is None:
            raise GitStateError(
                "HEAD is detached, so there is no branch to push; check out the branch the ledger "
                "belongs to (git switch BRANCH) first"
            )
    # Only what this commit would change is read: the files git lists under .imgtrack/ (a malformed or
    # schema-1 ledger is refused, in one line, before anything is staged).
    listed = repo.changes_under(CONFIG_DIR)
    changed = [path for _, path in listed]
    project.ledger.check_files(p.removeprefix(LEDGER_PREFIX) for p in changed if p.startswith(LEDGER_PREFIX))
    # Records and facts no commit holds yet go into segments of their buckets (docs/ledger.md, "Segments"):
    # described first, from their own files, then packed; a file git tracks never moves.
    loose = [
        path
        for status, path in listed
        if status == "??"
        and path.startswith(LEDGER_PREFIX)
        and classify(path.removeprefix(LEDGER_PREFIX)) in ("record", "fact")
    ]
    described = describe_changes(project, [("A", path) for path in loose])
    packed = project.ledger.pack(p.removeprefix(LEDGER_PREFIX) for p in loose)
    moved = {LEDGER_PREFIX + rel for rel in (*packed.written, *packed.removed)}
    gone = set(loose) | moved
    changed = [p for p in changed if p not in gone] + sorted(moved)
    repo.stage_exactly(changed)
    staged = repo.staged_changes()
    changes = [(status, path) for status, path in staged if path.startswith(f"{CONFIG_DIR}/")]
    others = len(changes) < len(staged)  # files staged outside .imgtrack/ stay staged, uncommitted
    result = CommitResult(commit=None)
    if changes:
        rest = [(status, path) for status, path in changes if path not in moved]
        result.summary = described + describe_changes(project, rest)
        subject = message or "imgtrack: " + "; ".join(result.summary)
        if len(subject) > 72 and not message:
            subject = f"imgtrack: {len(result.summary)} ledger changes ({result.summary[0]}, …)"
        # A commit lists what it does, up to a bound: git reads the whole message whenever it reads the
        # commit (a million-record message made every `git rev-parse HEAD^{commit}` take 0.25 s).
        said = [f"* {line}" for line in result.summary[:MESSAGE_LINES]]
        if len(result.summary) > MESSAGE_LINES:
            said.append(f"* … and {len(result.summary) - MESSAGE_LINES} more (imgtrack log)")
        body = "\n".join(said)
        result.commit = repo.commit_index(f"{subject}\n\n{body}\n", only=CONFIG_DIR if others else None)
    if push:
        result.pushed_to, result.attempts = _push(project, remote)
    return result


def _push(project: Project, remote: str | None) -> tuple[str, int]:
    repo = project.repo
    branch = repo.current_branch()
    assert branch is not None
    upstream = repo.upstream()
    if remote is None:
        remote, target = upstream if upstream else ("origin", branch)
    else:
        target = upstream[1] if upstream and upstream[0] == remote else branch
    why = ""
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        pushed, why = repo.push_head(remote, target)
        if pushed:
            return f"{remote} {target}", attempt
        if not _behind(why):
            lines = why.splitlines()
            line = (
                next(
                    (ln for ln in lines if ln.startswith(("!", "fatal:", "error:", "remote:"))),
                    lines[-1] if lines else "no reason given",
                )
                .replace("\t", " ")
                .strip()
            )
            if "hook" in why:
                refusal = [ln for ln in why.splitlines() if ln.startswith("imgtrack:")] or [line]
                raise PolicyViolation(
                    f"git push to {remote} {target} was refused by a hook: {refusal[0].removeprefix('imgtrack: ')}"
                )
            raise RegistryError(
                f"git push to {remote} {target} failed: {line}; check the remote and your access, "
                "then run `imgtrack ledger commit --push` again"
            )
        theirs = repo.fetch_branch(remote, target)
        if theirs is None:
            raise RegistryError(
                f"git fetch of {target} from {remote} failed after the push was refused; check the "
                "remote, then run `imgtrack ledger commit --push` again"
            )
        outside = sorted(p for p in repo.paths_changed_by(theirs) if not p.startswith(f"{CONFIG_DIR}/"))
        if outside:
            raise PolicyViolation(
                f"{branch} has commits {remote}/{target} lacks that change files outside {CONFIG_DIR}/ "
                f"({', '.join(outside[:3])}{', …' if len(outside) > 3 else ''}); imgtrack rebases only ledger "
                "commits: rebase these yourself (git pull --rebase), then push"
            )
        if not repo.rebase_onto(theirs):
            raise PolicyViolation(
                f"rebasing {branch} onto {remote}/{target} stopped on a conflict and was undone (a ledger file was "
                "changed on both sides, or local changes clash with the remote's); nothing was pushed"
            )
        time.sleep(BACKOFF_S * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
    raise RegistryError(
        f"{remote} {target} kept moving: {PUSH_ATTEMPTS} pushes were refused; run `imgtrack ledger commit --push` again"
    )


def _behind(message: str) -> bool:
    """Whether git refused the push because the remote branch has commits we lack."""
    text = message.lower()
    if "[rejected]" in text and any(s in text for s in ("non-fast-forward", "fetch first", "stale info")):
        return True
    # Another push updated the branch at the same moment: the remote could not take the ref's lock.
    return "[remote rejected]" in text and any(
        s in text for s in ("cannot lock ref", "failed to update ref", "incorrect old value")
    )
