"""The ledger's files: where each record and fact lives, atomic writes under a lock, and reading them.

    .imgtrack/ledger/<image>/<xx>/<algo>-<hex>.toml               a record (xx: the first two hex digits)
    .imgtrack/ledger/<image>/<xx>/<algo>-<hex>/<kind>-<id>.toml   a fact about it (id: from its bytes)

The files are the truth; nothing here knows about the lookup cache. Writes go to a temp file in the
same folder, are fsynced and renamed into place, so a reader or a crash sees a whole file or none.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imgtrack.errors import LedgerError
from imgtrack.fsutil import write_atomic
from imgtrack.ledger.schema import (
    FACT_NAME_RE,
    Build,
    Fact,
    Record,
    UnknownFactKind,
    fact_file_name,
    parse_fact,
    parse_record,
)
from imgtrack.oci.digest import DIGEST_PATTERN, check_digest

# A digest as a file name: the digest grammar with its `:` written `-` (file_name()).
RECORD_STEM = DIGEST_PATTERN.replace("sha256:", "sha256-").replace("sha512:", "sha512-")
RECORD_NAME_RE = re.compile(rf"{RECORD_STEM}\.toml")
FACT_DIR_RE = re.compile(RECORD_STEM)
BUCKET_RE = re.compile(r"[0-9a-f]{2}")


def bucket_of(digest: str) -> str:
    return check_digest(digest).partition(":")[2][:2]


def record_rel(image: str, digest: str) -> str:
    """Where a record lives, relative to the ledger root."""
    return f"{image}/{bucket_of(digest)}/{digest.replace(':', '-', 1)}.toml"


def facts_rel(image: str, digest: str) -> str:
    """The folder of a record's facts, relative to the ledger root."""
    return record_rel(image, digest).removesuffix(".toml")


def classify(rel: str) -> str | None:
    """ "record", "fact" or None for a path relative to the ledger root (by its shape only)."""
    parts = rel.split("/")
    if len(parts) == 3 and BUCKET_RE.fullmatch(parts[1]) and RECORD_NAME_RE.fullmatch(parts[2]):
        return "record"
    if (
        len(parts) == 4
        and BUCKET_RE.fullmatch(parts[1])
        and FACT_DIR_RE.fullmatch(parts[2])
        and FACT_NAME_RE.fullmatch(parts[3])
    ):
        return "fact"
    return None


def record_rel_of_fact(rel: str) -> str:
    return rel.rsplit("/", 1)[0] + ".toml"


def is_schema1_name(name: str) -> bool:
    """A schema-1 record sits directly in its image's folder: `<image>/<algo>-<hex>.toml`."""
    return bool(RECORD_NAME_RE.fullmatch(name))


def check_record_placement(record: Record, rel: str, where: Path | str) -> str | None:
    """A record must sit at `<image>/<xx>/<digest>.toml`; anything else is a malformed ledger."""
    image = rel.split("/", 1)[0]
    if record.image != image:
        return f"{where}:1: image {record.image!r} does not match its folder {image!r}; move the file or fix the field"
    if rel != record_rel(record.image, record.digest):
        return (
            f"{where}:1: digest {record.digest[:19]}… does not match the file's place {rel}; "
            "rename the file or fix the field"
        )
    return None


def check_fact_placement(fact: Fact, data: bytes, rel: str, where: Path | str) -> str | None:
    """A fact sits in its record's folder under the name its bytes give it."""
    folder, _, name = rel.rpartition("/")
    if folder != facts_rel(fact.image, fact.record):  # parse_fact checked the digest
        return (
            f"{where}:1: fact names record {fact.record[:19]}… of {fact.image}, but sits in {folder}; "
            "move it to its record's folder or restore it from git"
        )
    if name != fact_file_name(fact.kind, data):
        return (
            f"{where}:1: the digest in the name {name} does not match the file's content; the fact was edited "
            "after it was written: restore it from git"
        )
    return None


def read_record_file(root: Path, rel: str) -> tuple[Record | None, str | None]:
    """(record, None), or (None, one-line error) for the record file `rel`."""
    path = root / rel
    try:
        data = _read_limited(path)
        record = parse_record(data, path)
    except LedgerError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror}); check its permissions"
    problem = check_record_placement(record, rel, path)
    return (None, problem) if problem else (record, None)


def read_fact_file(root: Path, rel: str, strict: bool = True) -> tuple[Fact | None, str | None]:
    """(fact, None), or (None, one-line error); a fact of a kind a newer imgtrack added is (None, None)
    unless `strict` (verify), so that lookups go on past it."""
    path = root / rel
    try:
        data = _read_limited(path)
        fact = parse_fact(data, path)
    except UnknownFactKind as exc:
        return None, (str(exc) if strict else None)
    except LedgerError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror}); check its permissions"
    problem = check_fact_placement(fact, data, rel, path)
    return (None, problem) if problem else (fact, None)


def _read_limited(path: Path) -> bytes:
    from imgtrack.ledger.schema import MAX_FILE_BYTES

    with open(path, "rb") as f:
        return f.read(MAX_FILE_BYTES + 1)


@dataclass(frozen=True)
class LedgerFiles:
    """Every file of a ledger by kind, as paths relative to its root."""

    records: list[str]
    facts: list[str]
    strays: list[str]  # files in the ledger that are neither (reported by verify)
    schema1: list[str]


class Store:
    """The files of one work tree's ledger, and the lock its writers hold."""

    def __init__(self, root: Path, lock_dir: Path) -> None:
        self.root = root
        self.lock_dir = lock_dir

    def path(self, rel: str) -> Path:
        return self.root / rel

    def read_record(self, rel: str) -> Record:
        record, error = read_record_file(self.root, rel)
        if record is None:
            if not (self.root / rel).exists():
                raise LedgerError(f"{self.root / rel} vanished while being read; run the command again")
            raise LedgerError(error or f"{rel}: unreadable")
        return record

    def get_record(self, image: str, digest: str) -> Record | None:
        rel = record_rel(image, digest)
        return self.read_record(rel) if (self.root / rel).exists() else None

    def fact_rels(self, image: str, digest: str) -> list[str]:
        folder = facts_rel(image, digest)
        try:
            names = os.listdir(self.root / folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [f"{folder}/{n}" for n in sorted(names) if FACT_NAME_RE.fullmatch(n)]

    def facts_of(self, image: str, digest: str) -> list[Fact]:
        facts = []
        for rel in self.fact_rels(image, digest):
            fact, error = read_fact_file(self.root, rel, strict=False)
            if fact is None:
                if error is None or not (self.root / rel).exists():
                    continue  # a kind a newer imgtrack added, or gone meanwhile
                raise LedgerError(error)
            facts.append(fact)
        return facts

    def build(self, record: Record) -> Build:
        return Build(record, tuple(self.facts_of(record.image, record.digest)))

    def get_build(self, image: str, digest: str) -> Build | None:
        record = self.get_record(image, digest)
        return self.build(record) if record else None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the ledger's exclusive lock (released by the kernel even if the process is killed)."""
        try:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise LedgerError(
                f"{self.lock_dir} is a file where imgtrack keeps its lock and cache (a folder); "
                "move it away and run again"
            ) from None
        fd = os.open(self.lock_dir / "ledger.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _check_folders(self, rel: str) -> None:
        """Refuse a write under a file that stands where the ledger keeps a folder (a hand edit, a bad merge)."""
        folder = self.root
        for part in ["", *rel.split("/")[:-1]]:
            folder = folder / part if part else folder
            if folder.exists() and not folder.is_dir():
                raise LedgerError(
                    f"{folder} is a file where the ledger keeps a folder; move it away (git mv, or "
                    "restore it from git) and run again"
                )

    def write_record(self, record: Record) -> str:
        """Write a new record atomically; the caller holds `locked()`. A record is never rewritten."""
        rel = record_rel(record.image, record.digest)
        self._check_folders(rel)
        if (self.root / rel).exists():
            raise LedgerError(f"{self.root / rel} exists already; a record is written once and never changed")
        write_atomic(self.root / rel, record.to_toml())
        return rel

    def write_fact(self, fact: Fact) -> str | None:
        """Write a fact unless the same one is there already; the caller holds `locked()`.

        Returns its path relative to the root, or None when nothing was written."""
        if not (self.root / record_rel(fact.image, fact.record)).exists():
            raise LedgerError(
                f"{self.root / record_rel(fact.image, fact.record)} is not recorded; record the image first"
            )
        if any(f.identity() == fact.identity() for f in self.facts_of(fact.image, fact.record)):
            return None
        data = fact.to_toml()
        rel = f"{facts_rel(fact.image, fact.record)}/{fact_file_name(fact.kind, data)}"
        self._check_folders(rel)
        write_atomic(self.root / rel, data)
        return rel

    def scan(self) -> LedgerFiles:
        """Every file under the root, sorted, by kind (a walk of the folders, not git's view)."""
        records: list[str] = []
        facts: list[str] = []
        strays: list[str] = []
        schema1: list[str] = []
        if not self.root.is_dir():
            return LedgerFiles(records, facts, strays, schema1)
        for image in sorted(os.scandir(self.root), key=lambda e: e.name):
            if image.name.startswith("."):
                continue
            if not image.is_dir(follow_symlinks=False):
                strays.append(image.name)
                continue
            for bucket in sorted(os.scandir(image.path), key=lambda e: e.name):
                rel_b = f"{image.name}/{bucket.name}"
                if bucket.name.startswith("."):
                    continue
                if not bucket.is_dir(follow_symlinks=False):
                    (schema1 if is_schema1_name(bucket.name) else strays).append(rel_b)
                    continue
                for entry in sorted(os.scandir(bucket.path), key=lambda e: e.name):
                    rel = f"{rel_b}/{entry.name}"
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        for name in sorted(os.listdir(entry.path)):
                            if not name.startswith("."):
                                (facts if classify(f"{rel}/{name}") == "fact" else strays).append(f"{rel}/{name}")
                    else:
                        (records if classify(rel) == "record" else strays).append(rel)
        return LedgerFiles(records, facts, strays, schema1)
