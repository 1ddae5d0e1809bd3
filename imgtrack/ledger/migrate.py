"""`imgtrack ledger migrate`: schema-1 records (one file per build, pushes appended to it) to schema 2.

Each schema-1 file `<image>/<digest>.toml` becomes the record `<image>/<xx>/<digest>.toml` and one push
fact per `[[pushes]]` entry; the old file is removed last. Every file is written atomically, the new
files are fully determined by the old one, so a migration killed part way is finished by running it
again, and running it on a migrated ledger changes nothing. Nothing is committed: the change waits in
the work tree for review.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

from imgtrack.errors import LedgerError
from imgtrack.fsutil import fsync_dir, sweep_if_stale
from imgtrack.ledger.schema import MAX_FILE_BYTES, SCHEMA, Fact, parse_record
from imgtrack.ledger.store import Store, is_schema1_name, record_rel


@dataclass(frozen=True)
class MigrateResult:
    records: int  # schema-1 files turned into schema-2 records
    facts: int  # push facts written from their [[pushes]]


def schema1_files(root: Path) -> list[str]:
    out: list[str] = []
    if not root.is_dir():
        return out
    for image in sorted(os.scandir(root), key=lambda e: e.name):
        if image.is_dir(follow_symlinks=False) and not image.name.startswith("."):
            out += [f"{image.name}/{n}" for n in sorted(os.listdir(image.path)) if is_schema1_name(n)]
    return out


def migrate(store: Store) -> MigrateResult:
    """Move every schema-1 record of the ledger to schema 2, under the ledger lock."""
    facts = 0
    with store.locked():
        _sweep(store.root)
        todo = schema1_files(store.root)
        converted = [(rel, *_convert(store.root, rel)) for rel in todo]  # all parsed before anything moves
        for rel, record_bytes, new_facts in converted:
            record = parse_record(record_bytes, store.root / rel)
            target = store.root / record_rel(record.image, record.digest)
            if target.exists():
                if target.read_bytes() != record_bytes:
                    raise LedgerError(
                        f"{target} exists with other content than {store.root / rel} gives; "
                        "compare the two and remove the wrong one"
                    )
            else:
                store.write_record(record)
            for fact in new_facts:
                facts += store.write_fact(fact) is not None
            os.unlink(store.root / rel)
            fsync_dir(store.root / rel.split("/", 1)[0])
    return MigrateResult(records=len(converted), facts=facts)


def _convert(root: Path, rel: str) -> tuple[bytes, list[Fact]]:
    """The schema-2 record bytes and push facts a schema-1 file holds; LedgerError names what is wrong."""
    path = root / rel
    data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise LedgerError(f"{path}:1: record is {len(data)} bytes, over {MAX_FILE_BYTES}; restore it from git")
    try:
        doc: dict[str, Any] = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LedgerError(
            f"{path}:1: record cannot be read ({exc}); fix it or restore it from git, then migrate again"
        ) from None
    if doc.get("schema") != 1:
        raise LedgerError(
            f"{path}:1: schema is {doc.get('schema')!r}, not 1, in a schema-1 place; move the file to "
            "its schema-2 place or restore it from git"
        )
    pushes = doc.pop("pushes", [])
    doc["schema"] = SCHEMA
    doc.setdefault("manifests", [])
    order = [
        "schema",
        "image",
        "digest",
        "media_type",
        "version",
        "commit",
        "tree",
        "tags",
        "recorded_at",
        "recorded_by",
        "manifests",
    ]
    record_bytes = tomli_w.dumps({k: doc[k] for k in order if k in doc}).encode("utf-8")
    record = parse_record(record_bytes, path)  # validates every field, naming the schema-1 file
    if not isinstance(pushes, list):
        raise LedgerError(f"{path}:1: pushes must be a list of tables; fix it, then migrate again")
    facts = []
    for entry in pushes:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("repository"), str)
            or not isinstance(entry.get("tags"), list)
            or not all(isinstance(t, str) for t in entry["tags"])
            or not isinstance(entry.get("pushed_at"), datetime)
            or entry["pushed_at"].tzinfo is None
        ):
            raise LedgerError(
                f"{path}:1: a [[pushes]] entry needs repository, tags and a UTC pushed_at; fix it, then migrate again"
            )
        facts.append(
            Fact(
                kind="push",
                image=record.image,
                record=record.digest,
                at=entry["pushed_at"],
                repository=entry["repository"],
                tags=tuple(entry["tags"]),
            )
        )
    return record_bytes, facts


def _sweep(root: Path) -> None:
    """Remove the temp files a killed migration (or writer) left: their processes are gone."""
    for folder, _dirs, names in os.walk(root):
        for entry in os.scandir(folder) if any(n.endswith(".tmp") for n in names) else ():
            sweep_if_stale(entry)
