"""The tagging policy as pure functions (imgtrack/policy.py): what a build is tagged, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imgtrack.errors import InvalidTag
from imgtrack.policy import (
    Candidate,
    TagHolder,
    TagKind,
    TagRules,
    check_tag_grammar,
    check_tags,
    check_version_unique,
    floating_moves_backwards,
    latest_alias,
    render_tags,
    tag_kind,
)

RULES = TagRules()
COMMIT = "caded54" + "0" * 33
OTHER = "sha256:" + "2" * 64
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def build(version: str, dirty: bool = False, digest: str = "sha256:" + "1" * 64) -> Candidate:
    return Candidate("api", digest, version, COMMIT, dirty)


def holder(version: str, at: datetime = T0, digest: str = OTHER) -> TagHolder:
    return TagHolder(digest, version, "b" * 40, at)


@pytest.mark.parametrize(
    ("version", "dirty", "tags"),
    [
        ("1.4.0", False, ["1.4.0", "1.4", "sha-caded54"]),
        ("1.4.1-dev.3+g1a2b3c4", False, ["1.4.1-dev.3_g1a2b3c4", "sha-caded54"]),  # floating: releases only
        ("1.4.1-dev.0+g1a2b3c4.dirty", True, ["1.4.1-dev.0_g1a2b3c4.dirty"]),  # dirty: its own version tag only
        ("1.4.0+build.2", False, ["1.4.0_build.2", "1.4", "sha-caded54"]),
    ],
)
def test_the_tags_a_build_gets(version: str, dirty: bool, tags: list[str]) -> None:
    assert render_tags(RULES, build(version, dirty)) == tags


@pytest.mark.parametrize(
    ("tag", "kind"),
    [
        ("1.4.0", TagKind.IMMUTABLE),
        ("sha-caded54", TagKind.IMMUTABLE),
        ("qa-approved", TagKind.IMMUTABLE),
        ("1.4", TagKind.FLOATING),
        ("1", TagKind.FLOATING),
        ("1.4\n", TagKind.IMMUTABLE),
    ],
)
def test_tag_kinds(tag: str, kind: TagKind) -> None:
    assert tag_kind(tag, RULES)[0] is kind


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("", "is empty"),
        ("a" * 129, "129 characters"),
        (".x", "starts with '.'"),
        ("1.0+b", "'+'"),
        ("v1\n", "'\\n'"),
        ("vé", "'é'"),
    ],
)
def test_tag_grammar_says_why(tag: str, reason: str) -> None:
    with pytest.raises(InvalidTag) as caught:
        check_tag_grammar(tag)
    assert reason in str(caught.value)


def test_bare_latest_is_refused_in_any_case() -> None:
    for tag in ("latest", "LATEST", "Latest"):
        assert any("bare latest" in p for p in check_tags(RULES, build("1.0.0"), [tag], {}))


def test_an_immutable_tag_names_one_digest_and_reapplying_it_is_success() -> None:
    candidate = build("1.5.0")
    assert check_tags(RULES, candidate, ["qa-approved"], {"qa-approved": [holder("1.4.0")]})
    same = TagHolder(candidate.digest, "1.5.0", COMMIT, T0)
    assert check_tags(RULES, candidate, ["qa-approved"], {"qa-approved": [same]}) == []


def test_floating_tags_go_to_releases_only_and_fit_the_version() -> None:
    assert any("releases only" in p for p in check_tags(RULES, build("1.4.1-rc.1"), ["1.4"], {}))
    assert any("does not fit" in p for p in check_tags(RULES, build("1.5.0"), ["1.4"], {}))


def test_a_floating_tag_moves_only_forward_judged_by_when_it_was_given() -> None:
    newer = holder("1.4.2", at=T0 + timedelta(hours=1))
    # A new record (no given_at): every holder is earlier; 1.4.2 holds the tag, 1.4.1 would move it back.
    assert any("only move forward" in p for p in check_tags(RULES, build("1.4.1"), ["1.4"], {"1.4": [newer]}))
    # A record already given the tag before 1.4.2 was (a push carrying both): not a move backwards.
    assert check_tags(RULES, build("1.4.1"), ["1.4"], {"1.4": [newer]}, given_at=T0) == []
    # Given after it: backwards.
    later = T0 + timedelta(hours=2)
    assert check_tags(RULES, build("1.4.1"), ["1.4"], {"1.4": [newer]}, given_at=later)


def test_floating_moves_backwards_reads_the_history_in_time_order() -> None:
    history = [holder("1.4.0", T0), holder("1.4.2", T0 + timedelta(1)), holder("1.4.1", T0 + timedelta(2))]
    moves = floating_moves_backwards(history)
    assert [(a.version, b.version) for a, b in moves] == [("1.4.2", "1.4.1")]
    assert floating_moves_backwards(history[:2]) == []


def test_a_dirty_build_carries_only_its_own_version_tag() -> None:
    problems = check_tags(RULES, build("1.4.1-dev.0+gcaded54.dirty", dirty=True), ["sha-caded54"], {})
    assert any("dirty tree" in p for p in problems)


def test_one_version_names_one_digest() -> None:
    assert check_version_unique(build("1.4.0"), [holder("1.4.0")])
    assert "+build.2" in check_version_unique(build("1.4.0"), [holder("1.4.0")])[0]
    assert check_version_unique(build("1.4.0"), [TagHolder(build("1.4.0").digest, "1.4.0", COMMIT, T0)]) == []


def test_latest_is_the_highest_release() -> None:
    assert latest_alias(["1.2.0", "1.10.0", "2.0.0-rc.1", "1.9.9+build.1"]) == "1.10.0"
    assert latest_alias(["1.0.0-rc.1"]) is None
    assert latest_alias([f"{10**30}.0.0", "9.0.0"]) == f"{10**30}.0.0"  # numbers of any size
