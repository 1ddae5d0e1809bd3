"""The command line: parse options, call a command function, render its result. `main` runs it all
through `exits.run_main`, the one place outcomes become exit statuses.

Built on argparse, not typer: typer (0.29) loads pydantic and builds every command's converters at
start-up, about 90 ms of every run, which alone broke the 0.2 s no-op re-push (docs/design-notes.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from imgtrack import __version__
from imgtrack.errors import UsageError

if TYPE_CHECKING:
    from imgtrack.config import Config
    from imgtrack.oci.copy import BlobProgress
    from imgtrack.oci.pool import Registries

Args = argparse.Namespace


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line and exit 2, like every other bad input; options are never abbreviated."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _bounded(kind: Callable[[str], Any], low: float, high: float | None = None) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text) if len(text) <= 40 else None
        except ValueError:
            value = None
        if value is None or value != value:  # NaN
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is outside {low}..{high if high is not None else ''}")
        return value

    return parse


# --- commands ------------------------------------------------------------------------------------


def init(a: Args) -> None:
    """Create .imgtrack/config.toml with commented defaults in this git work tree."""
    from imgtrack import output
    from imgtrack.commands.init import init_project

    output.initialised(init_project(Path.cwd(), force=a.force))


def record(a: Args) -> None:
    """Record a built image: its digest, commit, version and tags."""
    from imgtrack import output
    from imgtrack.commands.record import RecordRequest, record_image
    from imgtrack.project import Project

    req = RecordRequest(
        image=a.image,
        source=a.source,
        digest=a.digest,
        version=a.version,
        tags=tuple(a.tag or ()),
        commit=a.commit,
        allow_dirty=a.allow_dirty,
        ref_name=a.ref_name,
        accept_mismatch=a.accept_mismatch,
    )
    output.recorded(record_image(Project.open(), req), a.json)


def log(a: Args) -> None:
    """Recorded images, newest first."""
    from imgtrack import output
    from imgtrack.commands.log import log_records
    from imgtrack.project import Project

    output.logged(log_records(Project.open().ledger, a.image, a.n), a.json)


def show(a: Args) -> None:
    """Show the record a digest, version, tag or commit names."""
    from imgtrack import output
    from imgtrack.commands.show import show_record
    from imgtrack.project import Project

    ledger = Project.open().ledger
    record_ = show_record(ledger, a.ref)
    output.shown(record_, ledger.also_naming(a.ref, record_, probe=True), a.json)


def resolve(a: Args) -> None:
    """Print the digest-pinned reference of the highest recorded version in a range."""
    from imgtrack import output
    from imgtrack.commands.resolve import resolve_range
    from imgtrack.project import Project

    output.resolved(resolve_range(Project.open().ledger, a.spec, a.repository), a.json)


def diff(a: Args) -> None:
    """What changed between two recorded builds: the commits between them, and layers and config per
    platform when both images can be read (from a layout, or a registry the ledger pushed to)."""
    from imgtrack import output
    from imgtrack.commands.diff import diff_builds
    from imgtrack.oci.copy import no_progress
    from imgtrack.project import Project

    project = Project.open()
    registries = _registries(project.config, a, no_progress)
    try:
        output.diffed(diff_builds(project, a.a, a.b, registries), a.json)
    finally:
        registries.close()


def deploy(a: Args) -> None:
    """Record that a build was rolled out to an environment (who, when, from where); --to promotes it
    there first; --bad marks it bad there, so that a rollback never goes back to it."""
    from imgtrack import output
    from imgtrack.commands.deploy import deploy as run_deploy
    from imgtrack.project import Project

    project = Project.open()
    progress, finish = output.blob_progress(a.quiet)
    registries = _registries(project.config, a, progress)
    try:
        result = run_deploy(project, a.ref, a.env, registries, a.to, a.bad)
    finally:
        finish()
        registries.close()
    output.deployed(result, a.json)


def status(a: Args) -> None:
    """Each image's newest release, and per environment what runs there, since when, how far behind."""
    from imgtrack import output
    from imgtrack.commands.status import status as run_status
    from imgtrack.project import Project

    if a.html is not None:
        from imgtrack.commands.status import timelines
        from imgtrack.fsutil import check_output, write_atomic
        from imgtrack.htmlpage import render

        check_output(a.html, "--html")
        project = Project.open()
        page = render(timelines(project, run_status(project, a.image)), project.repo.work_tree.name)
        write_atomic(a.html, page.encode("utf-8"))
        output.error(f"wrote {a.html}")
        return
    output.statused(run_status(Project.open(), a.image), a.json)


def rollback(a: Args) -> int:
    """The pinned reference of the release that ran in an environment before the current one (not one
    marked bad), checked by HEAD to still exist where the environment pulls it from."""
    from imgtrack import output
    from imgtrack.commands.rollback import rollback as run_rollback
    from imgtrack.oci.copy import no_progress
    from imgtrack.project import Project

    project = Project.open()
    registries = _registries(project.config, a, no_progress)
    try:
        output.rolled_back(run_rollback(project, a.image, a.env, registries), a.json)
    finally:
        registries.close()
    return 0


def pin(a: Args) -> int:
    """Rewrite image references in deployment files (Kubernetes workloads, compose) to digests from the
    ledger, with a comment naming version and commit; --check changes nothing and fails on tags, unknown
    digests and builds behind the chosen one."""
    from imgtrack import output
    from imgtrack.commands.pin import pin_files
    from imgtrack.project import Project

    report = pin_files(Project.open(), list(a.files), a.to, a.env, a.check)
    output.pinned(report, a.check, a.json)
    return 1 if a.check and report.failing else 0


def verify(a: Args) -> int:
    """Check the whole ledger: schema, commits, versions against git tags, tag policy; --remote: registries."""
    from imgtrack import output
    from imgtrack.commands.verify import verify_ledger
    from imgtrack.project import Project

    project = Project.open()
    report = verify_ledger(project)
    if a.remote:
        from imgtrack.commands.verify import verify_pushes
        from imgtrack.oci.copy import no_progress

        registries = _registries(project.config, a, no_progress)
        try:
            report.findings += verify_pushes(project, registries)
        finally:
            registries.close()
    output.verified(report, a.json)
    return 0 if report.ok else 1


def _registries(config: Config | None, a: Args, progress: BlobProgress) -> Registries:
    """Registry access from the command's options (those it has; the rest take their defaults):
    flag > environment > config > default."""
    from imgtrack.config import env_int
    from imgtrack.oci.pool import DEFAULT_CHUNK_SIZE, Registries

    chunk_size = env_int("IMGTRACK_CHUNK_SIZE", DEFAULT_CHUNK_SIZE, 64 * 1024, 4 * 1024**3, " of bytes")
    username, password = getattr(a, "username", None), None
    if getattr(a, "password_stdin", False):
        if username is None:
            raise UsageError("--password-stdin needs --username")
        password = _password_from_stdin(username)
    return Registries(
        insecure_hosts=frozenset(h for h, r in config.registries.items() if r.insecure) if config else frozenset(),
        chunk_size=chunk_size,
        ca_file=a.ca_file,
        insecure=a.insecure,
        username=username,
        password=password,
        jobs=getattr(a, "jobs", 4),
        timeout=a.timeout,
        progress=progress,
        carry_referrers=not getattr(a, "no_referrers", False),
    )


def _password_from_stdin(username: str) -> str:
    """The password --password-stdin reads: the first line of stdin, never empty, never echoed."""
    if not username or any(not c.isprintable() for c in username):
        raise UsageError("--username is empty or holds a control character; give the user name")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError(
            "--password-stdin read an empty password; pipe the password in, "
            "e.g. printenv REGISTRY_TOKEN | imgtrack login HOST -u USER --password-stdin"
        )
    return password


def push(a: Args) -> None:
    """Push an image with the tags its record carries; records it first if needed."""
    from imgtrack import output
    from imgtrack.commands.push import push_image
    from imgtrack.project import Project

    project = Project.open()
    progress, finish = output.blob_progress(a.quiet)
    registries = _registries(project.config, a, progress)
    try:
        outcome = push_image(
            project,
            a.source,
            getattr(a, "image", None),
            list(a.to or ()),
            registries,
            getattr(a, "version", None),
            tuple(getattr(a, "tag", None) or ()),
            promote=a.func is promote,
        )
    finally:
        finish()
        registries.close()
    output.pushed(outcome, a.json)


def audit(a: Args) -> int:
    """What is running: digest -> record (image, version, commit, recorded at/by) and one status each."""
    from imgtrack import output
    from imgtrack.commands.audit import audit_images, parse_fail_on
    from imgtrack.project import Project
    from imgtrack.workloads import MAX_INPUT_BYTES, parse_input

    failing = parse_fail_on(a.fail_on)
    # A cluster's pod list is hundreds of thousands of objects, none in a reference cycle: the cyclic
    # collector would walk them again and again (0.4 s of 1.2 s at 10,000 pods) to free nothing that
    # reference counting does not. The process ends with the command.
    import gc

    gc.disable()
    name = "stdin" if a.source == "-" else a.source
    try:
        if a.source == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(a.source, "rb") as f:
                data = f.read(MAX_INPUT_BYTES + 1)
        if len(data) > MAX_INPUT_BYTES:
            raise UsageError(f"{name} is over {MAX_INPUT_BYTES // 2**20} MiB; audit a namespace or a file at a time")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{name} cannot be read ({exc}); pass a readable UTF-8 file or - for stdin") from None
    images = parse_input(text, name)
    project = Project.open()
    registries = None
    if a.remote:
        from imgtrack.oci.copy import no_progress

        registries = _registries(project.config, a, no_progress)
    try:
        rows = audit_images(project, images, registries, check_word="uncorroborated" in failing)
    finally:
        if registries is not None:
            registries.close()
    if a.env:
        from imgtrack.commands.audit import record_sightings

        record_sightings(project, rows, a.env)
    output.audited(rows, a.json)
    return 1 if any(row.status in failing for row in rows) else 0


def promote(a: Args) -> None:
    """Copy a recorded image by digest from where it was pushed to another repository or registry
    (a mount within one registry), with the tags policy gives it; the push is recorded."""
    if Path(a.source).exists():
        raise UsageError(
            f"{a.source} is a path; promote takes a recorded image (IMAGE@VERSION); use push for build output"
        )
    push(a)


def pull(a: Args) -> None:
    """Pull an image into an OCI layout; only missing blobs move, every byte verified."""
    from imgtrack import output
    from imgtrack.commands.pull import pull_image
    from imgtrack.errors import ConfigError, NotAGitRepository
    from imgtrack.project import Project

    try:
        project: Project | None = Project.open()
    except (NotAGitRepository, ConfigError):
        project = None
    progress, finish = output.blob_progress(a.quiet)
    registries = _registries(project.config if project else None, a, progress)
    try:
        result = pull_image(project, a.source, a.to, registries)
    finally:
        finish()
        registries.close()
    output.pulled(a.source, result, a.json)


def inspect(a: Args) -> int:
    """Show an image and what is attached to it (its imgtrack record: version, commit, tags; every other
    referrer), from the registry or layout alone: no git repository needed. Exit 1 when it carries no record."""
    from imgtrack import output
    from imgtrack.commands.inspect import inspect_image

    registries = _registries(None, a, lambda _e, _b: None)
    try:
        result = inspect_image(a.reference, registries)
    finally:
        registries.close()
    return output.inspected(result, a.json)


def login(a: Args) -> None:
    """Check credentials against the registry and save them as `docker login` does."""
    from imgtrack import output
    from imgtrack.oci.reference import check_registry_host
    from imgtrack.oci.remote.auth import Credentials, store_credentials
    from imgtrack.oci.remote.registry import RegistryClient

    if not a.password_stdin:
        raise UsageError(
            "give the password on stdin with --password-stdin (a password in arguments shows in ps and shell history)"
        )
    check_registry_host(a.registry)
    credentials = Credentials(a.username, _password_from_stdin(a.username))
    client = RegistryClient(a.registry, credentials, insecure=a.insecure, ca_file=a.ca_file)
    try:
        client.check()
    finally:
        client.close()
    output.logged_in(a.registry, store_credentials(a.registry, credentials))


def logout(a: Args) -> None:
    """Forget the saved credentials for a registry."""
    from imgtrack import output
    from imgtrack.oci.reference import check_registry_host
    from imgtrack.oci.remote.auth import erase_credentials

    output.logged_out(a.registry, erase_credentials(check_registry_host(a.registry)))


def export_allowlist(a: Args) -> None:
    """An admission policy that admits only images pinned to a digest the ledger records."""
    import json

    from imgtrack import output
    from imgtrack.commands.export import export_allowlist as build
    from imgtrack.fsutil import check_output, write_atomic
    from imgtrack.project import Project

    if a.output is not None:
        check_output(a.output, "-o")
    result = build(Project.open(Path.cwd()), a.format, list(a.image or []), a.releases_only, a.name, a.audit)
    text = json.dumps(result.policy, indent=2) + "\n" if a.json else result.text
    if a.output is not None:
        write_atomic(a.output, text.encode())
    output.exported(result, text, a.output)


def ledger_migrate(a: Args) -> None:
    """Turn a schema-1 ledger into schema 2 in the work tree, for review; nothing is committed."""
    from imgtrack import output
    from imgtrack.commands.ledger import migrate_ledger
    from imgtrack.project import Project

    project = Project.open()
    output.migrated(migrate_ledger(project), project.ledger.root, a.json)


def ledger_commit(a: Args) -> None:
    """Commit .imgtrack/ alone, saying what was recorded, pushed or promoted; --push lands it on the remote,
    fetching and rebasing ledger commits when the branch moved meanwhile."""
    from imgtrack import output
    from imgtrack.commands.ledger import commit_ledger
    from imgtrack.project import Project

    output.committed(commit_ledger(Project.open(), a.message, a.push is not None, a.push or None), a.json)


def _hook_result(action: str, a: Args) -> None:
    from imgtrack import output
    from imgtrack.commands import hooks
    from imgtrack.gitrepo import GitRepo

    repo = GitRepo.bare(Path.cwd()) if a.server else GitRepo(Path.cwd())
    status = {"install": hooks.install_hooks, "uninstall": hooks.uninstall_hooks, "status": hooks.hook_status}[action](
        repo, hooks.SERVER if a.server else hooks.CLIENT
    )
    if a.server and action == "install":
        from imgtrack.commands.prereceive import prime_mirror

        prime_mirror(repo)
    output.hook_state(status, a.json)


def hooks_install(a: Args) -> None:
    """Install the pre-push hook (keeps a foreign hook as pre-push.legacy and runs it first); --server: the
    pre-receive hook of a bare repository."""
    _hook_result("install", a)


def hooks_uninstall(a: Args) -> None:
    """Remove the pre-push hook and restore the one it replaced."""
    _hook_result("uninstall", a)


def hooks_status(a: Args) -> None:
    """Say whether the pre-push hook is installed."""
    _hook_result("status", a)


def hook_pre_push(a: Args) -> int:
    """Check a push (git's pre-push stdin, or the pre-commit framework's environment)."""
    import os

    from imgtrack import output
    from imgtrack.commands.prepush import pre_push_problems

    problems = pre_push_problems(Path.cwd(), a.remote, sys.stdin, dict(os.environ))
    return output.push_refusal(problems) if problems else 0


def completion(a: Args) -> int | None:
    """Print the shell completion script for bash, zsh or fish (generated from this parser); --install
    writes it where that shell finds a user's completions."""
    import os

    from imgtrack import completion as comp
    from imgtrack import output

    if a.list:
        if a.list not in comp.KINDS:
            return 0  # asked by a completion script: a wrong word completes to nothing
        for word in comp.list_words(a.list):
            print(word)
        return 0
    if a.shell is None:
        raise UsageError("name a shell: imgtrack completion bash|zsh|fish (add --install to install it)")
    text = comp.script(a.shell, build_parser())
    if not a.install:
        sys.stdout.write(text)
        return 0
    from imgtrack.fsutil import write_atomic

    env = os.environ
    target = comp.install_path(
        a.shell,
        Path.home(),
        Path(env["XDG_DATA_HOME"]) if env.get("XDG_DATA_HOME") else None,
        Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else None,
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text.encode())
    hint = {
        "bash": "new bash shells load it (bash-completion)",
        "zsh": f"add `fpath=({target.parent} $fpath)` before `compinit` in ~/.zshrc",
        "fish": "new fish shells load it",
    }[a.shell]
    output.emit(f"wrote {target}; {hint}")
    return 0


def hook_pre_receive(a: Args) -> int:
    """Check a push arriving at a bare repository (git's pre-receive stdin), as the server's hook."""
    from imgtrack import output
    from imgtrack.commands.prereceive import pre_receive_problems

    problems = pre_receive_problems(Path.cwd(), "" if sys.stdin.isatty() else sys.stdin.read())
    return output.receive_refusal(problems) if problems else 0


# --- the parser ----------------------------------------------------------------------------------


# Worked examples at the end of each command's --help, by the command's function.
EXAMPLES: dict[str, str] = {
    "init": "imgtrack init                      # .imgtrack/config.toml with commented defaults",
    "record": "imgtrack record build/oci --image api              # an OCI layout the build wrote\n"
    "imgtrack record app.tar --image api --tag qa-approved  # a layout tar, with an extra tag\n"
    "imgtrack record --digest sha256:… --image api        # a build another tool pushed\n"
    "imgtrack record build/oci --image api --version 1.4.0+build.2   # a rebuild of a released commit",
    "log": "imgtrack log                       # every image, newest first\nimgtrack log api -n 5 --json",
    "show": "imgtrack show sha256:26089df4      # any digest a runtime reports\n"
    "imgtrack show api@1.4.0            # or a version, tag or commit of one image",
    "resolve": "imgtrack resolve 'api@^1.4'\n"
    "imgtrack resolve 'api@~1.4.2' --repository registry.example.com/team/api   # for a deployment file",
    "diff": "imgtrack diff api@1.4.0 api@1.5.0             # commits, layers and config between two builds\n"
    "imgtrack diff api@1.5.0 registry.example.com/team/api@sha256:…   # against what a runtime reports",
    "deploy": "imgtrack deploy api@1.5.0 --env staging\n"
    "imgtrack deploy api@1.5.0 --env prod --to registry.example.com/prod/api   # promote, then record the rollout\n"
    "imgtrack deploy api@1.5.0 --env prod --bad     # a rollback never goes back to it",
    "status": "imgtrack status                    # every image: newest release, and what runs where\n"
    "imgtrack status api --json\n"
    "imgtrack status --html status.html   # one page: the table and a timeline per image",
    "rollback": "imgtrack rollback api --env prod   # the release that ran before, pinned by digest",
    "pin": "imgtrack pin k8s/deployment.yaml --to 'api@^1.5'     # repo:tag -> repo@sha256:… with a comment\n"
    "imgtrack pin k8s/*.yaml --env prod --check          # CI: exit 1 on a tag or a build behind prod",
    "verify": "imgtrack verify                    # the whole ledger, for CI\n"
    "imgtrack verify --remote           # and every recorded push, against the registries",
    "push": "imgtrack push build/oci --image api --to registry.example.com/team/api\n"
    "imgtrack push api@1.4.0 --to oci:/srv/images/api",
    "promote": "imgtrack promote api@1.4.0 --to registry.example.com/prod/api",
    "pull": "imgtrack pull api@1.4.0 --to ./api-layout\n"
    "imgtrack pull registry.example.com/team/api@sha256:… --to ./api-layout",
    "completion": "imgtrack completion bash --install   # or: imgtrack completion zsh > ~/.zfunc/_imgtrack\n"
    "source <(imgtrack completion bash)     # this shell only",
    "inspect": "imgtrack inspect registry.example.com/team/api@sha256:…   # which commit is this digest?\n"
    "imgtrack inspect oci:./api-layout --json",
    "login": "printenv REGISTRY_TOKEN | imgtrack login registry.example.com -u ci --password-stdin",
    "logout": "imgtrack logout registry.example.com",
    "audit": "kubectl get pods -A -o json | imgtrack audit -\n"
    "helm template chart/ | imgtrack audit - --fail-on unknown,latest,mismatch,behind",
    "export_allowlist": "imgtrack export allowlist --format kyverno --releases-only -o policy.yaml",
    "ledger_migrate": "imgtrack ledger migrate && git diff --stat",
    "ledger_commit": "imgtrack ledger commit                   # commit .imgtrack/ alone\n"
    "imgtrack ledger commit --push            # CI: commit and land it, rebasing if main moved",
    "hooks_install": "imgtrack hooks install && imgtrack hooks status\n"
    "cd /srv/git/project.git && imgtrack hooks install --server   # on the git server",
}


def _command(group: Any, name: str, func: Callable[[Args], int | None]) -> _Parser:
    doc = " ".join((func.__doc__ or "").split())
    examples = EXAMPLES.get(func.__name__)
    parser: _Parser = group.add_parser(
        name,
        help=doc,
        description=doc,
        epilog=f"examples:\n{_indent(examples)}" if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=func)
    return parser


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def _group(commands: Any, name: str, about: str) -> Any:
    """A command holding commands (`imgtrack hooks install`); alone, it prints its help."""
    group: _Parser = commands.add_parser(name, help=about, description=about)
    group.set_defaults(func=lambda _a: group.print_help())
    return group.add_subparsers(title="commands", metavar="COMMAND")


def _json(p: _Parser) -> None:
    p.add_argument("--json", action="store_true", help="Print the result as JSON on stdout.")


def _tls_options(p: _Parser) -> None:
    p.add_argument(
        "--ca-file", metavar="FILE", type=Path, help="PEM CA certificate that signs the registry's TLS certificate."
    )
    p.add_argument("--insecure", action="store_true", help="Plain HTTP to the registry (loopback hosts may always).")


def _registry_options(p: _Parser, credentials: bool = False, transfer: bool = False) -> None:
    if transfer:
        p.add_argument(
            "--jobs", metavar="N", type=_bounded(int, 1, 32), default=4, help="Blobs transferred in parallel (1-32)."
        )
    p.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_bounded(float, 0.1, 86400.0),
        default=60.0,
        help="Seconds a registry may stay silent before a retry.",
    )
    _tls_options(p)
    if credentials:
        p.add_argument("--username", metavar="USER", help="Registry user (else environment, docker or podman config).")
        p.add_argument("--password-stdin", action="store_true", help="Read the registry password from stdin.")
    if transfer:
        p.add_argument("--quiet", "-q", action="store_true", help="No progress on stderr.")
        p.add_argument(
            "--no-referrers",
            action="store_true",
            help="Leave the image's referrers (signatures, SBOMs, attestations) behind; its record is still attached.",
        )


class _Skipped:
    """Stands in for the parser of a command this run does not invoke: what it is told is dropped."""

    def __getattr__(self, _name: str) -> Callable[..., _Skipped]:
        return lambda *_args, **_kwargs: self


class _Only:
    """The sub-parsers action, adding only the parser of the invoked command (all of them when `only` is
    None): building all 31 is ~8 ms of every run, a twentieth of a no-op re-push."""

    def __init__(self, action: Any, only: str | None) -> None:
        self.action, self.only, self.added = action, only, False

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if self.only is not None and name != self.only:
            return _Skipped()
        self.added = True
        return self.action.add_parser(name, **kwargs)


def _invoked(args: list[str]) -> str | None:
    """The command word of `args` when nothing but --debug comes before it (so `imgtrack -h` and
    `imgtrack --version` see every command)."""
    for arg in args:
        if arg != "--debug":
            return None if arg.startswith("-") else arg
    return None


def build_parser(only: str | None = None) -> _Parser:
    """The whole parser; with `only`, one that knows only that command (the whole one if it is no command)."""
    parser = _Parser(
        prog="imgtrack",
        description="Track container images like git tracks code: digest -> commit -> version, under a tagging "
        "policy. imgtrack keeps a ledger of built images in your git repository (.imgtrack/).",
    )
    parser.add_argument("--debug", action="store_true", help="Show tracebacks of internal errors.")
    parser.add_argument("--version", action="version", version=f"imgtrack {__version__}")
    commands = _Only(parser.add_subparsers(title="commands", metavar="COMMAND"), only)

    p = _command(commands, "init", init)
    p.add_argument("--force", action="store_true", help="Rewrite the config with the defaults.")

    p = _command(commands, "record", record)
    p.add_argument(
        "source", nargs="?", type=Path, help="OCI layout directory, OCI layout tar, or buildx metadata JSON."
    )
    p.add_argument("--image", metavar="NAME", required=True, help="Image name from .imgtrack/config.toml.")
    p.add_argument("--version", metavar="VERSION", help="Semantic version (default: derived from git tags).")
    p.add_argument("--tag", metavar="TAG", action="append", help="Extra tag (repeatable).")
    p.add_argument("--commit", metavar="REV", help="Commit the image was built from (default HEAD).")
    p.add_argument("--digest", metavar="DIGEST", help="Record a build another tool pushed, by digest.")
    p.add_argument("--ref-name", metavar="NAME", help="Which image of a layout holding several.")
    p.add_argument("--allow-dirty", action="store_true", help="Record a dev build from uncommitted changes.")
    p.add_argument(
        "--accept-mismatch",
        action="store_true",
        help="Record even when the image's own labels or provenance name another commit (the mismatch is recorded).",
    )
    _json(p)

    p = _command(commands, "log", log)
    p.add_argument("image", nargs="?", help="Only this image.")
    p.add_argument("-n", metavar="N", type=_bounded(int, 0, 2**63 - 1), help="At most N records.")
    _json(p)

    p = _command(commands, "show", show)
    p.add_argument("ref", help="Digest (prefix), version, tag or commit (prefix); IMAGE@REF narrows.")
    _json(p)

    p = _command(commands, "resolve", resolve)
    p.add_argument("spec", metavar="IMAGE@RANGE", help="e.g. api@^1.4, api@~1.4.2, api@1.x")
    p.add_argument("--repository", metavar="REPOSITORY", help="Print REPOSITORY@digest for deployment.")
    _json(p)

    p = _command(commands, "diff", diff)
    p.add_argument(
        "a", metavar="A", help="A build as show takes it (digest, IMAGE@VERSION, tag, commit), or repo@sha256:…."
    )
    p.add_argument("b", metavar="B", help="The build to compare it with.")
    _registry_options(p)
    _json(p)

    p = _command(commands, "deploy", deploy)
    p.add_argument("ref", metavar="IMAGE@VERSION", help="The build, as show takes it.")
    p.add_argument("--env", metavar="NAME", required=True, help="An environment from [environments] in the config.")
    p.add_argument("--to", metavar="REPOSITORY", help="Promote it to this repository first (by digest).")
    p.add_argument("--bad", action="store_true", help="Mark the build bad in the environment instead.")
    _registry_options(p, credentials=True, transfer=True)
    _json(p)

    p = _command(commands, "status", status)
    p.add_argument("image", nargs="?", help="Only this image.")
    p.add_argument(
        "--html", metavar="FILE", type=Path, help="Write the status and a timeline per image as one HTML page."
    )
    _json(p)

    p = _command(commands, "rollback", rollback)
    p.add_argument("image", metavar="IMAGE", help="The image to roll back.")
    p.add_argument("--env", metavar="NAME", required=True, help="The environment it runs in.")
    _registry_options(p)
    _json(p)

    p = _command(commands, "pin", pin)
    p.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        type=Path,
        help="Kubernetes YAML, kustomization, Helm values or compose files.",
    )
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument("--to", metavar="IMAGE@RANGE", help="Pin to the highest recorded version in the range.")
    choice.add_argument("--env", metavar="NAME", help="Pin to what that environment runs.")
    p.add_argument("--check", action="store_true", help="Change nothing; exit 1 listing what is not pinned.")
    _json(p)

    p = _command(commands, "verify", verify)
    p.add_argument("--remote", action="store_true", help="Also check every recorded push against its registry (drift).")
    _registry_options(p)
    _json(p)

    p = _command(commands, "push", push)
    p.add_argument("source", help="An OCI layout or layout tar, or IMAGE@VERSION of a recorded image.")
    p.add_argument(
        "--to",
        metavar="DEST",
        action="append",
        help="REPOSITORY (host/path) or oci:PATH; repeatable; default: the image's repositories.",
    )
    p.add_argument("--image", metavar="NAME", help="Image name, to record a layout first.")
    p.add_argument("--version", metavar="VERSION", help="Version, when recording first.")
    p.add_argument("--tag", metavar="TAG", action="append", help="Extra tag, when recording first.")
    _registry_options(p, credentials=True, transfer=True)
    _json(p)

    p = _command(commands, "audit", audit)
    p.add_argument(
        "source",
        metavar="FILE|-",
        nargs="?",
        default="-",
        help="Reference/digest lines, kubectl get pods -o json, Kubernetes YAML, or a compose file; "
        "- for stdin (the default).",
    )
    p.add_argument("--remote", action="store_true", help="Resolve tag-only references through their registries.")
    p.add_argument(
        "--fail-on",
        metavar="STATUSES",
        default="unknown,latest,mismatch,invalid",  # commands/audit.py's DEFAULT_FAIL_ON
        help="Statuses that make the exit status 1.",
    )
    p.add_argument("--env", metavar="NAME", help="Record what runs as seen in this environment (ledger facts).")
    _registry_options(p)
    _json(p)

    p = _command(commands, "promote", promote)
    p.add_argument("source", metavar="IMAGE@VERSION", help="A recorded image (or its digest or tag).")
    p.add_argument(
        "--to", metavar="REPOSITORY", action="append", required=True, help="Repository to promote to (repeatable)."
    )
    _registry_options(p, credentials=True, transfer=True)
    _json(p)

    p = _command(commands, "pull", pull)
    p.add_argument(
        "source",
        help="IMAGE@VERSION, a digest or tag from the ledger, host/repo[:tag|@digest], or oci:PATH[:tag|@digest].",
    )
    p.add_argument("--to", metavar="PATH", type=Path, required=True, help="OCI layout directory to pull into.")
    _registry_options(p, credentials=True, transfer=True)
    _json(p)

    p = _command(commands, "inspect", inspect)
    p.add_argument("reference", metavar="REFERENCE", help="repo@sha256:…, repo:tag, or oci:DIR[:TAG].")
    _registry_options(p, credentials=True)
    _json(p)

    p = _command(commands, "login", login)
    p.add_argument("registry", help="Registry host[:port].")
    p.add_argument("--username", "-u", metavar="USER", required=True, help="Registry user.")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="Read the password from stdin (the only way: never on the command line).",
    )
    _tls_options(p)

    p = _command(commands, "logout", logout)
    p.add_argument("registry", help="Registry host[:port].")

    p = _command(
        _group(commands, "export", "Write what the ledger knows in another tool's format."),
        "allowlist",
        export_allowlist,
    )
    p.add_argument("--format", metavar="FORMAT", default="kyverno", help="Policy format: kyverno (a ClusterPolicy).")
    p.add_argument("--image", metavar="NAME", action="append", help="Only this image (repeatable).")
    p.add_argument("--releases-only", action="store_true", help="Only release versions from clean trees.")
    p.add_argument("--name", metavar="NAME", default="imgtrack-recorded-images", help="The policy's metadata.name.")
    p.add_argument("--audit", action="store_true", help="Report violations instead of refusing Pods.")
    p.add_argument("--output", "-o", metavar="FILE", type=Path, help="Write here (atomically), not stdout.")
    p.add_argument("--json", action="store_true", help="The policy as JSON (kubectl takes either).")

    ledger_commands = _group(commands, "ledger", "Upkeep of the ledger in git: migrate, commit.")
    _json(_command(ledger_commands, "migrate", ledger_migrate))
    p = _command(ledger_commands, "commit", ledger_commit)
    p.add_argument("--message", "-m", metavar="MESSAGE", help="Commit subject (default: what changed).")
    p.add_argument(
        "--push",
        metavar="REMOTE",
        nargs="?",
        const="",
        help="Then push the branch (to its upstream, or REMOTE), rebasing ledger commits if it moved.",
    )
    _json(p)

    hooks_commands = _group(commands, "hooks", "Install, remove or inspect the pre-push (or server) hook.")
    for name, func in (("install", hooks_install), ("uninstall", hooks_uninstall), ("status", hooks_status)):
        p = _command(hooks_commands, name, func)
        p.add_argument(
            "--server",
            action="store_true",
            help="The pre-receive hook of a bare repository on a git server, which no client can skip.",
        )
        _json(p)

    p = _command(commands, "completion", completion)
    p.add_argument("shell", nargs="?", choices=("bash", "zsh", "fish"), help="The shell.")
    p.add_argument("--install", action="store_true", help="Write it where the shell finds a user's completions.")
    p.add_argument("--list", metavar="KIND", help=argparse.SUPPRESS)  # what the scripts ask at completion time

    hook_commands = _group(commands, "hook", "What installed hooks run.")
    p = _command(hook_commands, "pre-push", hook_pre_push)
    p.add_argument("remote", nargs="?", default="", help="Remote name, as git passes it.")
    p.add_argument("url", nargs="?", default="", help="Remote URL, as git passes it.")
    _command(hook_commands, "pre-receive", hook_pre_receive)
    return parser if commands.added else build_parser()


def _dispatch(args: list[str]) -> int | None:
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes the locale could not decode reach Python as lone surrogates
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise UsageError(f"argument '{shown}' is not UTF-8 text; give names, digests and paths as UTF-8") from None
    parser = build_parser(_invoked(args))
    parsed = parser.parse_args(args)
    if not hasattr(parsed, "func"):  # `imgtrack` alone
        parser.print_help()
        return 0
    return parsed.func(parsed)  # type: ignore[no-any-return]


def run_ci_job(job: Callable[[Mapping[str, str], Path], str | None]) -> NoReturn:
    """Entry point of `python -m imgtrack.ci_job` (action.yml, ci/gitlab/imgtrack.yml), which hands its
    job in: the job's outcome becomes its exit status here, as every command's does."""
    import os

    from imgtrack.exits import run_main

    def call(_args: list[str]) -> None:
        from imgtrack import output

        shown = job(os.environ, Path.cwd())
        if shown:
            output.emit(shown)

    sys.exit(run_main(call, sys.argv[1:]))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command and turn every outcome into an exit status."""

    # Start-up of registry commands, this process only: imgtrack's HTTP is synchronous, but httpcore
    # imports trio whenever it is installed (~70 ms), and httpx imports its own command-line tool (~35 ms);
    # both already handle ImportError, which a None entry in sys.modules raises.
    for unused in ("trio", "httpx._main"):
        sys.modules.setdefault(unused, None)  # type: ignore[arg-type]
    from imgtrack.exits import run_main

    sys.exit(run_main(_dispatch, list(sys.argv[1:] if argv is None else argv)))
