"""Rendering results for people (text) and scripts (JSON): every line a command prints on stdout, and
every message on stderr, is made here. Only the CLI layer and `exits.py` call this module."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from imgtrack.commands.audit import AuditRow
    from imgtrack.commands.deploy import DeployResult
    from imgtrack.commands.diff import DiffResult
    from imgtrack.commands.export import Allowlist
    from imgtrack.commands.hooks import HookStatus
    from imgtrack.commands.init import InitResult
    from imgtrack.commands.inspect import Inspection
    from imgtrack.commands.ledger import CommitResult
    from imgtrack.commands.pin import PinReport
    from imgtrack.commands.pull import PullResult
    from imgtrack.commands.push import PushOutcome
    from imgtrack.commands.record import RecordResult
    from imgtrack.commands.resolve import Resolved
    from imgtrack.commands.rollback import RollbackResult
    from imgtrack.commands.status import ImageStatus
    from imgtrack.commands.verify import VerifyReport
    from imgtrack.ledger.migrate import MigrateResult
    from imgtrack.ledger.schema import Build


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def emit_json_rows(rows: list[Any]) -> None:
    """A JSON array with one row per line: what a large list (an audit of a cluster) is written as, at
    the speed of the C encoder, which indented output does not use."""
    if not rows:
        sys.stdout.write("[]\n")
        return
    sys.stdout.write("[\n  " + ",\n  ".join(json.dumps(row) for row in rows) + "\n]\n")


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
    verdict, said = record.corroboration
    lines.append(f"source       {verdict}" + (f" ({'; '.join(said)})" if said else " (the image names no revision)"))
    for m in record.manifests:
        lines.append(f"platform     {m.platform:<16} {m.digest}  config {short_digest(m.config) if m.config else '-'}")
    for p in record.pushes:
        by = f" by {p.pushed_by}" if p.pushed_by else ""
        lines.append(
            f"{'promoted' if p.promoted else 'pushed':<12} {iso(p.pushed_at)} {p.repository} "
            f"({' '.join(p.tags) or 'by digest'}){by}"
        )
    env_words = {"deploy": "deployed", "seen": "seen", "bad": "marked bad"}
    for fact in record.ordered_facts():
        by = f" by {fact.by}" if fact.by else ""
        if fact.kind == "tag":
            lines.append(f"tagged       {iso(fact.at)} {fact.tag}{by}")
        elif fact.kind in env_words:
            where = f" from {fact.repository}" if fact.repository else ""
            lines.append(f"{env_words[fact.kind]:<12} {iso(fact.at)} {fact.env}{where}{by}")
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


def inspected(result: Inspection, as_json: bool) -> int:
    """What `inspect` found; exit 1 when the image carries no imgtrack record."""
    record = result.record
    if as_json:
        emit_json(
            {
                "reference": result.reference,
                "digest": result.digest,
                "media_type": result.media_type,
                "platforms": [{"platform": p, "digest": d} for p, d in result.platforms],
                "record": record,
                "record_artifact": result.record_artifact or None,
                "referrers": [
                    {
                        "digest": d.digest,
                        "artifact_type": d.artifact_type,
                        "media_type": d.media_type,
                        "annotations": d.annotations,
                    }
                    for d in result.referrers
                ],
            }
        )
    else:
        emit(f"{result.reference}\n  digest      {result.digest}\n  media type  {result.media_type}")
        for platform, digest in result.platforms:
            emit(f"  platform    {platform or '?'}  {digest}")
        if record:
            said = {k: str(v).replace("\n", "\\n") for k, v in record.items()}  # a registry's text: one line each
            emit(f"  record      {said['image']} {said['version']} from {said['commit']} ({said['tree']})")
            emit(f"  tags        {', '.join(str(t) for t in record['tags']).replace(chr(10), ' ') or 'none'}")
            if record.get("source"):
                emit(f"  source      {said['source']}")
        else:
            emit("  record      none attached")
        others = [d for d in result.referrers if d.digest != result.record_artifact]
        for d in others:
            emit(f"  referrer    {d.artifact_type or d.media_type}  {d.digest}")
    if record is None:
        error(f"{result.reference} carries no imgtrack record (push it with imgtrack, which attaches one)")
        return 1
    return 0


def receive_refusal(problems: list[str]) -> int:
    """Print why the server's pre-receive hook refuses a push (git shows each line as `remote: …`)."""
    for problem in problems:
        error(problem)
    error("push refused by imgtrack's pre-receive hook on this server; fix the above and push again")
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


def audited(rows: list[AuditRow], as_json: bool) -> None:
    if as_json:
        emit_json_rows([audit_json(row) for row in rows])
    else:
        emit(audit_table(rows))


def audit_json(row: AuditRow) -> dict[str, Any]:
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


def audit_table(rows: list[AuditRow]) -> str:
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


# --- each command's result ----------------------------------------------------------------------


def initialised(result: InitResult) -> None:
    if result.created:
        emit(f"initialised {result.config}; add your images under [images] there")
    else:
        emit(f"{result.config} exists already; left as it is (--force rewrites it)")


def recorded(result: RecordResult, as_json: bool) -> None:
    if as_json:
        emit_json({**result.record.to_json(), "path": str(result.path), "created": result.created})
    else:
        emit(record_summary(result.record, result.created))


def logged(records: list[Build], as_json: bool) -> None:
    if as_json:
        emit_json([r.to_json() for r in records])
    else:
        emit("\n".join(log_line(r) for r in records))


def shown(record: Build, also: list[Build], as_json: bool) -> None:
    """A record, then the records whose platform manifest or config its digest also is."""
    if as_json:
        data = record.to_json()
        if also:
            data["also_named_by"] = [{"image": r.image, "version": r.version, "digest": r.digest} for r in also]
        emit_json(data)
        return
    emit(
        record_details(record)
        + "".join(
            f"\nalso in      {r.image} {r.version} ({r.digest[:19]}…), as a platform manifest or config" for r in also
        )
    )


def resolved(result: Resolved, as_json: bool) -> None:
    if as_json:
        emit_json({"reference": result.pinned, **result.record.to_json()})
    else:
        emit(result.pinned)


def verified(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "ok": report.ok,
                "records": report.records,
                "corroboration": report.corroboration,
                "findings": [{"file": f.file, "message": f.message} for f in report.findings],
            }
        )
        return
    for finding in report.findings:
        emit(str(finding))
    words = ", ".join(f"{n} {verdict}" for verdict, n in sorted(report.corroboration.items()))
    error(f"verify: {report.records} records" + (f" ({words})" if words else "") + f", {len(report.findings)} findings")


def pushed(outcome: PushOutcome, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                **outcome.record.to_json(),
                "pushed": [
                    {
                        "repository": p.destination,
                        "tags": list(p.tags),
                        "blobs_copied": p.stats.copied,
                        "blobs_skipped": p.stats.skipped,
                        "bytes_copied": p.stats.bytes_copied,
                        "recorded": p.recorded,
                    }
                    for p in outcome.pushes
                ],
            }
        )
        return
    for p in outcome.pushes:
        emit(
            f"pushed {outcome.record.image} {outcome.record.version} to {p.destination} "
            f"({p.stats.copied} blobs copied, {p.stats.skipped} present; tags {' '.join(p.tags) or '-'})"
        )


def pulled(source: str, result: PullResult, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "source": result.source,
                "to": str(result.destination),
                "digest": result.digest,
                "blobs_copied": result.stats.copied,
                "blobs_skipped": result.stats.skipped,
            }
        )
        return
    emit(
        f"pulled {source} into {result.destination} ({result.stats.copied} blobs copied, "
        f"{result.stats.skipped} present)"
    )


def logged_in(registry: str, saved_in: str) -> None:
    emit(f"login to {registry} succeeded; credentials saved in {saved_in}")


def logged_out(registry: str, removed: bool) -> None:
    emit(f"removed the credentials for {registry}" if removed else f"no credentials were saved for {registry}")


def exported(result: Allowlist, text: str, written_to: Path | None) -> None:
    if written_to is None:
        emit(text)
    else:
        emit(
            f"wrote {written_to}: a Kyverno ClusterPolicy admitting {result.digests} digests of {result.records} records"
        )


def migrated(result: MigrateResult, root: Path, as_json: bool) -> None:
    if as_json:
        emit_json({"records": result.records, "facts": result.facts})
    elif result.records:
        emit(
            f"migrated {result.records} schema-1 records ({result.facts} pushes became facts) in "
            f"{root}; review with `git status`, then commit (imgtrack ledger commit)"
        )
    else:
        emit(f"nothing to migrate: {root} is schema 2")


def committed(result: CommitResult, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "commit": result.commit,
                "changes": result.summary,
                "pushed_to": result.pushed_to,
                "attempts": result.attempts,
            }
        )
        return
    shown = result.summary[:5] + ([f"… {len(result.summary)} changes in all"] if len(result.summary) > 5 else [])
    emit(f"committed {result.commit[:12]}: " + "; ".join(shown) if result.commit else "nothing to commit in .imgtrack/")
    if result.pushed_to:
        emit(f"pushed to {result.pushed_to}" + (f" after {result.attempts} attempts" if result.attempts > 1 else ""))


def hook_state(status: HookStatus, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "path": str(status.path),
                "installed": status.installed,
                "foreign": status.foreign,
                "chained": status.chained,
                "message": status.message,
            }
        )
    else:
        emit(status.message)


def diffed(result: DiffResult, as_json: bool) -> None:
    a, b = result.a, result.b
    if as_json:
        emit_json(
            {
                "a": {"image": a.image, "version": a.version, "digest": a.digest, "commit": a.commit},
                "b": {"image": b.image, "version": b.version, "digest": b.digest, "commit": b.commit},
                "direction": result.direction,
                "paths": list(result.paths),
                "commits": [
                    {"commit": c.sha, "date": c.date, "author": c.author, "subject": c.subject} for c in result.commits
                ],
                "platforms": None
                if result.platforms is None
                else [
                    {
                        "platform": p.platform,
                        "only_in": p.only_in or None,
                        "layers_added": [{"digest": d, "size": n} for d, n in p.layers_added],
                        "layers_removed": [{"digest": d, "size": n} for d, n in p.layers_removed],
                        "config": {k: {"a": old, "b": new} for k, (old, new) in p.config.items()},
                    }
                    for p in result.platforms
                ],
                "contents_note": result.contents_note or None,
            }
        )
        return
    lines = [f"{a.image} {a.version} ({a.commit[:7]})  ->  {b.image} {b.version} ({b.commit[:7]})"]
    where = f", only those touching {', '.join(result.paths)}" if result.paths else ""
    heading = {
        "same": "same commit: no commits between them",
        "forward": f"{len(result.commits)} commits since {a.version}, newest first{where}:",
        "rollback": f"ROLLBACK: {b.version} is older than {a.version}; going to it undoes {len(result.commits)} "
        f"commits, newest first{where}:",
        "diverged": f"{b.version} is not a descendant of {a.version} (the histories diverged); "
        f"{len(result.commits)} commits {b.version} has that {a.version} lacks{where}:",
    }[result.direction]
    lines.append(heading)
    lines += [f"  {c.sha[:7]}  {c.date[:10]}  {c.author[:20]:<20}  {c.subject}" for c in result.commits]
    if result.platforms is None:
        lines.append(f"contents not compared: {result.contents_note}")
    for p in result.platforms or []:
        if p.only_in:
            lines.append(f"{p.platform}: only in {(a if p.only_in == 'a' else b).version}")
            continue
        if not (p.layers_added or p.layers_removed or p.config):
            lines.append(f"{p.platform}: same layers and config")
            continue
        lines.append(f"{p.platform}:")
        lines += [f"  + layer {short_digest(d)} {_size(n)}" for d, n in p.layers_added]
        lines += [f"  - layer {short_digest(d)} {_size(n)}" for d, n in p.layers_removed]
        for key, (old, new) in p.config.items():
            lines.append(f"  {key}: {_config_value(old)}  ->  {_config_value(new)}")
    emit("\n".join(lines))


def _config_value(value: Any) -> str:
    return "-" if value is None else json.dumps(value, sort_keys=True)[:200]


def deployed(result: DeployResult, as_json: bool) -> None:
    b, fact = result.build, result.fact
    if as_json:
        emit_json({**b.to_json(), "deployed": fact.to_json()})
        return
    what = "marked bad in" if fact.kind == "bad" else "deployed to"
    where = f" from {fact.repository}" if fact.repository else ""
    emit(f"{b.image} {b.version} ({short_digest(b.digest)}) {what} {fact.env}{where}")


def statused(images: list[ImageStatus], as_json: bool) -> None:
    if as_json:
        emit_json(
            [
                {
                    "image": s.image,
                    "newest_release": s.newest.version if s.newest else None,
                    "environments": [
                        {
                            "env": r.env,
                            "version": r.build.version,
                            "digest": r.build.digest,
                            "commit": r.build.commit,
                            "since": iso(r.since),
                            "how": r.how,
                            "commits_behind": r.behind,
                        }
                        for r in s.running
                    ],
                }
                for s in images
            ]
        )
        return
    lines = []
    now = datetime.now(UTC)
    for s in images:
        lines.append(f"{s.image}  newest release {s.newest.version if s.newest else '-'}")
        for r in s.running:
            age = now - r.since
            days = f"{age.days} d" if age.days else f"{age.seconds // 3600} h"
            behind = "-" if r.behind is None else ("current" if r.behind == 0 else f"{r.behind} commits behind")
            lines.append(
                f"  {r.env:<12} {r.build.version:<24} {r.build.commit[:7]}  since {iso(r.since)} "
                f"({days}, {r.how})  {behind}"
            )
        if not s.running:
            lines.append("  (no deployments or audits recorded)")
    emit("\n".join(lines))


def rolled_back(result: RollbackResult, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "reference": result.pinned,
                "version": result.target.version,
                "from": result.current.version,
                "checked": result.checked,
                "unchecked": result.unchecked or None,
                "skipped": [{"version": b.version, "digest": b.digest, "why": why} for b, why in result.skipped],
            }
        )
        return
    emit(result.pinned)
    for build, why in result.skipped:
        error(f"skipped {build.version}: {why}")
    if result.unchecked:
        error(f"not checked: {result.unchecked}")


def pinned(report: PinReport, check: bool, as_json: bool) -> None:
    if as_json:
        emit_json(
            {
                "references": [
                    {
                        "file": c.file,
                        "line": c.line,
                        "reference": c.old,
                        "pinned": c.new,
                        "status": c.status,
                        "version": c.build.version if c.build else None,
                        "left_alone": c.left_alone,
                    }
                    for c in report.changes
                ],
                "written": report.written,
                "skipped": [{"file": f, "why": why} for f, why in report.skipped],
            }
        )
        return
    words = {
        "tag": "a tag, not a digest",
        "behind": "another build than the chosen one",
        "unknown": "a digest the ledger does not record",
        "current": "pinned",
        "other": "not a configured image",
    }
    for c in report.changes:
        if check and c.fails_check:
            emit(f"{c.file}:{c.line}: {c.old} is {words[c.status]}; would be {c.new}")
        elif not check and c.left_alone:
            error(f"{c.file}:{c.line}: left alone: {c.left_alone}")
        elif not check and c.status in ("tag", "behind"):
            emit(f"{c.file}:{c.line}: {c.old} -> {c.new}")
        elif not check and c.status == "unknown":
            error(f"{c.file}:{c.line}: {c.old} is {words[c.status]}; left as it is")
    for file, why in report.skipped:
        error(f"{file}: left alone: {why}")
    if check:
        error(f"pin --check: {len(report.failing)} of {len(report.changes)} references not pinned")
