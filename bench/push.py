#!/usr/bin/env python3
"""Push/pull benchmark: imgtrack against `skopeo copy`, on the same local distribution registry, in one run.

    python3 bench/push.py [--runs 5] [--skip-rss] [--no-settle]

Layouts: A = 4 x 64 MiB random layers; B = 40 layers of 1-8 MiB. Each run pushes to a fresh repository
(imgtrack from a fresh project, so the ledger cannot turn the push into a mount; skopeo with its
blob-info cache removed); then both pull the image skopeo pushed into fresh layouts, taking turns to
go first. Every timed command starts from the same memory state (settle()). Also: a no-op re-push,
and the peak RSS of pushing one 1 GiB layer. Targets: cold push and cold pull median <= 0.8x skopeo's; no-op
re-push <= 0.15 s; peak RSS <= 100 MiB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: testkit, and imgtrack for helpers

from testkit.bench import IMGTRACK, ROOT  # noqa: E402

sys.path.insert(0, str(ROOT))
from imgtrack.oci.layout import REF_NAME, Descriptor, LayoutWriter  # noqa: E402
from testkit.registries import run_registry  # noqa: E402

MiB = 1024 * 1024
SKOPEO_CACHES = [Path("/var/lib/containers/cache"), Path.home() / ".local/share/containers/cache"]


def random_chunks(size: int, seed: int):  # type: ignore[no-untyped-def]
    """A real gzip stream (stored blocks, so nothing shrinks) around `size` seeded random bytes.

    Real gzip matters: skopeo recompresses a layer labelled tar+gzip whose bytes are not gzip, which
    made an early version of this benchmark time skopeo's compressor, not its transfer."""
    rng = random.Random(seed)
    gz = zlib.compressobj(0, zlib.DEFLATED, 31)
    left = size
    while left:
        n = min(4 * MiB, left)
        yield gz.compress(rng.randbytes(n))
        left -= n
    yield gz.flush()


def build(path: Path, sizes: list[int], seed: int) -> None:
    """An OCI layout with one image whose layers are `sizes` bytes of seeded random data."""
    writer = LayoutWriter(path)
    layers = []
    for i, size in enumerate(sizes):
        h, length = hashlib.sha256(), 0
        for chunk in random_chunks(size, seed * 1000 + i):
            h.update(chunk)
            length += len(chunk)
        digest = f"sha256:{h.hexdigest()}"
        writer.put_stream(digest, random_chunks(size, seed * 1000 + i))
        layers.append(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", digest, length))
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Env": [f"SEED={seed}"]},
        }
    ).encode()
    cfg = Descriptor("application/vnd.oci.image.config.v1+json", writer.put_bytes(config), len(config))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cfg.to_json(),
            "layers": [d.to_json() for d in layers],
        }
    ).encode()
    writer.add_to_index(
        Descriptor(
            "application/vnd.oci.image.manifest.v1+json",
            writer.put_bytes(manifest),
            len(manifest),
            annotations={REF_NAME: "bench"},
        )
    )


def project(tmp: Path, name: str) -> Path:
    repo = tmp / name
    repo.mkdir()
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Bench",
        "GIT_AUTHOR_EMAIL": "b@example.com",
        "GIT_COMMITTER_NAME": "Bench",
        "GIT_COMMITTER_EMAIL": "b@example.com",
    }
    for args in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(args, cwd=repo, check=True, env=env)
    subprocess.run([IMGTRACK, "init"], cwd=repo, check=True, capture_output=True)
    with open(repo / ".imgtrack" / "config.toml", "a") as f:
        f.write("\n[images.bench]\nrepositories = []\n")
    return repo


SETTLE_MIB = 512


def settle(scratch: Path) -> None:
    """Start a timed command from the same memory state every time: SETTLE_MIB of page cache freed just
    now, and nothing left dirty by the command before.

    On this VM, memory the guest freed more than a moment ago goes back to the host (virtio-balloon free
    page reporting), and touching it again costs a host fault per page. A pull whose writes land on such
    memory spends ~0.1 s more in the kernel; which tool that hit depended on the order of the run
    (docs/performance.md shows the runs without this)."""
    with open(scratch, "wb") as f:
        block = bytes(MiB)
        for _ in range(SETTLE_MIB):
            f.write(block)
    scratch.unlink()
    os.sync()


def timed(args: list[str], cwd: Path, settled: bool = True) -> tuple[float, float]:
    """(wall seconds, system CPU seconds) of one command."""
    if settled:
        settle(cwd / ".settle")
    sys0 = os.times().children_system
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed: {proc.stderr.strip()[-500:]}")
    return elapsed, os.times().children_system - sys0


def peak_rss_mib(args: list[str], cwd: Path) -> float:
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed: {proc.stderr.strip()[-500:]}")
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def clear_skopeo_cache() -> None:
    for path in SKOPEO_CACHES:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="time each command in whatever memory state the one before left (see settle())",
    )
    opts = parser.parse_args()
    settled = not opts.no_settle
    rows: list[tuple[str, str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="imgtrack-push-bench-") as tmpname:
        tmp = Path(tmpname)
        rng = random.Random(7)
        shapes = {"A 4x64MiB": [64 * MiB] * 4, "B 40x1-8MiB": [rng.randint(1, 8) * MiB for _ in range(40)]}
        with run_registry(tmp / "registry") as host:
            for seed, (label, sizes) in enumerate(shapes.items(), 1):
                layout = tmp / f"layout-{seed}"
                build(layout, sizes, seed)
                times: dict[str, list[float]] = {k: [] for k in ("it-push", "sk-push", "it-pull", "sk-pull", "noop")}
                kernel: dict[str, list[float]] = {k: [] for k in times}

                def note(key: str, measured: tuple[float, float]) -> None:
                    times[key].append(measured[0])
                    kernel[key].append(measured[1])

                for run in range(opts.runs):
                    proj = project(tmp, f"p{seed}-{run}")
                    repo = f"{host}/bench/s{seed}-r{run}"
                    note(
                        "it-push",
                        timed(
                            [
                                IMGTRACK,
                                "push",
                                str(layout),
                                "--image",
                                "bench",
                                "--version",
                                "1.0.0",
                                "--to",
                                f"{repo}-imgtrack",
                            ],
                            proj,
                            settled,
                        ),
                    )
                    note("noop", timed([IMGTRACK, "push", "bench@1.0.0", "--to", f"{repo}-imgtrack"], proj, settled))
                    clear_skopeo_cache()
                    note(
                        "sk-push",
                        timed(
                            [
                                "skopeo",
                                "copy",
                                "-q",
                                "--dest-tls-verify=false",
                                f"oci:{layout}:bench",
                                f"docker://{repo}-skopeo:1.0.0",
                            ],
                            proj,
                            settled,
                        ),
                    )
                    # Both pull the same image, in turns going first: this VM pages out idle page cache
                    # (DAMON), so whichever reads a blob first may pay for the disk.
                    pulls = [
                        (
                            "it-pull",
                            [IMGTRACK, "pull", f"{repo}-skopeo:1.0.0", "--to", str(tmp / f"it-pull-{seed}-{run}")],
                        ),
                        (
                            "sk-pull",
                            [
                                "skopeo",
                                "copy",
                                "-q",
                                "--src-tls-verify=false",
                                f"docker://{repo}-skopeo:1.0.0",
                                f"oci:{tmp / f'sk-pull-{seed}-{run}'}:x",
                            ],
                        ),
                    ]
                    for key, args in pulls if run % 2 == 0 else reversed(pulls):
                        clear_skopeo_cache()
                        note(key, timed(args, tmp, settled))
                    for d in (tmp / f"it-pull-{seed}-{run}", tmp / f"sk-pull-{seed}-{run}"):
                        shutil.rmtree(d, ignore_errors=True)
                for key, values in times.items():  # every run (wall/system CPU), for the spread behind each median
                    runs = " ".join(f"{v:.3f}/{k:.2f}" for v, k in zip(values, kernel[key]))
                    print(f"{label} {key}: {runs}", file=sys.stderr)
                med = {k: statistics.median(v) for k, v in times.items()}
                rows.append((label, "cold push", med["it-push"], med["sk-push"]))
                rows.append((label, "cold pull", med["it-pull"], med["sk-pull"]))
                rows.append((label, "no-op re-push", med["noop"], float("nan")))
                shutil.rmtree(layout)
            rss: tuple[float, float] | None = None
            if not opts.skip_rss:
                big = tmp / "layout-1g"
                build(big, [1024 * MiB], 99)
                proj = project(tmp, "rss")
                it = peak_rss_mib(
                    [
                        IMGTRACK,
                        "push",
                        str(big),
                        "--image",
                        "bench",
                        "--version",
                        "1.0.0",
                        "--to",
                        f"{host}/bench/rss-imgtrack",
                    ],
                    proj,
                )
                clear_skopeo_cache()
                sk = peak_rss_mib(
                    [
                        "skopeo",
                        "copy",
                        "-q",
                        "--dest-tls-verify=false",
                        f"oci:{big}:bench",
                        f"docker://{host}/bench/rss-skopeo:1",
                    ],
                    proj,
                )
                rss = (it, sk)
    print(
        f"imgtrack vs skopeo on a local distribution registry: median of {opts.runs} runs, wall seconds "
        f"({os.cpu_count()} cores)"
    )
    print(f"{'layout':<13} {'operation':<14} {'imgtrack':>9} {'skopeo':>8} {'ratio':>6} {'target':>7}  ok")
    for label, op, it_s, sk_s in rows:
        if op == "no-op re-push":
            print(
                f"{label:<13} {op:<14} {it_s:>9.3f} {'-':>8} {'-':>6} {'0.15 s':>7}  {'yes' if it_s <= 0.15 else 'NO'}"
            )
        else:
            ratio = it_s / sk_s
            print(
                f"{label:<13} {op:<14} {it_s:>9.3f} {sk_s:>8.3f} {ratio:>6.2f} {'0.8x':>7}  {'yes' if ratio <= 0.8 else 'NO'}"
            )
    if rss:
        print(
            f"{'1x1GiB':<13} {'peak RSS MiB':<14} {rss[0]:>9.1f} {rss[1]:>8.1f} {'-':>6} {'100':>7}  "
            f"{'yes' if rss[0] <= 100 else 'NO'}"
        )


if __name__ == "__main__":
    main()
