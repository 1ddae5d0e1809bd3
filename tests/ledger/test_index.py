"""The lookup cache stays true to the files through what git does to them (real git, real processes)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import LayoutFactory, git, run


def show(repo: Path, ref: str) -> dict:
    result = run(["show", ref, "--json"], repo)
    assert result.code == 0, result.err
    return result.json()  # type: ignore[return-value]


def test_a_tag_pulled_into_an_existing_record_folder_is_found_at_once(
    project: Path,
    layouts: LayoutFactory,
    tmp_path: Path,
) -> None:
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(project, "remote", "add", "origin", str(bare))
    git(project, "tag", "v1.0.0")
    path, _ = layouts()
    assert run(["push", str(path), "--image", "api", "--to", f"oci:{tmp_path / 'one'}", "-q"], project).code == 0
    assert run(["ledger", "commit", "--push"], project).code == 0
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    time.sleep(0.3)  # past the cache's racy window: from here on an unchanged folder is not looked into
    assert len(show(other, "api@1.0.0")["pushes"]) == 1  # the cache is built, the record's fact folder known
    # Elsewhere the build is given a tag: a fact in that same folder; the bucket around it does not change.
    assert run(["record", str(path), "--image", "api", "--tag", "qa-approved"], project).code == 0
    assert run(["ledger", "commit", "--push"], project).code == 0
    git(other, "pull", "-q", "--ff-only")
    assert show(other, "qa-approved")["version"] == "1.0.0", "found by the tag, through the cache"
    # And going back in history forgets it again.
    git(other, "reset", "-q", "--hard", "HEAD~1")
    assert run(["show", "qa-approved"], other).code == 1


def test_a_fact_discarded_before_it_was_committed_is_forgotten(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    path, _ = layouts()
    git(project, "tag", "v1.0.0")
    assert run(["push", str(path), "--image", "api", "--to", f"oci:{tmp_path / 'one'}", "-q"], project).code == 0
    assert run(["ledger", "commit"], project).code == 0
    assert run(["record", str(path), "--image", "api", "--tag", "qa-approved"], project).code == 0
    assert "qa-approved" in show(project, "api@1.0.0")["tags"]
    git(project, "stash", "-q", "-u")  # the uncommitted tag fact goes away, HEAD stays
    assert "qa-approved" not in show(project, "api@1.0.0")["tags"]
    assert run(["show", "qa-approved"], project).code == 1
    # Staged first (git's index changes, HEAD does not), then thrown away: still forgotten.
    assert run(["record", str(path), "--image", "api", "--tag", "qa-approved"], project).code == 0
    git(project, "add", ".imgtrack")
    assert show(project, "qa-approved")["version"] == "1.0.0"
    git(project, "reset", "-q", "--hard")
    assert run(["show", "qa-approved"], project).code == 1


def test_a_fact_of_a_kind_a_newer_imgtrack_wrote_is_passed_by_and_reported_by_verify(
    project: Path,
    layouts: LayoutFactory,
) -> None:
    import hashlib

    path, digest = layouts()
    git(project, "tag", "v1.0.0")
    rec = run(["record", str(path), "--image", "api", "--json"], project).json()
    data = (
        f'schema = 2\nkind = "vouch"\nimage = "api"\nrecord = "{digest}"\nat = 2026-05-01 00:00:00+00:00\n'
        'environment = "prod"\n'
    ).encode()
    folder = project / ".imgtrack" / "ledger" / "api" / digest[7:9] / digest.replace(":", "-")
    folder.mkdir(parents=True)
    (folder / f"vouch-{hashlib.sha256(data).hexdigest()[:16]}.toml").write_bytes(data)
    assert show(project, "api@1.0.0")["digest"] == rec["digest"]
    other, _ = layouts()
    assert run(["record", str(other), "--image", "api", "--version", "1.0.0+build.2"], project).code == 0
    result = run(["verify"], project)
    assert result.code == 1 and "'vouch'" in result.out and "newer imgtrack" in result.out, result.out


def test_verify_reads_every_fact_and_names_what_is_wrong(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    git(project, "tag", "v1.0.0")
    path, _ = layouts()
    rec = run(["push", str(path), "--image", "api", "--to", f"oci:{tmp_path / 'one'}", "--json", "-q"], project).json()
    assert run(["verify"], project).code == 0
    folder = project / ".imgtrack" / "ledger" / "api" / rec["digest"][7:9] / rec["digest"].replace(":", "-")
    fact = next(folder.glob("push-*.toml"))
    fact.write_text(fact.read_text().replace(str(tmp_path / "one"), str(tmp_path / "elsewhere")))  # edited by hand
    orphan = project / ".imgtrack" / "ledger" / "api" / "ee" / ("sha256-" + "e" * 64)
    orphan.mkdir(parents=True)
    (orphan / fact.name).write_bytes(fact.read_bytes())
    (project / ".imgtrack" / "ledger" / "api" / "ee" / "notes.txt").write_text("not a record\n")
    result = run(["verify"], project)
    assert result.code == 1
    out = result.out
    assert "does not match the file's content" in out, out
    assert "sits in" in out or "not in the ledger" in out, out
    assert "notes.txt: is neither a record nor a fact" in out, out


def test_current_runs_from_the_newest_event_back_agree_with_the_whole_history(project: Path) -> None:
    """`status` reads each environment's events from the newest back, only as far as its current run; for
    random histories of deploys, sightings and bad marks in three environments it says what a reading of
    the whole history says: which build runs, since when, and how it was learnt."""
    import random
    from datetime import UTC, datetime, timedelta

    from imgtrack.ledger.ledger import current_runs
    from imgtrack.ledger.schema import Fact, Record
    from imgtrack.project import Project

    ledger = Project.open(project).ledger
    rng = random.Random(11)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    digests = [f"sha256:{n:064x}" for n in range(1, 5)]
    for n, digest in enumerate(digests):
        ledger.write(
            Record(
                "api",
                digest,
                "application/vnd.oci.image.manifest.v1+json",
                f"1.{n}.0",
                "a" * 40,
                "clean",
                (),
                start,
                "Test <t@example.com>",
            )
        )
    for trial in range(30):
        for _ in range(rng.randrange(1, 12)):
            kind = rng.choice(("deploy", "deploy", "seen", "bad"))
            at = start + timedelta(minutes=rng.randrange(0, 10_000), days=trial * 10)
            env = rng.choice(("staging", "qa", "prod"))
            ledger.add_fact(Fact(kind, "api", rng.choice(digests), at, env=env))
        whole = {
            env: (e.record, since, how)
            for env, (e, since, how) in current_runs(ledger.environment_facts("api")).items()
        }
        tail = {env: (e.record, since, how) for env, (e, since, how) in ledger.current_runs("api").items()}
        assert tail == whole and whole


def test_a_record_removed_by_hand_is_forgotten_and_an_unchanged_fact_folder_kept(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    git(project, "tag", "v1.0.0")
    first, first_digest = layouts()
    assert run(["push", str(first), "--image", "api", "--to", f"oci:{tmp_path / 'one'}", "-q"], project).code == 0
    second, second_digest = layouts()
    assert run(["record", str(second), "--image", "web"], project).code == 0
    time.sleep(0.3)  # past the cache's racy window: only a folder that changed is looked into again
    assert len(show(project, first_digest)["pushes"]) == 1 and show(project, second_digest)["image"] == "web"
    record = next((project / ".imgtrack" / "ledger" / "web").glob("*/*.toml"))
    record.unlink()  # no git command: only the folder's mtime says something changed
    assert run(["show", second_digest], project).code == 1
    # A folder looked into again keeps what its unchanged fact folders hold: the tag given later.
    assert run(["record", str(first), "--image", "api", "--tag", "qa-approved"], project).code == 0
    time.sleep(0.3)
    assert show(project, "qa-approved")["digest"] == first_digest
    (fact,) = (project / ".imgtrack" / "ledger" / "api").glob("*/*/push-*.toml")
    stray = fact.parent.parent / "notes.txt"  # say an editor's file, come and gone: the bucket changed
    stray.write_text("x")
    stray.unlink()
    assert show(project, "qa-approved")["digest"] == first_digest
