"""File-system helpers shared by the ledger and layouts."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

# Temp files carry their writer's pid: `.name.<pid>.tmp` (ledger, index.json) and
# `.name.<pid>.<thread>.partial` (blobs).
TEMP_RE = re.compile(r"\..+?\.(\d+)(?:\.\d+)?\.(?:tmp|partial)")
STALE_TEMP_NS = 3600 * 1_000_000_000


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so that a reader or a crash sees the old bytes or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)  # not subject to the umask: a hook must be executable the moment it appears
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sweep_if_stale(entry: os.DirEntry[str]) -> None:
    """Remove a temp file left by a writer that was killed: its pid is gone, or it is an hour old."""
    m = TEMP_RE.fullmatch(entry.name)
    if not m:
        return
    try:
        age = time.time_ns() - entry.stat(follow_symlinks=False).st_mtime_ns
        if not pid_alive(int(m.group(1))) or age > STALE_TEMP_NS:
            os.unlink(entry.path)
    except FileNotFoundError:
        pass


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
