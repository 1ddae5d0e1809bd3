"""Faults of the machine under a pull, for real: kill -9 part way, concurrent pulls into one layout,
a full disk (a small tmpfs), temp files of writers alive and dead. The layout is always one every tool
reads, with no partial blob, and the next run copies only what is missing."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.registries import Registry
from tests.conftest import LayoutFactory, run


def _pushed(project: Path, layouts: LayoutFactory, registry: Registry, **shape: int) -> tuple[str, str]:
    """An image put in the registry by another tool (skopeo), as `repo:latest-build`."""
    path, digest = layouts(**shape)
    repo = registry.repo("local")
    copy = subprocess.run(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-tls-verify=false",
            f"oci:{path}:latest-build",
            f"docker://{repo}:latest-build",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert copy.returncode == 0, copy.stderr
    return repo, digest


def _whole_blobs(layout: Path) -> set[str]:
    """The blobs of a layout, each checked against its name; the layout's index.json parses."""
    json.loads((layout / "index.json").read_text())
    assert json.loads((layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    found = set()
    for blob in (layout / "blobs" / "sha256").glob("[!.]*"):
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, f"partial blob {blob.name}"
        found.add(blob.name)
    return found


def _pull(project: Path, source: str, target: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "imgtrack", "pull", source, "--to", str(target), "-q", *extra],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_mid_pull_with_jobs_4_then_a_rerun_copies_only_what_is_missing(
    project: Path,
    layouts: LayoutFactory,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    repo, digest = _pushed(project, layouts, plain_registry, layers=8, layer_size=2_000_000)
    target = tmp_path / "pulled"
    rng = random.Random(16)
    for _ in range(5):
        proc = _pull(project, f"{repo}@{digest}", target, "--jobs", "4")
        time.sleep(rng.uniform(0.2, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if target.exists():
            _whole_blobs(target)  # valid, whatever moment the kill came at
    present = _whole_blobs(target)
    again = run(["pull", f"{repo}@{digest}", "--to", str(target), "--jobs", "4", "--json"], project)
    assert again.code == 0, again.err
    total = again.json()["blobs_copied"] + again.json()["blobs_skipped"]  # type: ignore[index]
    assert again.json()["blobs_skipped"] == len(present)  # type: ignore[index]
    assert len(_whole_blobs(target)) == total
    assert not list(target.rglob(".*.partial")), "a killed writer's temp files are swept by the next run"


def test_concurrent_pulls_into_one_layout_all_land(
    project: Path,
    layouts: LayoutFactory,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    images = [_pushed(project, layouts, plain_registry, layers=3, layer_size=400_000) for _ in range(2)]
    for trial in range(3):
        target = tmp_path / f"shared-{trial}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "imgtrack", "pull", f"{repo}@{digest}", "--to", str(target), "--jobs", "4"],
                cwd=project,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for repo, digest in images
            for _ in range(2)
        ]
        outcomes = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
        assert all(code == 0 for _, _, code in outcomes), outcomes
        _whole_blobs(target)
        listed = {m["digest"] for m in json.loads((target / "index.json").read_text())["manifests"]}
        assert listed == {digest for _, digest in images}, "every pull's entry is kept in index.json"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a real file system that runs out of space."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_one_line_exit_74_and_leaves_a_valid_layout(
    project: Path,
    layouts: LayoutFactory,
    plain_registry: Registry,
    small_disk: Path,
) -> None:
    repo, digest = _pushed(project, layouts, plain_registry, layers=4, layer_size=1_500_000)
    target = small_disk / "new-layout"
    result = run(["pull", f"{repo}@{digest}", "--to", str(target)], project)
    assert result.code == 74, result
    assert "no space left in" in result.err and str(target) in result.err and "MiB" in result.err
    assert result.err.strip().splitlines()[-1].startswith("imgtrack: no space left")
    kept = _whole_blobs(target)  # a layout every tool reads, holding only whole blobs
    assert json.loads((target / "index.json").read_text())["manifests"] == []
    assert not list(target.rglob(".*.partial"))
    # The same into an existing layout: it is left as it was, but for whole blobs.
    assert _whole_blobs(target) == kept


def _temp_beside(layout: Path, pid: int, age_s: int) -> Path:
    folder = layout / "blobs" / "sha256"
    temp = folder / f".{'e' * 64}.{pid}.140000000000001.partial"
    temp.write_bytes(b"half a blob")
    old = time.time() - age_s
    os.utime(temp, (old, old))
    return temp


def test_a_live_writers_temp_file_is_never_swept_a_dead_ones_is(
    project: Path,
    layouts: LayoutFactory,
    plain_registry: Registry,
    tmp_path: Path,
) -> None:
    repo, digest = _pushed(project, layouts, plain_registry)
    target = tmp_path / "layout"
    assert run(["pull", f"{repo}@{digest}", "--to", str(target)], project).code == 0
    # Alive: this test process, holding the file's lock, hours after it last wrote.
    live = _temp_beside(target, os.getpid(), age_s=7200)
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    # Dead: a pid no process has, lock free. Unlocked with a live pid but old: its writer is gone.
    dead = _temp_beside(target, 2**22 + 12345, age_s=0)
    dead.rename(dead.with_name(dead.name.replace("e" * 64, "f" * 64)))
    dead = dead.with_name(dead.name.replace("e" * 64, "f" * 64))
    try:
        assert run(["pull", f"{repo}@{digest}", "--to", str(target)], project).code == 0
        assert live.exists(), "a file its writer still holds is the writer's"
        assert not dead.exists(), "a file whose writer is gone is swept"
    finally:
        os.close(fd)
    assert run(["pull", f"{repo}@{digest}", "--to", str(target)], project).code == 0
    assert not live.exists(), "once its lock is free and it is old, it is swept"
