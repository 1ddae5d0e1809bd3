"""`imgtrack hooks install | uninstall | status [--server]`: manage the pre-push hook of a clone, or the
pre-receive hook of a bare repository on a git server."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from imgtrack.errors import UsageError
from imgtrack.fsutil import write_atomic
from imgtrack.gitrepo import GitRepo

CLIENT = "pre-push"
SERVER = "pre-receive"


def _marker(hook: str) -> str:
    return f"imgtrack-managed-hook: {hook}"


@dataclass(frozen=True)
class HookStatus:
    path: Path
    installed: bool  # imgtrack's hook is in place
    foreign: bool  # another tool's hook is in place
    chained: bool  # a former hook is kept as pre-push.legacy and runs first
    message: str


def hook_script(hook: str = CLIENT) -> str:
    """The hook shipped in the package, pointing at the Python that runs this imgtrack."""
    text = resources.files("imgtrack").joinpath("hooks", hook).read_text(encoding="utf-8")
    import imgtrack

    return text.replace("@PYTHON@", sys.executable).replace("@PACKAGE@", str(Path(imgtrack.__file__).resolve()))


def _is_ours(path: Path, hook: str) -> bool:
    try:
        return _marker(hook) in path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return False


def hook_status(repo: GitRepo, name: str = CLIENT) -> HookStatus:
    hooks = repo.hooks_dir()
    hook, legacy = hooks / name, hooks / f"{name}.legacy"
    installed = _is_ours(hook, name)
    foreign = hook.exists() and not installed
    chained = installed and legacy.exists()
    if installed:
        message = f"installed at {hook}" + (f"; runs {legacy} first" if chained else "")
    elif foreign:
        message = f"not installed: {hook} belongs to another tool; `{_install(name)}` keeps it as {legacy.name}"
    else:
        message = f"not installed ({hook} does not exist); run `{_install(name)}`"
    return HookStatus(hook, installed, foreign, chained, message)


def _install(name: str) -> str:
    return "imgtrack hooks install" + (" --server" if name == SERVER else "")


def install_hooks(repo: GitRepo, name: str = CLIENT) -> HookStatus:
    """Write the hook (idempotent), keeping a foreign one as `<hook>.legacy`."""
    hooks = repo.hooks_dir()
    hooks.mkdir(parents=True, exist_ok=True)
    hook, legacy = hooks / name, hooks / f"{name}.legacy"
    if hook.exists() and not _is_ours(hook, name):
        old = hook.read_bytes()
        if legacy.exists() and legacy.read_bytes() != old:
            raise UsageError(
                f"{hook} belongs to another tool and {legacy} exists already; merge them by hand, then run install again"
            )
        # Copied, not moved: until the new hook replaces it, the old one stays in place, so a crash
        # leaves the old hook or the new one and never none. (An identical copy from a crashed run is fine.)
        write_atomic(legacy, old, mode=hook.stat().st_mode & 0o777)
    write_atomic(hook, hook_script(name).encode(), mode=0o755)
    return hook_status(repo, name)


def uninstall_hooks(repo: GitRepo, name: str = CLIENT) -> HookStatus:
    """Remove imgtrack's hook and put back the one it replaced."""
    hooks = repo.hooks_dir()
    hook, legacy = hooks / name, hooks / f"{name}.legacy"
    if hook.exists() and not _is_ours(hook, name):
        raise UsageError(f"{hook} is not imgtrack's hook; left as it is")
    if legacy.exists():
        os.replace(legacy, hook)
    else:
        hook.unlink(missing_ok=True)
    return hook_status(repo, name)
