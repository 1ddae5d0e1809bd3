"""Shared by the benchmarks: a git repository with real commits and a ledger generated as files."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from imgtrack.ledger.schema import PlatformManifest, Record  # noqa: E402
from imgtrack.ledger.store import record_rel  # noqa: E402

__all__ = ["IMGTRACK", "ROOT", "generate", "make_repo", "sh", "timed"]

VENV = ROOT / ".cache" / "bench-venv"


def _install() -> str:
    """imgtrack as `pip install` gives a user: this checkout built and installed, bytecode and all, into
    a virtual environment of its own; its console script, not a version manager's shim.

    Not the editable install the tests use: its import hook (~11 ms), bytecode that
    PYTHONDONTWRITEBYTECODE=1 (this machine's default) never lets it keep (~30 ms), and any .pth file of
    the base interpreter's site-packages (here one that imports certifi, ~8 ms) are start-up no user pays."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True)
    else:  # this checkout's code, as it is now
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(ROOT)], check=True
        )
    return str(VENV / "bin" / "imgtrack")


IMGTRACK = _install()
COMMITS = 300


def sh(*args: str, cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: Path) -> list[str]:
    path.mkdir(parents=True)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Bench",
        "GIT_AUTHOR_EMAIL": "bench@example.com",
        "GIT_COMMITTER_NAME": "Bench",
        "GIT_COMMITTER_EMAIL": "bench@example.com",
    }
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run(["git", "config", "user.name", "Bench"], cwd=path, check=True)
    subprocess.run(["git", "config", "user.email", "bench@example.com"], cwd=path, check=True)
    subprocess.run(["git", "config", "gc.auto", "0"], cwd=path, check=True)  # no repack in the middle of a timing
    # fast-import: COMMITS commits in one process (each continues the branch's tip).
    lines = []
    for i in range(COMMITS):
        msg = f"commit {i}".encode()
        data = f"{i}\n".encode()
        lines.append(b"commit refs/heads/main\n")
        lines.append(f"committer Bench <bench@example.com> {1700000000 + i} +0000\n".encode())
        lines.append(f"data {len(msg)}\n".encode() + msg + b"\n")
        lines.append(f"M 644 inline file.txt\ndata {len(data)}\n".encode() + data + b"\n")
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=b"".join(lines), check=True, env=env)
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=path, check=True)
    commits = sh("git", "rev-list", "--reverse", "main", cwd=path).splitlines()
    subprocess.run([IMGTRACK, "init"], cwd=path, check=True, capture_output=True)
    with open(path / ".imgtrack" / "config.toml", "a") as f:
        f.write("\n[images.api]\nrepositories = []\n")
    return commits


def generate(
    path: Path,
    commits: list[str],
    count: int,
    digests: list[str] | None = None,
    images: int = 1,
    seed: int | None = None,
    start_index: int = 0,
) -> tuple[str, str, str]:
    """Write `count` schema-2 records spread over `images` images (api, api-1, …): versions
    1.<i // 1000>.<i % 1000>-dev.<i>+g<sha>, one platform each. Returns (index digest, platform digest,
    image@version) of the record in the middle."""
    root = path / ".imgtrack" / "ledger"
    names = ["api", *(f"api-{n}" for n in range(1, images))]
    rng = random.Random(count if seed is None else seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    sample = ("", "", "")
    made: set[str] = set()
    for i in range(start_index, start_index + count):
        image = names[i % len(names)]
        digest = f"sha256:{rng.getrandbits(256):064x}"
        platform = f"sha256:{rng.getrandbits(256):064x}"
        commit = commits[i * len(commits) // (start_index + count)]
        version = f"1.{i // 1000}.{i % 1000}-dev.{i}+g{commit[:7]}"
        rec = Record(
            image=image,
            digest=digest,
            media_type="application/vnd.oci.image.index.v1+json",
            version=version,
            commit=commit,
            tree="clean",
            tags=(version.replace("+", "_"),),
            recorded_at=start + timedelta(seconds=i),
            recorded_by="Bench <bench@example.com>",
            manifests=(PlatformManifest("linux/amd64", platform, f"sha256:{rng.getrandbits(256):064x}"),),
        )
        target = root / record_rel(image, digest)
        folder = str(target.parent)
        if folder not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        target.write_bytes(rec.to_toml())
        if digests is not None:
            digests.append(digest)
        if i == start_index + count // 2:
            sample = (digest, platform, f"{image}@{version}")
    with open(path / ".imgtrack" / "config.toml", "a") as f:
        f.write(
            "".join(
                f"\n[images.{n}]\nrepositories = []\n"
                for n in names[1:]
                if f"[images.{n}]" not in (path / ".imgtrack" / "config.toml").read_text()
            )
        )
    return sample


def timed(args: list[str], cwd: Path, check: bool = True) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([IMGTRACK, *args], cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise RuntimeError(f"imgtrack {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return elapsed
