"""`imgtrack hooks install | uninstall | status`: manage the pre-push hook."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from imgtrack.errors import UsageError
from imgtrack.fsutil import write_atomic
from imgtrack.gitrepo import GitRepo

MARKER = "imgtrack-managed-hook: pre-push"
HOOK = "pre-push"
LEGACY = "pre-push.legacy"


@dataclass(frozen=True)
class HookStatus:
    path: Path
    installed: bool  # imgtrack's hook is in place
    foreign: bool  # another tool's hook is in place
    chained: bool  # a former hook is kept as pre-push.legacy and runs first
    message: str


def hook_script() -> str:
    """The hook shipped in the package, pointing at the Python that runs this imgtrack."""
    text = resources.files("imgtrack").joinpath("hooks", HOOK).read_text(encoding="utf-8")
    import imgtrack

    return text.replace("@PYTHON@", sys.executable).replace("@PACKAGE@", str(Path(imgtrack.__file__).resolve()))


def _is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return False


def hook_status(repo: GitRepo) -> HookStatus:
    hooks = repo.hooks_dir()
    hook, legacy = hooks / HOOK, hooks / LEGACY
    installed = _is_ours(hook)
    foreign = hook.exists() and not installed
    chained = installed and legacy.exists()
    if installed:
        message = f"installed at {hook}" + (f"; runs {legacy} first" if chained else "")
    elif foreign:
        message = f"not installed: {hook} belongs to another tool; `imgtrack hooks install` keeps it as {LEGACY}"
    else:
        message = f"not installed ({hook} does not exist); run `imgtrack hooks install`"
    return HookStatus(hook, installed, foreign, chained, message)


def install_hooks(repo: GitRepo) -> HookStatus:
    """Write the pre-push hook (idempotent), keeping a foreign one as pre-push.legacy."""
    hooks = repo.hooks_dir()
    hooks.mkdir(parents=True, exist_ok=True)
    hook, legacy = hooks / HOOK, hooks / LEGACY
    if hook.exists() and not _is_ours(hook):
        old = hook.read_bytes()
        if legacy.exists() and legacy.read_bytes() != old:
            raise UsageError(
                f"{hook} belongs to another tool and {legacy} exists already; merge them by hand, then run install again"
            )
        # Copied, not moved: until the new hook replaces it, the old one stays in place, so a crash
        # leaves the old hook or the new one and never none. (An identical copy from a crashed run is fine.)
        write_atomic(legacy, old, mode=hook.stat().st_mode & 0o777)
    write_atomic(hook, hook_script().encode(), mode=0o755)
    return hook_status(repo)


def uninstall_hooks(repo: GitRepo) -> HookStatus:
    """Remove imgtrack's hook and put back the one it replaced."""
    hooks = repo.hooks_dir()
    hook, legacy = hooks / HOOK, hooks / LEGACY
    if hook.exists() and not _is_ours(hook):
        raise UsageError(f"{hook} is not imgtrack's hook; left as it is")
    if legacy.exists():
        os.replace(legacy, hook)
    else:
        hook.unlink(missing_ok=True)
    return hook_status(repo)
