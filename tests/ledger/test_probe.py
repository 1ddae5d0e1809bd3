"""A fresh clone of a large repository answers `show` from the few files that hold what was asked, and
gives the answers the built cache gives (real git, real processes)."""

from __future__ import annotations

import random
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import LayoutFactory, commit_file, git, record_file, run, smuggle_tag


def _grow(repo: Path) -> None:
    """Make git's index over a megabyte, as a repository of some 10,000 files has it: past that a lookup
    on a cache not built yet probes instead of building the cache."""
    bulk = repo / "vendor" / ("deep-" * 20)
    bulk.mkdir(parents=True)
    for i in range(5200):
        (bulk / f"{'module-' * 12}{i:05d}.txt").write_text(f"{i}\n")
    git(repo, "add", "vendor")
    git(repo, "commit", "-q", "-m", "vendor")
    assert (repo / ".git" / "index").stat().st_size > 1024 * 1024


def _cache_built(repo: Path) -> bool:
    db = repo / ".git" / "imgtrack" / "cache.sqlite"
    if not db.exists():
        return False
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key='built'").fetchone()
    return row is not None and row[0] == "1"


@pytest.fixture
def big(project: Path, layouts: LayoutFactory, tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """The project with three builds (one multi-platform, pushed and tagged later), its clone, and refs."""
    _grow(project)
    git(project, "tag", "v1.0.0")
    multi, multi_digest = layouts(platforms=("linux/amd64", "linux/arm64/v8"))
    assert run(["push", str(multi), "--image", "api", "--to", f"oci:{tmp_path / 'out'}", "-q"], project).code == 0
    assert run(["record", str(multi), "--image", "api", "--tag", "qa-approved"], project).code == 0
    commit_file(project)
    second, _ = layouts()
    assert run(["record", str(second), "--image", "api"], project).code == 0
    third, _ = layouts()
    assert run(["record", str(third), "--image", "web"], project).code == 0
    assert run(["ledger", "commit"], project).code == 0
    shown = run(["show", multi_digest, "--json"], project).json()
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(project), str(bare))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    refs = {
        "platform": shown["manifests"][1]["digest"],
        "own": multi_digest,
        "prefix": multi_digest[:19],
        "version": "api@1.0.0",
        "tag": "qa-approved",
        "commit": shown["commit"][:10],
    }
    return project, clone, refs


def test_a_fresh_clone_shows_what_the_built_cache_shows_without_building_it(
    big: tuple[Path, Path, dict[str, str]],
) -> None:
    project, clone, refs = big
    for what, ref in refs.items():
        here = run(["show", ref, "--json"], project)
        there = run(["show", ref, "--json"], clone)
        assert (there.code, there.json()) == (here.code, here.json()), what
    assert len(run(["show", refs["own"], "--json"], clone).json()["pushes"]) == 1  # its facts came with it
    assert "qa-approved" in run(["show", refs["platform"], "--json"], clone).json()["tags"]
    assert not _cache_built(clone), "each show read only the files holding its reference"
    missing = run(["show", "no-such-tag"], clone)
    assert missing.code == 1 and "matches no record" in missing.err
    assert not _cache_built(clone)
    assert run(["log", "-n", "1"], clone).code == 0 and _cache_built(clone)  # a command needing them all builds it


def test_a_build_recorded_in_the_clone_and_not_committed_is_found_by_the_probe(
    big: tuple[Path, Path, dict[str, str]], layouts: LayoutFactory
) -> None:
    _, clone, refs = big
    fresh, digest = layouts(seed=99)
    assert run(["record", str(fresh), "--image", "web", "--version", "2.0.0"], clone).code == 0
    (clone / ".git" / "imgtrack").joinpath("cache.sqlite").unlink()
    assert run(["show", digest, "--json"], clone).json()["version"] == "2.0.0"
    assert run(["show", "web@2.0.0", "--json"], clone).json()["digest"] == digest
    assert not _cache_built(clone)
    unknown = run(["show", "nope@2.0.0"], clone)
    assert unknown.code == 2 and "no records of image 'nope'" in unknown.err


def test_record_on_a_fresh_clone_checks_policy_against_the_files_holding_its_tags_and_version(
    big: tuple[Path, Path, dict[str, str]], layouts: LayoutFactory
) -> None:
    project, clone, _ = big
    other, _ = layouts(seed=77)
    again = ["record", str(other), "--image", "api", "--version", "1.0.0", "--commit", "v1.0.0"]
    here, there = run(again, project), run(again, clone)
    assert here.code == there.code == 1 and there.err == here.err and "1.0.0" in there.err
    assert not _cache_built(clone)
    newer, digest = layouts(seed=78)
    for repo in (project, clone):
        assert run(["record", str(newer), "--image", "api", "--version", "1.0.1"], repo).code == 0
    tags = [run(["show", digest, "--json"], repo).json()["tags"] for repo in (project, clone)]
    assert tags[0] == tags[1] and "1.0" in tags[1]
    assert not _cache_built(clone), "the record was checked and written without reading the whole ledger"
    assert run(["log", "--json"], clone).json()[0]["digest"] == digest  # the cache built later has it


def test_concurrent_records_on_a_fresh_clone_still_take_one_version_once(
    big: tuple[Path, Path, dict[str, str]], layouts: LayoutFactory
) -> None:
    """Each writer probes under the ledger lock, so it sees what the writer before it wrote (untracked)."""
    _, clone, _ = big
    builds = [layouts(seed=200 + i)[0] for i in range(4)]
    with ThreadPoolExecutor(len(builds)) as pool:
        results = list(
            pool.map(lambda b: run(["record", str(b), "--image", "web", "--version", "3.0.0"], clone), builds)
        )
    assert sorted(r.code for r in results) == [0, 1, 1, 1], [r.err for r in results]
    assert all("3.0.0" in r.err for r in results if r.code == 1)
    assert not _cache_built(clone)
    assert len(run(["log", "web", "--json"], clone).json()) == 2  # the build from the origin, and the one winner


def _push(repo: Path) -> subprocess.CompletedProcess[str]:
    """A real `git push` to the clone's origin, which runs the installed pre-push hook."""
    result = subprocess.run(["git", "push", "origin", "main"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    return result


def test_the_pre_push_hook_of_a_fresh_clone_reads_only_the_files_holding_what_it_checks(
    big: tuple[Path, Path, dict[str, str]], layouts: LayoutFactory
) -> None:
    """The first push of a fresh clone is judged as a built cache judges it, without building the cache."""
    _, clone, _ = big
    assert run(["hooks", "install"], clone).code == 0
    fine, _ = layouts(seed=301)
    assert run(["record", str(fine), "--image", "api", "--version", "1.0.1"], clone).code == 0
    assert run(["ledger", "commit"], clone).code == 0
    result = _push(clone)
    assert result.returncode == 0, result.stderr
    assert not _cache_built(clone), "the hook read only the files holding the pushed record's tags and version"

    commit_file(clone)
    taken, _ = layouts(seed=302)
    shown = run(["record", str(taken), "--image", "api", "--json"], clone)
    assert shown.code == 0, shown.err
    smuggle_tag(record_file(clone, shown.json()), "qa-approved")  # held by a build from the origin
    git(clone, "add", ".imgtrack")
    git(clone, "commit", "-q", "-m", "a record claiming a taken tag")
    tip = git(clone, "rev-parse", "origin/main")
    refused = _push(clone)
    assert refused.returncode != 0 and "qa-approved" in refused.stderr and "immutable tags never move" in refused.stderr
    assert not _cache_built(clone)
    assert git(clone, "rev-parse", "origin/main") == tip
    assert run(["log", "-n", "1"], clone).code == 0 and _cache_built(clone)
    again = _push(clone)  # the same push, judged by the cache now built: the same reasons
    assert again.returncode != 0
    reasons = [line for line in refused.stderr.splitlines() if "qa-approved" in line]
    assert reasons == [line for line in again.stderr.splitlines() if "qa-approved" in line]


def test_a_release_tag_moved_from_a_fresh_clone_is_refused_without_building_the_cache(
    big: tuple[Path, Path, dict[str, str]],
) -> None:
    _, clone, _ = big
    assert run(["hooks", "install"], clone).code == 0
    commit_file(clone)
    git(clone, "tag", "-f", "v1.0.0")
    moved = subprocess.run(["git", "push", "-f", "origin", "v1.0.0"], cwd=clone, capture_output=True, text=True)
    assert moved.returncode != 0 and "moving release tag v1.0.0" in moved.stderr and "api 1.0.0" in moved.stderr
    assert not _cache_built(clone)


def test_a_fresh_clone_of_a_ledger_held_in_segments_probes_them(project: Path, tmp_path: Path) -> None:
    """git's index is small when the ledger is in segments; what they hold still makes the first lookup
    read only what it needs, and find what is inside them."""
    from datetime import UTC, datetime, timedelta

    from imgtrack.ledger.schema import PlatformManifest, Record
    from imgtrack.ledger.segment import encode, segment_name
    from imgtrack.ledger.store import record_rel

    commit = git(project, "rev-parse", "HEAD")
    rng = random.Random(5)
    buckets: dict[str, dict[str, bytes]] = {}
    for i in range(8000):
        digest = f"sha256:{rng.getrandbits(256):064x}"
        rec = Record(
            image="api",
            digest=digest,
            media_type="application/vnd.oci.image.manifest.v1+json",
            version=f"1.{i // 1000}.{i % 1000}",
            commit=commit,
            tree="clean",
            tags=(f"1.{i // 1000}.{i % 1000}",),
            recorded_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i),
            recorded_by="Bench <bench@example.com>",
            manifests=(PlatformManifest("linux/amd64", digest, f"sha256:{rng.getrandbits(256):064x}"),),
        )
        rel = record_rel("api", digest)
        buckets.setdefault(rel.rsplit("/", 1)[0], {})[rel] = rec.to_toml()
    root = project / ".imgtrack" / "ledger"
    for bucket, entries in buckets.items():
        data = encode(entries)
        (root / bucket).mkdir(parents=True, exist_ok=True)
        (root / bucket / segment_name(data)).write_bytes(data)
    git(project, "add", ".imgtrack")
    git(project, "commit", "-q", "-m", "8000 records in segments")
    assert (project / ".git" / "index").stat().st_size < 1024 * 1024
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(project), str(clone))
    for ref in (digest, "api@1.7.999", "1.2.345"):
        there = run(["show", ref, "--json"], clone)
        assert there.code == 0, there.err
        assert there.json() == run(["show", ref, "--json"], project).json()
    assert not _cache_built(clone), "the lookups read only the entries holding what they asked"
    assert run(["verify"], clone).code == 0
