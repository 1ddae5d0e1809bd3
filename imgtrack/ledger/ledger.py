"""`Ledger`: the store and the lookup cache of one work tree, as the commands use them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import semver

from imgtrack.errors import InvalidReference, LedgerError
from imgtrack.ledger.index import GitView, LedgerIndex, ProbeIndex, read_files, refuse_schema1
from imgtrack.ledger.index import probe as probe_index
from imgtrack.ledger.schema import ENV_KINDS, Build, Fact, Record, sort_key
from imgtrack.ledger.store import (
    PackResult,
    Store,
    classify,
    read_fact_file,
    read_record_file,
    read_segment,
    record_rel,
)
from imgtrack.oci.digest import DIGEST_PREFIX_RE, is_digest
from imgtrack.versions import VersionRange, is_version, semver_of

__all__ = ["Build", "Fact", "Ledger", "LoadedLedger", "Record", "Ref"]

_HEX_RE = re.compile(r"[0-9a-f]{4,64}")


@dataclass(frozen=True)
class Ref:
    """What `show` was asked about: `[IMAGE@]REF`."""

    image: str | None
    ref: str

    @classmethod
    def parse(cls, text: str) -> Ref:
        image, sep, ref = text.rpartition("@")
        return cls(image=image, ref=ref) if sep and image else cls(image=None, ref=text)


@dataclass(frozen=True)
class LoadedLedger:
    """Every file parsed (the truth, not the cache), for `verify` and `verify --remote`."""

    records: list[tuple[str, Record]]
    facts: list[tuple[str, Fact]]
    errors: list[str]  # one line per malformed or misplaced file
    broken: dict[str, str]  # path -> error, of the files that could not be read as what they are

    def builds(self) -> list[tuple[str, Build]]:
        by_record: dict[str, list[Fact]] = {}
        for rel, fact in self.facts:
            by_record.setdefault(record_rel(fact.image, fact.record), []).append(fact)
        return [(rel, Build(r, tuple(by_record.get(rel, ())))) for rel, r in self.records]


class Ledger:
    """The records of one work tree, with a lookup cache under its git dir."""

    def __init__(self, root: Path, cache_dir: Path, git: GitView | None = None) -> None:
        self.root = root
        self.cache_dir = cache_dir
        self.git = git
        self.store = Store(root, cache_dir)
        self._index: LedgerIndex | None = None
        self._refreshed = False
        self._probes: dict[tuple[str | None, tuple[str, ...], bool], ProbeIndex] = {}

    # --- files -----------------------------------------------------------------------------------

    def path_of(self, image: str, digest: str) -> Path:
        return self.root / record_rel(image, digest)

    def read(self, rel: str) -> Build:
        return self.store.build(self.store.read_record(rel))

    def get(self, image: str, digest: str) -> Build | None:
        return self.store.get_build(image, digest)

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self.store.locked():
            self._refreshed = False  # another writer may have written before we got the lock: look again
            self._probes.clear()
            yield

    def write(self, record: Record) -> str:
        """Write a new record; the caller holds `locked()`. Returns its path relative to the root."""
        rel = self.store.write_record(record)
        self._note_written(rel, record)
        return rel

    def pack(self, loose: Iterable[str]) -> PackResult:
        """Move loose records and facts no commit holds into segments (Store.pack), under the lock."""
        with self.locked():
            return self.store.pack(loose)

    def add_fact(self, fact: Fact) -> bool:
        """Write `fact` under the lock unless the same fact is there; True if it was written."""
        with self.locked():
            return self.add_fact_locked(fact)

    def add_fact_locked(self, fact: Fact) -> bool:
        rel = self.store.write_fact(fact)
        if rel is not None:
            self._note_written(rel, fact)
        return rel is not None

    def _note_written(self, rel: str, item: Record | Fact) -> None:
        if self._index is None:
            cache = LedgerIndex(self.cache_dir / "cache.sqlite", self.root, self.git)
            built = cache.built
            cache.close()
            if not built:  # (a command that probed) the first to build the cache reads this file with the rest
                return
        self.index(refresh=False, healthy=False).note_written(rel, item)

    # --- lookups ---------------------------------------------------------------------------------

    def index(
        self,
        refresh: bool | None = None,
        full: bool = False,
        healthy: bool = True,
        parsed: Mapping[str, Record | Fact] | None = None,
    ) -> LedgerIndex:
        """The lookup cache, brought up to date; refuses a ledger with a malformed file if `healthy`.

        By default it is brought up to date once per command, and again on taking the ledger lock (what
        imgtrack writes itself it indexes as it writes); `refresh=True` looks at the files again anyway."""
        if self._index is None:
            self._index = LedgerIndex(self.cache_dir / "cache.sqlite", self.root, self.git)
            refresh = True
        if refresh or full or (refresh is None and not self._refreshed):
            self._index.refresh(full=full, parsed=parsed)
            self._refreshed = True
        if healthy:
            self._index.check_healthy()
        return self._index

    def check_files(self, rels: Iterable[str]) -> None:
        """Refuse (one line) a schema-1 ledger, or a malformed record or fact among `rels` (paths relative to
        the root; other files are not the ledger's to judge), reading only those files."""
        refuse_schema1(self.root)
        for rel in sorted(rels):
            kind = classify(rel)
            if kind is None or not (self.root / rel).exists():
                continue
            if kind == "segment":
                try:
                    read_segment(self.root, rel)
                except OSError as exc:
                    raise LedgerError(
                        f"{self.root / rel}: cannot be read ({exc.strerror}); check its permissions"
                    ) from None
                continue
            if kind == "record":
                _, error = read_record_file(self.root, rel)
            else:
                _, error = read_fact_file(self.root, rel, strict=False)
            if error:
                raise LedgerError(error)

    def ready(self) -> None:
        """Refuse a schema-1 ledger and, once the cache is built, a malformed file anywhere in it (as every
        lookup of the cache does); a cache not built yet is left alone: lookups then probe (`index_of`)."""
        refuse_schema1(self.root)
        self.warm()
        if self._index is not None:
            self._index.check_healthy()

    def warm(self) -> None:
        """Bring a built cache up to date now, before the lock, so that the lookups made under it find
        little left to read; a cache not built yet is left alone (a lookup then probes, or builds it)."""
        if self._index is None:
            cache = LedgerIndex(self.cache_dir / "cache.sqlite", self.root, self.git)
            if not cache.built:
                cache.close()
                return
            self._index = cache
        self.index(healthy=False)

    def refresh_cache(self, loaded: LoadedLedger) -> None:
        """Make an existing cache agree with every file just read (`verify`), so in-place edits are seen
        from here on. A cache not built yet is left to the next lookup."""
        if (self.cache_dir / "cache.sqlite").exists():
            idx = self.index(refresh=True, healthy=False)
            parsed: dict[str, Record | Fact] = {**dict(loaded.records), **dict(loaded.facts)}
            idx.sync(parsed, loaded.broken)

    def environment_facts(self, image: str, env: str | None = None) -> list[EnvEvent]:
        """Every deploy, sighting and bad mark of `image`'s builds (in `env`, or everywhere), oldest first,
        from the cache alone: what status, rollback and pin weigh before they read a build."""
        return [EnvEvent(*row) for row in self.index().environment_facts(image, ENV_KINDS, env)]

    def current_runs(self, image: str) -> dict[str, tuple[EnvEvent, datetime, str]]:
        """`current_runs(self.environment_facts(image))`, reading the cache from the newest event back only
        as far as each environment's current run goes."""
        index = self.index()
        todo = set(index.environments_of(image, ENV_KINDS))
        runs: dict[str, tuple[EnvEvent, str, str]] = {}  # env: (latest event, start of the run, how)
        for row in index.environment_facts(image, ENV_KINDS, newest_first=True):
            if not todo:
                break
            event = EnvEvent(*row)
            if event.kind == "bad" or event.env not in todo:
                continue
            held = runs.get(event.env)
            if held is None:
                runs[event.env] = (event, event.at_key, event.kind)
            elif held[0].record != event.record:
                todo.discard(event.env)  # the run before the current one: the current run began after it
            else:
                runs[event.env] = (held[0], event.at_key, "deploy" if "deploy" in (held[2], event.kind) else "seen")
        return {env: (e, datetime.fromisoformat(at).replace(tzinfo=UTC), how) for env, (e, at, how) in runs.items()}

    def environment_events(self, image: str, newest: int) -> list[tuple[Fact, Build]]:
        """The `newest` deploys, sightings and bad marks of `image`'s builds, oldest first, each with its
        build: the cache chooses them, and only their builds are read (for who made each one)."""
        events = self.environment_facts(image)[-newest:] if newest > 0 else []
        wanted = {(e.kind, e.env, e.at_key, e.path) for e in events}
        builds = {path: self.read(path) for path in dict.fromkeys(e.path for e in events)}
        found = [
            (fact, build)
            for path, build in builds.items()
            for fact in build.facts
            if (fact.kind, fact.env, sort_key(fact.at), path) in wanted
        ]
        return sorted(found, key=lambda e: (e[0].at, e[0].kind, e[1].digest))

    def require_image(self, image: str, idx: LedgerIndex | None = None) -> None:
        """Refuse an image the ledger holds no record of, saying where to look."""
        if not (idx or self.index()).has_image(image):
            raise InvalidReference(
                f"no records of image {image!r} in the ledger; see `imgtrack log` for what is recorded"
            )

    def index_of(self, image: str | None, texts: tuple[str, ...], exact: bool = False) -> LedgerIndex:
        """An index that answers every lookup of the values `texts` (in `image`'s records, or all): the cache;
        or, while the cache is not built and building it would take a while (a fresh clone of a large
        repository), an index in memory of only the files that hold one of them (docs/ledger.md).

        A text is matched as the start of a TOML string value (`"1.4.0` finds `"1.4.0+build.2"` too), or
        with `exact` as the whole value."""
        if self._index is not None or not texts:
            return self.index()
        key = (image, texts, exact)
        if key not in self._probes:
            cache = LedgerIndex(self.cache_dir / "cache.sqlite", self.root, self.git)
            needles = tuple(f"{q}{t}{q if exact else ''}" for t in texts for q in "\"'")
            found = None if cache.built else probe_index(self.root, self.git, needles, image)
            if found is None:
                self._index = cache
                return self.index()
            cache.close()
            self._probes[key] = found
        probe = self._probes[key]
        probe.check_healthy()
        return probe

    def _lookup_index(self, ref: Ref, probe: bool) -> LedgerIndex:
        if not probe or not ref.ref:
            return self.index()
        value = ref.ref  # matched as a prefix: a digest, version, tag or commit starts with it
        texts = (value, f"sha256:{value}") if _HEX_RE.fullmatch(value) else (value,)
        return self.index_of(ref.image, texts)

    def find(self, text: str, probe: bool = False) -> list[Build]:
        """Records a `show` reference names: digest (prefix), version, tag, or commit (prefix)."""
        ref = Ref.parse(text)
        value, image = ref.ref, ref.image
        idx = self._lookup_index(ref, probe)
        if image is not None:
            self.require_image(image, idx)
        if not value:
            raise InvalidReference(f"{text!r} names nothing; give a digest, version, tag or commit")
        if is_digest(value):
            paths = idx.paths_by_digest(value, image)
            own = [p for p in paths if p.endswith(value.replace(":", "-", 1) + ".toml")]
            paths = own or paths  # a record's own digest wins over a platform or config match
        elif DIGEST_PREFIX_RE.fullmatch(value):
            paths = idx.paths_by_digest_prefix(value, image)
        else:
            paths = []
            if is_version(value):
                paths = idx.paths_by_version(value, image)
            if not paths:
                paths = idx.paths_by_tag(value, image)
            if not paths and _HEX_RE.fullmatch(value):
                paths = idx.paths_by_commit_prefix(value, image) or idx.paths_by_digest_prefix(f"sha256:{value}", image)
        return [self.read(p) for p in dict.fromkeys(paths)]

    def also_naming(self, text: str, found: Build, probe: bool = False) -> list[Build]:
        """Other records a full digest in `text` names as a platform manifest or config, when `found`
        is the record whose own digest it is (`show` lists them after it: the own record wins)."""
        ref = Ref.parse(text)
        if not is_digest(ref.ref) or ref.ref != found.digest:
            return []
        paths = self._lookup_index(ref, probe).paths_by_digest(ref.ref, ref.image)
        return [self.read(p) for p in paths if not p.endswith(ref.ref.replace(":", "-", 1) + ".toml")]

    def find_one(self, text: str, probe: bool = False) -> Build:
        """The single record `text` names, or a clear error for none or several."""
        found = self.find(text, probe)
        if not found:
            raise InvalidReference(
                f"{text!r} matches no record (tried digest, version, tag and commit); see `imgtrack log`"
            )
        if len(found) > 1:
            names = ", ".join(f"{r.image}@{r.version}" for r in found[:5])
            raise InvalidReference(
                f"{text!r} matches {len(found)} records ({names}{', …' if len(found) > 5 else ''}); "
                "name one, e.g. IMAGE@VERSION or a longer digest"
            )
        return found[0]

    def log(self, image: str | None, limit: int | None) -> list[Build]:
        return [self.read(p) for p in self.index().newest(image, limit)]

    def resolve(self, image: str, version_range: VersionRange) -> Build | None:
        """The record with the highest version of `image` inside `version_range`."""
        best: tuple[semver.Version, str] | None = None
        for version, path in self.index().versions(image, major=version_range.major_hint):
            v = semver_of(version)
            if version_range.contains(v) and (best is None or v > best[0]):
                best = (v, path)
        return self.read(best[1]) if best else None

    def releases(self, image: str) -> list[str]:
        return [v for v, _ in self.index().versions(image, releases_only=True)]

    def load_all(self) -> LoadedLedger:
        """Parse every file (the truth, not the cache)."""
        files = self.store.scan()
        errors: list[str] = []
        if files.schema1:
            from imgtrack.ledger.index import schema1_message

            raise LedgerError(schema1_message(self.root))
        records: list[tuple[str, Record]] = []
        facts: list[tuple[str, Fact]] = []
        broken: dict[str, str] = {}
        for rel, (record, error) in zip(files.records, read_files(self.root, files.records, "record")):
            if isinstance(record, Record):
                records.append((rel, record))
            else:
                broken[rel] = error or f"{self.root / rel}: unreadable"
                errors.append(broken[rel])
        known = set(files.records)  # a malformed record is reported once, not again by its facts
        for rel, (fact, error) in zip(files.facts, read_files(self.root, files.facts, "fact")):
            if not isinstance(fact, Fact):
                broken[rel] = error or f"{self.root / rel}: unreadable"
                errors.append(broken[rel])
            elif record_rel(fact.image, fact.record) not in known:
                errors.append(
                    f"{self.root / rel}:1: names record {fact.record[:19]}… of {fact.image}, which is not "
                    "in the ledger; restore the record from git, or remove the fact"
                )
            else:
                facts.append((rel, fact))
        errors += list(files.problems.values())
        broken.update({rel: why for rel, why in files.problems.items() if classify(rel) == "segment"})
        for rel in files.strays:
            errors.append(
                f"{self.root / rel}: is neither a record nor a fact (records are <image>/<xx>/<digest>.toml, "
                "facts <image>/<xx>/<digest>/<kind>-<id>.toml); move or remove it"
            )
        return LoadedLedger(records, facts, errors, broken)


class EnvEvent(NamedTuple):
    """A deploy, sighting or bad mark as the cache holds it (a light stand-in for its Fact)."""

    kind: str
    env: str
    at_key: str  # sort_key(at): sorts as text
    repository: str
    record: str  # the record's digest
    path: str  # the record's path in the ledger

    @property
    def at(self) -> datetime:
        return datetime.fromisoformat(self.at_key).replace(tzinfo=UTC)


def current_runs(events: Sequence[EnvEvent]) -> dict[str, tuple[EnvEvent, datetime, str]]:
    """Per environment: the build that runs there now (the latest deploy or sighting, as that event),
    since when (the start of its current run, not an earlier one) and how it was learnt."""
    current: dict[str, tuple[EnvEvent, str, str]] = {}
    for event in events:
        if event.kind == "bad":
            continue
        held = current.get(event.env)
        if held is None or held[0].record != event.record:
            current[event.env] = (event, event.at_key, event.kind)
        elif event.kind == "deploy" and held[2] == "seen":
            current[event.env] = (event, held[1], "deploy")
    return {
        env: (e, datetime.fromisoformat(since).replace(tzinfo=UTC), how) for env, (e, since, how) in current.items()
    }
