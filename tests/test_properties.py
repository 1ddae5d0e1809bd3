"""Property-based tests (hypothesis) of the pure parts: tag encoding, tag grammar, references,
semver ranges, and policy decisions."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import semver
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from imgtrack.config import TagRules
from imgtrack.errors import InvalidReference, InvalidTag
from imgtrack.oci.reference import parse_reference
from imgtrack.policy import TAG_RE, Candidate, TagHolder, check_tag_grammar, check_tags, render_tags
from imgtrack.versions import decode_tag, encode_tag, parse_range

ident = st.from_regex(r"[0-9A-Za-z-]{1,8}", fullmatch=True).filter(lambda s: not (s.isdigit() and s.startswith("0") and s != "0"))
numbers = st.integers(min_value=0, max_value=999)


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
    assert accepted == bool(TAG_RE.match(text)) or text.endswith("\n")


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
