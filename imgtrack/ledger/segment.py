"""Ledger segments: many records and facts in one file, so that git's index does not hold a file a fact.

    .imgtrack/ledger/<image>/<xx>/segment-<id>.seg    (id: the first 16 hex digits of the sha256 of its bytes)

A segment is zlib-compressed text: the line `imgtrack ledger segment 1`, then for each entry, sorted by
path, a line `<path> <length>` and the entry's exact bytes. An entry is a record or a fact file of the
segment's own bucket, byte for byte, so every check of a loose file (its place, a fact's name from its
bytes) holds for it unchanged: the ledger is the union of its loose files and its segments' entries.

Why compressed: git's merge reads a file one side deleted and a file that side added as a rename when they
are 50% alike, and two sides that "renamed" one file to two names conflict. Plain segments of unrelated
facts are ~42% alike; compressed ones ~0% (`bench/segments.py`, docs/design-notes.md 29). A segment is
written once and never changed, like every ledger file; `ledger commit` writes new ones and merges small
ones (`plan_merge`), deleting what it merged only once the merge is on disk.
"""

from __future__ import annotations

import hashlib
import re
import zlib

from imgtrack.errors import LedgerError

SEGMENT_NAME_RE = re.compile(r"segment-[0-9a-f]{16}\.seg")
MAGIC = b"imgtrack ledger segment 1\n"
MAX_SEGMENT_BYTES = 8 * 1024 * 1024  # compressed; `ledger commit` stops merging below it
MAX_SEGMENT_TEXT = 64 * 1024 * 1024  # decompressed: a bound on what a hostile file can make us hold
MAX_ENTRY_BYTES = 1024 * 1024  # as for a loose file (schema.MAX_FILE_BYTES)
MERGE_FAN_IN = 3  # segments merged at once, at least
MERGE_SHARE = 0.4  # no merged segment over this share of their sum: git never reads a merge as a rename
RENAME_SHARE = 0.5  # git compares no two files of which one is under this share of the other's size
_HEADER_RE = re.compile(rb"([^\s/][^\s]*) (0|[1-9][0-9]{0,9})")


def segment_name(data: bytes) -> str:
    return f"segment-{hashlib.sha256(data).hexdigest()[:16]}.seg"


def encode(entries: dict[str, bytes]) -> bytes:
    """The bytes of a segment holding `entries` (path relative to the ledger root -> the file's bytes)."""
    parts = [MAGIC]
    for rel in sorted(entries):
        data = entries[rel]
        parts.append(f"{rel} {len(data)}\n".encode())
        parts.append(data)
    return zlib.compress(b"".join(parts), 6)


def decode(data: bytes, where: str) -> dict[str, bytes]:
    """The entries of a segment's bytes; a malformed segment is one LedgerError line naming `where`."""
    return split(unpack(data, where), where)


def unpack(data: bytes, where: str) -> bytes:
    """A segment's text (its entries, not yet split); a malformed segment is one LedgerError line."""
    if len(data) > MAX_SEGMENT_BYTES:
        raise LedgerError(f"{where}: a segment over the {MAX_SEGMENT_BYTES} bytes imgtrack reads; restore it from git")
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_SEGMENT_TEXT + 1)
    except zlib.error:
        raise LedgerError(f"{where}: not a ledger segment (not zlib data); restore it from git") from None
    if len(text) > MAX_SEGMENT_TEXT or inflater.unconsumed_tail:
        raise LedgerError(f"{where}: a segment that unpacks to over {MAX_SEGMENT_TEXT} bytes; restore it from git")
    if not inflater.eof or inflater.unused_data:
        raise LedgerError(f"{where}: a segment cut short or with bytes after its end; restore it from git")
    if not text.startswith(MAGIC):
        raise LedgerError(f"{where}: not a ledger segment (no `imgtrack ledger segment 1` line); restore it from git")
    return text


def split(text: bytes, where: str) -> dict[str, bytes]:
    """The entries of a segment's text (`unpack`)."""
    entries: dict[str, bytes] = {}
    pos = len(MAGIC)
    previous = ""
    while pos < len(text):
        end = text.find(b"\n", pos, pos + 512)
        match = _HEADER_RE.fullmatch(text, pos, end) if end >= 0 else None
        if match is None:
            raise LedgerError(f"{where}: entry {len(entries) + 1} has no `<path> <length>` line; restore it from git")
        rel, size = match.group(1).decode("utf-8", "replace"), int(match.group(2))
        if size > MAX_ENTRY_BYTES or end + 1 + size > len(text):
            raise LedgerError(f"{where}: entry {rel!r} is longer than the segment holds; restore it from git")
        if rel <= previous:
            raise LedgerError(f"{where}: entry {rel!r} is out of order or twice; restore it from git")
        entries[rel] = text[end + 1 : end + 1 + size]
        previous = rel
        pos = end + 1 + size
    return entries


def merge_is_safe(inputs: list[int], merged: int) -> bool:
    """Whether git could read one input and the merged segment as one file renamed: never when each input
    is under half the result's size (git does not compare files further apart in size)."""
    return all(size < RENAME_SHARE * merged for size in inputs)


def plan_merge(sizes: dict[str, int]) -> list[str]:
    """The segments to merge next (names), smallest first: as many of the smallest as can be merged with
    none over MERGE_SHARE of the result, at least MERGE_FAN_IN, and the result under MAX_SEGMENT_BYTES;
    none when no such set exists. Sizes are the files' (compressed) sizes, which is what git compares."""
    ordered = sorted(sizes, key=lambda name: (sizes[name], name))
    best, total = 0, 0
    for j, name in enumerate(ordered):
        total += sizes[name]
        if total > MAX_SEGMENT_BYTES // 2:  # compression of the union saves less than it did per segment
            break
        if j + 1 >= MERGE_FAN_IN and sizes[name] <= MERGE_SHARE * total:
            best = j + 1
    return ordered[:best]
