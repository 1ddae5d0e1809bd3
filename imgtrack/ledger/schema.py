"""The ledger's file formats (schema 2): a record per build, written once, and a file per later fact.

A record holds what was true when the build was recorded. Everything learnt later (a push, a
promotion, a tag added afterwards, and the kinds later versions add) is a fact file of its own, named
by its kind and the digest of its bytes: the same fact written twice is one file, two different facts
are two files, so no two writers ever change one file and no merge of ledger changes can conflict.
A `Build` is what readers see: a record with its facts merged in.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from imgtrack.errors import LedgerError
from imgtrack.oci.digest import is_digest
from imgtrack.oci.layout import PlatformManifest
from imgtrack.policy import Candidate

__all__ = ["Build", "Fact", "PlatformManifest", "Push", "Record", "parse_fact", "parse_record"]

SCHEMA = 2
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
# A record or fact file larger than this is refused before it is parsed (a record is ~1 KiB).
MAX_FILE_BYTES = 1024 * 1024
FACT_KINDS = ("push", "promote", "tag", "deploy", "seen", "bad", "source")
# What the image said about its own source, against the commit recorded (kind "source"; docs/ledger.md).
VERDICTS = ("corroborated", "uncorroborated", "accepted-mismatch")
ENV_KINDS = ("deploy", "seen", "bad")  # facts about an environment (docs/release.md)
FACT_NAME_RE = re.compile(r"(?P<kind>[a-z]+)-(?P<id>[0-9a-f]{16})\.toml")
FACT_ID_LEN = 16


@dataclass(frozen=True)
class Record:
    """One built image, bound to its commit and version: the file is written once and never changed."""

    image: str
    digest: str
    media_type: str
    version: str
    commit: str
    tree: str  # "clean" | "dirty"
    tags: tuple[str, ...]  # what policy gave the build when it was recorded
    recorded_at: datetime
    recorded_by: str
    manifests: tuple[PlatformManifest, ...] = ()
    schema: int = field(default=SCHEMA)

    @property
    def dirty(self) -> bool:
        return self.tree == "dirty"

    def candidate(self) -> Candidate:
        """The build as the tagging policy judges it."""
        return Candidate(self.image, self.digest, self.version, self.commit, self.dirty)

    def all_digests(self) -> list[str]:
        """Every digest a runtime may report for this build: index, platform manifests, configs."""
        out = [self.digest]
        for m in self.manifests:
            out += [m.digest, m.config] if m.config else [m.digest]
        return list(dict.fromkeys(d for d in out if d))

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
            "manifests": [{"platform": m.platform, "digest": m.digest, "config": m.config} for m in self.manifests],
        }

    def to_toml(self) -> bytes:
        return tomli_w.dumps(self.to_dict()).encode("utf-8")


@dataclass(frozen=True)
class Fact:
    """Something learnt about a recorded build after it was recorded.

    kind "push" or "promote": every blob, manifest and tag landed in `repository` (tags `tags`);
    kind "tag": the build was given `tag` after it was recorded;
    kind "deploy": the build was rolled out to environment `env` (from `repository`, when known);
    kind "seen": `audit --env` saw the build running in `env`;
    kind "bad": the build was marked bad in `env` (a rollback never goes back to it);
    kind "source": what the image says about its own source (`said`: one "where: revision" each),
    judged against the record's commit at record time (`verdict`, one of VERDICTS).
    """

    kind: str
    image: str
    record: str  # the record's digest
    at: datetime
    by: str | None = None
    repository: str = ""
    tags: tuple[str, ...] = ()
    tag: str = ""
    env: str = ""
    verdict: str = ""
    said: tuple[str, ...] = ()

    def identity(self) -> tuple[str, ...]:
        """What makes two facts the same one: written again, it adds nothing (who and when aside)."""
        if self.kind == "tag":
            return (self.kind, self.tag)
        if self.kind == "source":  # judged once, when the build was recorded
            return (self.kind,)
        if self.kind in ENV_KINDS:  # events: a redeploy after a rollback is a rollout of its own
            return (self.kind, self.env, self.repository, self.at.isoformat())
        # A promotion is a push made from a registry: the same landing either way.
        return ("push", self.repository, *self.tags)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "kind": self.kind,
            "image": self.image,
            "record": self.record,
            "at": self.at,
        }
        if self.by is not None:
            data["by"] = self.by
        if self.kind == "tag":
            data["tag"] = self.tag
        elif self.kind == "source":
            data["verdict"] = self.verdict
            data["said"] = list(self.said)
        elif self.kind in ENV_KINDS:
            data["env"] = self.env
            if self.repository:
                data["repository"] = self.repository
        else:
            data["repository"] = self.repository
            data["tags"] = list(self.tags)
        return data

    def to_toml(self) -> bytes:
        return tomli_w.dumps(self.to_dict()).encode("utf-8")

    def file_name(self) -> str:
        return fact_file_name(self.kind, self.to_toml())

    def to_json(self) -> dict[str, Any]:
        data = self.to_dict()
        del data["schema"]
        data["at"] = iso(self.at)
        return data


def fact_file_name(kind: str, data: bytes) -> str:
    """`<kind>-<first 16 hex of the sha256 of the file's bytes>.toml`."""
    return f"{kind}-{hashlib.sha256(data).hexdigest()[:FACT_ID_LEN]}.toml"


@dataclass(frozen=True)
class Push:
    """A completed push or promotion, as readers see it."""

    repository: str
    tags: tuple[str, ...]
    pushed_at: datetime
    pushed_by: str | None = None
    promoted: bool = False


@dataclass(frozen=True)
class Build:
    """A record with every fact about it: what `show`, `log` and policy see."""

    record: Record
    facts: tuple[Fact, ...] = ()

    @property
    def dirty(self) -> bool:
        return self.record.dirty

    def all_digests(self) -> list[str]:
        return self.record.all_digests()

    def candidate(self) -> Candidate:
        return self.record.candidate()

    @property
    def image(self) -> str:
        return self.record.image

    @property
    def digest(self) -> str:
        return self.record.digest

    @property
    def version(self) -> str:
        return self.record.version

    @property
    def commit(self) -> str:
        return self.record.commit

    @property
    def recorded_at(self) -> datetime:
        return self.record.recorded_at

    @property
    def recorded_by(self) -> str:
        return self.record.recorded_by

    @property
    def media_type(self) -> str:
        return self.record.media_type

    @property
    def tree(self) -> str:
        return self.record.tree

    @property
    def manifests(self) -> tuple[PlatformManifest, ...]:
        return self.record.manifests

    @property
    def tags(self) -> tuple[str, ...]:
        """The record's tags, then those given later, in the order they were given."""
        later = [f.tag for f in self.ordered_facts() if f.kind == "tag"]
        return tuple(dict.fromkeys((*self.record.tags, *later)))

    @property
    def pushes(self) -> tuple[Push, ...]:
        return tuple(
            Push(f.repository, f.tags, f.at, f.by, f.kind == "promote")
            for f in self.ordered_facts()
            if f.kind in ("push", "promote")
        )

    def ordered_facts(self) -> list[Fact]:
        return sorted(self.facts, key=lambda f: (f.at, f.kind, f.file_name()))

    @property
    def corroboration(self) -> tuple[str, tuple[str, ...]]:
        """(verdict, what said it) of the image's own word on its source; "uncorroborated" when it said
        nothing (no fact is written for that)."""
        found = [f for f in self.facts if f.kind == "source"]
        return (found[0].verdict, found[0].said) if found else ("uncorroborated", ())

    def has_fact(self, fact: Fact) -> bool:
        return any(f.identity() == fact.identity() for f in self.facts)

    def to_json(self) -> dict[str, Any]:
        data = self.record.to_dict()
        data["tags"] = list(self.tags)
        data["recorded_at"] = iso(self.record.recorded_at)
        pushes = []
        for p in self.pushes:
            entry: dict[str, Any] = {"repository": p.repository, "tags": list(p.tags), "pushed_at": iso(p.pushed_at)}
            if p.pushed_by is not None:
                entry["pushed_by"] = p.pushed_by
            if p.promoted:
                entry["promoted"] = True
            pushes.append(entry)
        data["pushes"] = pushes
        verdict, said = self.corroboration
        data["corroboration"] = {"verdict": verdict, "said": list(said)}
        data["facts"] = [f.to_json() for f in self.ordered_facts()]
        return data


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


_STR = re.compile(r'([a-z_]+) = "([^"\\\x00-\x1f\x7f]*)"')
_INT = re.compile(r"([a-z_]+) = (0|[1-9][0-9]{0,8})")
_TIME = re.compile(r"([a-z_]+) = (\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2}))")
_ARRAY_ITEM = re.compile(r'    "([^"\\\x00-\x1f\x7f]*)",')


def _quick_toml(text: str) -> dict[str, Any] | None:
    """The document, if `text` is in the plain shape imgtrack writes (what a ledger nearly always holds);
    None for anything else, which tomllib then parses. About ten times faster than tomllib."""
    doc: dict[str, Any] = {}
    table: dict[str, Any] = doc
    lines = text.split("\n")
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        i += 1
        if not line:
            continue
        if line == "[[manifests]]":
            if "manifests" in doc and not isinstance(doc["manifests"], list):
                return None
            table = {}
            doc.setdefault("manifests", []).append(table)
            continue
        m = _STR.fullmatch(line)
        if m:
            key, value = m.group(1), m.group(2)
        elif m := _INT.fullmatch(line):
            key, value = m.group(1), int(m.group(2))
        elif m := _TIME.fullmatch(line):
            key = m.group(1)
            try:
                value = datetime.fromisoformat(m.group(2).replace("Z", "+00:00"))
            except ValueError:
                return None
        elif line.endswith(" = []"):
            key, value = line[:-5], []
        elif line.endswith(" = ["):
            key, value = line[:-4], []
            while i < n and lines[i] != "]":
                item = _ARRAY_ITEM.fullmatch(lines[i])
                if item is None:
                    return None
                value.append(item.group(1))
                i += 1
            if i == n:
                return None
            i += 1
        else:
            return None
        if key in table or not key.replace("_", "").isalpha():
            return None
        table[key] = value
    return doc


class _Fields:
    """Typed access to one parsed file's fields; every complaint names the file and line."""

    def __init__(self, data: bytes, path: Path | str, what: str) -> None:
        self.path = path
        if len(data) > MAX_FILE_BYTES:
            raise LedgerError(
                f"{path}:1: {what} is {len(data)} bytes, over the {MAX_FILE_BYTES} a ledger file may "
                f"hold; restore it with `git checkout -- {path}`"
            )
        try:
            self.text = data.decode("utf-8")
            self.doc = _quick_toml(self.text) or tomllib.loads(self.text)
        except UnicodeDecodeError:
            raise LedgerError(f"{path}:1: {what} is not UTF-8 text; restore it with `git checkout -- {path}`") from None
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            m = re.search(r"line (\d+)", str(exc))
            line = m.group(1) if m else "1"
            raise LedgerError(
                f"{path}:{line}: {what} is not valid TOML ({str(exc).split(' (at')[0]}); "
                f"fix it or restore it with `git checkout -- {path}`"
            ) from None

    def bad(self, key: str, reason: str) -> LedgerError:
        return LedgerError(
            f"{self.path}:{_line_of(self.text, key)}: {key} {reason}; fix the file or restore it from git"
        )

    def get(self, key: str, kind: type, check: Callable[[Any], Any] | None = None, default: Any = ...) -> Any:
        if key not in self.doc:
            if default is not ...:
                return default
            raise LedgerError(f"{self.path}:1: required field {key} is missing; fix the file or restore it from git")
        value = self.doc[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.bad(key, f"must be {kind.__name__}")
        if check is not None and not check(value):
            raise self.bad(key, f"has an invalid value {str(value)[:80]!r}")
        return value

    def moment(self, key: str) -> datetime:
        value: datetime = self.get(key, datetime)
        if value.tzinfo is None:
            raise self.bad(key, "has no time zone (the ledger is in UTC, e.g. 2026-03-01T12:00:00Z)")
        return value

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        values = self.get(key, list, default=default)
        if not all(isinstance(t, str) for t in values):
            raise self.bad(key, "must be a list of strings")
        return tuple(values)

    def schema(self) -> int:
        schema: int = self.get("schema", int)
        if schema == 1:
            raise LedgerError(
                f"{self.path}:1: this is a schema-1 record; run `imgtrack ledger migrate` and commit the change"
            )
        if schema != SCHEMA:
            raise self.bad("schema", f"is {schema}, this imgtrack reads schema {SCHEMA}: upgrade imgtrack")
        return schema


def parse_record(data: bytes, path: Path | str) -> Record:
    """Parse and validate one record file; LedgerError names the file and line of what is wrong."""
    from imgtrack.versions import is_version

    f = _Fields(data, path, "record")
    schema = f.schema()
    manifests = []
    entries = f.get("manifests", list, default=[])
    for entry in entries:
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("platform", "digest", "config")
        ):
            raise f.bad("platform", "entries under [[manifests]] need string platform, digest and config")
        if not is_digest(entry["digest"]) or (entry["config"] and not is_digest(entry["config"])):
            raise f.bad("digest", f"in [[manifests]] is not a digest ({entry['digest'][:80]!r})")
        manifests.append(PlatformManifest(entry["platform"], entry["digest"], entry["config"]))
    return Record(
        schema=schema,
        image=f.get("image", str),
        digest=f.get("digest", str, is_digest),
        media_type=f.get("media_type", str),
        version=f.get("version", str, is_version),
        commit=f.get("commit", str, COMMIT_RE.fullmatch),
        tree=f.get("tree", str, lambda v: v in ("clean", "dirty")),
        tags=f.strings("tags"),
        recorded_at=f.moment("recorded_at"),
        recorded_by=f.get("recorded_by", str),
        manifests=tuple(manifests),
    )


class UnknownFactKind(LedgerError):
    """A fact of a kind a later imgtrack added: lookups pass it by, `verify` reports it."""


def parse_fact(data: bytes, path: Path | str) -> Fact:
    """Parse and validate one fact file (its place and name are checked by the store)."""
    f = _Fields(data, path, "fact")
    f.schema()
    kind = f.get("kind", str)
    if kind not in FACT_KINDS:
        raise UnknownFactKind(
            f"{path}:{_line_of(f.text, 'kind')}: kind is {kind[:40]!r}, which this imgtrack does "
            f"not know (it knows {', '.join(FACT_KINDS)}): a newer imgtrack wrote it; upgrade "
            "imgtrack to check it"
        )
    by = f.get("by", str, default=None)
    common: dict[str, Any] = {
        "kind": kind,
        "image": f.get("image", str),
        "record": f.get("record", str, is_digest),
        "at": f.moment("at"),
        "by": by,
    }
    if kind == "tag":
        return Fact(**common, tag=f.get("tag", str))
    if kind == "source":
        return Fact(**common, verdict=f.get("verdict", str, lambda v: v in VERDICTS), said=f.strings("said"))
    if kind in ENV_KINDS:
        from imgtrack.config import IMAGE_NAME_RE

        return Fact(
            **common, env=f.get("env", str, IMAGE_NAME_RE.fullmatch), repository=f.get("repository", str, default="")
        )
    return Fact(**common, repository=f.get("repository", str), tags=f.strings("tags"))
