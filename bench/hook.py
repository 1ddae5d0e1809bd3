#!/usr/bin/env python3
"""Hook benchmark: whole-process time of the installed hooks over a large, committed ledger.

    python3 bench/hook.py [--records 100000] [--runs 9]

A repository with --records committed records is pushed to a local bare remote; then one new record is
committed, and the installed hook script (`.git/hooks/pre-push`, what `git push` runs) is timed on that
push's stdin line: once before any command built imgtrack's cache (as after a fresh clone, since `record`
reads only the files it needs; target 1 s, as for the first lookups), then --runs times once `log` built
it. Target: <= 0.12 s at 100,000 records.

The server row: the bare remote gets `imgtrack hooks install --server` (which builds its mirror and
cache once), the new commit is pushed to it under a side ref, and its pre-receive hook script is timed on
the line of a push moving main to it; before each timed run, an untimed run on the reverse line puts the
server's mirror back where main is. Target: <= 0.2 s at 100,000 records.
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
        # The first push finds no cache built: `record` read only the files it needed, as on a fresh clone.
        t0 = time.perf_counter()
        proc = subprocess.run([str(hook), "origin", str(remote)], cwd=repo, input=line, capture_output=True, text=True)
        first = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the hook refused a clean push: {proc.stderr.strip()}")
        subprocess.run([IMGTRACK, "log", "-n", "1"], cwd=repo, check=True, capture_output=True)  # build it
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
        server = _server_times(repo, remote, base, tip, opts.runs)
    print(f"imgtrack hook benchmark: {opts.records} committed records, push adding one record")
    print(f"{'hook':<22} {'runs':>5} {'median s':>9} {'min s':>7} {'max s':>7} {'target s':>9}  ok")
    rows = (
        ("pre-push, no cache yet", [first], 1.0),
        ("pre-push (client)", times, 0.12),
        ("pre-receive (server)", server, 0.2),
    )
    for name, found, target in rows:
        median = statistics.median(found)
        print(
            f"{name:<22} {len(found):>5} {median:>9.3f} {min(found):>7.3f} {max(found):>7.3f} {target:>9}  "
            f"{'yes' if median <= target else 'NO'}"
        )
    print(f"(new-branch form of the same push, zero remote oid: exit {proc.returncode})")


def _server_times(repo: Path, remote: Path, base: str, tip: str, runs: int) -> list[float]:
    t0 = time.perf_counter()
    subprocess.run([IMGTRACK, "hooks", "install", "--server"], cwd=remote, check=True, capture_output=True)
    print(f"(hooks install --server, building the server's mirror and cache: {time.perf_counter() - t0:.1f} s)")
    sh("git", "push", "-q", "--no-verify", "origin", "HEAD:refs/bench/tip", cwd=repo)
    hook = remote / "hooks" / "pre-receive"
    forward, back = f"{base} {tip} refs/heads/main\n", f"{tip} {base} refs/heads/main\n"
    times = []
    for _ in range(runs):
        subprocess.run([str(hook)], cwd=remote, input=back, capture_output=True, text=True)
        t0 = time.perf_counter()
        proc = subprocess.run([str(hook)], cwd=remote, input=forward, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"the server hook refused a clean push: {proc.stderr.strip()}")
    return times


if __name__ == "__main__":
    main()
