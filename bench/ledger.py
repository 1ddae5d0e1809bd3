#!/usr/bin/env python3
"""Ledger benchmark: whole-process times of imgtrack and git commands over large schema-2 ledgers.

    python3 bench/ledger.py [--sizes 100000] [--images 1] [--runs 5]

Records are generated as files (not by N CLI calls) in a git repository with 300 real commits and
committed by `imgtrack ledger commit`, which puts them in segments of each bucket as CI's commits do
(`--loose`: with `git add`, one file a record); a bare remote is made from it and cloned, as CI would. Every command runs as its own
process of imgtrack installed with pip, as a user or hook runs it; the table gives medians.

* first lookups: on the clone with imgtrack's cache removed (what a fresh `git clone` has);
* after pull: another clone pushes 10 new records, this clone `git pull`s them, then one command;
* warm: the same commands again;
* git: `git add .imgtrack && git commit` of one new record, and `git push` of it; then
  `imgtrack ledger commit` of one new record, the documented way (same target as git's own commit).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: testkit, and imgtrack for helpers

from testkit.bench import IMGTRACK, generate, make_repo, sh, timed  # noqa: E402
from testkit.layouts import build_layout  # noqa: E402

TARGETS = {
    "first show <platform digest>": 1.0,
    "first show <version>": 1.0,
    "first record": 1.0,
    "show after pull of 10": 0.15,
    "record after pull of 10": 0.15,
    "show <digest>": 0.10,
    "show <version>": 0.10,
    "record": 0.10,
    "git add+commit of one record": 0.25,
    "git push of it": 0.15,
    "ledger commit of one record": 0.25,
    "verify": 10.0,
}


def wall(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def drop_cache(clone: Path) -> None:
    shutil.rmtree(clone / ".git" / "imgtrack", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--loose", action="store_true", help="commit the generated records with git add, not in segments"
    )
    opts = parser.parse_args()
    rows = []
    for count in (int(s) for s in opts.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="imgtrack-bench-") as tmp:
            base = Path(tmp)
            repo = base / "repo"
            commits = make_repo(repo)
            digest, platform, version = generate(repo, commits, count, images=opts.images)
            if opts.loose:
                sh("git", "add", "-A", cwd=repo)
                sh("git", "commit", "-q", "-m", f"{count} records", cwd=repo)
            else:  # as CI commits them: into segments of each bucket
                t0 = time.perf_counter()
                sh(IMGTRACK, "ledger", "commit", "-m", f"{count} records", cwd=repo)
                print(f"(imgtrack ledger commit of {count} new records: {time.perf_counter() - t0:.1f} s)")
            sh("git", "clone", "-q", "--bare", str(repo), str(base / "remote.git"), cwd=base)
            sh("git", "remote", "add", "origin", str(base / "remote.git"), cwd=repo)
            sh("git", "fetch", "-q", "origin", cwd=repo)
            sh("git", "branch", "-q", "-u", "origin/main", cwd=repo)
            clone = base / "clone"
            sh("git", "clone", "-q", str(base / "remote.git"), str(clone), cwd=base)
            layouts = []
            for r in range(opts.runs * 3):
                layout = base / f"layout-{r}"
                build_layout(layout, seed=1000 + r, layers=1, layer_size=512)
                layouts.append(layout)
            results: dict[str, list[float]] = {k: [] for k in TARGETS}
            for r in range(opts.runs):
                drop_cache(clone)
                results["first show <platform digest>"].append(timed(["show", platform], clone))
                drop_cache(clone)
                results["first show <version>"].append(timed(["show", version], clone))
                drop_cache(clone)
                results["first record"].append(
                    timed(["record", str(layouts[r]), "--image", "api", "--version", f"9.0.{r}"], clone)
                )
                sh("git", "clean", "-q", "-fd", "--", ".imgtrack", cwd=clone)  # that record again, next run
            timed(["log", "-n", "1"], clone)  # the cache, built once
            batch = 0
            for r in range(opts.runs):
                for what in ("show", "record"):
                    batch += 1
                    generate(repo, commits, 10, seed=batch, start_index=count + 100 * batch)
                    sh("git", "add", "-A", cwd=repo)
                    sh("git", "commit", "-q", "-m", "10 more", cwd=repo)
                    sh("git", "push", "-q", "origin", "main", cwd=repo)
                    sh("git", "pull", "-q", "--ff-only", cwd=clone)
                    if what == "show":
                        results["show after pull of 10"].append(timed(["show", digest], clone))
                    else:
                        results["record after pull of 10"].append(
                            timed(
                                ["record", str(layouts[opts.runs + r]), "--image", "api", "--version", f"9.1.{r}"],
                                clone,
                            )
                        )
            for r in range(opts.runs):
                results["show <digest>"].append(timed(["show", platform], clone))
                results["show <version>"].append(timed(["show", version], clone))
                results["record"].append(
                    timed(["record", str(layouts[2 * opts.runs + r]), "--image", "api", "--version", f"9.2.{r}"], clone)
                )
            sh("git", "add", "-A", cwd=clone)
            sh("git", "commit", "-q", "-m", "records", cwd=clone)
            sh("git", "pull", "-q", "--rebase", cwd=clone)
            sh("git", "push", "-q", "origin", "main", cwd=clone)
            for r in range(opts.runs):
                layout = base / f"one-{r}"
                build_layout(layout, seed=5000 + r, layers=1, layer_size=512)
                timed(["record", str(layout), "--image", "api", "--version", f"9.3.{r}"], clone)
                t0 = time.perf_counter()
                subprocess.run(["git", "add", ".imgtrack"], cwd=clone, check=True)
                subprocess.run(["git", "commit", "-q", "-m", "one record"], cwd=clone, check=True)
                results["git add+commit of one record"].append(time.perf_counter() - t0)
                results["git push of it"].append(wall(["git", "push", "-q", "origin", "main"], clone))
            for r in range(opts.runs):
                layout = base / f"two-{r}"
                build_layout(layout, seed=6000 + r, layers=1, layer_size=512)
                timed(["record", str(layout), "--image", "api", "--version", f"9.4.{r}"], clone)
                results["ledger commit of one record"].append(timed(["ledger", "commit"], clone))
            results["verify"] = [timed(["verify"], clone, check=False) for _ in range(max(1, opts.runs // 2))]
            findings = subprocess.run([IMGTRACK, "verify"], cwd=clone, capture_output=True, text=True).stdout
            if findings:
                print(f"verify findings (first 3): {findings.splitlines()[:3]}", file=sys.stderr)
            tree = max_tree(clone)
            rows.append((count, results, tree))
    print(
        f"imgtrack ledger benchmark: medians of {opts.runs} whole-process runs, {opts.images} image(s), "
        f"{os.cpu_count()} cores"
    )
    print(f"{'records':>8} {'command':<30} {'median s':>9} {'target s':>9}  ok   each run, in order (s)")
    for count, results, tree in rows:
        for name, runs in results.items():
            value, target = statistics.median(runs), TARGETS[name]
            each = " ".join(f"{t:.3f}" for t in runs)
            print(f"{count:>8} {name:<30} {value:>9.3f} {target:>9}  {'yes' if value <= target else 'NO ':<3}  {each}")
        print(f"{count:>8} {'largest ledger tree (bytes)':<30} {tree:>9}")


def max_tree(repo: Path) -> int:
    """The size of the largest git tree object under .imgtrack/ledger at HEAD."""
    out = sh("git", "ls-tree", "-r", "-t", "-l", "HEAD", ".imgtrack/ledger", cwd=repo)
    trees = [line.split()[2] for line in out.splitlines() if line.split()[1] == "tree"]
    trees.append(sh("git", "rev-parse", "HEAD:.imgtrack/ledger", cwd=repo))
    sizes = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectsize)"],
        cwd=repo,
        input="\n".join(trees) + "\n",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return max(int(s) for s in sizes)


if __name__ == "__main__":
    main()
