"""The ledger's files: where each record and fact lives, atomic writes under a lock, and reading them.

    .imgtrack/ledger/<image>/<xx>/<algo>-<hex>.toml               a record (xx: the first two hex digits)
    .imgtrack/ledger/<image>/<xx>/<algo>-<hex>/<kind>-<id>.toml   a fact about it (id: from its bytes)
    .imgtrack/ledger/<image>/<xx>/segment-<id>.seg                 records and facts of the bucket (segment.py)

The files are the truth; nothing here knows about the lookup cache. Writes go to a temp file in the
same folder, are fsynced and renamed into place, so a reader or a crash sees a whole file or none. A
record or fact is read from its own file, or from a segment of its bucket that holds it (an "entry"):
readers ask for it by the path it has either way.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from imgtrack.errors import LedgerError
from imgtrack.fsutil import fsync_dir, write_atomic
from imgtrack.ledger.schema import (
    FACT_NAME_RE,
    MAX_FILE_BYTES,
    Build,
    Fact,
    Record,
    UnknownFactKind,
    fact_file_name,
    parse_fact,
    parse_record,
)
from imgtrack.ledger.segment import (
    MAX_SEGMENT_BYTES,
    MERGE_FAN_IN,
    SEGMENT_NAME_RE,
    decode,
    encode,
    merge_is_safe,
    plan_merge,
    segment_name,
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
    """ "record", "fact", "segment" or None for a path relative to the ledger root (by its shape only)."""
    parts = rel.split("/")
    if len(parts) == 3 and BUCKET_RE.fullmatch(parts[1]) and RECORD_NAME_RE.fullmatch(parts[2]):
        return "record"
    if len(parts) == 3 and BUCKET_RE.fullmatch(parts[1]) and SEGMENT_NAME_RE.fullmatch(parts[2]):
        return "segment"
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


def bucket_of_rel(rel: str) -> str:
    """`<image>/<xx>` of a record, fact or segment path."""
    return "/".join(rel.split("/", 2)[:2])


# The segments this process read last, by path and the file's identity (a segment never changes in place):
# a few, since a command reads a few buckets, or reads them all one after the other (bulk reads).
_DECODED: dict[str, tuple[tuple[int, int, int], dict[str, bytes]]] = {}
_DECODED_KEPT = 64


def read_segment(root: Path, rel: str) -> dict[str, bytes]:
    """The entries of the segment `rel`; a malformed one is one LedgerError line (OSError if unreadable)."""
    path = root / rel
    st = os.stat(path)
    key = (st.st_mtime_ns, st.st_size, st.st_ino)
    held = _DECODED.get(str(path))
    if held is not None and held[0] == key:
        return held[1]
    entries = segment_entries(rel, _read_limited(path, MAX_SEGMENT_BYTES), str(path))
    if len(_DECODED) >= _DECODED_KEPT:
        del _DECODED[next(iter(_DECODED))]
    _DECODED[str(path)] = (key, entries)
    return entries


def segment_entries(rel: str, data: bytes, where: str) -> dict[str, bytes]:
    """The entries of the segment `rel` from its bytes, each a record or fact of the segment's own bucket;
    anything else is one LedgerError line naming `where`."""
    entries = decode(data, where)
    bucket = bucket_of_rel(rel)
    for entry in entries:
        if bucket_of_rel(entry) != bucket or classify(entry) not in ("record", "fact"):
            raise LedgerError(
                f"{where}: holds {entry!r}, which is not a record or fact of its bucket {bucket}; restore it from git"
            )
    return entries


def segment_name_problem(rel: str, data: bytes, where: str) -> str | None:
    """What is wrong with a segment whose name is not the digest of its bytes (edited after it was written)."""
    if segment_name(data) == rel.rsplit("/", 1)[1]:
        return None
    return (
        f"{where}: the digest in the name does not match the segment's bytes; it was changed after it was "
        "written: restore it from git"
    )


def bucket_segments(root: Path, bucket: str) -> list[str]:
    """The segments in a bucket folder (paths relative to the root), by name."""
    try:
        names = os.listdir(root / bucket)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [f"{bucket}/{n}" for n in sorted(names) if SEGMENT_NAME_RE.fullmatch(n)]


def bucket_entries(root: Path, bucket: str) -> dict[str, bytes]:
    """Every entry the segments of a bucket hold (the first segment by name wins a path held twice; verify
    reports two that differ). A segment that cannot be read holds nothing here: verify reports it, and the
    cache refuses lookups while it is there, but it hides no entry another segment holds."""
    out: dict[str, bytes] = {}
    for rel in bucket_segments(root, bucket):
        try:
            for entry, data in read_segment(root, rel).items():
                out.setdefault(entry, data)
        except (LedgerError, OSError):
            continue  # malformed, unreadable, or merged away meanwhile (its entries are in its successor)
    return out


def read_entry(root: Path, rel: str) -> bytes:
    """A record's or fact's bytes: its own file, else the segment of its bucket that holds it.

    FileNotFoundError when neither has it."""
    try:
        return _read_limited(root / rel)
    except FileNotFoundError:
        data = bucket_entries(root, bucket_of_rel(rel)).get(rel)
        if data is None:
            raise
        return data


def entry_exists(root: Path, rel: str) -> bool:
    """Whether the ledger holds `rel`, as its own file or in a segment of its bucket."""
    if (root / rel).exists():
        return True
    try:
        return rel in bucket_entries(root, bucket_of_rel(rel))
    except LedgerError:
        return False


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


def read_record_file(root: Path, rel: str, data: bytes | None = None) -> tuple[Record | None, str | None]:
    """(record, None), or (None, one-line error) for the record file `rel` (its bytes `data`, when the
    caller has them already)."""
    path = root / rel
    try:
        data = read_entry(root, rel) if data is None else data
        record = parse_record(data, path)
    except LedgerError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror}); check its permissions"
    problem = check_record_placement(record, rel, path)
    return (None, problem) if problem else (record, None)


def read_fact_file(
    root: Path, rel: str, strict: bool = True, data: bytes | None = None
) -> tuple[Fact | None, str | None]:
    """(fact, None), or (None, one-line error); a fact of a kind a newer imgtrack added is (None, None)
    unless `strict` (verify), so that lookups go on past it."""
    path = root / rel
    try:
        data = read_entry(root, rel) if data is None else data
        fact = parse_fact(data, path)
    except UnknownFactKind as exc:
        return None, (str(exc) if strict else None)
    except LedgerError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror}); check its permissions"
    problem = check_fact_placement(fact, data, rel, path)
    return (None, problem) if problem else (fact, None)


def _read_limited(path: Path, limit: int | None = None) -> bytes:
    with open(path, "rb") as f:
        return f.read((MAX_FILE_BYTES if limit is None else limit) + 1)


def _read_or_none(path: Path) -> bytes | None:
    try:
        return _read_limited(path)
    except OSError:
        return None


@dataclass(frozen=True)
class LedgerFiles:
    """Every file of a ledger by kind, as paths relative to its root."""

    records: list[str]  # in their own files or in segments
    facts: list[str]
    strays: list[str]  # files in the ledger that are neither (reported by verify)
    schema1: list[str]
    segments: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)  # a segment -> what is wrong with it (verify)
    held: dict[str, list[str]] = field(default_factory=dict)  # a segment -> the paths of its entries


@dataclass
class PackResult:
    """What `Store.pack` did: the entries it moved, the segments it wrote and the segments it merged away
    (paths relative to the root; a segment written and merged away in one pack is in neither list)."""

    entries: list[str]
    written: list[str]
    removed: list[str]


def _unlink_entry(root: Path, rel: str) -> None:
    """Remove a loose file that a segment now holds, and its fact folder once empty."""
    (root / rel).unlink(missing_ok=True)
    if classify(rel) == "fact":
        try:
            (root / rel).parent.rmdir()
        except OSError:
            pass  # other facts are still in it


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
            if not entry_exists(self.root, rel):
                raise LedgerError(f"{self.root / rel} vanished while being read; run the command again")
            raise LedgerError(error or f"{rel}: unreadable")
        return record

    def get_record(self, image: str, digest: str) -> Record | None:
        rel = record_rel(image, digest)
        return self.read_record(rel) if entry_exists(self.root, rel) else None

    def fact_rels(self, image: str, digest: str) -> list[str]:
        folder = facts_rel(image, digest)
        try:
            names = set(os.listdir(self.root / folder))
        except (FileNotFoundError, NotADirectoryError):
            names = set()
        held = bucket_entries(self.root, bucket_of_rel(folder))
        names.update(e.rsplit("/", 1)[1] for e in held if e.startswith(folder + "/"))
        return [f"{folder}/{n}" for n in sorted(names) if FACT_NAME_RE.fullmatch(n)]

    def facts_of(self, image: str, digest: str) -> list[Fact]:
        facts = []
        for rel in self.fact_rels(image, digest):
            fact, error = read_fact_file(self.root, rel, strict=False)
            if fact is None:
                if error is None or not entry_exists(self.root, rel):
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
        if entry_exists(self.root, rel):
            raise LedgerError(f"{self.root / rel} exists already; a record is written once and never changed")
        write_atomic(self.root / rel, record.to_toml())
        return rel

    def write_fact(self, fact: Fact) -> str | None:
        """Write a fact unless the same one is there already; the caller holds `locked()`.

        Returns its path relative to the root, or None when nothing was written."""
        if not entry_exists(self.root, record_rel(fact.image, fact.record)):
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

    def pack(self, loose: Iterable[str]) -> PackResult:
        """Move the loose records and facts `loose` (paths relative to the root, which no commit holds: a
        committed file never moves) into a new segment of their bucket each, then merge each such bucket's
        small segments (segment.plan_merge). The caller holds `locked()`.

        Every step writes before it removes, so a process killed part way leaves each entry in a whole
        file at least once (twice is the same bytes, which readers and verify accept)."""
        by_bucket: dict[str, dict[str, bytes]] = {}
        for rel in sorted(set(loose)):
            if classify(rel) in ("record", "fact"):
                data = _read_limited(self.root / rel)
                if len(data) > MAX_FILE_BYTES:
                    raise LedgerError(
                        f"{self.root / rel}: over {MAX_FILE_BYTES} bytes, not a file imgtrack wrote; remove it"
                    )
                by_bucket.setdefault(bucket_of_rel(rel), {})[rel] = data
        result = PackResult([], [], [])
        for bucket, entries in by_bucket.items():
            held = bucket_entries(self.root, bucket)
            for rel, data in entries.items():
                if held.get(rel, data) != data:
                    raise LedgerError(
                        f"{self.root / rel}: a segment of its bucket holds other bytes for it; restore it from git"
                    )
            fresh = {rel: data for rel, data in entries.items() if rel not in held}
            if fresh:
                result.written.append(self._write_segment(bucket, fresh))
            for rel in entries:
                _unlink_entry(self.root, rel)
            fsync_dir(self.root / bucket)
            result.entries += sorted(fresh)
            self._merge_small(bucket, result)
        return result

    def _write_segment(self, bucket: str, entries: dict[str, bytes]) -> str:
        data = encode(entries)
        rel = f"{bucket}/{segment_name(data)}"
        write_atomic(self.root / rel, data)
        return rel

    def _merge_small(self, bucket: str, result: PackResult) -> None:
        """Merge the bucket's smallest segments while segment.plan_merge finds a set git cannot mistake
        for one renamed file."""
        while True:
            sizes = {rel: (self.root / rel).stat().st_size for rel in bucket_segments(self.root, bucket)}
            plan = plan_merge(sizes)
            while len(plan) >= MERGE_FAN_IN:
                union: dict[str, bytes] = {}
                for rel in plan:
                    union.update(read_segment(self.root, rel))
                data = encode(union)
                if merge_is_safe([sizes[rel] for rel in plan], len(data)):
                    break
                plan = plan[:-1]  # compressed together they shrink too much: leave the largest out
            else:
                return  # nothing to merge yet: wait until more segments come
            merged = f"{bucket}/{segment_name(data)}"
            write_atomic(self.root / merged, data)
            for rel in plan:
                if rel != merged:
                    (self.root / rel).unlink(missing_ok=True)
            fsync_dir(self.root / bucket)
            written_now = set(result.written)
            result.written = [r for r in result.written if r not in plan] + [merged]
            result.removed += [r for r in plan if r not in written_now]

    def scan(self) -> LedgerFiles:
        """Every file under the root, sorted, by kind (a walk of the folders, not git's view)."""
        records: list[str] = []
        facts: list[str] = []
        strays: list[str] = []
        schema1: list[str] = []
        segments: list[str] = []
        problems: dict[str, str] = {}
        by_segment: dict[str, list[str]] = {}
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
                held: dict[str, bytes] = {}  # what the bucket's segments hold
                loose: set[str] = set()
                for entry in sorted(os.scandir(bucket.path), key=lambda e: e.name):
                    rel = f"{rel_b}/{entry.name}"
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        for name in sorted(os.listdir(entry.path)):
                            if not name.startswith("."):
                                is_fact = classify(f"{rel}/{name}") == "fact"
                                (facts if is_fact else strays).append(f"{rel}/{name}")
                                if is_fact:
                                    loose.add(f"{rel}/{name}")
                    elif classify(rel) == "segment":
                        segments.append(rel)
                        by_segment[rel] = self._scan_segment(rel, held, problems)
                    else:
                        is_record = classify(rel) == "record"
                        (records if is_record else strays).append(rel)
                        if is_record:
                            loose.add(rel)
                for rel, data in held.items():
                    if rel not in loose:
                        (records if classify(rel) == "record" else facts).append(rel)
                    elif _read_or_none(self.root / rel) != data:
                        problems.setdefault(
                            rel,
                            f"{self.root / rel}: a segment of its bucket holds other bytes for it; restore both from git",
                        )
        records.sort()
        facts.sort()
        return LedgerFiles(records, facts, strays, schema1, segments, problems, by_segment)

    def _scan_segment(self, rel: str, held: dict[str, bytes], problems: dict[str, str]) -> list[str]:
        """Add a segment's entries to `held`, noting in `problems` what verify reports of it; the paths of
        its entries."""
        path = self.root / rel
        try:
            raw = _read_limited(path, MAX_SEGMENT_BYTES)
            entries = segment_entries(rel, raw, str(path))
        except LedgerError as exc:
            problems[rel] = str(exc)
            return []
        except OSError as exc:
            problems[rel] = f"{path}: cannot be read ({exc.strerror}); check its permissions"
            return []
        named_wrong = segment_name_problem(rel, raw, str(path))
        if named_wrong:
            problems[rel] = named_wrong
        for entry, data in entries.items():
            if held.setdefault(entry, data) != data:
                problems.setdefault(
                    entry,
                    f"{self.root / entry}: two segments of its bucket hold different bytes for it; restore them from git",
                )
        return list(entries)
