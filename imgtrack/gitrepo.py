"""Every git call imgtrack makes. The only module that imports GitPython."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import git

from imgtrack.errors import GitStateError, InvalidReference, NotAGitRepository


@dataclass(frozen=True)
class Described:
    """The nearest version tag reachable from a commit, as `git describe` finds it."""

    tag: str
    distance: int


class GitRepo:
    """A git work tree, the project whose ledger imgtrack keeps."""

    def __init__(self, path: str | os.PathLike[str] = ".") -> None:
        try:
            self._repo = git.Repo(path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise NotAGitRepository.from_path(str(Path(path).resolve())) from exc
        if self._repo.bare or self._repo.working_tree_dir is None:
            raise NotAGitRepository(
                f"{Path(path).resolve()} is a bare repository; run imgtrack from a clone with a work tree"
            )
        self._git = self._repo.git

    @property
    def work_tree(self) -> Path:
        assert self._repo.working_tree_dir is not None
        return Path(self._repo.working_tree_dir)

    @property
    def git_dir(self) -> Path:
        return Path(self._repo.git_dir)

    @property
    def common_dir(self) -> Path:
        """The git dir shared by all worktrees (hooks and caches live here)."""
        return Path(self._repo.common_dir)

    def _run(self, *args: str) -> str:
        return str(self._git.execute(["git", *args]))

    def _try(self, *args: str) -> str | None:
        try:
            return str(self._git.execute(["git", *args]))
        except git.GitCommandError:
            return None

    def head_commit(self) -> str:
        """The commit HEAD names; refuses a repository without commits."""
        sha = self._try("rev-parse", "--verify", "--quiet", "HEAD^{commit}")
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
            raise InvalidReference(f"--commit {rev!r} names no commit in {self.work_tree}; check the revision (git log)")
        return sha

    def is_shallow(self) -> bool:
        return (self.common_dir / "shallow").exists()

    def is_dirty(self, ignore: str = ".imgtrack") -> bool:
        """Tracked changes (staged or not) outside `ignore`; untracked files do not count, as in `git describe --dirty`."""
        out = self._run(
            "-C", str(self.work_tree), "status", "--porcelain", "--untracked-files=no", "--",
            ".", f":(exclude){ignore}",
        )
        return bool(out.strip())

    def describe(self, commit: str, match: str) -> Described | None:
        """The nearest tag matching the glob `match` reachable from `commit`, or None."""
        out = self._try("describe", "--tags", "--long", f"--match={match}", commit)
        if out is None:
            return None
        tag, _, distance = out.rpartition("-")
        # --abbrev=0 with --long still prints "-N-g"; be tolerant of both forms.
        if distance.startswith("g"):
            tag, _, distance = tag.rpartition("-")
        return Described(tag=tag, distance=int(distance))

    def count_commits(self, commit: str) -> int:
        return int(self._run("rev-list", "--count", commit))

    def tags_pointing_at(self, commit: str) -> list[str]:
        out = self._run("tag", "--points-at", commit)
        return [line for line in out.splitlines() if line]

    def tag_commits(self, prefix: str) -> dict[str, str]:
        """Every tag whose name starts with `prefix`, mapped to the commit it names (annotated tags peeled)."""
        out = self._run(
            "for-each-ref", "--format=%(refname:strip=2) %(objectname) %(*objectname)", f"refs/tags/{prefix}*"
        )
        result: dict[str, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                result[parts[0]] = parts[2] if len(parts) == 3 else parts[1]
        return result

    def identity(self) -> str:
        """`Name <email>` from git config, as commits would carry it."""
        reader = self._repo.config_reader()
        name = str(reader.get_value("user", "name", "")) or os.environ.get("GIT_COMMITTER_NAME", "")
        email = str(reader.get_value("user", "email", "")) or os.environ.get("GIT_COMMITTER_EMAIL", "")
        name = os.environ.get("GIT_COMMITTER_NAME", name)
        email = os.environ.get("GIT_COMMITTER_EMAIL", email)
        if not name and not email:
            return "unknown"
        return f"{name} <{email}>".strip()

    def missing_commits(self, commits: Iterable[str]) -> set[str]:
        """The subset of `commits` this repository does not hold as commit objects (one git process)."""
        wanted = sorted(set(commits))
        if not wanted:
            return set()
        proc = subprocess.run(
            ["git", "cat-file", "--batch-check=%(objectname) %(objecttype)"],
            cwd=self.work_tree,
            input="\n".join(wanted) + "\n",
            capture_output=True,
            text=True,
            check=True,
        )
        present = {
            parts[0] for parts in (line.split() for line in proc.stdout.splitlines())
            if len(parts) == 2 and parts[1] == "commit"
        }
        return set(wanted) - present
