"""Versions: semver's published valid and invalid examples, numbers past 64 bits, and ranges."""

from __future__ import annotations

import pytest

from imgtrack.errors import InvalidVersion
from imgtrack.versions import MAX_VERSION_LENGTH, is_version, parse_range, parse_version

# The semantic versioning specification's own lists of valid and invalid versions.
VALID = [
    "0.0.4",
    "1.2.3",
    "10.20.30",
    "1.1.2-prerelease+meta",
    "1.1.2+meta",
    "1.1.2+meta-valid",
    "1.0.0-alpha",
    "1.0.0-beta",
    "1.0.0-alpha.beta",
    "1.0.0-alpha.beta.1",
    "1.0.0-alpha.1",
    "1.0.0-alpha0.valid",
    "1.0.0-alpha.0valid",
    "1.0.0-alpha-a.b-c-somethinglong+build.1-aef.1-its-okay",
    "1.0.0-rc.1+build.1",
    "2.0.0-rc.1+build.123",
    "1.2.3-beta",
    "10.2.3-DEV-SNAPSHOT",
    "1.2.3-SNAPSHOT-123",
    "1.0.0",
    "2.0.0",
    "1.1.7",
    "2.0.0+build.1848",
    "2.0.1-alpha.1227",
    "1.0.0-alpha+beta",
    "1.2.3----RC-SNAPSHOT.12.9.1--.12+788",
    "1.2.3----R-S.12.9.1--.12+meta",
    "1.2.3----RC-SNAPSHOT.12.9.1--.12",
    "1.0.0+0.build.1-rc.10000aaa-kk-0.1",
    "99999999999999999999999.999999999999999999.99999999999999999",
    "1.0.0-0A.is.legal",
]
INVALID = [
    "1",
    "1.2",
    "1.2.3-0123",
    "1.2.3-0123.0123",
    "1.1.2+.123",
    "+invalid",
    "-invalid",
    "-invalid+invalid",
    "-invalid.01",
    "alpha",
    "alpha.beta",
    "alpha.beta.1",
    "alpha.1",
    "alpha+beta",
    "alpha_beta",
    "alpha.",
    "alpha..",
    "beta",
    "1.0.0-alpha_beta",
    "-alpha.",
    "1.0.0-alpha..",
    "1.0.0-alpha..1",
    "1.0.0-alpha...1",
    "1.0.0-alpha....1",
    "1.0.0-alpha.....1",
    "1.0.0-alpha......1",
    "1.0.0-alpha.......1",
    "01.1.1",
    "1.01.1",
    "1.1.01",
    "1.2.3.DEV",
    "1.2-SNAPSHOT",
    "1.2.31.2.3----RC-SNAPSHOT.12.09.1--..12+788",
    "1.2-RC-SNAPSHOT",
    "-1.0.3-gamma+b7718",
    "+justmeta",
    "9.8.7+meta+meta",
    "9.8.7-whatever+meta+meta",
    "99999999999999999999999.999999999999999999.99999999999999999----RC-SNAPSHOT.12.09.1--------------------------------..12",
    # imgtrack's own: the whole string, ASCII digits only
    "1.0.0\n",
    "1.0.0 ",
    " 1.0.0",
    "\u0661.0.0",
    "1.0.0-\u00e9",
]


@pytest.mark.parametrize("text", VALID)
def test_semver_valid_examples_are_versions(text: str) -> None:
    assert is_version(text)
    assert str(parse_version(text)) == text


@pytest.mark.parametrize("text", INVALID)
def test_semver_invalid_examples_are_refused(text: str) -> None:
    assert not is_version(text)
    with pytest.raises(InvalidVersion):
        parse_version(text)


def test_a_version_longer_than_a_tag_is_refused_before_any_number_is_converted() -> None:
    text = "1." + "9" * 5000 + ".0"  # int() of 5,000 digits raises in Python; we never get that far
    assert not is_version(text)
    with pytest.raises(InvalidVersion, match=f"at most {MAX_VERSION_LENGTH}"):
        parse_version(text, "--version")


def test_ranges_over_numbers_past_64_bits() -> None:
    big = 99999999999999999999999
    r = parse_range(f"^{big}")
    assert r.contains(parse_version(f"{big}.5.0"))
    assert not r.contains(parse_version(f"{big + 1}.0.0"))
    assert r.major_hint == big
    assert parse_range(f">={big}.0.0").contains(parse_version(f"{big * 10}.0.0"))


@pytest.mark.parametrize("text", ["^" + "9" * 5000, "1.0.0\n", "^1.4\t", ">=1.0.0\x00", "~\u0661.2"])
def test_malformed_ranges_are_refused(text: str) -> None:
    with pytest.raises(InvalidVersion):
        parse_range(text)
