#!/usr/bin/env python3
"""How fast this machine takes fresh file data: 256 MiB written into new files, a few rounds.

    python3 bench/writes.py [--rounds 4]

On the VMs this project is measured on, the first 256 MiB go at memory speed and later rounds at
~0.6 s, whatever the write size and even after `sync`: new page-cache memory is slow to come by.
A cold pull writes exactly such data, so `bench/push.py` pull figures move with it (performance.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

MiB = 1024 * 1024


def one_round(root: str, data: bytes, chunk: int) -> float:
    folder = tempfile.mkdtemp(dir=root)
    os.sync()
    started = time.perf_counter()
    view = memoryview(data)
    for i in range(4):
        with open(os.path.join(folder, f"layer-{i}"), "wb", buffering=0) as f:
            for _ in range(64 * MiB // len(data)):
                for offset in range(0, len(data), chunk):
                    f.write(view[offset : offset + chunk])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    opts = parser.parse_args()
    data = os.urandom(MiB)
    root = tempfile.mkdtemp(prefix="imgtrack-writes-")
    try:
        print("fresh-file writes: seconds to write 256 MiB into new files (files kept between rounds)")
        print(f"{'round':>5} {'1 MiB writes':>13} {'32 KiB writes':>14}")
        for n in range(1, opts.rounds + 1):
            print(f"{n:>5} {one_round(root, data, MiB):>13.3f} {one_round(root, data, 32 * 1024):>14.3f}")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
