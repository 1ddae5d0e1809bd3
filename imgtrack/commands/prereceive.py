"""`imgtrack hook pre-receive`: the server side of the pre-push hook, for a bare repository.

`git push --no-verify` skips a client's hook; a server's pre-receive hook cannot be skipped. git runs it
in the bare repository with `<old> <new> <ref>` lines on stdin, before any ref moves, inside its
quarantine: the pushed objects are readable (GIT_QUARANTINE_PATH, GIT_OBJECT_DIRECTORY and
GIT_ALTERNATE_OBJECT_DIRECTORIES point git at them) but no ref may be written, and they are thrown away
if the hook refuses.

A bare repository has no work tree, and the pre-push checks read the ledger through its cache. So the
hook keeps a mirror of `.imgtrack/` as files under `<git-dir>/imgtrack/mirror/`, brought to the tree a
check needs by applying `git diff-tree` between the tree it holds and that one (a push adding one record
writes one file), and the same cache as a clone's beside it. The checks are then exactly the pre-push
checks, on the ledger as each pushed branch would be. Only files the ledger can hold are mirrored
(names checked like the ledger's own), never a symlink, and never a path that leaves the mirror.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imgtrack.commands.prepush import ZERO, PushedRef, check_push
from imgtrack.config import CONFIG_DIR, CONFIG_FILE, LEDGER_DIR, load_config
from imgtrack.errors import GitError
from imgtrack.fsutil import write_atomic
from imgtrack.gitrepo import GitRepo
from imgtrack.ledger.index import GitView
from imgtrack.ledger.ledger import Ledger
from imgtrack.ledger.segment import MAX_SEGMENT_BYTES
from imgtrack.ledger.store import classify
from imgtrack.project import Project

MAX_MIRRORED_BYTES = 1024 * 1024  # a ledger file or config is a few KB; a bigger blob is not mirrored
_FILE_MODES = {"100644", "100755"}


@dataclass(frozen=True)
class RefUpdate:
    old: str
    new: str
    ref: str

    @property
    def deleting(self) -> bool:
        return set(self.new) == {"0"}

    def as_pushed(self) -> PushedRef:
        return PushedRef(local_ref=self.ref, local_oid=self.new, remote_ref=self.ref, remote_oid=self.old)


def parse_receive_lines(text: str) -> list[RefUpdate]:
    """git's pre-receive stdin: `<old-oid> <new-oid> <ref-name>` a line."""
    updates = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and all(len(p) in (40, 64) and p.isalnum() for p in parts[:2]):
            updates.append(RefUpdate(*parts))
    return updates


def pre_receive_problems(git_dir: Path, stdin_text: str) -> list[str]:
    """Every reason to refuse this push, one line each; empty when it may land."""
    updates = parse_receive_lines(stdin_text)
    if not updates:
        return []
    repo = GitRepo.bare(git_dir)
    mirror = Mirror(repo)
    problems: list[str] = []
    branches = [u for u in updates if not u.ref.startswith("refs/tags/") and not u.deleting]
    tags = [u for u in updates if u.ref.startswith("refs/tags/")]
    with mirror.locked():
        before = mirror.held()
        for update in branches:
            project = mirror.project_at(update.new)
            if project is not None:
                problems += check_push(project, "", [update.as_pushed()], known=("--all",))
        if tags:
            # A release tag is judged by the ledger of the default branch, as it will be after this push.
            head = _default_branch(repo)
            moved = {u.ref: u.new for u in updates}
            base = moved.get(head, None) if head else None
            base = base or (repo.peel_commit(head) if head else None)
            project = mirror.project_at(base) if base and base != ZERO else None
            if project is not None:
                problems += check_push(project, "", [u.as_pushed() for u in tags], known=("--all",))
        if problems:
            mirror.restore(before)
    return list(dict.fromkeys(problems))


def _default_branch(repo: GitRepo) -> str | None:
    """The branch HEAD names; if it has no commit yet, the only branch there is (a bare repository made
    with another default branch name than its clones push)."""
    from imgtrack.gitrepo import run_git

    proc = run_git(["symbolic-ref", "--quiet", "HEAD"], repo.work_tree, check=False)
    head = proc.stdout.strip() if proc.returncode == 0 else ""
    if head and repo.peel_commit(head):
        return head
    branches = run_git(["for-each-ref", "--format=%(refname)", "refs/heads/"], repo.work_tree).stdout.split()
    return branches[0] if len(branches) == 1 else (head or None)


class Mirror:
    """`.imgtrack/` of one tree of a bare repository, as files, with the ledger's cache beside it."""

    def __init__(self, repo: GitRepo) -> None:
        self.repo = repo
        self.dir = repo.git_dir / "imgtrack"
        self.root = self.dir / "mirror"  # stands for a work tree: it holds .imgtrack/
        self.state = self.dir / "mirror-state"  # "<.imgtrack tree> <ledger tree>", or "partial" mid-update
        self._last_diff: tuple[str, str, list[str]] | None = None  # (old, new ledger tree, paths changed)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One hook at a time updates and reads the mirror (two pushes may arrive together)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "mirror.lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _held(self) -> tuple[str, str] | None:
        try:
            parts = self.state.read_text().split()
        except FileNotFoundError:
            return None
        return (parts[0], parts[1] if len(parts) > 1 else "") if parts and parts[0] != "partial" else None

    def sync(self, commit: str) -> bool:
        """Make the mirror hold `commit`'s `.imgtrack/`; False when that commit has none."""
        want, ledger_tree = self.repo.tree_ids(commit, (CONFIG_DIR, f"{CONFIG_DIR}/{LEDGER_DIR}"))
        if want is None:
            return False
        self.sync_tree(want, ledger_tree or "")
        return True

    def held(self) -> tuple[str, str] | None:
        """(the `.imgtrack` tree, the ledger tree) the mirror holds, or None (empty, or cut short)."""
        return self._held()

    def sync_tree(self, want: str, ledger_tree: str) -> None:
        held = self._held()
        if held is not None and held[0] == want:
            return
        write_atomic(self.state, b"partial\n")  # a crash from here on makes the next sync start afresh
        changes = None
        if held is not None:
            try:
                changes = self._entries("diff-tree", "-r", "-z", "--no-renames", held[0], want)
            except GitError:  # the tree it held is gone (a push git refused after this hook let it pass)
                changes = None
        if changes is None:
            shutil.rmtree(self.root, ignore_errors=True)
            changes = self._entries("ls-tree", "-r", "-z", want)
        wanted = [(oid, path) for mode, oid, path in changes if mode in _FILE_MODES and _mirrored(path)]
        blobs = self.repo.read_blobs(oid for oid, _ in wanted)
        base = self.root / CONFIG_DIR
        for mode, _, path in changes:
            if _mirrored(path) and mode not in _FILE_MODES:  # deleted, or no longer a plain file
                _remove(base, path)
        for oid, path in wanted:
            data = blobs.get(oid)
            limit = MAX_SEGMENT_BYTES if path.endswith(".seg") else MAX_MIRRORED_BYTES
            if data is None or len(data) > limit:
                _remove(base, path)
                continue
            target = base / path
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.mirror")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        write_atomic(self.state, f"{want} {ledger_tree}\n".encode())
        if held is not None:  # what the cache would ask git next: these very paths
            prefix = f"{LEDGER_DIR}/"
            self._last_diff = (
                held[1],
                ledger_tree,
                [p.removeprefix(prefix) for _, _, p in changes if p.startswith(prefix)],
            )

    def _entries(self, *args: str) -> list[tuple[str, str, str]]:
        """(new mode, new blob id, path) from `git ls-tree -z` or `git diff-tree -z --raw`; a deletion
        has mode 000000."""
        from imgtrack.gitrepo import run_git

        out = run_git(list(args), self.repo.work_tree).stdout
        items = out.split("\0")
        found: list[tuple[str, str, str]] = []
        if args[0] == "ls-tree":
            for item in items:
                meta, _, path = item.partition("\t")
                fields = meta.split()
                if len(fields) == 3:
                    found.append((fields[0], fields[2], path))
            return found
        i = 0
        while i + 1 < len(items):
            fields = items[i].split()
            if len(fields) == 5 and fields[0].startswith(":"):
                found.append((fields[1], fields[3], items[i + 1]))
                i += 2
            else:
                i += 1
        return found

    def project_at(self, commit: str) -> Project | None:
        """The project as `commit` has it (config and ledger), or None when it does not use imgtrack."""
        if not self.sync(commit) or not (self.root / CONFIG_DIR / CONFIG_FILE).is_file():
            return None
        return self._project()

    def _project(self) -> Project:
        held = self._held()
        ledger_tree = held[1] if held else ""
        view = GitView(index_file=self.state, head_tree=lambda: ledger_tree or None, changed=self._changed)
        config = load_config(self.root)
        ledger = Ledger(self.root / CONFIG_DIR / LEDGER_DIR, self.dir, view)
        return Project(repo=self.repo, config=config, ledger=ledger, config_file=Path(CONFIG_DIR) / CONFIG_FILE)

    def _changed(self, old_tree: str, new_tree: str) -> list[str]:
        """What the cache re-reads between two ledger trees; every file, if the old tree is gone."""
        if self._last_diff is not None and self._last_diff[:2] == (old_tree, new_tree):
            return self._last_diff[2]
        try:
            return self.repo.changed_paths(old_tree, new_tree)
        except GitError:
            base = self.root / CONFIG_DIR / LEDGER_DIR
            return [p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()]

    def restore(self, held: tuple[str, str] | None) -> None:
        """Put back the tree held before a refused push, while its objects are still readable (git drops
        a refused push's objects with its quarantine), and bring the cache back with it."""
        if held is None or self._held() == held:
            return
        self.sync_tree(*held)
        if (self.root / CONFIG_DIR / CONFIG_FILE).is_file():
            self._project().ledger.index()


def _mirrored(path: str) -> bool:
    """A path (relative to `.imgtrack/`) the mirror holds: the config, and names the ledger can hold."""
    if path == CONFIG_FILE:
        return True
    if not path.startswith(f"{LEDGER_DIR}/"):
        return False
    rel = path[len(LEDGER_DIR) + 1 :]
    return classify(rel) is not None and all(part not in ("", ".", "..") for part in rel.split("/"))


def _remove(base: Path, path: str) -> None:
    target = base / path
    target.unlink(missing_ok=True)
    parent = target.parent
    while parent != base and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def prime_mirror(repo: GitRepo) -> None:
    """Build the mirror and its cache for the default branch now (`hooks install --server`), so that the
    first push does not pay for a whole ledger."""
    head = _default_branch(repo)
    tip = repo.peel_commit(head) if head else None
    if tip is None:
        return
    mirror = Mirror(repo)
    with mirror.locked():
        project = mirror.project_at(tip)
        if project is not None:
            project.ledger.index()
