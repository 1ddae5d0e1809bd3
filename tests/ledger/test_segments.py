"""Segments: `ledger commit` moves new records and facts into one file of their bucket, and merges small
segments; every reader sees the same ledger, and git merges of any two branches stay free of conflicts
(real git, real processes)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from imgtrack.errors import LedgerError
from imgtrack.ledger.segment import MAX_SEGMENT_TEXT, MERGE_SHARE, decode, encode, merge_is_safe, plan_merge
from tests.conftest import LayoutFactory, commit_file, git, record_file, run, smuggle_tag

# --- the format ----------------------------------------------------------------------------------------


def test_a_segment_gives_back_each_entry_byte_for_byte() -> None:
    entries = {
        "api/3f/sha256-" + "3f" * 32 + ".toml": b'schema = 2\nimage = "api"\n',
        "api/3f/sha256-" + "3f" * 32 + "/tag-0123456789abcdef.toml": b"\n\x00 odd bytes \n",
        "api/3f/sha256-" + "3e" * 32 + ".toml": b"",
    }
    assert decode(encode(entries), "s") == entries


@pytest.mark.parametrize(
    "data",
    [
        b"not zlib",
        zlib.compress(b"some other file\n"),
        zlib.compress(b"imgtrack ledger segment 1\napi/3f/x.toml 10\nshort"),
        zlib.compress(b"imgtrack ledger segment 1\nb 1\nxa 1\ny"),  # out of order
        zlib.compress(b"imgtrack ledger segment 1\nno length line"),
        zlib.compress(b"imgtrack ledger segment 1\n" + b"a" * (MAX_SEGMENT_TEXT + 1)),  # unpacks too far
        zlib.compress(b"imgtrack ledger segment 1\n")[:-3],  # cut short
        zlib.compress(b"imgtrack ledger segment 1\n") + b"more",
    ],
)
def test_a_malformed_segment_is_one_line_naming_it(data: bytes) -> None:
    with pytest.raises(LedgerError) as caught:
        decode(data, "api/3f/segment-0000000000000000.seg")
    message = str(caught.value)
    assert message.startswith("api/3f/segment-0000000000000000.seg: ") and "\n" not in message


def test_merges_are_planned_so_that_git_never_reads_one_as_a_rename() -> None:
    rng = random.Random(11)
    for _ in range(500):
        sizes = {
            f"s{i}": rng.choice([rng.randint(200, 400), rng.randint(200, 40_000)]) for i in range(rng.randint(0, 9))
        }
        plan = plan_merge(sizes)
        if plan:
            total = sum(sizes[name] for name in plan)
            assert len(plan) >= 3 and all(sizes[name] <= MERGE_SHARE * total for name in plan)
    assert plan_merge({"a": 300, "b": 300}) == []
    assert not merge_is_safe([300, 300, 300], 560) and merge_is_safe([300, 300, 300], 610)


# --- in a project --------------------------------------------------------------------------------------


def answers(repo: Path, digests: list[str]) -> list[object]:
    return [run(["show", d, "--json"], repo).json() for d in digests] + [run(["log", "--json"], repo).json()]


def tracked(repo: Path) -> list[str]:
    """The ledger's records, facts and segments git tracks."""
    return [p for p in git(repo, "ls-files", ".imgtrack/ledger").splitlines() if not p.endswith(".gitkeep")]


def test_ledger_commit_moves_new_entries_into_segments_and_every_answer_stays(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    digests, paths = [], []
    for seed in range(3):
        path, digest = layouts(seed=seed + 40)
        paths.append(path)
        assert (
            run(
                ["record", str(path), "--image", "api", "--version", f"1.0.{seed}", "--tag", f"qa-{seed}"], project
            ).code
            == 0
        )
        digests.append(digest)
    assert run(["push", str(paths[0]), "--image", "api", "--to", f"oci:{tmp_path / 'out'}", "-q"], project).code == 0
    before = answers(project, digests)
    assert run(["ledger", "commit"], project).code == 0
    assert tracked(project) and all(path.endswith(".seg") for path in tracked(project))
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    assert answers(project, digests) == before
    (project / ".git" / "imgtrack" / "cache.sqlite").unlink()
    assert answers(project, digests) == before, "a cache built from segments answers the same"
    assert run(["verify"], project).code == 0
    # A record kept loose by plain git stays where it is: a file a commit holds never moves.
    path, digest = layouts(seed=50)
    assert run(["record", str(path), "--image", "api"], project).code == 0
    git(project, "add", ".imgtrack")
    git(project, "commit", "-q", "-m", "by hand")
    assert "nothing to commit" in run(["ledger", "commit"], project).out
    assert any(p.endswith(digest.replace(":", "-") + ".toml") for p in tracked(project))


def test_verify_reports_an_edited_a_corrupt_and_a_contradicting_segment(project: Path, layouts: LayoutFactory) -> None:
    path, digest = layouts(seed=60)
    rec = run(["record", str(path), "--image", "api", "--json"], project).json()
    assert run(["ledger", "commit"], project).code == 0
    (segment,) = tracked(project)
    data = (project / segment).read_bytes()
    entries = decode(data, segment)
    rel = next(iter(entries))
    # the same path with other bytes, in a second segment of the bucket
    other = encode({rel: entries[rel].replace(b"clean", b"dirty")})
    twin = project / Path(segment).parent / "segment-ffffffffffffffff.seg"
    twin.write_bytes(other)
    found = run(["verify"], project)
    assert found.code == 1 and "digest in the name does not match" in found.out
    assert "two segments of its bucket hold different bytes" in found.out
    twin.write_bytes(b"garbage")
    found = run(["verify"], project)
    assert found.code == 1 and "segment-ffffffffffffffff.seg: not a ledger segment" in found.out
    shown = run(["show", digest], project)
    assert shown.code == 2 and "not a ledger segment" in shown.err, "lookups refuse a broken segment"
    twin.unlink()
    assert run(["verify"], project).code == 0
    assert run(["show", digest, "--json"], project).json()["version"] == rec["version"]


def _add_tags(repo: Path, layout: Path, names: list[str]) -> None:
    for name in names:
        assert run(["record", str(layout), "--image", "api", "--tag", name], repo).code == 0
        assert run(["ledger", "commit"], repo).code == 0


def test_two_branches_that_each_merge_the_same_segments_merge_cleanly(project: Path, layouts: LayoutFactory) -> None:
    """Tags given later to one build land in its bucket: enough of them make `ledger commit` merge the
    bucket's segments on each branch, each in its own way; the merge of the branches has no conflict."""
    layout, digest = layouts(seed=70)
    assert run(["record", str(layout), "--image", "api"], project).code == 0
    assert run(["ledger", "commit"], project).code == 0
    _add_tags(project, layout, ["base-1", "base-2"])
    base = git(project, "rev-parse", "HEAD")
    base_segments = set(tracked(project))
    assert len(base_segments) >= 2
    for branch in ("a", "b"):
        git(project, "checkout", "-q", "-b", branch, base)
        for n in range(12):
            _add_tags(project, layout, [f"{branch}-{n}"])
            if not base_segments <= set(tracked(project)):
                break
        assert not base_segments <= set(tracked(project)), f"branch {branch} merged segments of the base"
    git(project, "checkout", "-q", "a")
    merged = subprocess.run(["git", "merge", "-q", "-m", "merge", "b"], cwd=project, capture_output=True, text=True)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert run(["verify"], project).code == 0
    tags = run(["show", digest, "--json"], project).json()["tags"]
    assert {"base-1", "base-2", "a-0", "b-0"} <= set(tags)
    rebased = subprocess.run(["git", "rebase", "-q", "a", "b"], cwd=project, capture_output=True, text=True)
    assert rebased.returncode == 0, rebased.stdout + rebased.stderr


def test_the_hook_checks_what_a_pushed_segment_holds(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(project, "remote", "add", "origin", str(remote))
    assert run(["hooks", "install"], project).code == 0
    path, _ = layouts(seed=80)
    assert run(["record", str(path), "--image", "api", "--tag", "qa-approved"], project).code == 0
    assert run(["ledger", "commit"], project).code == 0
    pushed = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=project, capture_output=True, text=True)
    assert pushed.returncode == 0, pushed.stderr
    commit_file(project)
    path, _ = layouts(seed=81)
    rec = run(["record", str(path), "--image", "api", "--json"], project).json()
    smuggle_tag(record_file(project, rec), "qa-approved")
    assert run(["ledger", "commit"], project).code == 0
    assert all(p.endswith(".seg") for p in tracked(project))
    refused = subprocess.run(["git", "push", "origin", "main"], cwd=project, capture_output=True, text=True)
    assert refused.returncode != 0 and "qa-approved" in refused.stderr and "immutable tags never move" in refused.stderr


def test_kill_9_during_ledger_commit_leaves_every_entry_whole(project: Path, layouts: LayoutFactory) -> None:
    rng = random.Random(20261206)
    digests = []
    for i in range(6):
        path, digest = layouts(seed=90 + i)
        assert run(["record", str(path), "--image", "api", "--version", f"0.{i}.0"], project).code == 0
        digests.append(digest)
        proc = subprocess.Popen(
            [sys.executable, "-m", "imgtrack", "ledger", "commit"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        found = run(["verify"], project)
        assert found.code == 0, found.out
        for digest in digests:
            assert run(["show", digest], project).code == 0
    lock = project / ".git" / "index.lock"
    lock.unlink(missing_ok=True)  # a git killed with its parent leaves its lock, as git itself says
    assert run(["ledger", "commit"], project).code == 0
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    assert not list((project / ".imgtrack" / "ledger").rglob(".*.tmp"))
    assert run(["verify"], project).code == 0
