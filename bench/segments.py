#!/usr/bin/env python3
"""Before a change of format: what fewer, larger ledger files would buy from git, and which ways of making
them keep every merge free of conflicts.

    python3 bench/segments.py [--records 100000] [--runs 5] [--skip-cost]

Schema 2 keeps one file per record and per fact. At 100,000 records git's index holds 100,000 entries, and
every `git status`, `git add` and `git commit` in the project lstat()s each of them: that is the cost left
in `git add .imgtrack && git commit` (docs/performance.md). The way out is a segment: one file holding
many records and facts. This script measures, without imgtrack:

1. git's cost by layout, for the same records: loose files in 256 buckets (schema 2 today) against the
   same records held in segments of each bucket, grouped as a compaction that merges at least three
   segments, none over 40% of the result, would leave them. Per layout: files, `git status`,
   `git add .imgtrack && git commit` of one new record, and `git push` of it, medians of --runs.

2. Whether a merge of two branches that each compacted stays free of conflicts, for several ways of
   compacting. git's merge pairs a file one side deleted with a file that side added when they are 50%
   alike (a rename); two sides that "renamed" one file to two different names conflict
   (rename/rename), whatever imgtrack meant. Each case builds a small repository, lets two branches
   compact and add, merges them, and prints the outcome. The findings are written up in
   docs/design-notes.md (23).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: imgtrack's own file formats

from imgtrack.ledger.schema import Fact, PlatformManifest, Record  # noqa: E402

LONG_REPOSITORY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/platform-team/payments/api-gateway"
SHORT_REPOSITORY = "ghcr.io/acme/api"


def sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, check=check, capture_output=True, text=True)


def git_init(path: Path) -> None:
    path.mkdir(parents=True)
    sh("git", "init", "-q", "-b", "main", cwd=path)
    for key, value in (("user.name", "Bench"), ("user.email", "bench@example.com"), ("gc.auto", "0")):
        sh("git", "config", key, value, cwd=path)


def commit_all(repo: Path, message: str) -> None:
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", message, cwd=repo)


# --- what imgtrack writes -----------------------------------------------------------------------------


def record_bytes(rng: random.Random, i: int) -> tuple[str, bytes]:
    """(rel, bytes) of a record as imgtrack writes it."""
    digest = f"sha256:{rng.getrandbits(256):064x}"
    commit = f"{rng.getrandbits(160):040x}"
    version = f"1.{i // 1000}.{i % 1000}-dev.{i}+g{commit[:7]}"
    rec = Record(
        image="api",
        digest=digest,
        media_type="application/vnd.oci.image.index.v1+json",
        version=version,
        commit=commit,
        tree="clean",
        tags=(version.replace("+", "_"), f"sha-{commit[:7]}"),
        recorded_at=datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
        recorded_by="CI Bot <ci-bot@example.com>",
        manifests=(PlatformManifest("linux/amd64", f"sha256:{rng.getrandbits(256):064x}", f"sha256:{i:064x}"),),
    )
    hexd = digest.partition(":")[2]
    return f"api/{hexd[:2]}/sha256-{hexd}.toml", rec.to_toml()


def push_fact_bytes(rng: random.Random, i: int, repository: str) -> tuple[str, bytes]:
    """(rel, bytes) of a push fact as imgtrack writes it, all in bucket 00."""
    hexd = f"00{rng.getrandbits(248):062x}"
    fact = Fact(
        kind="push",
        image="api",
        record=f"sha256:{hexd}",
        at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
        by="CI Bot <ci-bot@example.com>",
        repository=repository,
        tags=(f"1.4.{i}", "1.4", f"sha-{hexd[2:9]}"),
    )
    data = fact.to_toml()
    return f"api/00/sha256-{hexd}/push-{hashlib.sha256(data).hexdigest()[:16]}.toml", data


# --- segments -----------------------------------------------------------------------------------------


def segment_text(entries: list[tuple[str, bytes]]) -> bytes:
    """A plain segment: each entry's path on a line of its own, then its bytes as they are."""
    out = [b"# imgtrack ledger segment\n"]
    for rel, data in sorted(entries):
        out.append(f"--- {rel} {len(data)}\n".encode() + data)
    return b"".join(out)


def segment_zlib(entries: list[tuple[str, bytes]]) -> bytes:
    return zlib.compress(segment_text(entries), 6)


def segment_name(data: bytes) -> str:
    return f"segment-{hashlib.sha256(data).hexdigest()[:16]}"


def compact(sizes: list[int], fan_in: int = 3, share: float = 0.4) -> list[int]:
    """Merge the smallest segments while at least `fan_in` of them can be merged with none over `share` of
    the result, so that git never reads a merge input and its result as one file renamed."""
    sizes = sorted(sizes)
    while True:
        best = 0
        total = 0
        for j, s in enumerate(sizes):
            total += s
            if j + 1 >= fan_in and s <= share * total:
                best = j + 1
        if not best:
            return sizes
        sizes = sorted([sum(sizes[:best]), *sizes[best:]])


# --- 1. git's cost by layout --------------------------------------------------------------------------


def write_layout(repo: Path, records: list[tuple[str, bytes]], segmented: bool) -> int:
    """Write `records` under .imgtrack/ledger, loose or in segments of each bucket; returns the file count."""
    root = repo / ".imgtrack" / "ledger"
    if not segmented:
        for rel, data in records:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        return len(records)
    buckets: dict[str, list[tuple[str, bytes]]] = {}
    for rel, data in records:
        buckets.setdefault(rel.rsplit("/", 1)[0], []).append((rel, data))
    files = 0
    for bucket, entries in buckets.items():
        sizes: list[int] = []
        for _ in entries:  # each record arrives in a segment of its own, and is compacted as it goes
            sizes = compact([*sizes, 1])
        (root / bucket).mkdir(parents=True, exist_ok=True)
        start = 0
        for size in sizes:
            data = segment_text(entries[start : start + size])
            (root / bucket / segment_name(data)).write_bytes(data)
            start += size
            files += 1
    return files


def measure_cost(base: Path, records: list[tuple[str, bytes]], segmented: bool, runs: int) -> dict[str, float]:
    repo = base / ("segmented" if segmented else "loose")
    git_init(repo)
    files = write_layout(repo, records, segmented)
    commit_all(repo, "ledger")
    remote = base / f"{repo.name}.git"
    sh("git", "init", "-q", "--bare", str(remote), cwd=base)
    sh("git", "remote", "add", "origin", str(remote), cwd=repo)
    sh("git", "push", "-q", "origin", "main", cwd=repo)
    rng = random.Random(7)
    status, commit, push = [], [], []
    for r in range(runs):
        t0 = time.perf_counter()
        sh("git", "status", "--porcelain", cwd=repo)
        status.append(time.perf_counter() - t0)
        rel, data = record_bytes(rng, 10_000_000 + r)
        target = repo / ".imgtrack" / "ledger" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        t0 = time.perf_counter()
        sh("git", "add", ".imgtrack", cwd=repo)
        sh("git", "commit", "-q", "-m", "one record", cwd=repo)
        commit.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sh("git", "push", "-q", "origin", "main", cwd=repo)
        push.append(time.perf_counter() - t0)
    index = (repo / ".git" / "index").stat().st_size
    shutil.rmtree(repo)
    shutil.rmtree(remote)
    return {
        "files": files,
        "index KB": index / 1024,
        "status s": statistics.median(status),
        "add+commit s": statistics.median(commit),
        "push s": statistics.median(push),
    }


# --- 2. merges ----------------------------------------------------------------------------------------

Entries = list[tuple[str, bytes]]


def place_segment(repo: Path, bucket: str, entries: Entries, encode: Callable[[Entries], bytes]) -> Path:
    data = encode(entries)
    path = repo / bucket / segment_name(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def place_loose(repo: Path, entries: Entries) -> list[Path]:
    out = []
    for rel, data in entries:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(data)
        out.append(repo / rel)
    return out


def merge_case(
    base: Path,
    name: str,
    start: Callable[[Path], list[Path]],
    side: Callable[[Path, list[Path], str], None],
) -> str:
    """Commit what `start` writes, let two branches each run `side` on it, merge them: the outcome."""
    repo = base / name.replace(" ", "-")[:40]
    git_init(repo)
    (repo / "README").write_text("ledger\n")
    made = start(repo)
    commit_all(repo, "base")
    for branch in ("a", "b"):
        sh("git", "checkout", "-q", "-b", branch, "main", cwd=repo)
        side(repo, made, branch)
        commit_all(repo, branch)
    sh("git", "checkout", "-q", "a", cwd=repo)
    merged = sh("git", "merge", "-q", "-m", "merge", "b", cwd=repo, check=False)
    if merged.returncode == 0:
        outcome = "clean"
    else:
        conflict = next((line for line in merged.stdout.splitlines() if line.startswith("CONFLICT")), "conflict")
        outcome = conflict.split(":")[0]
    shutil.rmtree(repo)
    return outcome


def merge_cases(base: Path) -> list[tuple[str, str]]:
    def records(seed: int, count: int) -> Entries:
        rng = random.Random(seed)
        return [record_bytes(rng, seed * 1000 + i) for i in range(count)]

    def facts(seed: int, count: int, repository: str) -> Entries:
        rng = random.Random(seed)
        return [push_fact_bytes(rng, seed * 1000 + i, repository) for i in range(count)]

    def old_segment(encode: Callable[[Entries], bytes], content: Entries) -> Callable[[Path], list[Path]]:
        return lambda repo: [place_segment(repo, "api/00", content, encode)]

    def compact_into(
        old: Entries, new: Callable[[str], Entries], beside: Callable[[str], Entries] | None
    ) -> Callable[[Path, list[Path], str], None]:
        """Each side merges the old segment (holding `old`) with entries of its own into one segment, and
        (beside) adds an unrelated new segment in another bucket."""

        def side(repo: Path, made: list[Path], branch: str) -> None:
            made[0].unlink()
            place_segment(repo, "api/00", [*old, *new(branch)], segment_text)
            if beside is not None:
                place_segment(repo, "api/01", beside(branch), segment_text)

        return side

    cases: list[tuple[str, str]] = []
    old = records(1, 50)
    for count, label in ((5, "5 new ones on each branch"), (80, "80 new ones each (the old one 38% of the result)")):
        cases.append(
            (
                f"a segment of 50 records re-packed with {label}",
                merge_case(
                    base,
                    f"repack-{count}",
                    old_segment(segment_text, old),
                    compact_into(old, lambda b, n=count: records(10 + n + ord(b), n), None),  # type: ignore[misc]
                ),
            )
        )
    for repository, label in ((LONG_REPOSITORY, "long"), (SHORT_REPOSITORY, "short")):
        old = facts(3, 6, repository)
        cases.append(
            (
                f"6 push facts ({label} repository name) compacted under the size rule on each branch, "
                "and each adds 6 other facts in a segment beside",
                merge_case(
                    base,
                    f"beside-{label}",
                    old_segment(segment_text, old),
                    compact_into(
                        old,
                        lambda b, r=repository: facts(30 + ord(b), 12, r),  # type: ignore[misc]
                        lambda b, r=repository: facts(40 + ord(b), 6, r),  # type: ignore[misc]
                    ),
                ),
            )
        )
    FACTS = facts(3, 6, LONG_REPOSITORY)

    def zlib_side(repo: Path, made: list[Path], branch: str) -> None:
        made[0].unlink()
        place_segment(repo, "api/00", [*FACTS, *facts(30 + ord(branch), 12, LONG_REPOSITORY)], segment_zlib)
        place_segment(repo, "api/01", facts(40 + ord(branch), 6, LONG_REPOSITORY), segment_zlib)

    cases.append(
        (
            "the same (long name), segments compressed",
            merge_case(base, "beside-zlib", old_segment(segment_zlib, FACTS), zlib_side),
        )
    )
    for repository, label in ((LONG_REPOSITORY, "long"), (SHORT_REPOSITORY, "short")):
        committed = facts(5, 1, repository)

        def loose_side(repo: Path, made: list[Path], branch: str, r: str = repository) -> None:
            for path in made:
                path.unlink()
            place_segment(repo, "api/00", [*committed, *facts(50 + ord(branch), 4, r)], segment_text)
            place_loose(repo, facts(60 + ord(branch), 1, r))

        cases.append(
            (
                f"a committed loose push fact ({label} name) moved into a segment on each branch, "
                "and each adds a new loose fact",
                merge_case(base, f"loose-{label}", lambda repo, c=committed: place_loose(repo, c), loose_side),
            )
        )
    return cases


def similarity(a: bytes, b: bytes) -> int:
    """How alike git finds two files (the percentage `git diff -M` prints), measured by git itself."""
    with tempfile.TemporaryDirectory(prefix="imgtrack-sim-") as tmp:
        repo = Path(tmp) / "r"
        git_init(repo)
        (repo / "x").write_bytes(a)
        commit_all(repo, "a")
        (repo / "x").unlink()
        (repo / "y").write_bytes(b)
        commit_all(repo, "b")
        out = sh("git", "diff", "-M1%", "--summary", "HEAD~1", "HEAD", cwd=repo).stdout
    return int(out.split("(")[1].split("%")[0]) if "rename" in out else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-cost", action="store_true", help="only the merge cases")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgtrack-segments-") as tmp:
        base = Path(tmp)
        cases = merge_cases(base)
        rng = random.Random(3)
        alike = [
            (
                "two push facts, long repository name",
                similarity(push_fact_bytes(rng, 1, LONG_REPOSITORY)[1], push_fact_bytes(rng, 2, LONG_REPOSITORY)[1]),
            ),
            (
                "two push facts, short repository name",
                similarity(push_fact_bytes(rng, 1, SHORT_REPOSITORY)[1], push_fact_bytes(rng, 2, SHORT_REPOSITORY)[1]),
            ),
            ("two records", similarity(record_bytes(rng, 1)[1], record_bytes(rng, 2)[1])),
        ]
        six = [[push_fact_bytes(rng, 10 * k + i, LONG_REPOSITORY) for i in range(6)] for k in range(2)]
        alike += [
            ("two segments of 6 other push facts each, long name", similarity(*map(segment_text, six))),
            ("the same, compressed", similarity(*map(segment_zlib, six))),
        ]
        cost = {}
        if not opts.skip_cost:
            rng = random.Random(opts.records)
            records = [record_bytes(rng, i) for i in range(opts.records)]
            cost = {
                "loose files in 256 buckets (schema 2)": measure_cost(base, records, False, opts.runs),
                "segments of each bucket": measure_cost(base, records, True, opts.runs),
            }
    if cost:
        print(f"git's cost by layout, {opts.records} records: medians of {opts.runs} runs, {os.cpu_count()} cores")
        keys = list(next(iter(cost.values())))
        print(f"{'layout':<40}" + "".join(f"{k:>14}" for k in keys))
        for name, values in cost.items():
            print(
                f"{name:<40}"
                + "".join(f"{values[k]:>14.3f}" if k.endswith(" s") else f"{values[k]:>14.0f}" for k in keys)
            )
        print()
    print("how alike git finds two files imgtrack writes (50% or more: a deletion and an addition read as a rename)")
    for what, percent in alike:
        print(f"  {percent:>3}%  {what}")
    print()
    print("two branches compact, then merge")
    for what, outcome in cases:
        print(f"  {outcome:<26} {what}")


if __name__ == "__main__":
    main()
