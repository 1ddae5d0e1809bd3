"""`imgtrack init`: create `.imgtrack/config.toml` with commented defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imgtrack.config import DEFAULT_CONFIG_TEXT, config_path, ledger_root
from imgtrack.fsutil import write_atomic
from imgtrack.gitrepo import GitRepo


@dataclass(frozen=True)
class InitResult:
    config: Path
    created: bool


def init_project(path: Path, force: bool = False) -> InitResult:
    """Create the config and ledger folder in the git work tree around `path` (idempotent)."""
    repo = GitRepo(path)
    target = config_path(repo.work_tree)
    if target.exists() and not force:
        return InitResult(config=target, created=False)
    write_atomic(target, DEFAULT_CONFIG_TEXT.encode())
    ledger = ledger_root(repo.work_tree)
    ledger.mkdir(parents=True, exist_ok=True)
    keep = ledger / ".gitkeep"
    if not keep.exists():
        keep.write_bytes(b"")
    ignore = target.parent / ".gitignore"
    if not ignore.exists():
        # Temp files of an interrupted write are never part of the ledger.
        write_atomic(ignore, b"*.tmp\n")
    return InitResult(config=target, created=True)
