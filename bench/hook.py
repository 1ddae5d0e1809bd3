#!/usr/bin/env python3
"""Pre-push hook benchmark: whole-process time of the installed hook over a large, committed ledger.

    python3 bench/hook.py [--records 100000] [--runs 9]

A repository with --records committed records is pushed to a local bare remote; then one new record is
committed, and the installed hook script (`.git/hooks/pre-push`, what `git push` runs) is timed on that
push's stdin line, --runs times. Target: <= 0.3 s at 100,000 records.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: testkit, and imgtrack for helpers

from testkit.bench import IMGTRACK, generate, make_repo, sh  # noqa: E402
from testkit.layouts import build_layout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=9)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgtrack-hook-bench-") as tmp:
        repo, remote = Path(tmp) / "repo", Path(tmp) / "remote.git"
        commits = make_repo(repo)
        generate(repo, commits, opts.records)
        sh("git", "add", "-A", cwd=repo)
        sh("git", "commit", "-q", "-m", f"{opts.records} records", cwd=repo)
        sh("git", "init", "-q", "--bare", str(remote), cwd=Path(tmp))
        sh("git", "remote", "add", "origin", str(remote), cwd=repo)
        sh("git", "push", "-q", "origin", "main", cwd=repo)
        base = sh("git", "rev-parse", "HEAD", cwd=repo)
        subprocess.run([IMGTRACK, "hooks", "install"], cwd=repo, check=True, capture_output=True)
        layout = Path(tmp) / "layout"
        build_layout(layout, seed=99, layers=1, layer_size=512)
        subprocess.run(
            [IMGTRACK, "record", str(layout), "--image", "api", "--version", "9.9.9"],
            cwd=repo,
            check=True,
            capture_output=True,
        )
        sh("git", "add", ".imgtrack", cwd=repo)
        sh("git", "commit", "-q", "-m", "one more record", cwd=repo)
        tip = sh("git", "rev-parse", "HEAD", cwd=repo)
        hook = Path(sh("git", "rev-parse", "--git-path", "hooks", cwd=repo))
        hook = (repo / hook if not hook.is_absolute() else hook) / "pre-push"
        line = f"refs/heads/main {tip} refs/heads/main {base}\n"
        times = []
        for _ in range(opts.runs):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [str(hook), "origin", str(remote)], cwd=repo, input=line, capture_output=True, text=True
            )
            times.append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise SystemExit(f"the hook refused a clean push: {proc.stderr.strip()}")
        bad = f"refs/heads/main {tip} refs/heads/main {'0' * 40}\n"
        proc = subprocess.run([str(hook), "origin", str(remote)], cwd=repo, input=bad, capture_output=True, text=True)
    median = statistics.median(times)
    print(f"imgtrack pre-push hook benchmark: {opts.records} committed records, push adding one record")
    print(f"{'runs':>5} {'median s':>9} {'min s':>7} {'max s':>7} {'target s':>9}  ok")
    print(
        f"{opts.runs:>5} {median:>9.3f} {min(times):>7.3f} {max(times):>7.3f} {0.3:>9}  {'yes' if median <= 0.3 else 'NO'}"
    )
    print(f"(new-branch form of the same push, zero remote oid: exit {proc.returncode})")


if __name__ == "__main__":
    main()
