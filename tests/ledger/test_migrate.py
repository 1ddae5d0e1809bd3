"""`imgtrack ledger migrate`: schema-1 ledgers written by the schema-1 code become schema 2, answers unchanged."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.conftest import git, run

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "schema1"
SCHEMA1_ONLY = {"schema", "facts"}  # what schema 2 changes or adds to an answer


@pytest.fixture
def schema1(tmp_path: Path) -> Path:
    repo = tmp_path / "schema1"
    git(tmp_path, "clone", "-q", str(FIXTURE / "schema1.bundle"), str(repo))
    return repo


# What later versions added to every answer, which the schema-1 answers could not hold.
ADDED_SINCE = {"corroboration": {"verdict": "uncorroborated", "said": []}}


def answer(data: dict) -> dict:
    for key, value in ADDED_SINCE.items():
        if key in data:  # a schema-1 build said nothing of its image's own word: nothing else may appear
            assert data[key] == value, (key, data[key])
    return {k: v for k, v in data.items() if k not in SCHEMA1_ONLY and k not in ADDED_SINCE}


def test_every_command_refuses_a_schema1_ledger_with_the_hint(schema1: Path) -> None:
    for args in (
        ["show", "api@1.0.0"],
        ["log"],
        ["verify"],
        ["resolve", "api@^1"],
        ["record", "--digest", "sha256:" + "a" * 64, "--image", "api"],
    ):
        result = run(args, schema1)
        assert result.code == 2, (args, result)
        assert result.err.count("\n") == 1 and "imgtrack ledger migrate" in result.err, (args, result.err)
    assert git(schema1, "status", "--porcelain") == "", "nothing written"


def test_migrate_keeps_every_answer_and_is_idempotent(schema1: Path) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    result = run(["ledger", "migrate", "--json"], schema1)
    assert result.code == 0, result.err
    assert result.json() == {"records": 3, "facts": 3}
    assert git(schema1, "log", "-1", "--format=%s") == "ledger (schema 1)", "nothing committed"
    changed = git(schema1, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert sum(line.lstrip().startswith("D ") for line in changed) == 3 and len(changed) == 3 + 3 + 3
    for query, before in expected.items():
        if query == "log":
            after = run(["log", "--json"], schema1).json()
            assert [answer(r) for r in after] == [answer(r) for r in before]
        else:
            shown = run(["show", query, "--json"], schema1)
            assert shown.code == 0, (query, shown.err)
            assert answer(shown.json()) == answer(before), query
    assert run(["verify"], schema1).code == 0
    for file in (schema1 / ".imgtrack" / "ledger").rglob("*.toml"):
        assert tomllib.loads(file.read_text())["schema"] == 2
    again = run(["ledger", "migrate"], schema1)
    assert again.code == 0 and "nothing to migrate" in again.out
    assert git(schema1, "status", "--porcelain", "--untracked-files=all").splitlines() == changed
    committed = run(["ledger", "commit", "--json"], schema1)  # the migration, removals and all
    assert committed.code == 0, committed.err
    assert git(schema1, "status", "--porcelain", "--untracked-files=all") == ""
    committed_files = git(schema1, "show", "--no-renames", "--name-status", "--format=", "HEAD").splitlines()
    assert sum(line.startswith("D\t") for line in committed_files) == 3
    assert all(line.startswith("D\t") or line.endswith(".seg") for line in committed_files), "migrated into segments"
    for query, before in expected.items():
        if query != "log":
            assert answer(run(["show", query, "--json"], schema1).json()) == answer(before), query
    assert run(["verify"], schema1).code == 0


def write_schema1(repo: Path, count: int) -> None:
    """`count` schema-1 records of image api, each with two pushes, as the schema-1 code wrote them."""
    commit = git(repo, "rev-parse", "HEAD")
    folder = repo / ".imgtrack" / "ledger" / "api"
    rng = random.Random(count)
    for i in range(count):
        digest = f"sha256:{rng.getrandbits(256):064x}"
        pushes = "".join(
            f'\n[[pushes]]\nrepository = "registry.example.com/{where}"\ntags = ["1.0.{i}"]\n'
            f"pushed_at = 2026-01-0{n + 1} 00:00:00+00:00\n"
            for n, where in enumerate(("a", "b"))
        )
        (folder / f"{digest.replace(':', '-')}.toml").write_text(
            f'schema = 1\nimage = "api"\ndigest = "{digest}"\nmedia_type = "application/vnd.oci.image.manifest.v1+json"\n'
            f'version = "1.0.{i}"\ncommit = "{commit}"\ntree = "clean"\ntags = ["1.0.{i}"]\n'
            f'recorded_at = 2026-01-01 00:00:{i % 60:02d}.{i:06d}+00:00\nrecorded_by = "Old <old@example.com>"\n'
            + pushes
        )


def test_kill_9_during_migrate_leaves_whole_files_and_a_rerun_finishes(project: Path) -> None:
    (project / ".imgtrack" / "ledger" / "api").mkdir(parents=True)
    write_schema1(project, 400)
    rng = random.Random(11)
    for _ in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "ledger", "migrate"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 0.9))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for file in (project / ".imgtrack" / "ledger").rglob("*.toml"):
            tomllib.loads(file.read_text())  # every file whole
    assert run(["ledger", "migrate"], project).code == 0
    result = run(["verify", "--json"], project)
    assert result.code == 0 and result.json()["records"] == 400, result.out
    log = run(["log", "--json"], project).json()
    assert len(log) == 400 and all(len(r["pushes"]) == 2 for r in log)
    assert not list((project / ".imgtrack" / "ledger").rglob(".*.tmp")), "the rerun swept what killed runs left"
