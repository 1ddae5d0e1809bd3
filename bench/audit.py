#!/usr/bin/env python3
"""Audit benchmark: whole-process time of `imgtrack audit` on pod lists of 1,000 and 20,000 running images
against a large ledger.

    python3 bench/audit.py [--records 100000] [--images 1000,20000] [--runs 7]

Each pod list is kubectl-shaped (`kubectl get pods -A -o json`): pods of two containers each (500 and
10,000 pods), 90% of them running recorded digests, 10% unknown ones. Target: <= 1 s at 100,000 records,
for both.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: testkit, and imgtrack for helpers

from testkit.bench import IMGTRACK, generate, make_repo  # noqa: E402


def pod_list(digests: list[str], images: int, rng: random.Random) -> dict:
    pods = []
    for p in range(images // 2):
        containers, statuses = [], []
        for c in range(2):
            known = rng.random() < 0.9
            digest = rng.choice(digests) if known else f"sha256:{rng.getrandbits(256):064x}"
            name = f"c{c}"
            containers.append({"name": name, "image": "registry.example.com/team/api:1.0.0"})
            statuses.append(
                {
                    "name": name,
                    "image": "registry.example.com/team/api:1.0.0",
                    "imageID": f"docker-pullable://registry.example.com/team/api@{digest}",
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {}},
                }
            )
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"api-{p}", "namespace": f"ns-{p % 20}"},
                "spec": {"containers": containers},
                "status": {"phase": "Running", "containerStatuses": statuses},
            }
        )
    return {"apiVersion": "v1", "kind": "List", "items": pods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--images", default="1000,20000", help="running images per pod list, comma-separated")
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args()
    sizes = [int(n) for n in opts.images.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="imgtrack-audit-bench-") as tmp:
        repo = Path(tmp) / "repo"
        commits = make_repo(repo)
        digests: list[str] = []
        generate(repo, commits, opts.records, digests)
        subprocess.run([IMGTRACK, "log", "-n", "1"], cwd=repo, check=True, capture_output=True)  # builds the cache
        for size in sizes:
            pods = Path(tmp) / f"pods-{size}.json"
            pods.write_text(json.dumps(pod_list(digests, size, random.Random(5))))
            times, statuses = [], {}
            for _ in range(opts.runs):
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [IMGTRACK, "audit", str(pods), "--json"], cwd=repo, capture_output=True, text=True
                )
                times.append(time.perf_counter() - t0)
                if proc.returncode not in (0, 1):
                    raise SystemExit(f"audit failed: {proc.stderr.strip()}")
                statuses = {}
                for row in json.loads(proc.stdout):
                    statuses[row["status"]] = statuses.get(row["status"], 0) + 1
            results.append((size, times, statuses))
    print(f"imgtrack audit benchmark: {opts.records} records, median of {opts.runs}")
    print(f"{'images':>7} {'median s':>9} {'min s':>7} {'max s':>7} {'target s':>9}  ok   statuses")
    for size, times, statuses in results:
        median = statistics.median(times)
        print(
            f"{size:>7} {median:>9.3f} {min(times):>7.3f} {max(times):>7.3f} {1.0:>9}  "
            f"{'yes' if median <= 1.0 else 'NO '}  " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        )


if __name__ == "__main__":
    main()
