"""Every git call imgtrack makes, through the `git` program.

GitPython is not used: every operation imgtrack needs is one `git` subprocess either way, and its
import alone costs about 40 ms of the 300 ms that `record`, `show` and the pre-push hook may take.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from imgtrack.errors import GitError, GitStateError, InvalidReference, NotAGitRepository, UsageError


@dataclass(frozen=True)
class Described:
    """The nearest version tag reachable from a commit, as `git describe` finds it."""

    tag: str
    distance: int


_OID_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def run_git(
    args: list[str], cwd: Path, stdin: str | None = None, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            text=True,
            env=_git_env(env),
        )
    except FileNotFoundError:
        raise GitStateError("git is not installed or not on PATH; install git") from None
    return _checked(args, proc, check)


def _git_env(env: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", **(env or {})}


def _checked(args: list[str], proc: subprocess.CompletedProcess[str], check: bool) -> subprocess.CompletedProcess[str]:
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args[:3])} failed: {git_said(proc)}; fix what git names, then run again")
    return proc


def glob_escape(text: str) -> str:
    """`text` matched literally by git's wildcard patterns."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def git_said(proc: subprocess.CompletedProcess[str]) -> str:
    """The line of git's stderr that names the problem: its `fatal:` or `error:` line, else the last one."""
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    named = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (named or lines or [f"exit {proc.returncode}"])[0 if named else -1][:300]


class GitRepo:
    """A git work tree, the project whose ledger imgtrack keeps."""

    def __init__(self, path: str | os.PathLike[str] = ".") -> None:
        start = Path(path).resolve()
        proc = run_git(
            [
                "rev-parse",
                "--is-bare-repository",
                "--show-toplevel",
                "--absolute-git-dir",
                "--git-common-dir",
                "HEAD^{commit}",
            ],  # the commit too, in the same process: fails alone in a repository without one
            cwd=start if start.is_dir() else start.parent,
            check=False,
        )
        lines = proc.stdout.splitlines()
        if proc.returncode != 0 and not (len(lines) == 5 and lines[4] == "HEAD^{commit}"):
            raise NotAGitRepository.from_path(str(start))
        self._head = lines[4] if proc.returncode == 0 and len(lines) == 5 else None
        if lines[0] == "true" or len(lines) < 4:
            raise NotAGitRepository(f"{start} is a bare repository or a git dir; run imgtrack from a work tree")
        self._started: dict[tuple[str, ...], subprocess.Popen[str]] = {}
        self.work_tree = Path(lines[1])
        self.git_dir = Path(lines[2])
        common = Path(lines[3])
        # The git dir shared by all worktrees (hooks live here).
        self.common_dir = common if common.is_absolute() else (start / common).resolve()

    @classmethod
    def bare(cls, path: str | os.PathLike[str]) -> GitRepo:
        """A bare repository (a git server's), for the server-side hook: git runs in its git dir, and
        `work_tree` names that folder, since there is no other."""
        start = Path(path).resolve()
        proc = run_git(["rev-parse", "--is-bare-repository", "--absolute-git-dir"], start, check=False)
        lines = proc.stdout.splitlines()
        if proc.returncode != 0 or len(lines) != 2:
            raise NotAGitRepository(f"{start} is not a git repository; run this in a bare repository on the server")
        if lines[0] != "true":
            raise UsageError(
                f"{start} is a work tree, not a bare repository; the server hook is for a git server's repository "
                "(run `imgtrack hooks install` here for the pre-push hook)"
            )
        repo = cls.__new__(cls)
        repo.work_tree = repo.git_dir = repo.common_dir = Path(lines[1])
        repo._head = None
        repo._started = {}
        return repo

    # --- git processes started early ---------------------------------------------------------------
    # A command that will ask git several things it can know in advance (record: is the tree dirty, the
    # release tags, the committer) starts them at once: they run on another core while it reads the
    # image and the ledger, and the first question asked waits for its answer instead of starting git.

    def prefetch_dirty(self, paths: Iterable[str] = ()) -> None:
        self._start(self._dirty_args(".imgtrack", paths))

    def prefetch_tags(self, prefix: str) -> None:
        self._start(self._tags_args(prefix))

    def prefetch_identity(self) -> None:
        self._start(("var", "GIT_COMMITTER_IDENT"))

    def _start(self, args: tuple[str, ...]) -> None:
        if args in self._started:
            return
        try:
            self._started[args] = subprocess.Popen(
                ["git", *args],
                cwd=self.work_tree,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=_git_env(),
            )
        except OSError:
            pass  # asked later, the same git runs in the foreground and says what is wrong

    def drop_prefetched(self) -> None:
        """Wait for whatever was started and not asked for (a command that stopped early)."""
        for proc in self._started.values():
            proc.communicate()
        self._started.clear()

    def _git(
        self, args: tuple[str, ...], stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        started = self._started.pop(args, None) if stdin is None else None
        if started is None:
            return run_git(list(args), self.work_tree, stdin=stdin, check=check)
        out, err = started.communicate()
        return _checked(list(args), subprocess.CompletedProcess(["git", *args], started.returncode, out, err), check)

    def _run(self, *args: str, stdin: str | None = None) -> str:
        return self._git(args, stdin=stdin).stdout.rstrip("\n")

    def _diff_trees(self, *args: str) -> str:
        """`git diff-tree ARGS` without reading git's index, which it reads for nothing when comparing two
        trees: at 100,000 ledger files that read is 17 of its 24 ms. The index named is never created."""
        return run_git(
            ["diff-tree", *args], self.work_tree, env={"GIT_INDEX_FILE": str(self.git_dir / "imgtrack" / "no-index")}
        ).stdout.rstrip("\n")

    def _try(self, *args: str) -> str | None:
        proc = self._git(args, check=False)
        return proc.stdout.rstrip("\n") if proc.returncode == 0 else None

    def head_commit(self) -> str:
        """The commit HEAD names; refuses a repository without commits."""
        sha = self._head or self._try("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
        if not sha:
            raise GitStateError(
                f"{self.work_tree} has no commits yet; commit your sources first (git commit), then record the build"
            )
        return sha

    def resolve_commit(self, rev: str) -> str:
        """The full SHA of the commit `rev` names."""
        if rev.startswith("-"):
            raise InvalidReference(f"--commit {rev!r} is not a revision; pass a commit SHA, tag or branch")
        sha = self._try("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
        if not sha:
            self.head_commit()
            raise InvalidReference(
                f"--commit {rev!r} names no commit in {self.work_tree}; check the revision (git log)"
            )
        return sha

    def is_shallow(self) -> bool:
        return (self.common_dir / "shallow").exists()

    def is_dirty(self, ignore: str = ".imgtrack", paths: Iterable[str] = ()) -> bool:
        """Tracked changes (staged or not) outside `ignore`, under `paths` (none: anywhere); untracked files
        do not count, as in `git describe --dirty`."""
        return bool(self._run(*self._dirty_args(ignore, paths)).strip())

    @staticmethod
    def _dirty_args(ignore: str, paths: Iterable[str]) -> tuple[str, ...]:
        # --no-optional-locks: status does not rewrite git's index (1.3 MB every 10,000 ledger files) to
        # remember fresher stat data, which would also tell the ledger's cache that git moved.
        where = [f":(top,literal){p}" for p in paths] or ["."]
        return (
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            *where,
            f":(exclude){ignore}",
        )

    def files_containing(self, texts: tuple[str, ...], base: str, sub: str | None = None) -> list[str] | None:
        """Files under `base` (or its folder `sub`) whose work-tree bytes hold one of `texts`, relative to `base`:
        tracked, untracked and ignored alike, so nothing the ledger holds is missed; None when git cannot say."""
        under = f"{base}/{sub}" if sub else base
        proc = run_git(
            # -F, -l and --full-name override whatever grep.* configuration says; --untracked with
            # --no-exclude-standard searches every file under the path.
            ["grep", "-z", "-l", "-F", "--full-name", "--untracked", "--no-exclude-standard"]
            + [arg for text in texts for arg in ("-e", text)]
            + ["--"]
            + [f":(top,literal){under}"],
            self.work_tree,
            check=False,
        )
        if proc.returncode == 1:
            return []
        if proc.returncode != 0:
            return None
        return [p.removeprefix(f"{base}/") for p in proc.stdout.split("\0") if p.startswith(f"{under}/")]

    def describe(self, commit: str, match: str) -> Described | None:
        """The nearest tag matching the glob `match` reachable from `commit`, or None."""
        out = self._try("describe", "--tags", "--long", f"--match={match}", commit)
        if out is None:
            return None
        rest, _, _sha = out.rpartition("-g")
        tag, _, distance = rest.rpartition("-")
        return Described(tag=tag, distance=int(distance))

    def count_commits(self, commit: str, since: str | None = None, paths: Iterable[str] = ()) -> int:
        """Commits reachable from `commit` (and not from `since`), only those touching `paths` if given."""
        revs = [commit] if since is None else [f"{since}..{commit}"]
        where = [f":(top,literal){p}" for p in paths]
        return int(self._run("rev-list", "--count", *revs, *(["--", *where] if where else [])))

    def tags_pointing_at(self, commit: str) -> list[str]:
        return [line for line in self._run("tag", "--points-at", commit).splitlines() if line]

    def tag_commits(self, prefix: str) -> dict[str, str]:
        """Every tag whose name starts with `prefix`, mapped to the commit it names (annotated tags peeled)."""
        out = self._run(*self._tags_args(prefix))
        result: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].startswith(prefix):
                result[parts[0]] = parts[2] if len(parts) == 3 else parts[1]
        return result

    @staticmethod
    def _tags_args(prefix: str) -> tuple[str, ...]:
        return (
            "for-each-ref",
            "--format=%(refname:strip=2) %(objectname) %(*objectname)",
            f"refs/tags/{glob_escape(prefix)}*",
        )

    def identity(self) -> str:
        """`Name <email>` as git would put it on a commit (`git var GIT_COMMITTER_IDENT`)."""
        ident = self._try("var", "GIT_COMMITTER_IDENT")
        if not ident:
            return "unknown"
        # "Name <email> 1700000000 +0000": drop the timestamp.
        return ident.rsplit(" ", 2)[0]

    def missing_commits(self, commits: Iterable[str]) -> set[str]:
        """The subset of `commits` this repository does not hold as commit objects (one git process)."""
        wanted = sorted(set(commits))
        if not wanted:
            return set()
        out = self._run("cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(wanted) + "\n")
        present = {
            parts[0]
            for parts in (line.split() for line in out.splitlines())
            if len(parts) == 2 and parts[1] == "commit"
        }
        return set(wanted) - present

    def hooks_dir(self) -> Path:
        """Where git runs hooks from: core.hooksPath if set, else the common git dir's hooks/."""
        path = Path(self._run("rev-parse", "--git-path", "hooks"))
        return path if path.is_absolute() else (self.work_tree / path)

    def peel_commit(self, oid: str) -> str | None:
        """The commit an object (commit or annotated tag) names, or None."""
        return self._try("rev-parse", "--verify", "--quiet", f"{oid}^{{commit}}")

    def peel_commits(self, first: str, second: str | None) -> tuple[str | None, str | None]:
        """`peel_commit` of two objects in one git process (the second may be None)."""
        wanted = [first] if second is None else [first, second]
        proc = None
        if all(_OID_RE.fullmatch(o) for o in wanted):  # git's own object ids: nothing an option could hide in
            proc = run_git(["rev-parse", *(f"{o}^{{commit}}" for o in wanted)], self.work_tree, check=False)
        if proc is not None and proc.returncode == 0 and len(proc.stdout.split()) == len(wanted):
            out = proc.stdout.split()
            return out[0], (out[1] if second is not None else None)
        return self.peel_commit(first), (self.peel_commit(second) if second is not None else None)

    def start_dropped_commits(self, old: str, new: str) -> Callable[[], list[str]]:
        """Start listing the commits `old` reaches and `new` does not (what moving a ref from `old` to
        `new` drops: nothing for a fast-forward); the returned call waits for the list. Started early, it
        runs beside the caller's other git processes and adds no wall time to a clean push."""
        if not (_OID_RE.fullmatch(old) and _OID_RE.fullmatch(new)):
            raise GitError(f"git rev-list: {old!r} or {new!r} is not an object id")
        proc = subprocess.Popen(
            ["git", "rev-list", old, "--not", new],
            cwd=self.work_tree,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"},
        )

        def wait() -> list[str]:
            out, _ = proc.communicate()
            return out.split() if proc.returncode == 0 else []

        return wait

    def paths_in_tree(self, tree_ish: str, paths: Iterable[str]) -> set[str]:
        """Which of `paths` exist in `tree_ish`."""
        wanted = list(paths)
        if not wanted:
            return set()
        return set(self._run("ls-tree", "-r", "--name-only", "--full-tree", tree_ish, "--", *wanted).splitlines())

    def log_between(self, old: str, new: str, paths: Iterable[str] = ()) -> list[tuple[str, str, str, str]]:
        """(sha, author date, author, subject) of the commits `new` reaches and `old` does not, newest
        first; only those touching `paths` when given (paths relative to the work tree's top)."""
        for oid in (old, new):
            if not _OID_RE.fullmatch(oid):
                raise GitError(f"git log: {oid!r} is not an object id")
        pathspec = [f":(top,literal){p}" for p in paths]
        out = self._run("log", "--format=%H%x1f%aI%x1f%an%x1f%s", f"{old}..{new}", "--", *pathspec)
        return [tuple(line.split("\x1f", 3)) for line in out.splitlines() if line.count("\x1f") == 3]  # type: ignore[misc]

    def ahead_behind(self, old: str, new: str) -> tuple[int, int] | None:
        """(commits `old` has that `new` lacks, commits `new` has that `old` lacks) in one git call; None
        when either commit is not in the repository (a build from a history this clone lacks)."""
        for oid in (old, new):
            if not _OID_RE.fullmatch(oid):
                raise GitError(f"git rev-list: {oid!r} is not an object id")
        proc = run_git(["rev-list", "--count", "--left-right", f"{old}...{new}"], self.work_tree, check=False)
        counts = proc.stdout.split()
        if proc.returncode != 0 or len(counts) != 2 or not all(c.isdigit() for c in counts):
            return None
        return int(counts[0]), int(counts[1])

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return (
            run_git(["merge-base", "--is-ancestor", ancestor, descendant], self.work_tree, check=False).returncode == 0
        )

    def changed_blobs(self, revs: list[str], pathspec: str) -> dict[str, str]:
        """Files under `pathspec` that `revs` leave added or modified, mapped to their blob ids.

        Two revs (`[old, new]`) diff the two trees once (the net change); otherwise `git log` walks the
        commits `revs` select, newest first, and the newest change of a path decides (a deletion drops it).
        Blob ids let the contents be read without walking a large ledger tree again.
        """
        if len(revs) == 2 and not any(r.startswith("-") for r in revs):
            out = self._diff_trees("-r", "--raw", "--no-renames", "--diff-filter=AMD", *revs, "--", pathspec)
        else:
            out = self._run("log", "--format=", "--raw", "--no-renames", "--diff-filter=AMD", *revs, "--", pathspec)
        newest: dict[str, str | None] = {}
        for line in out.splitlines():
            meta, _, path = line.partition("\t")
            fields = meta.split()
            if len(fields) == 5 and path not in newest:
                newest[path] = None if fields[4] == "D" else fields[3]
        return {path: blob for path, blob in sorted(newest.items()) if blob is not None}

    def read_blobs(self, oids: Iterable[str]) -> dict[str, bytes]:
        """Blob contents by id, in one `git cat-file --batch` process."""
        wanted = list(dict.fromkeys(oids))
        if not wanted:
            return {}
        proc = subprocess.run(
            ["git", "cat-file", "--batch"],
            cwd=self.work_tree,
            input="\n".join(wanted).encode() + b"\n",
            capture_output=True,
            check=True,
        )
        out, pos, blobs = proc.stdout, 0, {}
        for oid in wanted:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if len(header) == 3:
                size = int(header[2])
                blobs[oid] = out[pos : pos + size]
                pos += size + 1
        return blobs

    # --- the ledger's view of git ----------------------------------------------------------------

    def tree_id(self, rev: str, path: str) -> str | None:
        """The id of the tree at `path` in `rev`, or None (no such commit, or no such path there)."""
        out = self._try("rev-parse", "--verify", "--quiet", f"{rev}:{path}")
        return out or None

    def tree_ids(self, rev: str, paths: tuple[str, str]) -> tuple[str | None, str | None]:
        """`tree_id` of two paths in one git process."""
        if not _OID_RE.fullmatch(rev):
            return self.tree_id(rev, paths[0]), self.tree_id(rev, paths[1])
        proc = run_git(["rev-parse", *(f"{rev}:{p}" for p in paths)], self.work_tree, check=False)
        found = proc.stdout.split()
        if proc.returncode == 0 and len(found) == 2:
            return found[0], found[1]
        return self.tree_id(rev, paths[0]), self.tree_id(rev, paths[1])

    def changed_paths(self, old_tree: str, new_tree: str) -> list[str]:
        """Paths (relative to the two trees) that were added, changed or removed between them."""
        out = self._diff_trees("-r", "--no-renames", "--name-only", "-z", old_tree, new_tree)
        return [p for p in out.split("\0") if p]

    # --- committing and pushing the ledger (`imgtrack ledger commit`) -----------------------------

    def changes_under(self, path: str) -> list[tuple[str, str]]:
        """(git's two status letters, path) of every file under `path` whose work-tree state differs from
        HEAD's or the index's (new, changed, removed, staged or not; `??` for a file git does not track;
        ignored files are left out, as `git add` leaves them), relative to the top."""
        out = run_git(
            ["--no-optional-locks", "status", "--porcelain", "-z", "--untracked-files=all", "--no-renames"]
            + ["--", f":(top,literal){path}"],
            self.work_tree,
        ).stdout
        return [(entry[:2], entry[3:]) for entry in out.split("\0") if len(entry) > 3]

    def stage_exactly(self, paths: Iterable[str]) -> None:
        """Stage `paths` as the work tree has them (a file gone is staged as removed), and nothing else:
        git reads and writes its index once, and looks at no other file."""
        listed = "".join(f"{p}\0" for p in paths)
        if not listed:
            return
        proc = run_git(
            ["update-index", "--add", "--remove", "-z", "--stdin"], self.work_tree, stdin=listed, check=False
        )
        if proc.returncode != 0:
            raise GitStateError(
                f"staging the ledger's changes failed: {git_said(proc)}; if another git command is running, wait "
                "for it and run the command again"
            )

    def staged_changes(self) -> list[tuple[str, str]]:
        """(status letter, path) of everything the index holds that HEAD does not."""
        head = self._try("rev-parse", "--verify", "--quiet", "HEAD")
        base = head if head else "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # the empty tree
        out = self._run("diff", "--cached", "--no-renames", "--name-status", "-z", base)
        fields = [f for f in out.split("\0") if f]
        return list(zip(fields[0::2], fields[1::2]))

    def commit_index(self, message: str, only: str | None = None) -> str:
        """Commit what the index holds, or with `only`, the changes under that path alone (other staged files
        stay staged: git builds a second index for it, which costs a read of every file's state); the new
        commit."""
        self._head = None  # HEAD moves
        args = ["commit", "-q", "-F", "-"] + (["--only", "--", only] if only else [])
        proc = run_git(args, self.work_tree, stdin=message, check=False)
        if proc.returncode != 0:
            why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise GitStateError(
                f"git commit failed: {why[-1] if why else proc.returncode}; fix that and run the command again"
            )
        return self._run("rev-parse", "HEAD")

    def current_branch(self) -> str | None:
        return self._try("symbolic-ref", "--quiet", "--short", "HEAD")

    def upstream(self) -> tuple[str, str] | None:
        """(remote, branch on it) of the current branch's upstream, or None."""
        branch = self.current_branch()
        if not branch:
            return None
        remote = self._try("config", "--get", f"branch.{branch}.remote")
        merge = self._try("config", "--get", f"branch.{branch}.merge")
        if not remote or not merge or remote == ".":
            return None
        return remote, merge.removeprefix("refs/heads/")

    def push_head(self, remote: str, branch: str) -> tuple[bool, str]:
        """`git push REMOTE HEAD:refs/heads/BRANCH`: (pushed, git's message)."""
        proc = run_git(["push", "--porcelain", remote, f"HEAD:refs/heads/{branch}"], self.work_tree, check=False)
        return proc.returncode == 0, (proc.stderr + proc.stdout).strip()

    def fetch_branch(self, remote: str, branch: str) -> str | None:
        """Fetch BRANCH from REMOTE; the commit it names there, or None if it does not exist."""
        proc = run_git(["fetch", "--quiet", "--no-tags", remote, f"refs/heads/{branch}"], self.work_tree, check=False)
        if proc.returncode != 0:
            return None
        return self._try("rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}")

    def paths_changed_by(self, upstream: str, head: str = "HEAD") -> set[str]:
        """Every path a commit in `upstream..head` changes."""
        out = self._run("log", "--format=", "--name-only", "--no-renames", "-z", f"{upstream}..{head}")
        return {p.strip("\n") for p in out.split("\0") if p.strip("\n")}

    def rebase_onto(self, upstream: str) -> bool:
        """Rebase the current branch onto `upstream` (local changes stashed around it); False, and the
        rebase undone, if it stopped on a conflict."""
        self._head = None  # HEAD moves
        proc = run_git(["-c", "rebase.autoStash=true", "rebase", "--quiet", upstream], self.work_tree, check=False)
        if proc.returncode == 0:
            return True
        run_git(["rebase", "--abort"], self.work_tree, check=False)
        return False
