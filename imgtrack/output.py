"""Rendering results for people (text) and scripts (JSON). Only the CLI layer calls this module."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgtrack.ledger.schema import Build


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def printable(text: str) -> str:
    """`text` with every control character (a terminal escape in an image name, say) written as an
    escape, so that what imgtrack prints cannot move the cursor or hide a line; newlines stay."""
    if text.replace("\n", "").isprintable():
        return text
    return "".join(c if c == "\n" or c.isprintable() else repr(c)[1:-1] for c in text)


def emit(text: str) -> None:
    sys.stdout.write(printable(text) + ("" if text.endswith("\n") or not text else "\n"))


def error(message: str) -> None:
    """One line per line of `message`, on stderr, each marked as imgtrack's."""
    for line in printable(str(message)).splitlines() or [""]:
        sys.stderr.write(f"imgtrack: {line}\n")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def short_digest(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}"


def record_summary(record: Build, created: bool) -> str:
    verb = "recorded" if created else "already recorded"
    return (
        f"{verb} {record.image} {record.version} {record.digest}\n"
        f"  commit {record.commit[:12]} ({record.tree})  tags {' '.join(record.tags) or '-'}"
    )


def record_details(record: Build) -> str:
    lines = [
        f"image        {record.image}",
        f"version      {record.version}",
        f"digest       {record.digest}",
        f"media type   {record.media_type or 'unknown'}",
        f"commit       {record.commit} ({record.tree})",
        f"tags         {' '.join(record.tags) or '-'}",
        f"recorded     {iso(record.recorded_at)} by {record.recorded_by}",
    ]
    for m in record.manifests:
        lines.append(f"platform     {m.platform:<16} {m.digest}  config {short_digest(m.config) if m.config else '-'}")
    for p in record.pushes:
        by = f" by {p.pushed_by}" if p.pushed_by else ""
        lines.append(
            f"{'promoted' if p.promoted else 'pushed':<12} {iso(p.pushed_at)} {p.repository} "
            f"({' '.join(p.tags) or 'by digest'}){by}"
        )
    for fact in record.ordered_facts():
        if fact.kind == "tag":
            lines.append(f"tagged       {iso(fact.at)} {fact.tag}{f' by {fact.by}' if fact.by else ''}")
    return "\n".join(lines)


def log_line(record: Build) -> str:
    return (
        f"{record.recorded_at:%Y-%m-%dT%H:%M:%SZ}  {record.image:<12} {record.version:<28} {short_digest(record.digest)}  "
        f"{record.commit[:7]}  {' '.join(record.tags)}"
    ).rstrip()


def push_refusal(problems: list[str]) -> int:
    """Print why the pre-push hook refuses a push; its exit status."""
    for problem in problems:
        error(problem)
    error("push refused by imgtrack's pre-push hook; fix the above (git push --no-verify skips it, CI does not)")
    return 1


def blob_progress(quiet: bool) -> tuple[Callable[[str, Any], None], Callable[[], None]]:
    """A thread-safe progress callback for blob copies and the function that finishes it: a rich bar on
    a terminal, one plain line per blob otherwise, nothing when quiet. Always on stderr."""
    import threading

    lock = threading.Lock()
    if quiet:
        return (lambda event, blob: None), (lambda: None)
    if not sys.stderr.isatty():

        def line(event: str, blob: Any) -> None:
            with lock:
                sys.stderr.write(f"imgtrack: {event:<7} {short_digest(blob.digest)} {_size(blob.size)}\n")
                sys.stderr.flush()

        return line, (lambda: None)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=Console(stderr=True), transient=True
    )
    task = bar.add_task("blobs", total=None)
    bar.start()

    def advance(event: str, blob: Any) -> None:
        with lock:
            bar.update(task, advance=blob.size, description=f"{event} {short_digest(blob.digest)}")

    return advance, bar.stop


def _size(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return ""


def audit_json(row: Any) -> dict[str, Any]:
    record = row.record
    return {
        "where": row.where,
        "reference": row.reference,
        "status": row.status,
        "digest": row.digest,
        "detail": row.detail,
        "image": record.image if record else None,
        "version": record.version if record else None,
        "commit": record.commit if record else None,
        "recorded_at": iso(record.recorded_at) if record else None,
        "recorded_by": record.recorded_by if record else None,
    }


def audit_table(rows: list[Any]) -> str:
    """A plain aligned table: one line per running image."""
    header = ("STATUS", "WHERE", "IMAGE", "VERSION", "COMMIT", "RECORDED", "DETAIL")
    lines = [header]
    for row in rows:
        r = row.record
        lines.append(
            (
                row.status,
                row.where,
                row.reference,
                r.version if r else "-",
                r.commit[:7] if r else "-",
                f"{r.recorded_at:%Y-%m-%d} {r.recorded_by.split(' <')[0]}" if r else "-",
                row.detail,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])) + ("  " + line[-1] if line[-1] else "")
        for line in lines
    ).rstrip()
