"""The ledger: one TOML file per built image under `.imgtrack/ledger/<image>/<algo>-<hex>.toml`.

The files are the truth. Writes are atomic (temp file in the same folder, fsync, rename, fsync of the
folder) and made under an exclusive lock, so a killed process leaves either the old file or the new one
and concurrent CI jobs lose nothing. Lookups go through `LedgerIndex`, a cache under the git dir.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import semver

from imgtrack.cache import RECORD_NAME_RE, LedgerIndex, check_placement, read_records
from imgtrack.errors import InvalidReference, LedgerError
from imgtrack.fsutil import write_atomic
from imgtrack.oci.digest import DIGEST_PREFIX_RE, file_name
from imgtrack.record import Record, parse_record
from imgtrack.versions import VersionRange, is_version, semver_of

_HEX_RE = re.compile(r"^[0-9a-f]{4,64}$")


@dataclass(frozen=True)
class Ref:
    """What `show` was asked about: `[IMAGE@]REF`."""

    image: str | None
    ref: str

    @classmethod
    def parse(cls, text: str) -> Ref:
        image, sep, ref = text.rpartition("@")
        return cls(image=image, ref=ref) if sep and image else cls(image=None, ref=text)


class Ledger:
    """The records of one work tree, with a lookup cache under its git dir."""

    def __init__(self, root: Path, cache_dir: Path) -> None:
        self.root = root
        self.cache_dir = cache_dir
        self._index: LedgerIndex | None = None

    # --- files -----------------------------------------------------------------------------------

    def rel_path(self, image: str, digest: str) -> str:
        return f"{image}/{file_name(digest)}.toml"

    def path_of(self, image: str, digest: str) -> Path:
        return self.root / self.rel_path(image, digest)

    def read(self, rel: str) -> Record:
        path = self.root / rel
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise LedgerError(f"{path} vanished while being read; run the command again") from None
        record = parse_record(data, path)
        problem = check_placement(record, rel, path)
        if problem:
            raise LedgerError(problem)
        return record

    def get(self, image: str, digest: str) -> Record | None:
        rel = self.rel_path(image, digest)
        return self.read(rel) if (self.root / rel).exists() else None

    def iter_files(self) -> Iterator[str]:
        """Every record file, as a path relative to the ledger root, in a stable order."""
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for name in sorted(os.listdir(folder)):
                if RECORD_NAME_RE.match(name):
                    yield f"{folder.name}/{name}"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the ledger's exclusive lock (released by the kernel even if the process is killed)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cache_dir / "ledger.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def write(self, record: Record) -> str:
        """Write `record` atomically; the caller holds `locked()`. Returns its relative path."""
        rel = self.rel_path(record.image, record.digest)
        path = self.root / rel
        write_atomic(path, record.to_toml())
        self.index(refresh=False).note_written(rel, record)
        return rel

    def update(self, image: str, digest: str, change: Callable[[Record], Record]) -> Record:
        """Read, change and rewrite one record under the lock (e.g. to append a push)."""
        with self.locked():
            current = self.get(image, digest)
            if current is None:
                raise LedgerError(f"{self.path_of(image, digest)} is not recorded; record the image first")
            updated = change(current)
            if updated != current:
                self.write(updated)
            return updated

    # --- lookups ---------------------------------------------------------------------------------

    def index(
        self, refresh: bool = True, full: bool = False, healthy: bool = True,
        parsed: Mapping[str, Record] | None = None,
    ) -> LedgerIndex:
        """The lookup cache, brought up to date; refuses a ledger with a malformed record if `healthy`."""
        if self._index is None:
            self._index = LedgerIndex(self.cache_dir / "cache.sqlite", self.root)
            refresh = True
        if refresh:
            self._index.refresh(full=full, parsed=parsed)
        if healthy:
            self._index.check_healthy()
        return self._index

    def refresh_cache(self, parsed: Mapping[str, Record]) -> None:
        """Bring an existing cache fully up to date from records just read (`verify`), so in-place edits
        are seen from here on. A cache not built yet is left to the next lookup."""
        if (self.cache_dir / "cache.sqlite").exists():
            self.index(full=True, healthy=False, parsed=parsed)

    def find(self, text: str) -> list[Record]:
        """Records a `show` reference names: digest (prefix), version, tag, or commit (prefix)."""
        ref = Ref.parse(text)
        idx = self.index()
        value, image = ref.ref, ref.image
        if image is not None and image not in idx.images():
            raise InvalidReference(f"no records of image {image!r} in the ledger; see `imgtrack log` for what is recorded")
        if not value:
            raise InvalidReference(f"{text!r} names nothing; give a digest, version, tag or commit")
        if DIGEST_PREFIX_RE.match(value):
            paths = idx.paths_by_digest_prefix(value, image)
        else:
            paths = []
            if is_version(value):
                paths = idx.paths_by_version(value, image)
            if not paths:
                paths = idx.paths_by_tag(value, image)
            if not paths and _HEX_RE.match(value):
                paths = idx.paths_by_commit_prefix(value, image) or idx.paths_by_digest_prefix(
                    f"sha256:{value}", image
                )
        return [self.read(p) for p in dict.fromkeys(paths)]

    def find_one(self, text: str) -> Record:
        """The single record `text` names, or a clear error for none or several."""
        found = self.find(text)
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

    def log(self, image: str | None, limit: int | None) -> list[Record]:
        return [self.read(p) for p in self.index().newest(image, limit)]

    def resolve(self, image: str, version_range: VersionRange) -> Record | None:
        """The record with the highest version of `image` inside `version_range`."""
        best: tuple[semver.Version, str] | None = None
        for version, path in self.index().versions(image, major=version_range.major_hint):
            v = semver_of(version)
            if version_range.contains(v) and (best is None or v > best[0]):
                best = (v, path)
        return self.read(best[1]) if best else None

    def releases(self, image: str) -> list[str]:
        return [v for v, _ in self.index().versions(image, releases_only=True)]

    def load_all(self) -> tuple[list[tuple[str, Record]], list[str]]:
        """Parse every record file (the truth, not the cache): (records, one error line per bad file)."""
        rels = list(self.iter_files())
        records: list[tuple[str, Record]] = []
        errors: list[str] = []
        for rel, (record, error) in zip(rels, read_records(self.root, rels)):
            if record is not None:
                records.append((rel, record))
            else:
                errors.append(error or f"{rel}: unreadable")
        return records, errors
