"""File-system helpers shared by the ledger and layouts."""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

from imgtrack.errors import UsageError

# Temp files carry their writer's pid: `.name.<pid>.tmp` (ledger, index.json) and
# `.name.<pid>.<thread>.partial` (blobs). Their writer holds an flock on them while it writes; the kernel
# drops it when the writer dies, however it dies.
TEMP_RE = re.compile(r"\..+?\.(\d+)(?:\.\d+)?\.(?:tmp|partial)")
# Between creating its file and locking it a writer holds no lock: a file that young is left alone
# unless its pid is gone.
UNLOCKED_GRACE_NS = 60 * 1_000_000_000


def lock_temp(fd: int) -> None:
    """Mark a temp file as its writer's for as long as `fd` is open (see `sweep_if_stale`). Blocking: a
    sweeper looking at the file holds the lock for a moment."""
    fcntl.flock(fd, fcntl.LOCK_EX)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a reader or a crash sees the old bytes or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            lock_temp(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, mode)  # not subject to the umask: a hook must be executable the moment it appears
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a removal) survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep_if_stale(entry: os.DirEntry[str]) -> None:
    """Remove a temp file whose writer is provably gone: nobody holds its lock, and its pid is dead or it
    is older than a writer takes to lock it. A live writer's file is never touched, however old."""
    m = TEMP_RE.fullmatch(entry.name)
    if not m:
        return
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return  # gone meanwhile, or not ours to open
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its writer is alive and writing
        age = time.time_ns() - os.fstat(fd).st_mtime_ns
        if not pid_alive(int(m.group(1))) or age > UNLOCKED_GRACE_NS:
            os.unlink(entry.path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    if not 0 < pid < 2**31:
        return False  # no process has it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output(path: Path, what: str, folder: bool = False) -> Path:
    """Refuse an output path before any work: its parent folder must exist (imgtrack creates the file, or
    the layout folder, it is asked for, never folders on the way to it, as a shell's `>` does), and it
    must not be a folder where a file is wanted, or a file where a layout folder is."""
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{what} {path}: the folder {parent} does not exist; create it first (mkdir -p {parent})")
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a layout folder; name a folder")
    if not folder and path.is_dir():
        raise UsageError(f"{what} {path} is a folder; name the file to write")
    return path
