"""The tagging policy (docs/ledger.md, "Policy"): pure functions, no I/O.

Every decision takes what it needs as arguments and returns violations as one-line messages,
so the same rules serve `record`, `verify`, `push` and the pre-push hook.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import lru_cache

import semver

from imgtrack.errors import ConfigError, InvalidTag
from imgtrack.oci.reference import is_fallback_tag, is_tag
from imgtrack.versions import encode_tag, semver_of

DEFAULT_TEMPLATES = ("{version}", "{major}.{minor}", "sha-{short}")
DEFAULT_IMMUTABLE = ("{version}", "sha-*")
DEFAULT_FLOATING = ("{major}.{minor}", "{major}")


@dataclass(frozen=True)
class TagRules:
    """The tagging policy's settings (`[tags]` in the config, which reads them into this)."""

    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    immutable: tuple[str, ...] = DEFAULT_IMMUTABLE
    floating: tuple[str, ...] = DEFAULT_FLOATING
    latest: bool = False


_PLACEHOLDERS = {
    "version": r"(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:_[0-9A-Za-z.-]+)?",
    "major": r"(?:0|[1-9]\d*)",
    "minor": r"(?:0|[1-9]\d*)",
    "patch": r"(?:0|[1-9]\d*)",
    "short": r"[0-9a-f]{7,40}",
    "commit": r"[0-9a-f]{40}",
}
_PLACEHOLDER_RE = re.compile(r"\{([a-z]+)\}")


class TagKind(Enum):
    IMMUTABLE = "immutable"
    FLOATING = "floating"


@dataclass(frozen=True)
class TagHolder:
    """A record in the ledger that carries a tag."""

    digest: str
    version: str
    commit: str
    recorded_at: datetime


@dataclass(frozen=True)
class Candidate:
    """The build a tag decision is about."""

    image: str
    digest: str
    version: str
    commit: str
    dirty: bool


def check_tag_grammar(tag: str) -> None:
    """Refuse a string that no registry accepts as a tag."""
    if not is_tag(tag):
        if tag == "":
            reason = "is empty"
        elif len(tag) > 128:
            reason = f"is {len(tag)} characters long (128 at most)"
        elif tag[0] in ".-":
            reason = f"starts with {tag[0]!r}"
        elif "+" in tag:
            reason = "holds '+', which registries refuse (a version's '+' is written '_')"
        else:
            bad = sorted({c for c in tag if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
            reason = f"holds {''.join(bad)!r}"
        raise InvalidTag(
            f"tag {tag!r} {reason}; a tag is 1-128 of A-Z a-z 0-9 _ . - and starts with a letter, digit or _"
        )
    if is_fallback_tag(tag):
        raise InvalidTag(
            f"tag {tag[:19]}… has the shape of a referrers tag (<algorithm>-<digest hex>), which registries use "
            "to list the artifacts attached to an image; choose another tag"
        )


def is_latest(tag: str) -> bool:
    return tag.lower() == "latest"


def validate_templates(rules: TagRules, where: str) -> None:
    for template in (*rules.templates, *rules.immutable, *rules.floating):
        for name in _PLACEHOLDER_RE.findall(template):
            if name not in _PLACEHOLDERS:
                known = " ".join("{" + k + "}" for k in _PLACEHOLDERS)
                raise ConfigError(f"{where}: tag template {template!r} uses {{{name}}}; known placeholders: {known}")


@lru_cache(maxsize=256)
def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PLACEHOLDER_RE.finditer(pattern):
        out.append(_glob(pattern[pos : m.start()]))
        out.append(_PLACEHOLDERS[m.group(1)])
        pos = m.end()
    out.append(_glob(pattern[pos:]))
    return re.compile("".join(out), re.ASCII | re.DOTALL)  # used with fullmatch


def _glob(text: str) -> str:
    return ".*".join(re.escape(part) for part in text.split("*"))


def tag_kind(tag: str, rules: TagRules) -> tuple[TagKind, str | None]:
    """Whether `tag` is floating (and by which pattern) or immutable.

    Immutable patterns win over floating ones; a tag matching neither is immutable, the safe default.
    """
    for pattern in rules.immutable:
        if _pattern_regex(pattern).fullmatch(tag):
            return TagKind.IMMUTABLE, None
    for pattern in rules.floating:
        if _pattern_regex(pattern).fullmatch(tag):
            return TagKind.FLOATING, pattern
    return TagKind.IMMUTABLE, None


def render(template: str, version: semver.Version | str, commit: str) -> str:
    v = version if isinstance(version, semver.Version) else semver_of(version)
    values = {
        "version": encode_tag(str(v)),
        "major": str(v.major),
        "minor": str(v.minor),
        "patch": str(v.patch),
        "short": commit[:7],
        "commit": commit,
    }
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


def render_tags(rules: TagRules, candidate: Candidate, extra: Iterable[str] = ()) -> list[str]:
    """The tags a build gets: templates (floating ones only for releases, only the version tag
    for a dirty build) plus `extra`, in order, without duplicates."""
    version = semver_of(candidate.version)
    own_version_tag = encode_tag(candidate.version)
    tags: list[str] = []
    for template in rules.templates:
        tag = render(template, version, candidate.commit)
        kind, _ = tag_kind(tag, rules)
        if kind is TagKind.FLOATING and version.prerelease:
            continue
        if candidate.dirty and tag != own_version_tag:
            continue
        tags.append(tag)
    for tag in extra:
        if tag not in tags:
            tags.append(tag)
    return tags


def drop_tags_of_earlier_build(
    rules: TagRules,
    candidate: Candidate,
    rendered: Sequence[str],
    holders: Mapping[str, Sequence[TagHolder]],
) -> list[str]:
    """Template tags without the immutable ones an earlier build of the same commit holds.

    `sha-<short>` names a commit's first build forever; a rebuild with a distinct version (docs/ledger.md)
    gets its own version tag but cannot take the commit's tag. Explicit `--tag`s are not passed here.
    """
    kept = []
    for tag in rendered:
        taken = any(h.digest != candidate.digest and h.commit == candidate.commit for h in holders.get(tag, ()))
        if taken and tag_kind(tag, rules)[0] is TagKind.IMMUTABLE and tag != encode_tag(candidate.version):
            continue
        kept.append(tag)
    return kept


def check_tags(
    rules: TagRules,
    candidate: Candidate,
    tags: Sequence[str],
    holders: Mapping[str, Sequence[TagHolder]],
    given_at: datetime | None = None,
) -> list[str]:
    """Policy violations of giving `tags` to `candidate`, given who holds each tag in its image now.

    `given_at` is when the tags were given, for a build already recorded (the pre-push hook judging the
    records a push carries): a floating tag then moves backwards only against holders given it before
    that moment, as `verify` reads the tag's history. Without it, every holder is earlier (a new record).
    Raises InvalidTag for a tag outside the registry grammar (bad input, not a policy question).
    """
    version = semver_of(candidate.version)
    own_version_tag = encode_tag(candidate.version)
    problems: list[str] = []
    for tag in tags:
        if is_latest(tag):
            problems.append(
                f"tag {tag!r} is refused: a bare latest names no version; "
                + (
                    "latest is given at push time to the highest release, never by hand"
                    if rules.latest
                    else "set tags.latest = true in .imgtrack/config.toml for a computed alias"
                )
            )
            continue
        check_tag_grammar(tag)
        if candidate.dirty and tag != own_version_tag:
            problems.append(
                f"tag {tag!r} is refused for a build from a dirty tree: such a build carries only its own "
                f"version tag {own_version_tag!r}; commit your changes for other tags"
            )
            continue
        others = [h for h in holders.get(tag, ()) if h.digest != candidate.digest]
        kind, pattern = tag_kind(tag, rules)
        if kind is TagKind.FLOATING:
            assert pattern is not None
            if version.prerelease:
                problems.append(
                    f"floating tag {tag!r} is refused for {candidate.version}: floating tags go to releases only"
                )
                continue
            expected = render(pattern, version, candidate.commit)
            if expected != tag:
                problems.append(
                    f"floating tag {tag!r} does not fit version {candidate.version} (it would be {expected!r})"
                )
                continue
            earlier = [h for h in others if given_at is None or h.recorded_at < given_at]
            newest = max(earlier, key=lambda h: semver_of(h.version), default=None)
            if newest is not None and semver_of(newest.version) > version:
                problems.append(
                    f"floating tag {tag!r} already names {newest.version} ({newest.digest[:19]}…); "
                    f"floating tags only move forward, and {candidate.version} is older"
                )
            continue
        if others:
            h = others[0]
            problems.append(
                f"tag {tag!r} already names {h.digest[:19]}… (recorded {h.recorded_at:%Y-%m-%d} from "
                f"{h.commit[:7]}, version {h.version}); immutable tags never move: bump the version"
                + (
                    " (a rebuild of one commit needs a distinct version, e.g. build metadata +build.2)"
                    if h.commit == candidate.commit
                    else ""
                )
            )
    return problems


def check_version_unique(candidate: Candidate, holders: Sequence[TagHolder]) -> list[str]:
    """A version of an image names one digest: a rebuild with another digest needs another version."""
    return [
        f"version {candidate.version} of {candidate.image} is already recorded as {h.digest[:19]}… from "
        f"{h.commit[:7]}; a rebuild with a different digest needs a distinct version, "
        f"e.g. --version {candidate.version.split('+')[0]}+build.2"
        for h in holders
        if h.digest != candidate.digest
    ]


def floating_moves_backwards(history: Sequence[TagHolder]) -> list[tuple[TagHolder, TagHolder]]:
    """Pairs (earlier, later) in recording order where a floating tag moved to an older version."""
    ordered = sorted(history, key=lambda h: h.recorded_at)
    moves = []
    highest: TagHolder | None = None
    for h in ordered:
        if highest is not None and semver_of(h.version) < semver_of(highest.version):
            moves.append((highest, h))
        elif highest is None or semver_of(h.version) >= semver_of(highest.version):
            highest = h
    return moves


def latest_alias(versions: Iterable[str]) -> str | None:
    """The version `latest` means: the highest non-prerelease version, or None."""
    releases = [semver_of(v) for v in versions]
    releases = [v for v in releases if not v.prerelease]
    return str(max(releases)) if releases else None
