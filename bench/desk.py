#!/usr/bin/env python3
"""Release desk benchmark: whole-process times of `status`, `rollback` and `pin` on a large ledger.

    python3 bench/desk.py [--records 100000] [--releases 500] [--deploys 10000] [--docs 100] [--runs 7]

The ledger holds `--records` dev builds and `--releases` releases of one image, and `--deploys`
deployment facts (deploys to staging, qa and prod, with some sightings and bad marks) over the
releases. `pin` rewrites a file of `--docs` Deployments (two containers each, one of them the image's)
to the newest release, from a fresh copy each run. Targets: status and rollback <= 0.2 s, pin <= 0.5 s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: testkit, and imgtrack for helpers

from imgtrack.ledger.schema import Fact, PlatformManifest, Record  # noqa: E402
from imgtrack.ledger.store import facts_rel, record_rel  # noqa: E402
from testkit.bench import IMGTRACK, generate, make_repo, timed  # noqa: E402

REPOSITORY = "registry.example.com/team/api"


def releases_and_deploys(repo: Path, commits: list[str], releases: int, deploys: int) -> None:
    root = repo / ".imgtrack" / "ledger"
    rng = random.Random(7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    built = []
    for i in range(releases):
        digest = f"sha256:{rng.getrandbits(256):064x}"
        version = f"2.{i // 100}.{i % 100}"
        rec = Record(
            image="api",
            digest=digest,
            media_type="application/vnd.oci.image.index.v1+json",
            version=version,
            commit=commits[-releases + i] if releases <= len(commits) else commits[i % len(commits)],
            tree="clean",
            tags=(version,),
            recorded_at=start + timedelta(hours=12 * i),
            recorded_by="Bench <bench@example.com>",
            manifests=(
                PlatformManifest(
                    "linux/amd64", f"sha256:{rng.getrandbits(256):064x}", f"sha256:{rng.getrandbits(256):064x}"
                ),
            ),
        )
        path = root / record_rel("api", digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rec.to_toml())
        built.append(rec)
    envs = ("staging", "qa", "prod")
    for n in range(deploys):
        rec = built[min(releases - 1, n * releases // deploys)]
        env = envs[n % 3]
        kind = "bad" if n % 97 == 0 else "seen" if n % 5 == 0 else "deploy"
        at = rec.recorded_at + timedelta(minutes=n % 600 + 1, seconds=n)
        fact = Fact(kind=kind, image="api", record=rec.digest, at=at, by="Bench <bench@example.com>", env=env)
        folder = root / facts_rel("api", rec.digest)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / fact.file_name()).write_bytes(fact.to_toml())
    with open(repo / ".imgtrack" / "config.toml", "a") as f:
        f.write("".join(f"\n[environments.{e}]\n" for e in envs))
    config = repo / ".imgtrack" / "config.toml"
    config.write_text(
        config.read_text().replace("[images.api]\nrepositories = []", f'[images.api]\nrepositories = ["{REPOSITORY}"]')
    )


def deployments(docs: int) -> str:
    out = []
    for d in range(docs):
        out.append(
            f"""# service {d}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api-{d}
  labels: {{app: api-{d}}}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: api
          image: {REPOSITORY}:2.{d % 5}.0   # the team's tag
          ports:
            - containerPort: 8080
        - name: proxy
          image: nginx:1.27
"""
        )
    return "---\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--releases", type=int, default=500)
    parser.add_argument("--deploys", type=int, default=10_000)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--runs", type=int, default=7)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgtrack-desk-bench-") as tmp:
        repo = Path(tmp) / "repo"
        commits = make_repo(repo)
        generate(repo, commits, opts.records)
        releases_and_deploys(repo, commits, opts.releases, opts.deploys)
        subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
        subprocess.run(["git", "commit", "-q", "-m", "ledger"], cwd=repo, check=True)
        subprocess.run([IMGTRACK, "log", "-n", "1"], cwd=repo, check=True, capture_output=True)  # builds the cache
        source = deployments(opts.docs)
        target = Path(tmp) / "deploy.yaml"

        def pin() -> float:
            target.write_text(source)
            return timed(["pin", str(target), "--to", "api@^2"], repo)

        cases = [
            ("log -n 1 (any lookup's floor)", "log", lambda: timed(["log", "-n", "1"], repo), None),
            ("status", "status", lambda: timed(["status"], repo), 0.2),
            ("status api --json", "status", lambda: timed(["status", "api", "--json"], repo), 0.2),
            ("rollback api --env prod", "rollback", lambda: timed(["rollback", "api", "--env", "prod"], repo), 0.2),
            (f"pin ({opts.docs} documents)", "pin", pin, 0.5),
        ]
        times: dict[str, list[float]] = {name: [] for name, *_ in cases}
        for _ in range(opts.runs):  # interleaved: a slow moment of the machine slows every command alike
            for name, _, call, _ in cases:
                times[name].append(call())
        rows = [
            (name, statistics.median(times[name]), min(times[name]), max(times[name]), t) for name, _, _, t in cases
        ]
        pinned = target.read_text().count("@sha256:")
    print(
        f"imgtrack release desk benchmark: {opts.records} dev records, {opts.releases} releases, "
        f"{opts.deploys} deployment facts; median of {opts.runs} runs"
    )
    print(f"{'command':<31} {'median s':>9} {'min s':>7} {'max s':>7} {'target s':>9}  ok")
    for name, median, low, high, target_s in rows:
        ok = "" if target_s is None else "yes" if median <= target_s else "NO"
        print(f"{name:<31} {median:>9.3f} {low:>7.3f} {high:>7.3f} {target_s or '-':>9}  {ok}")
    print(f"pin wrote {pinned} digests into {opts.docs} documents")


if __name__ == "__main__":
    main()
