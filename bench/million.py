#!/usr/bin/env python3
"""Ledger benchmark at a million records: warm lookups, the cache's first build, verify, git tree sizes.

    python3 bench/million.py [--records 1000000] [--images 1] [--runs 5]

Generates the records as files in a git repository, commits them with `imgtrack ledger commit` as CI
does, into segments of each bucket (`--loose`: with `git add`, a file a record), and times
imgtrack installed with pip, each command its own process. No clone is made: checking out a million
files takes longer here than everything else together; the first lookups are timed with no cache,
which is what a fresh clone's first command has, and `log` then builds the cache for the warm rows.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--loose", action="store_true", help="commit the generated records with git add, not in segments"
    )
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgtrack-million-") as tmp:
        repo = Path(tmp) / "repo"
        commits = make_repo(repo)
        t0 = time.perf_counter()
        digest, platform, version = generate(repo, commits, opts.records, images=opts.images)
        gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        if opts.loose:
            sh("git", "add", "-A", cwd=repo)
            sh("git", "commit", "-q", "-m", "records", cwd=repo)
        else:
            sh(IMGTRACK, "ledger", "commit", "-m", "records", cwd=repo)
        add = time.perf_counter() - t0
        out = sh("git", "ls-tree", "-r", "-t", "-l", "HEAD", ".imgtrack/ledger", cwd=repo)
        trees = [line.split()[2] for line in out.splitlines() if line.split()[1] == "tree"]
        sizes = subprocess.run(
            ["git", "cat-file", "--batch-check=%(objectsize)"],
            cwd=repo,
            check=True,
            input="\n".join(trees) + "\n",
            capture_output=True,
            text=True,
        ).stdout.split()
        first = timed(["show", platform], repo)  # no cache yet: the files holding the digest are read
        first_version = timed(["show", version], repo)
        probe_layout = Path(tmp) / "layout-first"
        build_layout(probe_layout, seed=2999, layers=1, layer_size=512)
        first_record = timed(["record", str(probe_layout), "--image", "api", "--version", "8.9.9"], repo)
        build = timed(["log", "-n", "1"], repo)  # the first command that needs every record builds the cache
        results: dict[str, list[float]] = {"show <platform digest>": [], "show <version>": [], "record": []}
        for r in range(opts.runs):
            layout = Path(tmp) / f"layout-{r}"
            build_layout(layout, seed=3000 + r, layers=1, layer_size=512)
            results["show <platform digest>"].append(timed(["show", platform], repo))
            results["show <version>"].append(timed(["show", version], repo))
            results["record"].append(timed(["record", str(layout), "--image", "api", "--version", f"9.0.{r}"], repo))
        verify = timed(["verify"], repo, check=False)
        print(f"imgtrack ledger at {opts.records} records, {opts.images} image(s): medians of {opts.runs} runs")
        how = "git add+commit" if opts.loose else "imgtrack ledger commit"
        print(f"  generate files {gen:.0f} s, {how} {add:.0f} s (set-up)")
        print(f"  largest ledger tree: {max(int(s) for s in sizes)} bytes ({len(sizes)} trees)")
        print(
            f"  first show <platform digest> / <version> / record (no cache): {first:.2f} / {first_version:.2f} / {first_record:.2f} s"
        )
        print(f"  first log (builds the cache): {build:.2f} s")
        for name, values in results.items():
            print(f"  warm {name}: {statistics.median(values):.3f} s")
        print(f"  verify: {verify:.1f} s", flush=True)
        shutil.rmtree(repo / ".git" / "imgtrack")


if __name__ == "__main__":
    main()
