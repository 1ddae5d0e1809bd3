"""Semantic versions: parsing, derivation from git, tag encoding, and ranges.

Derivation (docs/ledger.md, "Versions from git"): an exact release tag on the commit (`v1.4.0`) gives `1.4.0`; otherwise
`<next patch>-dev.<commits since tag>+g<short sha>`; after a pre-release tag (`v1.5.0-rc.1`)
`1.5.0-rc.1.dev.<n>+g<sha>` so that it sorts after the tag it follows; no tag at all gives
`0.0.0-dev.<n>+g<sha>`. A dirty tree adds the build metadata `dirty`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import semver

from imgtrack.errors import ConfigError, GitStateError, InvalidVersion
from imgtrack.gitrepo import GitRepo, glob_escape

# A version becomes a registry tag (`encode_tag`), and a tag is at most 128 characters. The bound also
# keeps every number short enough for Python's int() (4,300 digits at most, and quadratic on the way).
MAX_VERSION_LENGTH = 128


@cache
def semver_of(text: str) -> semver.Version:
    """semver.Version.parse, remembered: `verify` meets each version several times, and parsing is its cost."""
    return semver.Version.parse(text)


_NUMBERS_RE = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[^+]+)?(?:\+.*)?", re.DOTALL)


def version_numbers(text: str) -> tuple[int, int, int, bool]:
    """(major, minor, patch, is a pre-release) of a version already known to be valid, without semver's
    parse (the cache is filled with a hundred thousand of them on a fresh clone)."""
    m = _NUMBERS_RE.fullmatch(text)
    if m is None:
        v = semver_of(text)
        return v.major, v.minor, v.patch, bool(v.prerelease)
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4) is not None


def parse_version(text: str, what: str = "version") -> semver.Version:
    """A semver.Version, or InvalidVersion naming `what`."""
    if len(text) > MAX_VERSION_LENGTH:
        raise InvalidVersion(
            f"{what} {text[:40]!r}... is {len(text)} characters long; a version is at most {MAX_VERSION_LENGTH} "
            "(it becomes a registry tag); choose a shorter one"
        )
    try:
        return semver_of(text)
    except (ValueError, TypeError):
        raise InvalidVersion(
            f"{what} {text!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD], e.g. 1.4.0); fix it"
        ) from None


def is_version(text: str) -> bool:
    return len(text) <= MAX_VERSION_LENGTH and semver.Version.is_valid(text)


def version_from_tag(tag: str, prefix: str) -> semver.Version | None:
    """The version a git tag names (`v1.4.0` → 1.4.0), or None for any other tag."""
    if not tag.startswith(prefix):
        return None
    rest = tag[len(prefix) :]
    return semver_of(rest) if is_version(rest) else None


def same_release(a: semver.Version, b: semver.Version) -> bool:
    """Equal up to build metadata, which semver says carries no precedence."""
    return a.to_tuple()[:4] == b.to_tuple()[:4]


def encode_tag(version: str) -> str:
    """A version as a registry tag: `+` (not allowed in tags) becomes `_`, which semver never holds."""
    return version.replace("+", "_")


def decode_tag(tag: str) -> str:
    """The inverse of `encode_tag`."""
    return tag.replace("_", "+", 1)


@dataclass(frozen=True)
class CommitVersion:
    """What git says about one commit's version."""

    version: str
    release_tags: tuple[str, ...]  # version tags pointing at the commit, highest first


def release_tags_at(repo: GitRepo, commit: str, prefix: str) -> list[tuple[str, semver.Version]]:
    """Version tags on `commit`, highest version first."""
    found = [(t, v) for t in repo.tags_pointing_at(commit) if (v := version_from_tag(t, prefix)) is not None]
    return sorted(found, key=lambda tv: tv[1], reverse=True)


def derive_version(repo: GitRepo, commit: str, prefix: str, dirty: bool, paths: Iterable[str] = ()) -> str:
    """The version of `commit` from its git tags (docs/ledger.md); with `paths`, the commits counted since
    the tag are only those that touch them (an image of a monorepo)."""
    exact = release_tags_at(repo, commit, prefix)
    if exact and not dirty:
        return str(exact[0][1])
    if repo.is_shallow():
        raise GitStateError(
            f"{repo.work_tree} is a shallow clone, so the commits since the last release tag cannot be counted; "
            "run `git fetch --unshallow --tags` or pass --version"
        )
    build = f"g{commit[:7]}" + (".dirty" if dirty else "")
    described = repo.describe(commit, f"{glob_escape(prefix)}[0-9]*")
    base = version_from_tag(described.tag, prefix) if described else None
    paths = tuple(paths)
    if described is None or base is None:
        return f"0.0.0-dev.{repo.count_commits(commit, paths=paths)}+{build}"
    distance = repo.count_commits(commit, since=described.tag, paths=paths) if paths else described.distance
    if base.prerelease:
        return f"{base.replace(build=None)}.dev.{distance}+{build}"
    return f"{base.bump_patch()}-dev.{distance}+{build}"


class ReleaseTags:
    """The git tags that mark releases, per prefix, each prefix read once a command.

    `owners` maps every prefix in use to the images whose versions it gives (`Config.prefixes`). A tag
    that is a release under two of those prefixes would make two images' versions out of one tag: that is
    a config error, raised when the tag is met."""

    def __init__(self, repo: GitRepo, owners: Mapping[str, Sequence[str]], config_path: object) -> None:
        self._repo, self._owners, self._where = repo, owners, config_path
        self._read: dict[str, dict[str, str]] = {}

    def of(self, prefix: str) -> dict[str, str]:
        """tag -> commit for every release tag `prefix` + version."""
        found = self._read.get(prefix)
        if found is None:
            found = {t: c for t, c in self._repo.tag_commits(prefix).items() if version_from_tag(t, prefix)}
            for tag in found:
                self.check(tag, prefix)
            self._read[prefix] = found
        return found

    def prefixes_of(self, tag: str) -> list[str]:
        """The prefixes in use under which `tag` names a release (at most one, or a ConfigError)."""
        found = [p for p, images in self._owners.items() if images and version_from_tag(tag, p) is not None]
        if len(found) > 1:
            self.check(tag, found[0])
        return found

    def check(self, tag: str, prefix: str) -> None:
        for other, images in self._owners.items():
            if other != prefix and images and version_from_tag(tag, other) is not None:
                mine = ", ".join(self._owners.get(prefix) or ()) or "images without a tag_prefix"
                raise ConfigError(
                    f"{self._where}: git tag {tag} is a release tag of {mine} (tag_prefix {prefix!r}) and of "
                    f"{', '.join(images)} (tag_prefix {other!r}); make the prefixes distinct so that no tag "
                    "matches both"
                )


def release_conflicts(
    version: str, commit: str, release_tags: dict[str, str], prefix: str
) -> tuple[list[str], list[tuple[str, str]]]:
    """How `version`, recorded from `commit`, disagrees with the release tags (`release_tags`: tag ->
    commit): (the tags on `commit` it contradicts, when none of them is its release), and
    (tag, commit) for a release tag of this very version on another commit. Both empty: it agrees.
    Shared by `record --version`, `verify` and the pre-push hook."""
    parsed = semver_of(version)
    on_commit = [(t, v) for t, c in release_tags.items() if c == commit and (v := version_from_tag(t, prefix))]
    contradicted = [] if any(same_release(parsed, v) for _, v in on_commit) else [t for t, _ in on_commit]
    elsewhere = [
        (t, c)
        for t, c in release_tags.items()
        if c != commit and (v := version_from_tag(t, prefix)) is not None and same_release(v, parsed)
    ]
    return contradicted, elsewhere


def contradiction_message(version: str, commit: str, tags: list[str]) -> str:
    return f"version {version} contradicts the release tag {', '.join(tags)} on {commit[:7]}"


def released_elsewhere_message(version: str, commit: str, tag: str, tagged: str) -> str:
    return f"version {version} is released from {tagged[:7]} by tag {tag}, not from {commit[:7]}"


def check_explicit_version(
    version: str, commit: str, release_tags: list[tuple[str, semver.Version]], tag_of_version: str | None
) -> None:
    """Refuse an explicit version that contradicts the git tags.

    `release_tags` are the version tags on `commit`; `tag_of_version` is the commit the release
    tag for this very version names, if such a tag exists.
    """
    parsed = parse_version(version, "--version")
    if release_tags and not any(same_release(parsed, v) for _, v in release_tags):
        raise InvalidVersion(
            f"--{contradiction_message(version, commit, [t for t, _ in release_tags])}; "
            f"drop --version or use {release_tags[0][1]} (build metadata such as +build.2 is allowed)"
        )
    if tag_of_version is not None and tag_of_version != commit:
        raise InvalidVersion(
            f"--version {version} is already released from commit {tag_of_version[:7]} by its git tag, "
            f"not from {commit[:7]}; choose another version"
        )


# --- ranges -------------------------------------------------------------------------------------

_PART = r"(?:0|[1-9]\d*|[xX*])"
_PARTIAL_RE = re.compile(
    rf"(?P<op>\^|~|>=|<=|>|<|=)?v?(?P<major>{_PART})(?:\.(?P<minor>{_PART}))?(?:\.(?P<patch>{_PART}))?(?P<rest>[-+].*)?",
    re.ASCII | re.DOTALL,
)


@dataclass(frozen=True)
class VersionRange:
    """A semver range: every comparator must hold. Pre-releases match only when the range names one."""

    text: str
    comparators: tuple[tuple[str, semver.Version], ...]
    allow_prerelease: bool

    def contains(self, version: semver.Version) -> bool:
        if version.prerelease and not self.allow_prerelease:
            return False
        ops = {
            ">=": lambda c: c >= 0,
            ">": lambda c: c > 0,
            "<=": lambda c: c <= 0,
            "<": lambda c: c < 0,
            "=": lambda c: c == 0,
        }
        return all(ops[op](version.compare(bound)) for op, bound in self.comparators)

    @property
    def major_hint(self) -> int | None:
        """The single major version the range admits, if there is one (lets the ledger pre-filter)."""
        lows = [b for op, b in self.comparators if op in (">=", ">", "=")]
        highs = [b for op, b in self.comparators if op in ("<", "<=", "=")]
        if not lows or not highs:
            return None
        low, high = max(lows), min(highs)
        if low.major == high.major or (high.minor == 0 and high.patch == 0 and high.major == low.major + 1):
            return low.major
        return None


def _is_wild(part: str | None) -> bool:
    return part is None or part in ("x", "X", "*")


def parse_range(text: str) -> VersionRange:
    """Parse `^1.4`, `~1.4.2`, `1.x`, `1.4`, `>=1.2.0 <2`, `1.4.2` (exact) and friends."""
    comparators: list[tuple[str, semver.Version]] = []
    allow_pre = False
    if any(not (" " <= c <= "~") for c in text):
        raise InvalidVersion(
            f"range {text[:80]!r} holds a control character, a tab or a character outside ASCII; "
            "write one such as ^1.4, ~1.4.2 or >=1.2.0 <2"
        )
    items = text.replace(",", " ").split(" ")
    items = [item for item in items if item]
    if not items:
        raise InvalidVersion(f"range {text!r} is empty; write one such as ^1.4, ~1.4.2 or 1.x")
    for item in items:
        m = _PARTIAL_RE.fullmatch(item) if len(item) <= MAX_VERSION_LENGTH + 2 else None
        if not m:
            raise InvalidVersion(f"range {text!r} cannot be parsed at {item!r}; write one such as ^1.4, ~1.4.2 or 1.x")
        op, rest = m["op"] or "", m["rest"]
        major, minor, patch = m["major"], m["minor"], m["patch"]
        if _is_wild(major):
            continue
        ma = int(major)
        mi = 0 if minor is None or _is_wild(minor) else int(minor)
        pa = 0 if patch is None or _is_wild(patch) else int(patch)
        if rest:
            if _is_wild(minor) or _is_wild(patch):
                raise InvalidVersion(f"range {text!r}: {item!r} has a pre-release or build on a partial version")
            allow_pre = allow_pre or rest.startswith("-")
        low = parse_version(f"{ma}.{mi}.{pa}{rest or ''}", f"range {text!r}:")
        if op in (">=", ">", "<", "<="):
            comparators.append((op, low))
        elif op == "^":
            if ma > 0 or _is_wild(minor):
                high = semver.Version(ma + 1)
            elif mi > 0 or _is_wild(patch):
                high = semver.Version(0, mi + 1)
            else:
                high = semver.Version(0, 0, pa + 1)
            comparators += [(">=", low), ("<", high)]
        elif op == "~":
            high = semver.Version(ma + 1) if _is_wild(minor) else semver.Version(ma, mi + 1)
            comparators += [(">=", low), ("<", high)]
        elif _is_wild(minor):
            comparators += [(">=", low), ("<", semver.Version(ma + 1))]
        elif _is_wild(patch):
            comparators += [(">=", low), ("<", semver.Version(ma, mi + 1))]
        else:
            comparators.append(("=", low))
    return VersionRange(text=text, comparators=tuple(comparators), allow_prerelease=allow_pre)
