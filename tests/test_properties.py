"""Property-based tests (hypothesis) of the pure parts: tag encoding, tag grammar, references,
semver ranges, and policy decisions; every grammar against control characters, whitespace, unicode
and numbers of any size."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import semver
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from imgtrack.config import IMAGE_NAME_RE
from imgtrack.errors import ImgtrackError, InvalidReference, InvalidTag
from imgtrack.ledger.index import sql_number
from imgtrack.oci.digest import check_digest
from imgtrack.oci.reference import TAG_RE, parse_reference
from imgtrack.policy import Candidate, TagHolder, TagRules, check_tag_grammar, check_tags, render_tags
from imgtrack.versions import decode_tag, encode_tag, is_version, parse_range, parse_version

ident = st.from_regex(r"[0-9A-Za-z-]{1,8}", fullmatch=True).filter(
    lambda s: not (s.isdigit() and s.startswith("0") and s != "0")
)
# Small numbers most of the time, and now and then one past 64 bits: semver sets no bound.
numbers = st.one_of(st.integers(min_value=0, max_value=999), st.integers(min_value=2**63 - 2, max_value=10**40))


@st.composite
def versions(draw: st.DrawFn) -> str:
    core = f"{draw(numbers)}.{draw(numbers)}.{draw(numbers)}"
    pre = draw(st.lists(ident, max_size=3))
    build = draw(st.lists(st.from_regex(r"[0-9A-Za-z-]{1,8}", fullmatch=True), max_size=3))
    return core + (f"-{'.'.join(pre)}" if pre else "") + (f"+{'.'.join(build)}" if build else "")


@given(versions())
def test_version_tags_round_trip_and_are_valid_tags(version: str) -> None:
    assume(semver.Version.is_valid(version))
    tag = encode_tag(version)
    assert "+" not in tag and decode_tag(tag) == version
    if len(tag) <= 128:
        check_tag_grammar(tag)
    # Never '-': that would turn build metadata into a pre-release.
    assert tag.count("-") == version.count("-")


@given(st.text(max_size=140))
def test_tag_grammar_accepts_exactly_the_registry_grammar(text: str) -> None:
    try:
        check_tag_grammar(text)
        accepted = True
    except InvalidTag as exc:
        accepted = False
        assert "\n" not in str(exc)
    assert accepted == bool(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", text))
    assert accepted == bool(TAG_RE.fullmatch(text))


@settings(max_examples=150)
@given(
    st.sampled_from(["", "registry.example.com/", "localhost:5000/", "[::1]:5000/"]),
    st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*){0,2}", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True)),
    st.one_of(st.none(), st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True)),
)
def test_references_round_trip(host: str, path: str, tag: str | None, digest: str | None) -> None:
    # docker's rules: without a host, a first component with '.' or ':' is itself read as the host;
    # a repository name is at most 255 characters.
    assume(host or "." not in path.split("/")[0] or "/" not in path)
    assume(len(path) <= 255)
    text = host + path + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    ref = parse_reference(text)
    assert ref.tag == tag and ref.digest == digest
    again = parse_reference(str(ref))
    assert again == ref


@given(st.text(max_size=80))
def test_reference_parser_never_crashes(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        assert "\n" not in str(exc)
        return
    if not ref.is_layout:
        assert ".." not in ref.repository.split("/")


@given(versions(), st.sampled_from(["^", "~", ""]), st.integers(0, 5), st.integers(0, 5))
def test_ranges_agree_with_semver_bounds(version: str, op: str, major: int, minor: int) -> None:
    assume(semver.Version.is_valid(version))
    v = semver.Version.parse(version)
    text = f"{op}{major}.{minor}" if op else f"{major}.{minor}.x"
    inside = parse_range(text).contains(v)
    if v.prerelease:
        assert not inside, "pre-releases match only ranges that name one"
        return
    low = semver.Version(major, minor)
    if op == "^":
        high = semver.Version(major + 1) if major > 0 else semver.Version(0, minor + 1)
    else:
        high = semver.Version(major, minor + 1)
    assert inside == (low <= v.replace(build=None) < high)


@settings(max_examples=200)
@given(versions(), versions(), st.booleans())
def test_policy_never_lets_an_immutable_tag_move(held: str, new: str, same_digest: bool) -> None:
    assume(semver.Version.is_valid(held) and semver.Version.is_valid(new))
    rules = TagRules()
    commit = "a" * 40
    digest = "sha256:" + "1" * 64
    holder = TagHolder(digest if same_digest else "sha256:" + "2" * 64, held, "b" * 40, datetime.now(UTC))
    candidate = Candidate("api", digest, new, commit, dirty=False)
    tags = render_tags(rules, candidate)
    assume(all(len(t) <= 128 for t in tags))
    problems = check_tags(rules, candidate, ["qa-approved", *tags], {"qa-approved": [holder]})
    assert any("qa-approved" in p for p in problems) != same_digest
    # Floating tags only for releases, and always the ones the version implies.
    parsed = semver.Version.parse(new)
    floating = [t for t in tags if re.fullmatch(r"\d+\.\d+", t)]
    assert floating == ([] if parsed.prerelease else [f"{parsed.major}.{parsed.minor}"])


# Characters a grammar built on `$` or `\s` would let through at the end, start or middle of an input.
_SNEAKY = st.sampled_from(
    ["\n", "\r\n", "\r", "\t", " ", "\x00", "\x1b", "\x7f", "\u00a0", "\u2028", "\ufeff", "\u0660"]
)


def _one_line_refusal(check: object, text: str) -> None:
    try:
        check(text)  # type: ignore[operator]
    except ImgtrackError as exc:
        assert "\n" not in str(exc) and exc.exit_code == 2
    else:
        raise AssertionError(f"{text!r} was accepted")


@given(
    st.sampled_from(["api", "1.4.0", "sha256:" + "a" * 64, "registry.example.com/team/api:1.4.0", "v1"]),
    _SNEAKY,
    st.sampled_from(["end", "start", "middle"]),
)
def test_every_grammar_refuses_control_characters_and_whitespace(valid: str, bad: str, where: str) -> None:
    text = {"end": valid + bad, "start": bad + valid, "middle": valid[:2] + bad + valid[2:]}[where]
    for check in (check_digest, check_tag_grammar, parse_reference, lambda t: parse_version(t, "--version")):
        _one_line_refusal(check, text)
    if bad != " ":  # a range's comparators are separated by spaces
        _one_line_refusal(parse_range, text)
    assert not is_version(text) and IMAGE_NAME_RE.fullmatch(text) is None


@given(versions())
def test_versions_of_any_size_parse_and_round_trip(version: str) -> None:
    assume(semver.Version.is_valid(version) and len(version) <= 128)
    assert str(parse_version(version)) == version


@given(st.lists(st.integers(0, 10**60), min_size=1, max_size=6))
def test_the_cache_orders_version_numbers_of_any_size_as_numbers(values: list[int]) -> None:
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t(n INTEGER, exact TEXT)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(sql_number(v), str(v)) for v in values])
    assert [int(e) for (e,) in db.execute("SELECT exact FROM t ORDER BY n, exact")] == sorted(values)
    for v in values:
        (count,) = db.execute("SELECT count(*) FROM t WHERE n=?", (sql_number(v),)).fetchone()
        assert count == values.count(v)
