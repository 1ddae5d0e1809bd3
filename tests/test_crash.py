"""Crash safety and concurrency of ledger writes, with real processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from tests.conftest import LayoutFactory, commit_file, run


def record_files(project: Path) -> list[Path]:
    return sorted((project / ".imgtrack" / "ledger").glob("*/*/*.toml"))


def test_kill_9_never_leaves_a_partial_record(project: Path, layouts: LayoutFactory) -> None:
    rng = random.Random(20261126)
    started = 0
    for i in range(16):
        path, _ = layouts()
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "record", str(path), "--image", "api", "--version", f"0.{i}.0"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, 0.45))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        started += 1
        # After every kill: each record file present is whole and parses.
        for f in record_files(project):
            tomllib.loads(f.read_text())
    result = run(["verify"], project)
    assert result.code == 0, result.out + result.err
    # The next write sweeps what killed writers left behind; nothing half-written stays.
    path, _ = layouts()
    assert run(["record", str(path), "--image", "api", "--version", "1.0.0"], project).code == 0
    assert not [p for p in (project / ".imgtrack" / "ledger").rglob(".*.tmp")]
    assert run(["log", "--json"], project).code == 0
    assert started == 16


def test_eight_concurrent_records_all_land(project: Path, layouts: LayoutFactory) -> None:
    commit_file(project)
    paths = [layouts()[0] for _ in range(8)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "record", str(p), "--image", "api", "--version", f"0.{i}.0", "--json"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, p in enumerate(paths)
    ]
    outcomes = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in outcomes), outcomes
    assert len(record_files(project)) == 8
    assert len(run(["log", "--json"], project).json()) == 8
    assert run(["verify"], project).code == 0


def test_concurrent_records_cannot_both_take_one_immutable_tag(project: Path, layouts: LayoutFactory) -> None:
    paths = [layouts()[0] for _ in range(4)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imgtrack",
                "record",
                str(p),
                "--image",
                "api",
                "--version",
                f"0.{i}.0",
                "--tag",
                "release-candidate",
            ],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, p in enumerate(paths)
    ]
    codes = [p.wait(timeout=120) for p in procs]
    assert sorted(codes) == [0, 1, 1, 1]
    assert run(["verify"], project).code == 0
    assert os.path.exists(project / ".imgtrack" / "ledger" / "api")


def test_concurrent_records_of_one_digest_keep_every_tag(project: Path, layouts: LayoutFactory) -> None:
    path, digest = layouts()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "record", str(path), "--image", "api", "--tag", f"team-{i}"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    outcomes = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in outcomes), outcomes
    tags = run(["show", digest, "--json"], project).json()["tags"]
    assert {f"team-{i}" for i in range(6)} <= set(tags)


def _blobs_are_whole(layout: Path) -> None:
    import hashlib
    import json

    for blob in (layout / "blobs" / "sha256").glob("*"):
        if blob.name.startswith("."):
            continue  # a killed writer's hidden temp file: never read as a blob, swept next time
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, f"partial blob {blob.name}"
    if (layout / "index.json").exists():
        json.loads((layout / "index.json").read_text())


def test_kill_9_during_pull_and_push_leaves_no_partial_blob_and_no_false_record(
    project: Path,
    layouts: LayoutFactory,
    plain_registry,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    rng = random.Random(7)
    path, digest = layouts(layers=4, layer_size=3_000_000)
    repo = plain_registry.repo("crash")
    for i in range(6):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imgtrack",
                "push",
                str(path),
                "--image",
                "api",
                "--version",
                "1.0.0",
                "--to",
                repo,
                "-q",
            ],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.1, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        records = list((project / ".imgtrack" / "ledger").glob("*/*/*.toml"))
        facts = list((project / ".imgtrack" / "ledger").glob("*/*/*/*.toml"))
        for file in records + facts:
            tomllib.loads(file.read_text())
        for fact in facts:
            if fact.name.startswith("push-"):  # recorded only once everything landed
                out = tmp_path / f"check-{i}"
                assert run(["pull", f"{repo}@{digest}", "--to", str(out), "-q"], project).code == 0
    assert run(["push", str(path), "--image", "api", "--version", "1.0.0", "--to", repo, "-q"], project).code == 0
    target = tmp_path / "pulled"
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "pull", f"{repo}@{digest}", "--to", str(target), "-q"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if target.exists():
            _blobs_are_whole(target)
    assert run(["pull", f"{repo}@{digest}", "--to", str(target), "-q"], project).code == 0
    _blobs_are_whole(target)
    assert not list(target.rglob(".*.partial")), "the next writer swept what killed ones left"


def test_kill_9_during_hook_install_leaves_the_old_hook_or_the_new(project: Path) -> None:
    hooks = project / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    foreign = "#!/bin/sh\necho foreign\n"
    rng = random.Random(11)
    for _ in range(10):
        (hooks / "pre-push").write_text(foreign)
        (hooks / "pre-push").chmod(0o755)
        (hooks / "pre-push.legacy").unlink(missing_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "hooks", "install"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        hook = (hooks / "pre-push").read_text()  # never absent
        legacy = (hooks / "pre-push.legacy").read_text() if (hooks / "pre-push.legacy").exists() else None
        assert legacy in (None, foreign)
        if hook != foreign:
            # The new hook, whole and executable, with the old one kept.
            assert legacy == foreign
            assert hook.rstrip().endswith("fi") and "imgtrack-managed-hook" in hook
            assert os.access(hooks / "pre-push", os.X_OK)
    assert run(["hooks", "install"], project).code == 0, "a re-run finishes what a killed one started"
    assert "imgtrack-managed-hook" in (hooks / "pre-push").read_text()
    assert (hooks / "pre-push.legacy").read_text() == foreign


def test_eight_concurrent_pushes_of_one_build_each_land_as_a_fact(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    path, _ = layouts()
    assert run(["record", str(path), "--image", "api", "--version", "1.0.0"], project).code == 0
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "push", str(path), "--to", f"oci:{tmp_path / f'd{i}'}", "-q"],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outcomes = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    assert all(code == 0 for _, _, code in outcomes), outcomes
    shown = run(["show", "api@1.0.0", "--json"], project).json()
    assert sorted(p["repository"] for p in shown["pushes"]) == sorted(f"oci:{tmp_path / f'd{i}'}" for i in range(8))
    assert run(["verify"], project).code == 0
