"""Record and fact files, their names and places: pure functions, no git and no subprocess."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from imgtrack.errors import LedgerError
from imgtrack.ledger.schema import MAX_FILE_BYTES, Build, Fact, Record, parse_fact, parse_record
from imgtrack.ledger.store import (
    Store,
    check_fact_placement,
    check_record_placement,
    classify,
    facts_rel,
    record_rel,
)

DIGEST = "sha256:" + "ab" * 32
AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def record(**kw: object) -> Record:
    base: dict[str, object] = dict(
        image="api",
        digest=DIGEST,
        media_type="m",
        version="1.0.0",
        commit="c" * 40,
        tree="clean",
        tags=("1.0.0",),
        recorded_at=AT,
        recorded_by="Dev <d@e>",
    )
    return Record(**{**base, **kw})  # type: ignore[arg-type]


def push(repository: str, at: datetime = AT, by: str | None = "CI <ci@e>", kind: str = "push") -> Fact:
    return Fact(kind=kind, image="api", record=DIGEST, at=at, by=by, repository=repository, tags=("1.0.0",))


def test_places_fan_out_by_the_first_two_hex_digits() -> None:
    assert record_rel("api", DIGEST) == f"api/ab/sha256-{'ab' * 32}.toml"
    assert facts_rel("api", DIGEST) == f"api/ab/sha256-{'ab' * 32}"
    assert classify(record_rel("api", DIGEST)) == "record"
    assert classify(f"{facts_rel('api', DIGEST)}/{push('r').file_name()}") == "fact"
    assert classify(f"api/sha256-{'ab' * 32}.toml") is None, "a schema-1 place is neither"
    assert classify("api/ab/notes.txt") is None


def test_a_fact_is_named_by_its_bytes_so_equal_facts_share_a_name_and_others_never() -> None:
    a, b = push("reg/a"), push("reg/a")
    assert a.file_name() == b.file_name() and a.to_toml() == b.to_toml()
    names = {
        push("reg/a").file_name(),
        push("reg/b").file_name(),
        push("reg/a", by="Other <o@e>").file_name(),
        push("reg/a", at=datetime(2026, 3, 2, tzinfo=UTC)).file_name(),
    }
    assert len(names) == 4
    assert push("reg/a").identity() == push("reg/a", by="x", at=datetime(2027, 1, 1, tzinfo=UTC)).identity()
    assert push("reg/a", kind="promote").identity() == push("reg/a").identity(), "a promotion is a push landed"


def test_round_trip_and_placement_checks() -> None:
    fact = push("reg/a")
    data = fact.to_toml()
    assert parse_fact(data, "f") == fact
    rel = f"{facts_rel('api', DIGEST)}/{fact.file_name()}"
    assert check_fact_placement(fact, data, rel, rel) is None
    edited = data.replace(b"reg/a", b"reg/b")
    assert "does not match the file's content" in (
        check_fact_placement(parse_fact(edited, "f"), edited, rel, rel) or ""
    )
    elsewhere = f"web/ab/sha256-{'ab' * 32}/{fact.file_name()}"
    assert "sits in" in (check_fact_placement(fact, data, elsewhere, elsewhere) or "")
    rec = record()
    assert parse_record(rec.to_toml(), "r") == rec
    assert check_record_placement(rec, record_rel("api", DIGEST), "r") is None
    assert "does not match" in (check_record_placement(rec, f"api/cd/sha256-{'ab' * 32}.toml", "r") or "")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"x" * (MAX_FILE_BYTES + 1), "over the"),
        (b"schema = 1\nimage = 'api'\n", "ledger migrate"),
        (b"schema = 3\n", "upgrade imgtrack"),
        (b"\xff\xfe", "not UTF-8"),
        (b"schema = 2\nkind = 'vouch'\n", "does not know"),
        (b"[" * 5000, "not valid TOML"),
    ],
)
def test_malformed_fact_files_are_one_line_errors(data: bytes, words: str) -> None:
    with pytest.raises(LedgerError) as err:
        parse_fact(data, "api/ab/x/push-0000000000000000.toml")
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_build_merges_tags_and_pushes_in_the_order_they_happened() -> None:
    later = datetime(2026, 4, 1, tzinfo=UTC)
    tag = Fact(kind="tag", image="api", record=DIGEST, at=later, by="QA <q@e>", tag="qa-approved")
    build = Build(record(), (tag, push("reg/b", at=later), push("reg/a")))
    assert build.tags == ("1.0.0", "qa-approved")
    assert [p.repository for p in build.pushes] == ["reg/a", "reg/b"]
    data = build.to_json()
    assert data["pushes"][0] == {
        "repository": "reg/a",
        "tags": ["1.0.0"],
        "pushed_at": "2026-03-01T12:00:00Z",
        "pushed_by": "CI <ci@e>",
    }
    assert [f["kind"] for f in data["facts"]] == ["push", "push", "tag"]


def test_store_writes_a_fact_once_and_never_rewrites_a_record(tmp_path: Path) -> None:
    store = Store(tmp_path / "ledger", tmp_path / "lock")
    with store.locked():
        store.write_record(record())
        with pytest.raises(LedgerError):
            store.write_record(record())
        assert store.write_fact(push("reg/a")) is not None
        assert store.write_fact(push("reg/a", by="Someone else <s@e>")) is None, "the same push again adds nothing"
        with pytest.raises(LedgerError):
            store.write_fact(Fact(kind="tag", image="api", record="sha256:" + "cd" * 32, at=AT, tag="x"))
    files = store.scan()
    assert len(files.records) == 1 and len(files.facts) == 1 and not files.strays
