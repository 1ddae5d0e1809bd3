"""The command line: parse options, call a command function, render its result, map errors to exit codes.

Exit codes (DESIGN §4): 0 ok, 1 a check failed, 2 bad usage or input, 3 registry or network failure,
70 internal error. No traceback reaches a user without --debug.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from imgtrack.commands.transfer import Registries
    from imgtrack.config import Config
    from imgtrack.oci.copy import BlobProgress


app = typer.Typer(
    name="imgtrack",
    help="Track container images like git tracks code: digest -> commit -> version, under a tagging policy.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
CaFileOpt = Annotated[Optional[Path], typer.Option("--ca-file", help="PEM CA certificate that signs the registry's TLS certificate.")]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Plain HTTP to the registry (loopback hosts may always).")]
UserOpt = Annotated[Optional[str], typer.Option("--username", help="Registry user (else environment, docker or podman config).")]
PasswordStdinOpt = Annotated[bool, typer.Option("--password-stdin", help="Read the registry password from stdin.")]
JobsOpt = Annotated[int, typer.Option("--jobs", min=1, max=32, help="Blobs transferred in parallel.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds a registry may stay silent before a retry.")]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
) -> None:
    """imgtrack keeps a ledger of built images in your git repository (.imgtrack/)."""


@app.command()
def init(force: Annotated[bool, typer.Option("--force", help="Rewrite the config with the defaults.")] = False) -> None:
    """Create .imgtrack/config.toml with commented defaults in this git work tree."""
    from imgtrack import output
    from imgtrack.commands.init import init_project

    result = init_project(Path.cwd(), force=force)
    if result.created:
        output.emit(f"initialised {result.config}; add your images under [images] there")
    else:
        output.emit(f"{result.config} exists already; left as it is (--force rewrites it)")


@app.command()
def record(
    source: Annotated[Optional[Path], typer.Argument(help="OCI layout directory, OCI layout tar, or buildx metadata JSON.")] = None,
    image: Annotated[str, typer.Option("--image", help="Image name from .imgtrack/config.toml.")] = ...,  # type: ignore[assignment]
    version: Annotated[Optional[str], typer.Option("--version", help="Semantic version (default: derived from git tags).")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Extra tag (repeatable).")] = None,
    commit: Annotated[Optional[str], typer.Option("--commit", help="Commit the image was built from (default HEAD).")] = None,
    digest: Annotated[Optional[str], typer.Option("--digest", help="Record a build another tool pushed, by digest.")] = None,
    ref_name: Annotated[Optional[str], typer.Option("--ref-name", help="Which image of a layout holding several.")] = None,
    allow_dirty: Annotated[bool, typer.Option("--allow-dirty", help="Record a dev build from uncommitted changes.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Record a built image: its digest, commit, version and tags."""
    from imgtrack import output
    from imgtrack.commands.record import RecordRequest, record_image
    from imgtrack.project import Project

    req = RecordRequest(
        image=image, source=source, digest=digest, version=version, tags=tuple(tag or ()),
        commit=commit, allow_dirty=allow_dirty, ref_name=ref_name,
    )
    result = record_image(Project.open(), req)
    if json_:
        output.emit_json({**result.record.to_json(), "path": str(result.path), "created": result.created})
    else:
        output.emit(output.record_summary(result.record, result.created))


@app.command()
def log(
    image: Annotated[Optional[str], typer.Argument(help="Only this image.")] = None,
    n: Annotated[Optional[int], typer.Option("-n", help="At most N records.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Recorded images, newest first."""
    from imgtrack import output
    from imgtrack.commands.query import log_records
    from imgtrack.project import Project

    records = log_records(Project.open().ledger, image, n)
    if json_:
        output.emit_json([r.to_json() for r in records])
    else:
        output.emit("\n".join(output.log_line(r) for r in records))


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="Digest (prefix), version, tag or commit (prefix); IMAGE@REF narrows.")],
    json_: JsonOpt = False,
) -> None:
    """Show the record a digest, version, tag or commit names."""
    from imgtrack import output
    from imgtrack.commands.query import show_record
    from imgtrack.project import Project

    record_ = show_record(Project.open().ledger, ref)
    if json_:
        output.emit_json(record_.to_json())
    else:
        output.emit(output.record_details(record_))


@app.command()
def resolve(
    spec: Annotated[str, typer.Argument(metavar="IMAGE@RANGE", help="e.g. api@^1.4, api@~1.4.2, api@1.x")],
    repository: Annotated[Optional[str], typer.Option("--repository", help="Print REPOSITORY@digest for deployment.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Print the digest-pinned reference of the highest recorded version in a range."""
    from imgtrack import output
    from imgtrack.commands.query import resolve_range
    from imgtrack.project import Project

    resolved = resolve_range(Project.open().ledger, spec, repository)
    if json_:
        output.emit_json({"reference": resolved.pinned, **resolved.record.to_json()})
    else:
        output.emit(resolved.pinned)


@app.command()
def verify(
    remote: Annotated[bool, typer.Option("--remote", help="Also check every recorded push against its registry (drift).")] = False,
    timeout: TimeoutOpt = 60.0, ca_file: CaFileOpt = None, insecure: InsecureOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Check the whole ledger: schema, commits, versions against git tags, tag policy; --remote: registries."""
    from imgtrack import output
    from imgtrack.commands.verify import verify_ledger
    from imgtrack.project import Project

    project = Project.open()
    report = verify_ledger(project)
    if remote:
        from imgtrack.commands.transfer import verify_pushes
        from imgtrack.oci.copy import no_progress

        registries = _registries(project.config, ca_file, insecure, None, False, 4, timeout, no_progress)
        try:
            report.findings += verify_pushes(project, registries)
        finally:
            registries.close()
    if json_:
        output.emit_json({
            "ok": report.ok, "records": report.records,
            "findings": [{"file": f.file, "message": f.message} for f in report.findings],
        })
    else:
        for finding in report.findings:
            output.emit(str(finding))
        output.error(f"verify: {report.records} records, {len(report.findings)} findings")
    if not report.ok:
        raise typer.Exit(1)


def _registries(config: Config | None, ca_file: Path | None, insecure: bool, username: str | None,
                password_stdin: bool, jobs: int, timeout: float, progress: BlobProgress) -> Registries:
    from imgtrack.commands.transfer import Registries
    from imgtrack.errors import UsageError

    password = None
    if password_stdin:
        if username is None:
            raise UsageError("--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
    return Registries(config=config, ca_file=ca_file, insecure=insecure,
                      username=username, password=password, jobs=jobs, timeout=timeout, progress=progress)


@app.command()
def push(
    source: Annotated[str, typer.Argument(help="An OCI layout or layout tar, or IMAGE@VERSION of a recorded image.")],
    to: Annotated[Optional[list[str]], typer.Option("--to", help="REPOSITORY (host/path) or oci:PATH; repeatable; default: the image's repositories.")] = None,
    image: Annotated[Optional[str], typer.Option("--image", help="Image name, to record a layout first.")] = None,
    version: Annotated[Optional[str], typer.Option("--version", help="Version, when recording first.")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Extra tag, when recording first.")] = None,
    jobs: JobsOpt = 4, timeout: TimeoutOpt = 60.0, ca_file: CaFileOpt = None, insecure: InsecureOpt = False,
    username: UserOpt = None, password_stdin: PasswordStdinOpt = False, quiet: QuietOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Push an image with the tags its record carries; records it first if needed."""
    from imgtrack import output
    from imgtrack.commands.transfer import push_image
    from imgtrack.project import Project

    project = Project.open()
    progress, finish = output.blob_progress(quiet)
    registries = _registries(project.config, ca_file, insecure, username, password_stdin, jobs, timeout, progress)
    try:
        outcome = push_image(project, source, image, list(to or ()), registries, version, tuple(tag or ()))
    finally:
        finish()
        registries.close()
    if json_:
        output.emit_json({**outcome.record.to_json(), "pushed": [
            {"repository": p.destination, "tags": list(p.tags), "blobs_copied": p.stats.copied,
             "blobs_skipped": p.stats.skipped, "bytes_copied": p.stats.bytes_copied, "recorded": p.recorded}
            for p in outcome.pushes]})
        return
    for p in outcome.pushes:
        output.emit(f"pushed {outcome.record.image} {outcome.record.version} to {p.destination} "
                    f"({p.stats.copied} blobs copied, {p.stats.skipped} present; tags {' '.join(p.tags) or '-'})")


@app.command()
def audit(
    source: Annotated[str, typer.Argument(metavar="FILE|-", help="Reference/digest lines, kubectl get pods -o json, Kubernetes YAML, or a compose file; - for stdin.")] = "-",
    remote: Annotated[bool, typer.Option("--remote", help="Resolve tag-only references through their registries.")] = False,
    fail_on: Annotated[str, typer.Option("--fail-on", help="Statuses that make the exit status 1.")] = "unknown,latest,mismatch",
    timeout: TimeoutOpt = 60.0, ca_file: CaFileOpt = None, insecure: InsecureOpt = False,
    json_: JsonOpt = False,
) -> None:
    """What is running: digest -> record (image, version, commit, recorded at/by) and one status each."""
    from imgtrack import output
    from imgtrack.audit import parse_input
    from imgtrack.commands.audit import audit_images, parse_fail_on
    from imgtrack.errors import UsageError
    from imgtrack.project import Project

    failing = parse_fail_on(fail_on)
    if source == "-":
        text, name = sys.stdin.read(), "stdin"
    else:
        try:
            text, name = Path(source).read_text(encoding="utf-8"), source
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{source} cannot be read ({exc}); pass a readable file or - for stdin") from None
    images = parse_input(text, name)
    project = Project.open()
    registries = None
    if remote:
        from imgtrack.oci.copy import no_progress

        registries = _registries(project.config, ca_file, insecure, None, False, 4, timeout, no_progress)
    try:
        rows = audit_images(project, images, registries)
    finally:
        if registries is not None:
            registries.close()
    if json_:
        output.emit_json([output.audit_json(row) for row in rows])
    else:
        output.emit(output.audit_table(rows))
    if any(row.status in failing for row in rows):
        raise typer.Exit(1)


@app.command()
def promote(
    ref: Annotated[str, typer.Argument(metavar="IMAGE@VERSION", help="A recorded image (or its digest or tag).")],
    to: Annotated[list[str], typer.Option("--to", help="Repository to promote to (repeatable).")],
    jobs: JobsOpt = 4, timeout: TimeoutOpt = 60.0, ca_file: CaFileOpt = None, insecure: InsecureOpt = False,
    username: UserOpt = None, password_stdin: PasswordStdinOpt = False, quiet: QuietOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Copy a recorded image by digest from where it was pushed to another repository or registry
    (a mount within one registry), with the tags policy gives it; the push is recorded."""
    from imgtrack.errors import UsageError

    if Path(ref).exists():
        raise UsageError(f"{ref} is a path; promote takes a recorded image (IMAGE@VERSION); use push for build output")
    push(source=ref, to=to, image=None, version=None, tag=None, jobs=jobs, timeout=timeout, ca_file=ca_file,
         insecure=insecure, username=username, password_stdin=password_stdin, quiet=quiet, json_=json_)


@app.command()
def pull(
    source: Annotated[str, typer.Argument(help="IMAGE@VERSION, a digest or tag from the ledger, host/repo[:tag|@digest], or oci:PATH[:tag|@digest].")],
    to: Annotated[Path, typer.Option("--to", help="OCI layout directory to pull into.")] = ...,  # type: ignore[assignment]
    jobs: JobsOpt = 4, timeout: TimeoutOpt = 60.0, ca_file: CaFileOpt = None, insecure: InsecureOpt = False,
    username: UserOpt = None, password_stdin: PasswordStdinOpt = False, quiet: QuietOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Pull an image into an OCI layout; only missing blobs move, every byte verified."""
    from imgtrack import output
    from imgtrack.commands.transfer import pull_image
    from imgtrack.errors import ConfigError, NotAGitRepository
    from imgtrack.project import Project

    try:
        project: Project | None = Project.open()
    except (NotAGitRepository, ConfigError):
        project = None
    progress, finish = output.blob_progress(quiet)
    registries = _registries(project.config if project else None, ca_file, insecure, username, password_stdin,
                             jobs, timeout, progress)
    try:
        result = pull_image(project, source, to, registries)
    finally:
        finish()
        registries.close()
    if json_:
        output.emit_json({"source": result.source, "to": str(result.destination),
                          "digest": result.digest,
                          "blobs_copied": result.stats.copied, "blobs_skipped": result.stats.skipped})
        return
    output.emit(f"pulled {source} into {result.destination} "
                f"({result.stats.copied} blobs copied, {result.stats.skipped} present)")


@app.command()
def login(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    username: Annotated[str, typer.Option("--username", "-u", help="Registry user.")] = ...,  # type: ignore[assignment]
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin (the only way: never on the command line).")] = False,
    ca_file: CaFileOpt = None, insecure: InsecureOpt = False,
) -> None:
    """Check credentials against the registry and save them as `docker login` does."""
    from imgtrack import output
    from imgtrack.errors import UsageError
    from imgtrack.oci.auth import Credentials, store_credentials
    from imgtrack.oci.registry import RegistryClient

    if not password_stdin:
        raise UsageError("give the password on stdin with --password-stdin (a password in arguments shows in ps and shell history)")
    credentials = Credentials(username, sys.stdin.readline().rstrip("\r\n"))
    client = RegistryClient(registry, credentials, insecure=insecure, ca_file=ca_file)
    try:
        client.check()
    finally:
        client.close()
    output.emit(f"login to {registry} succeeded; credentials saved in {store_credentials(registry, credentials)}")


@app.command()
def logout(registry: Annotated[str, typer.Argument(help="Registry host[:port].")]) -> None:
    """Forget the saved credentials for a registry."""
    from imgtrack import output
    from imgtrack.oci.auth import erase_credentials

    if erase_credentials(registry):
        output.emit(f"removed the credentials for {registry}")
    else:
        output.emit(f"no credentials were saved for {registry}")


export_app = typer.Typer(help="Write what the ledger knows in another tool's format.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("allowlist")
def export_allowlist(
    format_: Annotated[str, typer.Option("--format", help="Policy format: kyverno (a ClusterPolicy).")] = "kyverno",
    image: Annotated[Optional[list[str]], typer.Option("--image", help="Only this image (repeatable).")] = None,
    releases_only: Annotated[bool, typer.Option("--releases-only", help="Only release versions from clean trees.")] = False,
    name: Annotated[str, typer.Option("--name", help="The policy's metadata.name.")] = "imgtrack-recorded-images",
    audit: Annotated[bool, typer.Option("--audit", help="Report violations instead of refusing Pods.")] = False,
    output_file: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here (atomically), not stdout.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="The policy as JSON (kubectl takes either).")] = False,
) -> None:
    """An admission policy that admits only images pinned to a digest the ledger records."""
    import json
    import re

    from imgtrack import output
    from imgtrack.commands.export import export_allowlist as build
    from imgtrack.errors import UsageError
    from imgtrack.fsutil import write_atomic
    from imgtrack.project import Project

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise UsageError(f"--name {name!r}: not a Kubernetes object name; use lower-case letters, digits, '-' and '.'")
    result = build(Project.open(Path.cwd()), format_, list(image or []), releases_only, name, audit)
    text = json.dumps(result.policy, indent=2) + "\n" if json_ else result.text
    if output_file is None:
        output.emit(text)
        return
    write_atomic(output_file, text.encode())
    output.emit(f"wrote {output_file}: a Kyverno ClusterPolicy admitting {result.digests} digests "
                f"of {result.records} records")


hooks_app = typer.Typer(help="Install, remove or inspect the pre-push hook.", no_args_is_help=True)
app.add_typer(hooks_app, name="hooks")
hook_app = typer.Typer(help="What installed hooks run.", no_args_is_help=True)
app.add_typer(hook_app, name="hook")


def _hook_result(action: str, json_: bool) -> None:
    from imgtrack import output
    from imgtrack.commands import hooks
    from imgtrack.gitrepo import GitRepo

    repo = GitRepo(Path.cwd())
    status = {"install": hooks.install_hooks, "uninstall": hooks.uninstall_hooks, "status": hooks.hook_status}[action](repo)
    if json_:
        output.emit_json({"path": str(status.path), "installed": status.installed, "foreign": status.foreign,
                          "chained": status.chained, "message": status.message})
    else:
        output.emit(status.message)


@hooks_app.command("install")
def hooks_install(json_: JsonOpt = False) -> None:
    """Install the pre-push hook (keeps a foreign hook as pre-push.legacy and runs it first)."""
    _hook_result("install", json_)


@hooks_app.command("uninstall")
def hooks_uninstall(json_: JsonOpt = False) -> None:
    """Remove the pre-push hook and restore the one it replaced."""
    _hook_result("uninstall", json_)


@hooks_app.command("status")
def hooks_status(json_: JsonOpt = False) -> None:
    """Say whether the pre-push hook is installed."""
    _hook_result("status", json_)


@hook_app.command("pre-push")
def hook_pre_push(
    remote: Annotated[str, typer.Argument(help="Remote name, as git passes it.")] = "",
    url: Annotated[str, typer.Argument(help="Remote URL, as git passes it.")] = "",
) -> None:
    """Check a push (git's pre-push stdin, or the pre-commit framework's environment)."""
    import os

    from imgtrack import output
    from imgtrack.commands.prepush import pre_push_problems

    problems = pre_push_problems(Path.cwd(), remote, sys.stdin, dict(os.environ))
    if problems:
        raise typer.Exit(output.push_refusal(problems))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every outcome into an exit status."""
    from imgtrack import output

    # Start-up of registry commands, this process only: imgtrack's HTTP is synchronous, but httpcore
    # imports trio whenever it is installed (~70 ms), and httpx imports its own command-line tool (~35 ms);
    # both already handle ImportError, which a None entry in sys.modules raises.
    for unused in ("trio", "httpx._main"):
        sys.modules.setdefault(unused, None)  # type: ignore[arg-type]
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]

    def call() -> int | None:
        try:
            # Not standalone: click hands back typer.Exit's status instead of exiting.
            return app(args=args, prog_name="imgtrack", standalone_mode=False)  # type: ignore[no-any-return]
        except typer.Exit as exc:
            return int(exc.exit_code)
        except typer.Abort:
            output.error("aborted")
            return 130

    sys.exit(output.run_guarded(call, debug))
