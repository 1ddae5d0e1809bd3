"""The ledger's lookup cache: SQLite under the git dir, rebuilt from the TOML files, never the truth.

Freshness without reading every record: each image folder's mtime changes whenever a record file is
created, replaced (imgtrack writes by rename, git checks out by unlink + create) or removed in it. An
unchanged folder is skipped; a changed one has its files' (mtime, size) compared and only changed files
parsed. A folder whose mtime is within RACY_NS of the scan could still change within the same clock
tick, so it is stored as unknown and scanned again next time (git's "racy" rule). A record edited in
place with the folder untouched is picked up by `imgtrack verify`, which refreshes every file.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path


from imgtrack.errors import ImgtrackError, LedgerError
from imgtrack.fsutil import sweep_if_stale
from imgtrack.policy import TagHolder
from imgtrack.versions import semver_of
from imgtrack.record import Record, parse_record, sort_key

CACHE_SCHEMA = "6"
RACY_NS = 100_000_000  # Linux file times tick every 10 ms at most
RECORD_NAME_RE = re.compile(r"^(sha256-[a-f0-9]{64}|sha512-[a-f0-9]{128})\.toml$")

_INDEXES = """
CREATE INDEX IF NOT EXISTS records_version ON records(version, image);
CREATE INDEX IF NOT EXISTS records_image ON records(image, major);
CREATE INDEX IF NOT EXISTS records_release ON records(image, pre, major, minor, patch);
CREATE INDEX IF NOT EXISTS records_commit ON records(commit_sha);
CREATE INDEX IF NOT EXISTS records_recorded_at ON records(recorded_at);
CREATE INDEX IF NOT EXISTS refs_value ON refs(value, kind);
CREATE INDEX IF NOT EXISTS refs_path ON refs(path);
CREATE INDEX IF NOT EXISTS files_error ON files(error) WHERE error IS NOT NULL;
"""
_INDEX_NAMES = [line.split()[5] for line in _INDEXES.strip().splitlines()]

_DDL = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE dirs(image TEXT PRIMARY KEY, mtime_ns INTEGER);
CREATE TABLE files(path TEXT PRIMARY KEY, image TEXT, mtime_ns INTEGER, size INTEGER, error TEXT);
CREATE TABLE records(
    path TEXT PRIMARY KEY, image TEXT, digest TEXT, version TEXT, major INTEGER, pre INTEGER,
    commit_sha TEXT, recorded_at TEXT, minor INTEGER, patch INTEGER);
CREATE TABLE refs(path TEXT, kind TEXT, value TEXT);
"""


def _prefix_upper(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\uffff"


class LedgerIndex:
    """Lookups by digest, tag, version and commit over the ledger folder `root`."""

    def __init__(self, db_path: Path, root: Path) -> None:
        self.root = root
        self.db_path = db_path
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        """Open the cache, creating it (or replacing an unreadable or outdated one)."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.DatabaseError:
            self._drop()
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
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

    # --- refresh ---------------------------------------------------------------------------------

    def refresh(self, full: bool = False, parsed: Mapping[str, Record] | None = None) -> None:
        """Bring the cache up to date with the record files (only changed folders, unless `full`).

        `parsed` holds records the caller has just read from their files, so they are not parsed twice.
        """
        scan_start = time.time_ns()
        known = dict(self._db.execute("SELECT image, mtime_ns FROM dirs").fetchall())
        seen: set[str] = set()
        # Filling an empty cache: maintaining the indexes row by row costs more than building them once.
        bulk = not known
        if bulk:
            self._drop_indexes()
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            entries = []
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False) or entry.name.startswith("."):
                continue
            image = entry.name
            seen.add(image)
            mtime = entry.stat(follow_symlinks=False).st_mtime_ns
            if not full and known.get(image) == mtime:
                continue
            stored = mtime if scan_start - mtime > RACY_NS else -1
            self._rescan(image, Path(entry.path), stored, parsed or {})
        if bulk:
            self._create_indexes()
        gone = set(known) - seen
        if gone:
            with _transaction(self._db):
                for image in gone:
                    self._forget_image(image)

    def _drop_indexes(self) -> None:
        with _transaction(self._db):
            for name in _INDEX_NAMES:
                self._db.execute(f"DROP INDEX IF EXISTS {name}")

    def _create_indexes(self) -> None:
        with _transaction(self._db):
            for stmt in _INDEXES.strip().split(";"):
                if stmt.strip():
                    self._db.execute(stmt)

    def _forget_image(self, image: str) -> None:
        self._db.execute("DELETE FROM refs WHERE path IN (SELECT path FROM files WHERE image=?)", (image,))
        self._db.execute("DELETE FROM records WHERE image=?", (image,))
        self._db.execute("DELETE FROM files WHERE image=?", (image,))
        self._db.execute("DELETE FROM dirs WHERE image=?", (image,))

    def _rescan(self, image: str, folder: Path, dir_mtime: int, known: Mapping[str, Record]) -> None:
        cached = {
            path: (m, s)
            for path, m, s in self._db.execute("SELECT path, mtime_ns, size FROM files WHERE image=?", (image,))
        }
        present: set[str] = set()
        changed: list[tuple[str, os.stat_result]] = []
        for entry in os.scandir(folder):
            if not RECORD_NAME_RE.match(entry.name):
                sweep_if_stale(entry)
                continue
            rel = f"{image}/{entry.name}"
            present.add(rel)
            st = entry.stat(follow_symlinks=False)
            if cached.get(rel) != (st.st_mtime_ns, st.st_size):
                changed.append((rel, st))
        unknown = [rel for rel, _ in changed if rel not in known]
        fresh = dict(zip(unknown, read_records(self.root, unknown)))
        parsed = [(rel, st, *((known[rel], None) if rel in known else fresh[rel])) for rel, st in changed]
        with _transaction(self._db):
            for rel in (set(cached) - present) | {rel for rel, _ in changed if rel in cached}:
                self._delete(rel)
            self._insert_many(image, parsed)
            self._db.execute("INSERT OR REPLACE INTO dirs VALUES (?, ?)", (image, dir_mtime))

    def _delete(self, rel: str) -> None:
        for table in ("refs", "records", "files"):
            self._db.execute(f"DELETE FROM {table} WHERE path=?", (rel,))

    def _insert(self, rel: str, image: str, st: os.stat_result, record: Record | None, error: str | None) -> None:
        self._insert_many(image, [(rel, st, record, error)])

    def _insert_many(
        self, image: str, rows: list[tuple[str, os.stat_result, Record | None, str | None]]
    ) -> None:
        files, records, refs = [], [], []
        for rel, st, record, error in rows:
            files.append((rel, image, st.st_mtime_ns, st.st_size, error))
            if record is None:
                continue
            v = semver_of(record.version)
            records.append((rel, record.image, record.digest, record.version, v.major, 1 if v.prerelease else 0,
                            record.commit, sort_key(record.recorded_at), v.minor, v.patch))
            refs += [(rel, "d", d) for d in record.all_digests()] + [(rel, "t", t) for t in record.tags]
        self._db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)", files)
        self._db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", records)
        self._db.executemany("INSERT INTO refs VALUES (?, ?, ?)", refs)

    def note_written(self, rel: str, record: Record) -> None:
        """Index a record imgtrack itself just wrote (under the ledger lock), keeping its folder fresh."""
        path = self.root / rel
        st = path.stat()
        dir_mtime = path.parent.stat().st_mtime_ns
        with _transaction(self._db):
            self._delete(rel)
            self._insert(rel, record.image, st, record, None)
            known = self._db.execute("SELECT mtime_ns FROM dirs WHERE image=?", (record.image,)).fetchone()
            # Only a folder that was fresh before our write stays fresh after it.
            if known is not None and known[0] != -1:
                self._db.execute("UPDATE dirs SET mtime_ns=? WHERE image=?", (dir_mtime, record.image))

    # --- lookups ---------------------------------------------------------------------------------

    def check_healthy(self) -> None:
        """Refuse to go on over a malformed record: a policy decision that skipped it could be wrong."""
        # Sorted here, not by SQL: ORDER BY would make SQLite walk every file instead of the error index.
        broken = sorted(self._db.execute("SELECT path, image FROM files WHERE error IS NOT NULL").fetchall())
        for rel, image in broken:
            # A broken file is usually being fixed by hand, in place: look again before blaming it.
            try:
                st = (self.root / rel).stat()
            except FileNotFoundError:
                with _transaction(self._db):
                    self._delete(rel)
                continue
            record, error = _read_one(self.root, rel)
            with _transaction(self._db):
                self._delete(rel)
                self._insert(rel, image, st, record, error)
            if error:
                raise LedgerError(error)

    def _holders(self, sql: str, args: Iterable[object]) -> list[TagHolder]:
        return [
            TagHolder(digest=d, version=v, commit=c, recorded_at=datetime.fromisoformat(at + "+00:00"))
            for d, v, c, at in self._db.execute(sql, tuple(args))
        ]

    def tag_holders(self, image: str, tag: str) -> list[TagHolder]:
        return self._holders(
            "SELECT r.digest, r.version, r.commit_sha, r.recorded_at FROM refs f JOIN records r ON r.path=f.path "
            "WHERE f.value=? AND f.kind='t' AND r.image=?",
            (tag, image),
        )

    def version_holders(self, image: str, version: str) -> list[TagHolder]:
        return self._holders(
            "SELECT digest, version, commit_sha, recorded_at FROM records WHERE image=? AND version=?",
            (image, version),
        )

    def paths_by_digest_prefix(self, prefix: str, image: str | None = None) -> list[str]:
        return self._paths(
            "SELECT DISTINCT f.path FROM refs f JOIN records r ON r.path=f.path "
            "WHERE f.kind='d' AND f.value>=? AND f.value<?",
            (prefix, _prefix_upper(prefix)), image,
        )

    def paths_by_tag(self, tag: str, image: str | None = None) -> list[str]:
        return self._paths(
            "SELECT DISTINCT f.path FROM refs f JOIN records r ON r.path=f.path WHERE f.kind='t' AND f.value=?",
            (tag,), image,
        )

    def paths_by_version(self, version: str, image: str | None = None) -> list[str]:
        return self._paths("SELECT r.path FROM records r WHERE r.version=?", (version,), image)

    def paths_by_release(self, version: str) -> list[str]:
        """Records of `version` with or without build metadata (`1.4.0`, `1.4.0+build.2`)."""
        base = version.split("+", 1)[0]
        # '+' sorts just before ',': a range the version index can serve.
        return [row[0] for row in self._db.execute(
            "SELECT path FROM records WHERE version=? OR (version>? AND version<?)", (base, base + "+", base + ","),
        )]

    def paths_by_commit_prefix(self, prefix: str, image: str | None = None) -> list[str]:
        return self._paths(
            "SELECT r.path FROM records r WHERE r.commit_sha>=? AND r.commit_sha<?",
            (prefix, _prefix_upper(prefix)), image,
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

    def versions(self, image: str, major: int | None = None, releases_only: bool = False) -> list[tuple[str, str]]:
        """(version, path) of an image's records, optionally narrowed to one major version."""
        sql = "SELECT version, path FROM records WHERE image=?"
        args: list[object] = [image]
        if major is not None:
            sql += " AND major=?"
            args.append(major)
        if releases_only:
            sql += " AND pre=0"
        return list(self._db.execute(sql, args))

    def highest_release(self, image: str) -> str | None:
        """The highest non-prerelease version of `image` (semver order, build metadata aside)."""
        row = self._db.execute(
            "SELECT version FROM records WHERE image=? AND pre=0 ORDER BY major DESC, minor DESC, patch DESC LIMIT 1",
            (image,),
        ).fetchone()
        return str(row[0]) if row else None

    def images(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT DISTINCT image FROM records ORDER BY image")]

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])

    def close(self) -> None:
        self._db.close()


PARALLEL_MIN = 4000


def _read_one(root: Path, rel: str) -> tuple[Record | None, str | None]:
    path = root / rel
    try:
        record = parse_record(path.read_bytes(), path)
    except ImgtrackError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"{path}: cannot be read ({exc.strerror}); check its permissions"
    problem = check_placement(record, rel, path)
    return (None, problem) if problem else (record, None)


def _read_chunk(root: Path, rels: list[str]) -> list[tuple[Record | None, str | None]]:
    return [_read_one(root, rel) for rel in rels]


def read_records(root: Path, rels: list[str]) -> list[tuple[Record | None, str | None]]:
    """Parse record files (relative to `root`): (record, None) or (None, one-line error) each, in order.

    Large batches (a fresh clone, `verify`) are parsed on every core: TOML parsing is the cost.
    """
    workers = min(os.cpu_count() or 1, 8)
    if len(rels) < PARALLEL_MIN or workers < 2:
        return _read_chunk(root, rels)
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(rels) // (workers * 4))
    chunks = [rels[i:i + size] for i in range(0, len(rels), size)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_read_chunk, [root] * len(chunks), chunks)
        return [item for chunk in results for item in chunk]


def check_placement(record: Record, rel: str, path: Path) -> str | None:
    """A record must sit at `<image>/<digest>.toml`; anything else is a malformed ledger."""
    image, _, name = rel.partition("/")
    if record.image != image:
        return f"{path}:1: image {record.image!r} does not match its folder {image!r}; move the file or fix the field"
    if name != record.digest.replace(":", "-", 1) + ".toml":
        return f"{path}:1: digest {record.digest[:19]}… does not match the file name {name}; rename the file or fix the field"
    return None


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
