"""A project: the git work tree, its `.imgtrack/config.toml`, and its ledger."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgtrack.config import Config, config_path, ledger_root, load_config
from imgtrack.gitrepo import GitRepo
from imgtrack.ledger.index import GitView
from imgtrack.ledger.ledger import Ledger


@dataclass
class Project:
    repo: GitRepo
    config: Config
    ledger: Ledger
    config_file: Path | None = None  # where the config was read, when not in the work tree (a server's mirror)

    @property
    def config_path(self) -> Path:
        return self.config_file or config_path(self.repo.work_tree)

    @classmethod
    def open(cls, path: str | Path = ".") -> Project:
        repo = GitRepo(path)
        config = load_config(repo.work_tree)
        return cls(repo=repo, config=config, ledger=open_ledger(repo))


def open_ledger(repo: GitRepo) -> Ledger:
    """The ledger of `repo`'s work tree; its cache lives in the (per-worktree) git dir."""
    root = ledger_root(repo.work_tree)
    rel = root.relative_to(repo.work_tree).as_posix()
    view = GitView(
        index_file=repo.git_dir / "index",
        head_tree=lambda: repo.tree_id("HEAD", rel),
        changed=repo.changed_paths,
        containing=lambda texts, image: repo.files_containing(texts, rel, image),
    )
    return Ledger(root, repo.git_dir / "imgtrack", view)
