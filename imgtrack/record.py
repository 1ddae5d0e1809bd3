"""A ledger record (schema 1): one built image, bound to its commit and version."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from imgtrack.errors import LedgerError
from imgtrack.oci.digest import is_digest

SCHEMA = 1
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class PlatformManifest:
    """One platform's manifest inside an index (or the image itself, for a single manifest)."""

    platform: str
    digest: str
    config: str


@dataclass(frozen=True)
class Push:
    """A completed push: every manifest and tag write succeeded and the registry's digest matched."""

    repository: str
    tags: tuple[str, ...]
    pushed_at: datetime


@dataclass(frozen=True)
class Record:
    image: str
    digest: str
    media_type: str
    version: str
    commit: str
    tree: str  # "clean" | "dirty"
    tags: tuple[str, ...]
    recorded_at: datetime
    recorded_by: str
    manifests: tuple[PlatformManifest, ...] = ()
    pushes: tuple[Push, ...] = ()
    schema: int = field(default=SCHEMA)

    @property
    def dirty(self) -> bool:
        return self.tree == "dirty"

    def all_digests(self) -> list[str]:
        """Every digest a runtime may report for this build: index, platform manifests, configs."""
        out = [self.digest]
        for m in self.manifests:
            out += [m.digest, m.config] if m.config else [m.digest]
        return list(dict.fromkeys(d for d in out if d))

    def with_push(self, push: Push) -> Record:
        return replace(self, pushes=(*self.pushes, push))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "image": self.image,
            "digest": self.digest,
            "media_type": self.media_type,
            "version": self.version,
            "commit": self.commit,
            "tree": self.tree,
            "tags": list(self.tags),
            "recorded_at": self.recorded_at,
            "recorded_by": self.recorded_by,
            "manifests": [
                {"platform": m.platform, "digest": m.digest, "config": m.config} for m in self.manifests
            ],
            "pushes": [
                {"repository": p.repository, "tags": list(p.tags), "pushed_at": p.pushed_at} for p in self.pushes
            ],
        }

    def to_json(self) -> dict[str, Any]:
        data = self.to_dict()
        data["recorded_at"] = iso(self.recorded_at)
        for p in data["pushes"]:
            p["pushed_at"] = iso(p["pushed_at"])
        return data

    def to_toml(self) -> bytes:
        return tomli_w.dumps(self.to_dict()).encode("utf-8")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def now() -> datetime:
    # Microseconds keep `log` in recording order for builds recorded within one second.
    return datetime.now(UTC)


def sort_key(moment: datetime) -> str:
    """A UTC timestamp that sorts as text (the cache orders `log` by it)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def _line_of(text: str, key: str) -> int:
    m = re.search(rf"^\s*{re.escape(key)}\s*=", text, re.MULTILINE)
    return text.count("\n", 0, m.start()) + 1 if m else 1


def parse_record(data: bytes, path: Path | str) -> Record:
    """Parse and validate one record file; LedgerError names the file and line of what is wrong."""
    try:
        text = data.decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        raise LedgerError(f"{path}:1: record is not UTF-8 text; restore it with `git checkout -- {path}`") from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = m.group(1) if m else "1"
        raise LedgerError(
            f"{path}:{line}: record is not valid TOML ({str(exc).split(' (at')[0]}); "
            f"fix it or restore it with `git checkout -- {path}`"
        ) from None

    def bad(key: str, reason: str) -> LedgerError:
        return LedgerError(f"{path}:{_line_of(text, key)}: {key} {reason}; fix the record or restore it from git")

    def get(key: str, kind: type, check: Any = None) -> Any:
        if key not in doc:
            return _missing(key)
        value = doc[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise bad(key, f"must be {kind.__name__}")
        if check is not None and not check(value):
            raise bad(key, f"has an invalid value {str(value)[:80]!r}")
        return value

    def _missing(key: str) -> None:
        raise LedgerError(f"{path}:1: required field {key} is missing; fix the record or restore it from git")

    schema = get("schema", int)
    if schema != SCHEMA:
        raise bad("schema", f"is {schema}, this imgtrack reads schema {SCHEMA}: upgrade imgtrack")
    from imgtrack.versions import is_version

    recorded_at = get("recorded_at", datetime)
    if recorded_at.tzinfo is None:
        raise bad("recorded_at", "has no time zone (records are in UTC, e.g. 2026-03-01T12:00:00Z)")
    tags = get("tags", list)
    if not all(isinstance(t, str) for t in tags):
        raise bad("tags", "must be a list of strings")
    manifests = []
    for entry in doc.get("manifests", []):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("platform", "digest", "config")):
            raise bad("platform", "entries under [[manifests]] need string platform, digest and config")
        if not is_digest(entry["digest"]) or (entry["config"] and not is_digest(entry["config"])):
            raise bad("digest", f"in [[manifests]] is not a digest ({entry['digest'][:80]!r})")
        manifests.append(PlatformManifest(entry["platform"], entry["digest"], entry["config"]))
    pushes = []
    for entry in doc.get("pushes", []):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("repository"), str)
            or not isinstance(entry.get("tags"), list)
            or not isinstance(entry.get("pushed_at"), datetime)
        ):
            raise bad("repository", "entries under [[pushes]] need repository, tags and pushed_at")
        pushes.append(Push(entry["repository"], tuple(entry["tags"]), entry["pushed_at"]))
    return Record(
        schema=schema,
        image=get("image", str),
        digest=get("digest", str, is_digest),
        media_type=get("media_type", str),
        version=get("version", str, is_version),
        commit=get("commit", str, COMMIT_RE.match),
        tree=get("tree", str, lambda v: v in ("clean", "dirty")),
        tags=tuple(tags),
        recorded_at=recorded_at,
        recorded_by=get("recorded_by", str),
        manifests=tuple(manifests),
        pushes=tuple(pushes),
    )
