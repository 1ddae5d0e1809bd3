"""The ledger's lookup cache: SQLite under the git dir, rebuilt from the files at will, never the truth.

It stays fresh without reading every file:
* imgtrack's own writes are noted in it as they are made (under the ledger lock);
* creating or removing a file changes its folder's mtime, so each command stats the image folders and
  their 256 buckets (and, in a bucket that changed, its records' fact folders), and reads only new files;
* a fact that arrives through git in a fact folder of an unchanged bucket is found by diffing the
  ledger tree git's HEAD had at the last sync against HEAD's now, which runs only when git's index
  file changed (every checkout, merge, pull, reset and commit rewrites it);
* a fact imgtrack wrote and git has not committed yet is checked to still exist.
A folder changed within RACY_NS of a scan is scanned again next time (git's "racy" rule). Files
edited in place, or a fact copied by hand into an existing folder, are seen by `imgtrack verify`,
which reads every file and refreshes the cache.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imgtrack.errors import LedgerError
from imgtrack.fsutil import sweep_if_stale
from imgtrack.ledger.schema import Fact, Record, sort_key
from imgtrack.ledger.segment import MAX_SEGMENT_BYTES, SEGMENT_NAME_RE, split, unpack
from imgtrack.ledger.store import (
    BUCKET_RE,
    FACT_DIR_RE,
    RECORD_NAME_RE,
    bucket_entries,
    bucket_of_rel,
    classify,
    entry_exists,
    is_schema1_name,
    read_fact_file,
    read_record_file,
    read_segment,
    record_rel_of_fact,
)
from imgtrack.policy import TagHolder
from imgtrack.versions import version_numbers

CACHE_SCHEMA = "14"
# A cache not built yet is built by the first lookup when git's index file is smaller than this (about
# 10,000 files in the repository: a build well under a second); past it, a lookup of one build probes.
PROBE_INDEX_BYTES = 1024 * 1024
PROBE_MAX_FILES = 2000  # a text in more files than this is looked up by building the cache
RACY_NS = 100_000_000  # Linux file times tick every 10 ms at most
PARALLEL_MIN = 4000
SEARCH_PARALLEL_BYTES = 32 * 1024 * 1024  # segments searched on every core past this (~250,000 records)

_INDEXES = """
CREATE INDEX IF NOT EXISTS records_version ON records(version, image);
CREATE INDEX IF NOT EXISTS records_digest ON records(digest);
CREATE INDEX IF NOT EXISTS records_image ON records(image, major);
CREATE INDEX IF NOT EXISTS records_release ON records(image, pre, major, minor, patch);
CREATE INDEX IF NOT EXISTS records_commit ON records(commit_sha);
CREATE INDEX IF NOT EXISTS records_recorded_at ON records(recorded_at);
CREATE INDEX IF NOT EXISTS refs_value ON refs(value, kind);
CREATE INDEX IF NOT EXISTS refs_source ON refs(source);
CREATE INDEX IF NOT EXISTS files_bucket ON files(bucket);
CREATE INDEX IF NOT EXISTS files_error ON files(error) WHERE error IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_overlay ON files(overlay) WHERE overlay=1;
CREATE INDEX IF NOT EXISTS facts_record ON facts(record_path);
CREATE INDEX IF NOT EXISTS facts_kind ON facts(kind, at);
CREATE INDEX IF NOT EXISTS held_segment ON held(segment);
"""
_INDEX_NAMES = [line.split()[5] for line in _INDEXES.strip().splitlines()]

_DDL = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE dirs(path TEXT PRIMARY KEY, mtime_ns INTEGER);
CREATE TABLE files(path TEXT PRIMARY KEY, bucket TEXT, mtime_ns INTEGER, size INTEGER, error TEXT, overlay INTEGER,
    fingerprint INTEGER);
CREATE TABLE records(
    path TEXT PRIMARY KEY, image TEXT, digest TEXT, version TEXT, major INTEGER, pre INTEGER,
    commit_sha TEXT, recorded_at TEXT, minor INTEGER, patch INTEGER, recorded_by TEXT);
CREATE TABLE facts(path TEXT PRIMARY KEY, record_path TEXT, kind TEXT, at TEXT, env TEXT, repository TEXT,
    verdict TEXT);
CREATE TABLE refs(path TEXT, kind TEXT, value TEXT, at TEXT, source TEXT);
CREATE TABLE held(segment TEXT, path TEXT);
"""


@dataclass(frozen=True)
class Recorded:
    """What the cache knows of a record without reading its file."""

    path: str
    image: str
    digest: str
    version: str
    commit: str
    recorded_at: datetime
    recorded_by: str


@dataclass(frozen=True)
class GitView:
    """What the cache asks of git, supplied by the ledger (the cache runs no git itself)."""

    index_file: Path  # rewritten by every git command that changes the work tree or HEAD
    head_tree: Callable[[], str | None]  # the ledger's tree at HEAD
    changed: Callable[[str, str], list[str]]  # paths under the ledger that differ between two trees
    # Files under the ledger (or one image's folder) whose bytes hold a text, as the work tree has them:
    # tracked, untracked and ignored alike; None when git cannot say.
    containing: Callable[[tuple[str, ...], str | None], list[str] | None] | None = None


INT64_MAX = 2**63 - 1


def sql_number(n: int) -> int | str:
    """A version number as the cache stores it, in an order SQLite keeps for numbers of any size.

    Semantic versions set no bound on their numbers, SQLite's integers stop at 2**63 - 1. A larger
    number is stored as text: its digit count (ten digits) then its digits. SQLite sorts every integer
    before every text, and these texts among themselves by length then digits, so `ORDER BY major`
    stays the numeric order across both.
    """
    if n <= INT64_MAX:
        return n
    digits = str(n)
    return f"{len(digits):010d}{digits}"


def _prefix_upper(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\uffff"


def _bucket(rel: str) -> str:
    return "/".join(rel.split("/", 2)[:2])


class Schema1Ledger(LedgerError):
    """The ledger still has schema-1 records."""


class LedgerIndex:
    """Lookups by digest, tag, version and commit over the ledger folder `root`."""

    def __init__(self, db_path: Path, root: Path, git: GitView | None = None) -> None:
        self.root = root
        self.db_path = db_path
        self.git = git
        self._fresh: set[str] = set()  # files indexed during the refresh under way
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        """Open the cache, creating it (or replacing an unreadable or outdated one)."""
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise LedgerError(
                f"{self.db_path.parent} is a file where imgtrack keeps its lookup cache (a folder); "
                "move it away and run again: the cache is rebuilt from the ledger"
            ) from None
        if self.db_path.exists() and not self.db_path.is_file():
            raise LedgerError(
                f"{self.db_path} is not a file; imgtrack keeps its lookup cache there: move it away "
                "and run again (the cache is rebuilt from the ledger)"
            )
        try:
            return self._connect()
        except sqlite3.DatabaseError:
            self._drop()
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # Read the cache's pages through a mapping: a command touches a few hundred of them, and a
        # read() each was a system call each (~10 ms of a refresh after a pull at 100,000 records).
        db.execute("PRAGMA mmap_size=1073741824")
        with _transaction(db):
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" in tables:
                row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row and row[0] == CACHE_SCHEMA:
                    return db
                for table in tables:
                    db.execute(f"DROP TABLE {table}")
            for stmt in (_DDL + _INDEXES).strip().split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (CACHE_SCHEMA,))
        return db

    def _drop(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{self.db_path}{suffix}")
            except FileNotFoundError:
                pass

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    @property
    def built(self) -> bool:
        return self._meta("built") == "1"

    # --- refresh ---------------------------------------------------------------------------------

    def refresh(self, full: bool = False, parsed: Mapping[str, Record | Fact] | None = None) -> None:
        """Bring the cache up to date with the files (only what changed, unless `full` or not built yet).

        `parsed` holds files the caller has just read, so they are not parsed twice.
        """
        if full or not self.built:
            self._build(parsed or {})
            return
        scan_start = time.time_ns()
        self._fresh = set()
        stamp = self._index_stamp()
        git_moved = stamp != self._meta("index_stamp")
        known = dict(self._db.execute("SELECT path, mtime_ns FROM dirs WHERE path NOT LIKE '%/%/%'").fetchall())
        changed_buckets: list[tuple[str, int]] = []
        seen: set[str] = set()
        try:
            images = [
                e for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")
            ]
        except FileNotFoundError:
            images = []
        for image in images:
            seen.add(image.name)
            mtime = image.stat(follow_symlinks=False).st_mtime_ns
            if known.get(image.name) == mtime:
                buckets = [(b, _mtime(self.root / b)) for b in self._known_buckets(image.name)]
            else:
                buckets = self._list_buckets(image.path, image.name)
                changed_buckets.append((image.name, mtime))
            for rel, b_mtime in buckets:
                seen.add(rel)
                if known.get(rel) != b_mtime:
                    changed_buckets.append((rel, b_mtime))
        gone = [p for p in known if p not in seen]
        if not changed_buckets and not gone and not git_moved:
            return
        with _transaction(self._db):
            for path in gone:
                self._forget_prefix(path)
            new_records: list[str] = []
            new_facts: list[str] = []
            for rel, mtime in changed_buckets:
                stored = mtime if scan_start - mtime > RACY_NS else -1
                if rel.count("/") == 1:
                    # Files are compared by (mtime, size) only where imgtrack itself wrote moments ago
                    # (an edit in place right after a write); elsewhere new names are what changed.
                    self._rescan_bucket(rel, scan_start, new_records, new_facts, racy=known.get(rel) == -1)
                self._db.execute("INSERT OR REPLACE INTO dirs VALUES (?, ?)", (rel, stored))
            # Read and indexed at once, not a bucket at a time: a pull spreads its records over many buckets.
            self._insert_many(
                [(rel, *res) for rel, res in zip(new_records, read_files(self.root, new_records, "record"))],  # type: ignore[misc]
                [(rel, *res) for rel, res in zip(new_facts, read_files(self.root, new_facts, "lookup-fact"))],  # type: ignore[misc]
            )
            if git_moved:
                self._follow_git(stamp)

    def _known_buckets(self, image: str) -> list[str]:
        return [
            r[0]
            for r in self._db.execute(
                "SELECT path FROM dirs WHERE path>? AND path<? AND path NOT LIKE '%/%/%'", (image + "/", image + "0")
            )
        ]

    def _list_buckets(self, image_path: str, image: str) -> list[tuple[str, int]]:
        out = []
        for entry in os.scandir(image_path):
            if entry.is_dir(follow_symlinks=False) and BUCKET_RE.fullmatch(entry.name):
                out.append((f"{image}/{entry.name}", entry.stat(follow_symlinks=False).st_mtime_ns))
            elif is_schema1_name(entry.name):
                raise Schema1Ledger(schema1_message(self.root))
        return out

    def _index_stamp(self) -> str:
        if self.git is None:
            return ""
        try:
            st = os.stat(self.git.index_file)
        except FileNotFoundError:
            return "none"
        return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"

    def _follow_git(self, stamp: str) -> None:
        """After git changed the index: apply what HEAD's ledger tree changed since the last sync,
        and forget facts imgtrack wrote that are gone (discarded before they were committed)."""
        assert self.git is not None
        tree = self.git.head_tree() or ""
        before = self._meta("head_tree") or ""
        if tree != before and before and tree:
            for rel in self.git.changed(before, tree):
                self._reread(rel)
        elif tree != before and tree and not before:
            pass  # the cache was built before the first ledger commit: its folder scans saw everything
        # What imgtrack wrote and no commit holds yet (a HEAD diff that adds it re-indexes it as committed)
        # may have been discarded: `git stash`, `git checkout -- .imgtrack`, `git reset --hard`.
        for (rel,) in list(self._db.execute("SELECT path FROM files WHERE overlay=1")):
            if not entry_exists(self.root, rel):
                self._delete(rel)
        self._set_meta("head_tree", tree)
        self._set_meta("index_stamp", stamp)

    def _reread(self, rel: str) -> None:
        kind = classify(rel)
        if kind is None or rel in self._fresh:  # read by this very refresh's folder scan already
            return
        if kind == "segment":  # what it holds, and what a segment gone held, is its bucket's to say
            bucket = bucket_of_rel(rel)
            if bucket not in self._fresh:
                new_records: list[str] = []
                new_facts: list[str] = []
                self._rescan_bucket(bucket, time.time_ns(), new_records, new_facts, racy=False)
                self._insert_many(
                    [(r, *res) for r, res in zip(new_records, read_files(self.root, new_records, "record"))],  # type: ignore[misc]
                    [(r, *res) for r, res in zip(new_facts, read_files(self.root, new_facts, "lookup-fact"))],  # type: ignore[misc]
                )
            return
        self._delete(rel)
        if not entry_exists(self.root, rel):
            return
        if kind == "record":
            record, error = read_record_file(self.root, rel)
            self._insert_many([(rel, record, error)], [])
        else:
            fact, error = read_fact_file(self.root, rel, strict=False)
            self._insert_many([], [(rel, fact, error)])

    def _rescan_bucket(
        self, bucket: str, scan_start: int, new_records: list[str], new_facts: list[str], racy: bool = True
    ) -> None:
        """Forget what `bucket` no longer holds, and add to `new_records` and `new_facts` what is to be read."""
        rows = self._db.execute("SELECT path, mtime_ns, size FROM files WHERE bucket=?", (bucket,)).fetchall()
        stamps: dict[str, tuple[int | None, int | None]] = {rel: (m, size) for rel, m, size in rows}
        unchanged_dirs: set[str] = set()  # fact folders whose cached files are all still there
        fact_dirs = dict(
            self._db.execute(
                "SELECT path, mtime_ns FROM dirs WHERE path>? AND path<?", (bucket + "/", bucket + "0")
            ).fetchall()
        )
        present: set[str] = set()
        first_new = len(new_records), len(new_facts)
        try:
            entries = list(os.scandir(self.root / bucket))
        except FileNotFoundError:
            entries = []
        seen_dirs = set()
        self._fresh.add(bucket)
        segments = []
        for entry in entries:
            rel = f"{bucket}/{entry.name}"
            if SEGMENT_NAME_RE.fullmatch(entry.name):
                present.add(rel)
                segments.append(rel)
            elif RECORD_NAME_RE.fullmatch(entry.name):
                present.add(rel)
                if rel not in stamps:
                    new_records.append(rel)
                elif racy:
                    st = entry.stat(follow_symlinks=False)
                    if stamps[rel] == (None, None):  # not stamped when the cache was built: now
                        self._db.execute(
                            "UPDATE files SET mtime_ns=?, size=? WHERE path=?", (st.st_mtime_ns, st.st_size, rel)
                        )
                    elif stamps[rel] != (st.st_mtime_ns, st.st_size):  # edited in place
                        new_records.append(rel)
            elif FACT_DIR_RE.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                seen_dirs.add(rel)
                mtime = entry.stat(follow_symlinks=False).st_mtime_ns
                if fact_dirs.get(rel) == mtime:
                    unchanged_dirs.add(rel)
                    continue
                for fact_entry in os.scandir(entry.path):
                    fact_rel = f"{rel}/{fact_entry.name}"
                    if classify(fact_rel) == "fact":
                        present.add(fact_rel)
                        st = fact_entry.stat(follow_symlinks=False)
                        if stamps.get(fact_rel) != (st.st_mtime_ns, st.st_size):
                            new_facts.append(fact_rel)
                    else:
                        sweep_if_stale(fact_entry)
                stored = mtime if scan_start - mtime > RACY_NS else -1
                self._db.execute("INSERT OR REPLACE INTO dirs VALUES (?, ?)", (rel, stored))
            else:
                sweep_if_stale(entry)
        for rel in segments:
            self._index_segment(rel, stamps, present, new_records, new_facts)
        for rel in set(fact_dirs) - seen_dirs:
            self._db.execute("DELETE FROM dirs WHERE path=?", (rel,))
        for rel in stamps:  # what the cache holds and the folder no longer does
            if rel not in present and (rel.count("/") == 2 or rel.rsplit("/", 1)[0] not in unchanged_dirs):
                self._delete(rel)
        for rel in (*new_records[first_new[0] :], *new_facts[first_new[1] :]):
            if rel in stamps:
                self._delete(rel)

    def _index_segment(
        self,
        rel: str,
        stamps: Mapping[str, tuple[int | None, int | None]],
        present: set[str],
        new_records: list[str],
        new_facts: list[str],
    ) -> None:
        """Note a segment of a bucket being rescanned: its entries are present, those the cache lacks are to
        be read; a segment that cannot be read is a malformed file (lookups refuse it until it is fixed).
        A segment the cache has read before is never read again: a segment never changes, and the cache
        keeps the paths it holds."""
        if rel in stamps:
            row = self._db.execute("SELECT error FROM files WHERE path=?", (rel,)).fetchone()
            if row is not None and row[0] is None:
                present.update(r for (r,) in self._db.execute("SELECT path FROM held WHERE segment=?", (rel,)))
                return
        error = None
        try:
            entries = read_segment(self.root, rel)
        except LedgerError as exc:
            entries, error = {}, str(exc)
        except FileNotFoundError:
            present.discard(rel)
            return
        except OSError as exc:
            entries, error = {}, f"{self.root / rel}: cannot be read ({exc.strerror}); check its permissions"
        for entry in entries:
            present.add(entry)
            if entry not in stamps and entry not in self._fresh:
                (new_records if classify(entry) == "record" else new_facts).append(entry)
                self._fresh.add(entry)
        self._db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", (rel, _bucket(rel), -1, -1, error, 0, None)
        )
        self._db.execute("DELETE FROM held WHERE segment=?", (rel,))
        self._db.executemany("INSERT INTO held VALUES (?, ?)", [(rel, entry) for entry in entries])

    def _build(self, parsed: Mapping[str, Record | Fact]) -> None:
        """Fill the cache from every file: a fresh clone's first command, or `verify`."""
        from imgtrack.ledger.store import Store

        scan_start = time.time_ns()
        stamp = self._index_stamp()
        tree = (self.git.head_tree() if self.git else None) or ""
        files = Store(self.root, self.db_path.parent).scan()
        if files.schema1:
            raise Schema1Ledger(schema1_message(self.root))
        todo_r = [r for r in files.records if r not in parsed]
        todo_f = [r for r in files.facts if r not in parsed]
        read_r = dict(zip(todo_r, read_files(self.root, todo_r, "record")))
        read_f = dict(zip(todo_f, read_files(self.root, todo_f, "lookup-fact")))
        records = [(rel, *((parsed[rel], None) if rel in parsed else read_r[rel])) for rel in files.records]
        facts = [(rel, *((parsed[rel], None) if rel in parsed else read_f[rel])) for rel in files.facts]
        dirs: dict[str, int] = {}
        for rel in (*files.records, *files.facts):
            parts = rel.split("/")
            for depth in (1, 2, 3) if len(parts) == 4 else (1, 2):
                d = "/".join(parts[:depth])
                if d not in dirs:
                    try:
                        mtime = os.stat(self.root / d).st_mtime_ns
                    except FileNotFoundError:
                        continue
                    dirs[d] = mtime if scan_start - mtime > RACY_NS else -1
        for entry in _images(self.root):
            if entry not in dirs:
                mtime = os.stat(self.root / entry).st_mtime_ns
                dirs[entry] = mtime if scan_start - mtime > RACY_NS else -1
        # A cache being filled from scratch need not survive a power cut: a torn one is rebuilt on open.
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("PRAGMA cache_size=-65536")
        with _transaction(self._db):
            for table in ("dirs", "files", "records", "facts", "refs", "held"):
                self._db.execute(f"DELETE FROM {table}")
            for name in _INDEX_NAMES:
                self._db.execute(f"DROP INDEX IF EXISTS {name}")
            self._insert_many(records, facts, stamped=False)  # type: ignore[arg-type]
            self._db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(rel, _bucket(rel), -1, -1, files.problems.get(rel), 0, None) for rel in files.segments],
            )
            self._db.executemany(
                "INSERT INTO held VALUES (?, ?)",
                [(seg, entry) for seg, entries in files.held.items() for entry in entries],
            )
            self._db.executemany("INSERT INTO dirs VALUES (?, ?)", dirs.items())
            for stmt in _INDEXES.strip().split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            self._set_meta("head_tree", tree)
            self._set_meta("index_stamp", stamp)
            self._set_meta("built", "1")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # The build's pages were written without a sync, so the next command's checkpoint would sync them
        # all (0.15 s and more at 100,000 records, paid by whatever ran next); the build pays it here.
        fd = os.open(self.db_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync(self, parsed: Mapping[str, Record | Fact], broken: Mapping[str, str]) -> None:
        """Make the cache agree with files just read (`verify`): what differs from what it holds is indexed
        again, so an edit made in place is seen from here on; nothing else is rewritten."""
        if not self.built:
            return
        held = dict(self._db.execute("SELECT path, fingerprint FROM files WHERE path NOT LIKE '%.seg'"))
        stale = [rel for rel, item in parsed.items() if held.get(rel) != fingerprint(item)]
        stale += [rel for rel in broken if rel not in held or held[rel] is not None]
        gone = [rel for rel in held if rel not in parsed and rel not in broken]
        if not stale and not gone:
            return
        with _transaction(self._db):
            for rel in (*stale, *gone):
                self._delete(rel)
            self._insert_many(
                [(r, parsed.get(r), broken.get(r)) for r in stale if classify(r) == "record"],  # type: ignore[misc]
                [(r, parsed.get(r), broken.get(r)) for r in stale if classify(r) == "fact"],  # type: ignore[misc]
            )
            self._db.executemany(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r, _bucket(r), -1, -1, broken[r], 0, None) for r in stale if classify(r) == "segment"],
            )

    def _forget_prefix(self, prefix: str) -> None:
        lo, hi = prefix + "/", prefix + "0"
        for table in ("refs", "records", "facts", "files", "held"):
            col = {"refs": "source", "held": "segment"}.get(table, "path")
            self._db.execute(f"DELETE FROM {table} WHERE {col}>? AND {col}<?", (lo, hi))
        self._db.execute("DELETE FROM dirs WHERE path=? OR (path>? AND path<?)", (prefix, lo, hi))

    def _delete(self, rel: str) -> None:
        self._db.execute("DELETE FROM refs WHERE source=?", (rel,))
        self._db.execute("DELETE FROM held WHERE segment=?", (rel,))
        for table in ("records", "facts", "files"):
            self._db.execute(f"DELETE FROM {table} WHERE path=?", (rel,))

    def _insert_many(
        self,
        records: Iterable[tuple[str, Record | None, str | None]],
        facts: Iterable[tuple[str, Fact | None, str | None]],
        overlay: int = 0,
        stamped: bool = True,
    ) -> None:
        files, rows, fact_rows, refs = [], [], [], []

        def stamp(rel: str) -> tuple[int | None, int | None]:
            if not stamped:  # a full build: stamped when a write next makes its bucket racy
                return (None, None)
            try:
                st = os.stat(self.root / rel)
            except FileNotFoundError:
                return (-1, -1)
            return (st.st_mtime_ns, st.st_size)

        for rel, record, error in records:
            files.append((rel, _bucket(rel), *stamp(rel), error, overlay, fingerprint(record)))
            if record is None:
                continue
            major, minor, patch, pre = version_numbers(record.version)
            at = sort_key(record.recorded_at)
            rows.append(
                (
                    rel,
                    record.image,
                    record.digest,
                    record.version,
                    sql_number(major),
                    1 if pre else 0,
                    record.commit,
                    at,
                    sql_number(minor),
                    sql_number(patch),
                    record.recorded_by,
                )
            )
            refs += [(rel, "d", d, at, rel) for d in record.all_digests()]
            refs += [(rel, "t", t, at, rel) for t in record.tags]
        for rel, fact, error in facts:
            files.append((rel, _bucket(rel), *stamp(rel), error, overlay, fingerprint(fact)))
            if fact is None:
                continue
            owner = record_rel_of_fact(rel)
            at = sort_key(fact.at)
            fact_rows.append((rel, owner, fact.kind, at, fact.env, fact.repository, fact.verdict or None))
            if fact.kind == "tag":
                refs.append((owner, "t", fact.tag, at, rel))
        self._fresh.update(f[0] for f in files)
        for sql, values in (
            ("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", files),
            ("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows),
            ("INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?, ?, ?, ?)", fact_rows),
            ("INSERT INTO refs VALUES (?, ?, ?, ?, ?)", refs),
        ):
            if values:
                self._db.executemany(sql, values)

    def note_written(self, rel: str, item: Record | Fact) -> None:
        """Index a file imgtrack itself just wrote (under the ledger lock), keeping its folders fresh."""
        if not self.built:
            return  # the first lookup builds the cache from the files, this one among them
        with _transaction(self._db):
            self._delete(rel)
            if isinstance(item, Record):
                self._insert_many([(rel, item, None)], [], overlay=1)
            else:
                self._insert_many([], [(rel, item, None)], overlay=1)
            # Only a folder that was fresh before our write stays fresh after it.
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                d = "/".join(parts[:depth])
                known = self._db.execute("SELECT mtime_ns FROM dirs WHERE path=?", (d,)).fetchone()
                if known is not None and known[0] != -1:
                    self._db.execute("UPDATE dirs SET mtime_ns=? WHERE path=?", (os.stat(self.root / d).st_mtime_ns, d))
                elif known is None and depth > 1:
                    self._db.execute("INSERT INTO dirs VALUES (?, ?)", (d, -1))

    # --- lookups ---------------------------------------------------------------------------------

    def check_healthy(self) -> None:
        """Refuse to go on over a malformed file: a policy decision that skipped it could be wrong."""
        broken = sorted(self._db.execute("SELECT path FROM files WHERE error IS NOT NULL").fetchall())
        for (rel,) in broken:
            # A broken file is usually being fixed by hand, in place: look again before blaming it.
            self._fresh = set()
            with _transaction(self._db):
                self._reread(rel)
            row = self._db.execute("SELECT error FROM files WHERE path=?", (rel,)).fetchone()
            if row and row[0]:
                raise LedgerError(row[0])

    def _holders(self, sql: str, args: Iterable[object]) -> list[TagHolder]:
        return [
            TagHolder(digest=d, version=v, commit=c, recorded_at=datetime.fromisoformat(at + "+00:00"))
            for d, v, c, at in self._db.execute(sql, tuple(args))
        ]

    def recorded(self, digests: Iterable[str]) -> dict[str, Recorded]:
        """The record each digest belongs to (its own digest, or a platform manifest's or config's), from
        the cache alone: what audit reports of many running images at once. A digest that is a record's own
        is that record's; of several others, the newest."""
        found: dict[str, tuple[bool, str, Recorded]] = {}
        wanted = list(dict.fromkeys(digests))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for value, path, image, digest, version, commit, at, by in self._db.execute(
                "SELECT f.value, r.path, r.image, r.digest, r.version, r.commit_sha, r.recorded_at, r.recorded_by "
                f"FROM refs f JOIN records r ON r.path=f.path WHERE f.kind='d' AND f.value IN ({marks})",
                chunk,
            ):
                rank = (digest == value, at)
                held = found.get(value)
                if held is None or rank > held[:2]:
                    moment = datetime.fromisoformat(at + "+00:00")
                    found[value] = (*rank, Recorded(path, image, digest, version, commit, moment, by))
        return {value: held[2] for value, held in found.items()}

    def verdicts(self, paths: Iterable[str]) -> dict[str, str]:
        """record path -> what its image said of its source, judged at record time (kind "source")."""
        wanted = list(dict.fromkeys(paths))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT record_path, verdict FROM facts WHERE kind='source' AND record_path IN ({marks})"
            found.update(self._db.execute(sql, chunk).fetchall())
        return found

    def tag_holders(self, image: str, tag: str) -> list[TagHolder]:
        """Every build of `image` that carries `tag`, with when it was given (recorded, or added later)."""
        return self._holders(
            "SELECT r.digest, r.version, r.commit_sha, f.at FROM refs f JOIN records r ON r.path=f.path "
            "WHERE f.value=? AND f.kind='t' AND r.image=?",
            (tag, image),
        )

    def version_holders(self, image: str, version: str) -> list[TagHolder]:
        return self._holders(
            "SELECT digest, version, commit_sha, recorded_at FROM records WHERE image=? AND version=?",
            (image, version),
        )

    def paths_by_digest(self, digest: str, image: str | None = None) -> list[str]:
        """Records `digest` names exactly: its own record first, then those listing it as a platform or config."""
        own = self._paths("SELECT r.path FROM records r WHERE r.digest=?", (digest,), image)
        return list(
            dict.fromkeys(
                own
                + self._paths(
                    "SELECT DISTINCT f.path FROM refs f JOIN records r ON r.path=f.path WHERE f.kind='d' AND f.value=?",
                    (digest,),
                    image,
                )
            )
        )

    def paths_by_digest_prefix(self, prefix: str, image: str | None = None) -> list[str]:
        return self._paths(
            "SELECT DISTINCT f.path FROM refs f JOIN records r ON r.path=f.path "
            "WHERE f.kind='d' AND f.value>=? AND f.value<?",
            (prefix, _prefix_upper(prefix)),
            image,
        )

    def paths_by_tag(self, tag: str, image: str | None = None) -> list[str]:
        return self._paths(
            "SELECT DISTINCT f.path FROM refs f JOIN records r ON r.path=f.path WHERE f.kind='t' AND f.value=?",
            (tag,),
            image,
        )

    def paths_by_version(self, version: str, image: str | None = None) -> list[str]:
        return self._paths("SELECT r.path FROM records r WHERE r.version=?", (version,), image)

    def paths_by_release(self, version: str) -> list[str]:
        """Records of `version` with or without build metadata (`1.4.0`, `1.4.0+build.2`)."""
        base = version.split("+", 1)[0]
        # '+' sorts just before ',': a range the version index can serve.
        return [
            row[0]
            for row in self._db.execute(
                "SELECT path FROM records WHERE version=? OR (version>? AND version<?)",
                (base, base + "+", base + ","),
            )
        ]

    def paths_by_commit_prefix(self, prefix: str, image: str | None = None) -> list[str]:
        return self._paths(
            "SELECT r.path FROM records r WHERE r.commit_sha>=? AND r.commit_sha<?",
            (prefix, _prefix_upper(prefix)),
            image,
        )

    def _paths(self, sql: str, args: tuple[object, ...], image: str | None) -> list[str]:
        if image is not None:
            sql += " AND r.image=?"
            args = (*args, image)
        return [row[0] for row in self._db.execute(sql + " ORDER BY r.recorded_at DESC", args)]

    def newest(self, image: str | None, limit: int | None) -> list[str]:
        sql = "SELECT path FROM records"
        args: list[object] = []
        if image is not None:
            sql += " WHERE image=?"
            args.append(image)
        sql += " ORDER BY recorded_at DESC, path DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [row[0] for row in self._db.execute(sql, args)]

    def newest_versions(self, image: str, limit: int) -> list[str]:
        """The versions of `image`'s `limit` newest records, newest first (shell completion)."""
        sql = "SELECT version FROM records WHERE image=? ORDER BY recorded_at DESC, path DESC LIMIT ?"
        return [row[0] for row in self._db.execute(sql, (image, limit))]

    def versions(self, image: str, major: int | None = None, releases_only: bool = False) -> list[tuple[str, str]]:
        """(version, path) of an image's records, optionally narrowed to one major version."""
        sql = "SELECT version, path FROM records WHERE image=?"
        args: list[object] = [image]
        if major is not None:
            sql += " AND major=?"
            args.append(sql_number(major))
        if releases_only:
            sql += " AND pre=0"
        return list(self._db.execute(sql, args))

    def newest_releases(self, image: str, limit: int) -> list[str]:
        """Paths of the `limit` releases (no pre-release) of `image` recorded last, newest first."""
        return [
            row[0]
            for row in self._db.execute(
                "SELECT path FROM records WHERE image=? AND pre=0 ORDER BY recorded_at DESC, path DESC LIMIT ?",
                (image, limit),
            )
        ]

    def highest_release(self, image: str) -> str | None:
        """The highest non-prerelease version of `image` (semver order, build metadata aside)."""
        row = self._db.execute(
            "SELECT version FROM records WHERE image=? AND pre=0 ORDER BY major DESC, minor DESC, patch DESC LIMIT 1",
            (image,),
        ).fetchone()
        return str(row[0]) if row else None

    def environment_facts(
        self, image: str, kinds: tuple[str, ...], env: str | None = None, newest_first: bool = False
    ) -> Iterator[tuple[str, str, str, str, str, str]]:
        """(kind, env, at, repository, record digest, record path) of `image`'s facts of these kinds (in
        `env`, or any), oldest first (or newest first, for a reader that stops early), without reading a
        file."""
        marks = ", ".join("?" for _ in kinds)
        where, args = (" AND f.env=?", (env,)) if env is not None else ("", ())
        order = " DESC" if newest_first else ""
        return iter(
            self._db.execute(
                # CROSS JOIN: from the few facts of these kinds to their records, not from every record
                f"SELECT f.kind, f.env, f.at, f.repository, r.digest, f.record_path FROM facts f "
                f"CROSS JOIN records r ON r.path=f.record_path WHERE r.image=? AND f.kind IN ({marks}){where} "
                f"ORDER BY f.at{order}, f.kind{order}, r.digest{order}",
                (image, *kinds, *args),
            )
        )

    def environments_of(self, image: str, kinds: tuple[str, ...]) -> list[str]:
        """The environments `image` has facts of these kinds in."""
        marks = ", ".join("?" for _ in kinds)
        return [
            row[0]
            for row in self._db.execute(
                f"SELECT DISTINCT f.env FROM facts f CROSS JOIN records r ON r.path=f.record_path "
                f"WHERE r.image=? AND f.kind IN ({marks})",
                (image, *kinds),
            )
        ]

    def images(self) -> list[str]:
        # A skip-scan down the image index: one probe per image, not a pass over every record.
        return [
            row[0]
            for row in self._db.execute(
                "WITH RECURSIVE t(image) AS (SELECT MIN(image) FROM records UNION ALL "
                "SELECT (SELECT MIN(image) FROM records WHERE image > t.image) FROM t WHERE t.image IS NOT NULL) "
                "SELECT image FROM t WHERE image IS NOT NULL"
            )
        ]

    def has_image(self, image: str) -> bool:
        return self._db.execute("SELECT 1 FROM records WHERE image=? LIMIT 1", (image,)).fetchone() is not None

    def close(self) -> None:
        self._db.close()


class ProbeIndex(LedgerIndex):
    """An index in memory of the few files that hold one text, for a lookup of one build on a ledger whose
    cache is not built yet (a fresh clone): `git grep` finds the files, only they are parsed.

    Every lookup by digest (or prefix), version, tag or commit compares a value the matching record or
    tag fact holds verbatim, so the files holding the text are all the files the answer can come from;
    each record found brings its facts, and each fact its record."""

    def __init__(self, root: Path, records: list[str], facts: list[str]) -> None:
        super().__init__(Path(":memory:"), root)
        self._insert_many(
            [(rel, *res) for rel, res in zip(records, read_files(root, records, "record"))],  # type: ignore[misc]
            [(rel, *res) for rel, res in zip(facts, read_files(root, facts, "lookup-fact"))],  # type: ignore[misc]
            stamped=False,
        )

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(":memory:", isolation_level=None)
        for stmt in (_DDL + _INDEXES).strip().split(";"):
            if stmt.strip():
                db.execute(stmt)
        return db

    @property
    def built(self) -> bool:
        return True

    def refresh(self, full: bool = False, parsed: Mapping[str, Record | Fact] | None = None) -> None:
        pass  # made from the files a moment ago

    def has_image(self, image: str) -> bool:
        """From the folders, not the files found: an image whose records do not hold the text still exists."""
        try:
            buckets = [e for e in os.scandir(self.root / image) if e.is_dir() and BUCKET_RE.fullmatch(e.name)]
            return any(
                RECORD_NAME_RE.fullmatch(f.name) or SEGMENT_NAME_RE.fullmatch(f.name)
                for b in buckets
                for f in os.scandir(b.path)
            )
        except (FileNotFoundError, NotADirectoryError):
            return False


def probe(root: Path, git: GitView | None, texts: tuple[str, ...], image: str | None) -> ProbeIndex | None:
    """A ProbeIndex of the files holding any of `texts`, for a cache of `root` not built yet in a repository
    large enough for building it to take a while; None when the cache should be built instead.

    Loose files are found by `git grep`; segments, being compressed, are unpacked and searched here."""
    if git is None or git.containing is None:
        return None
    try:
        weight = os.stat(git.index_file).st_size
    except FileNotFoundError:
        return None
    segments = _segments(root, image)
    # A record costs git's index ~160 bytes loose, and a segment ~120 compressed: weigh them alike.
    weight += sum(size for _, size in segments) * 4 // 3
    if weight < PROBE_INDEX_BYTES:
        return None
    hits = git.containing(texts, image)
    if hits is None:
        return None
    refuse_schema1(root)
    found = _search_segments(
        root, [rel for rel, _ in segments], [t.encode() for t in texts], sum(s for _, s in segments)
    )
    if found is None:
        return None  # a segment that cannot be read: the build reads everything, and refuses what it must
    hits += found
    if len(hits) > PROBE_MAX_FILES:
        return None
    records: dict[str, None] = {}
    for rel in hits:
        kind = classify(rel)
        if kind == "record":
            records[rel] = None
        elif kind == "fact":
            records[record_rel_of_fact(rel)] = None
    present = [rel for rel in records if entry_exists(root, rel)]
    facts = []
    for rel in present:
        folder = rel[: -len(".toml")]
        try:
            facts += [f"{folder}/{e.name}" for e in os.scandir(root / folder)]
        except (FileNotFoundError, NotADirectoryError):
            pass
        facts += [e for e in bucket_entries(root, bucket_of_rel(rel)) if e.startswith(folder + "/")]
    return ProbeIndex(root, present, sorted({f for f in facts if classify(f) == "fact"}))


def _search_segments(root: Path, rels: list[str], needles: list[bytes], size: int) -> list[str] | None:
    """The entries of these segments (`size` bytes in all) that hold one of `needles`, or None if one cannot
    be read. A segment is unpacked and searched whole, and split into entries only when it holds a needle.
    A large ledger's segments are searched on every core, this process taking a share."""
    workers = min(os.cpu_count() or 1, 8)
    if size < SEARCH_PARALLEL_BYTES or workers < 2 or len(rels) < 2 * workers:
        return _search_chunk(root, rels, needles)
    from concurrent.futures import ProcessPoolExecutor

    chunks = [rels[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers - 1) as pool:
        futures = [pool.submit(_search_chunk, root, chunk, needles) for chunk in chunks[1:]]
        results = [_search_chunk(root, chunks[0], needles), *(f.result() for f in futures)]
    if any(r is None for r in results):
        return None
    return [entry for r in results if r for entry in r]


def _search_chunk(root: Path, rels: list[str], needles: list[bytes]) -> list[str] | None:
    """`_search_segments` for some of the segments, in this process or another."""
    found: list[str] = []
    for rel in rels:
        try:
            with open(root / rel, "rb") as f:
                text = unpack(f.read(MAX_SEGMENT_BYTES + 1), str(root / rel))
            if any(n in text for n in needles):
                found += [e for e, data in split(text, str(root / rel)).items() if any(n in data for n in needles)]
        except (LedgerError, OSError):
            return None
    return found


def _segments(root: Path, image: str | None) -> list[tuple[str, int]]:
    """(path, size) of every segment of `image` (or of all images)."""
    out = []
    for name in [image] if image is not None else _images(root):
        try:
            buckets = [e for e in os.scandir(root / name) if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for bucket in buckets:
            for entry in os.scandir(bucket.path):
                if SEGMENT_NAME_RE.fullmatch(entry.name):
                    out.append((f"{name}/{bucket.name}/{entry.name}", entry.stat(follow_symlinks=False).st_size))
    return out


def fingerprint(item: Record | Fact | None) -> int | None:
    """A checksum of what the cache holds of a file, to tell in `verify` whether it changed."""
    if item is None:
        return None
    return zlib.crc32(repr(item).encode())


def refuse_schema1(root: Path) -> None:
    """Refuse a ledger holding schema-1 records (a look at each image's folder, not at its records)."""
    for name in _images(root):
        for entry in os.scandir(root / name):
            if is_schema1_name(entry.name):
                raise Schema1Ledger(schema1_message(root))


def schema1_message(root: Path) -> str:
    return (
        f"{root} holds schema-1 records, which this imgtrack no longer reads; run `imgtrack ledger migrate`, "
        "review and commit the change"
    )


def _mtime(path: Path) -> int:
    """A folder's mtime, or -2 for one removed meanwhile (it then reads as changed)."""
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return -2


def _images(root: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    except FileNotFoundError:
        return []


def _read_chunk(root: Path, rels: list[str], kind: str) -> list[tuple[object, str | None]]:
    """kind: "record", "fact" (for verify: a fact of an unknown kind is an error) or "lookup-fact".

    Each bucket's segments are read once for the chunk; an entry they hold is taken from them (a loose
    copy of it, left by a `ledger commit` killed part way, holds the same bytes, or verify says so)."""
    held: dict[str, dict[str, bytes]] = {}  # the bucket being read (paths come sorted, a bucket at a time)

    def data_of(rel: str) -> bytes | None:
        bucket = bucket_of_rel(rel)
        if bucket not in held:
            held.clear()
            held[bucket] = bucket_entries(root, bucket)
        return held[bucket].get(rel)

    if kind == "record":
        return [read_record_file(root, rel, data_of(rel)) for rel in rels]
    return [read_fact_file(root, rel, strict=kind == "fact", data=data_of(rel)) for rel in rels]


def _read_chunk_packed(root: Path, rels: list[str], kind: str) -> list[tuple[object, str | None]]:
    """`_read_chunk` for another process: records travel as plain tuples, which pickle at twice the speed."""
    out: list[tuple[object, str | None]] = []
    for item, error in _read_chunk(root, rels, kind):
        out.append((astuple_shallow(item), error) if isinstance(item, Record) else (item, error))
    return out


def astuple_shallow(r: Record) -> tuple[object, ...]:
    return (
        r.image,
        r.digest,
        r.media_type,
        r.version,
        r.commit,
        r.tree,
        r.tags,
        r.recorded_at,
        r.recorded_by,
        tuple((m.platform, m.digest, m.config) for m in r.manifests),
    )


def _unpack(item: object) -> object:
    if isinstance(item, tuple):
        from imgtrack.ledger.schema import PlatformManifest

        *fields, manifests = item
        return Record(*fields, manifests=tuple(PlatformManifest(*m) for m in manifests))  # type: ignore[misc]
    return item


def read_files(root: Path, rels: list[str], kind: str) -> list[tuple[object, str | None]]:
    """Parse files of one kind ("record" or "fact"): (item, None) or (None, one-line error) each, in order.

    Large batches (a fresh clone, `verify`) are parsed on every core, this process taking a share.
    """
    workers = min(os.cpu_count() or 1, 8)
    if len(rels) < PARALLEL_MIN or workers < 2:
        return _read_chunk(root, rels, kind)
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(rels) // workers)
    chunks = [rels[i : i + size] for i in range(0, len(rels), size)]
    with ProcessPoolExecutor(max_workers=len(chunks) - 1) as pool:
        futures = [pool.submit(_read_chunk_packed, root, chunk, kind) for chunk in chunks[1:]]
        mine = _read_chunk(root, chunks[0], kind)
        rest = [(_unpack(item), error) for f in futures for item, error in f.result()]
    return mine + rest


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
