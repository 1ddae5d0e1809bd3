#!/usr/bin/env python3
"""What a ledger's layout costs git: one folder per image (schema 1) against 256 buckets (schema 2).

    python3 bench/gitcost.py [--files 100000] [--runs 5]

Both repositories hold the same number of ~700-byte files under .imgtrack/ledger/api/, committed and
pushed to a bare remote. Each run adds one file, then times `git add .imgtrack && git commit` and
`git push`, and the table gives medians, the largest tree object and how `.git` grew over the runs.
Only git runs here: the cost is the layout's, whatever writes the files.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def sh(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def place(root: Path, hexdigest: str, fanned: bool) -> Path:
    folder = root / ".imgtrack" / "ledger" / "api" / (hexdigest[:2] if fanned else "")
    return folder / f"sha256-{hexdigest}.toml"


def body(hexdigest: str, i: int) -> bytes:
    return (
        f'schema = 2\nimage = "api"\ndigest = "sha256:{hexdigest}"\nversion = "1.{i // 1000}.{i % 1000}"\n'
        + "# padding to the size of a record\n" * 18
    ).encode()


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def largest_tree(repo: Path) -> int:
    out = sh("git", "ls-tree", "-r", "-t", "HEAD", ".imgtrack/ledger", cwd=repo)
    trees = [line.split()[2] for line in out.splitlines() if line.split()[1] == "tree"]
    trees.append(sh("git", "rev-parse", "HEAD:.imgtrack/ledger/api", cwd=repo))
    sizes = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectsize)"],
        cwd=repo,
        check=True,
        text=True,
        input="\n".join(trees) + "\n",
        capture_output=True,
    ).stdout.split()
    return max(int(s) for s in sizes)


def measure(base: Path, files: int, runs: int, fanned: bool) -> dict[str, float]:
    repo = base / ("fanned" if fanned else "flat")
    repo.mkdir()
    sh("git", "init", "-q", "-b", "main", cwd=repo)
    sh("git", "config", "user.name", "Bench", cwd=repo)
    sh("git", "config", "user.email", "bench@example.com", cwd=repo)
    sh("git", "config", "gc.auto", "0", cwd=repo)  # no repack in the middle of a timing
    rng = random.Random(files)
    for i in range(files):
        h = f"{rng.getrandbits(256):064x}"
        target = place(repo, h, fanned)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body(h, i))
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "ledger", cwd=repo)
    remote = base / f"{repo.name}.git"
    sh("git", "init", "-q", "--bare", str(remote), cwd=base)
    sh("git", "remote", "add", "origin", str(remote), cwd=repo)
    sh("git", "push", "-q", "origin", "main", cwd=repo)
    sh("git", "gc", "-q", cwd=repo)
    before = du(repo / ".git")
    commit, push = [], []
    for r in range(runs):
        h = f"{rng.getrandbits(256):064x}"
        target = place(repo, h, fanned)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body(h, files + r))
        t0 = time.perf_counter()
        subprocess.run(["git", "add", ".imgtrack"], cwd=repo, check=True)
        subprocess.run(["git", "commit", "-q", "-m", "one record"], cwd=repo, check=True)
        commit.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(["git", "push", "-q", "origin", "main"], cwd=repo, check=True)
        push.append(time.perf_counter() - t0)
    return {
        "add+commit s": statistics.median(commit),
        "push s": statistics.median(push),
        "largest tree B": largest_tree(repo),
        ".git growth KB/commit": (du(repo / ".git") - before) / runs / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgtrack-gitcost-") as tmp:
        rows = {
            name: measure(Path(tmp), opts.files, opts.runs, fanned)
            for name, fanned in (("one folder (schema 1)", False), ("256 buckets (schema 2)", True))
        }
    print(f"git's cost of one new ledger file among {opts.files}: medians of {opts.runs} runs, {os.cpu_count()} cores")
    keys = list(next(iter(rows.values())))
    print(f"{'layout':<24}" + "".join(f"{k:>24}" for k in keys))
    for name, values in rows.items():
        print(
            f"{name:<24}" + "".join(f"{values[k]:>24.3f}" if k.endswith("s") else f"{values[k]:>24.0f}" for k in keys)
        )


if __name__ == "__main__":
    main()
