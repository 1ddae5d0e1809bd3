"""`imgtrack pin FILE…`: rewrite the image references of deployment files to digests from the ledger.

Kubernetes workloads (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob; containers
and init containers; multi-document files) and compose files (`services.*.image`). A reference whose
repository is a configured image's becomes `repository@sha256:…` of the chosen build, with a comment
naming its version and commit. The YAML is parsed to find each reference, and only its characters and
its line's end are replaced: comments, key order, quoting and indentation elsewhere stay byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgtrack.errors import ImgtrackError, UsageError
from imgtrack.fsutil import write_atomic
from imgtrack.ledger.ledger import current_runs
from imgtrack.ledger.schema import Build
from imgtrack.oci.reference import parse_reference
from imgtrack.project import Project
from imgtrack.versions import parse_range

MAX_FILE_BYTES = 16 * 1024 * 1024
COMMENT = "# imgtrack:"
_POD_KINDS = ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController")
_CONTAINER_LISTS = ("initContainers", "containers")


@dataclass(frozen=True)
class Change:
    file: str
    line: int
    old: str
    new: str  # what it is, or becomes
    # "tag" (no digest), "behind" (another digest than the chosen build's), "unknown" (a digest the
    # ledger does not record), "current" (already the chosen digest), or "other" (a repository no
    # configured image has: left alone)
    status: str
    build: Build | None = None

    @property
    def fails_check(self) -> bool:
        return self.status in ("tag", "behind", "unknown")


@dataclass
class PinReport:
    changes: list[Change] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why it was left alone)
    written: list[str] = field(default_factory=list)  # the files rewritten

    @property
    def failing(self) -> list[Change]:
        return [c for c in self.changes if c.fails_check]


def pin_files(project: Project, files: list[Path], to: str | None, env: str | None, check: bool) -> PinReport:
    if (to is None) == (env is None):
        raise UsageError("give the builds to pin to: --to IMAGE@RANGE, or --env NAME (what that environment runs)")
    chosen = _chosen_builds(project, to, env)
    by_repository = {
        parse_reference(repo).name: image for image, cfg in project.config.images.items() for repo in cfg.repositories
    }
    report = PinReport()
    texts = {path: _read(path) for path in files}  # all read and parsed before any is written
    edits: dict[Path, list[tuple[int, int, str, int, str]]] = {}
    for path, text in texts.items():
        try:
            scalars = _image_scalars(text, str(path))
        except _NotDeployment as exc:
            report.skipped.append((str(path), str(exc)))
            continue
        for start, end, value, line_end in scalars:
            change = _judge(project, str(path), text, start, value, by_repository, chosen)
            report.changes.append(change)
            if change.build is not None and change.status != "unknown":
                quote = text[start] if text[start] in "'\"" else ""
                note = f"{change.build.image} {change.build.version} {change.build.commit[:7]}"
                edits.setdefault(path, []).append((start, end, f"{quote}{change.new}{quote}", line_end, note))
    if not check:
        for path, spans in edits.items():
            new_text = _apply(texts[path], spans)
            if new_text != texts[path]:
                write_atomic(path, new_text.encode("utf-8"), mode=path.stat().st_mode & 0o777)
                report.written.append(str(path))
    return report


def _chosen_builds(project: Project, to: str | None, env: str | None) -> dict[str, Build]:
    ledger = project.ledger
    if to is not None:
        image, sep, text = to.partition("@")
        if not sep or not image or not text:
            raise UsageError(f"--to {to!r} is not IMAGE@RANGE; write e.g. api@^1.4")
        ledger.require_image(image)
        build = ledger.resolve(image, parse_range(text))
        if build is None:
            from imgtrack.errors import NotFound

            raise NotFound(f"no recorded version of {image} satisfies {text!r}; see `imgtrack log {image}`")
        return {image: build}
    assert env is not None
    project.config.environment(env, project.config_path)
    chosen = {}
    for image in ledger.index().images():
        runs = current_runs([e for e in ledger.environment_events(image) if e[0].env == env])
        if env in runs:
            chosen[image] = runs[env][0]
    return chosen


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"{path} cannot be read ({exc.strerror}); check the path") from None
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{path} is over 16 MiB; a deployment file is far smaller")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; pin reads YAML deployment files") from None


class _NotDeployment(Exception):
    """A file holding no workload or compose service: left alone, and said so."""


def _image_scalars(text: str, name: str) -> list[tuple[int, int, str, int]]:
    """(start, end, value, end of its line) of every image reference in a workload or compose file."""
    import yaml

    try:
        docs = [d for d in yaml.compose_all(text, Loader=yaml.SafeLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise UsageError(f"{where}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    except RecursionError:
        raise UsageError(f"{name} is nested too deeply to be a deployment file") from None
    found: list[Any] = []
    kinds = []
    for doc in docs:
        if not isinstance(doc, yaml.MappingNode):
            continue
        top = _mapping(doc)
        kind = top.get("kind")
        kinds.append(kind.value if isinstance(kind, yaml.ScalarNode) else None)
        if isinstance(kind, yaml.ScalarNode) and kind.value in (*_POD_KINDS, "CronJob"):
            found += _from_workload(top, kind.value)
        elif kind is None and isinstance(top.get("services"), yaml.MappingNode):
            for service in top["services"].value:
                image = _mapping(service[1]).get("image") if isinstance(service[1], yaml.MappingNode) else None
                if isinstance(image, yaml.ScalarNode):
                    found.append(image)
    if not found:
        seen = ", ".join(sorted({k for k in kinds if k})) or "no workload"
        raise _NotDeployment(f"holds {seen}; pin reads Kubernetes workloads and compose files")
    return [(n.start_mark.index, n.end_mark.index, n.value, _line_end(text, n.end_mark.index)) for n in found]


def _mapping(node: Any) -> dict[str, Any]:
    import yaml

    return {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _from_workload(top: dict[str, Any], kind: str) -> list[Any]:
    import yaml

    def get(node: Any, *keys: str) -> Any:
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                return None
            node = _mapping(node).get(key)
        return node

    spec = top.get("spec")
    pod = (
        spec
        if kind == "Pod"
        else get(spec, "jobTemplate", "spec", "template", "spec")
        if kind == "CronJob"
        else get(spec, "template", "spec")
    )
    images = []
    for key in _CONTAINER_LISTS:
        containers = get(pod, key)
        if isinstance(containers, yaml.SequenceNode):
            for container in containers.value:
                image = get(container, "image")
                if isinstance(image, yaml.ScalarNode):
                    images.append(image)
    return images


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end == -1 else end


def _judge(
    project: Project,
    file: str,
    text: str,
    start: int,
    value: str,
    by_repository: dict[str, str],
    chosen: dict[str, Build],
) -> Change:
    line = text.count("\n", 0, start) + 1
    try:
        ref = parse_reference(value)
    except ImgtrackError:
        return Change(file, line, value, value, "other")
    image = by_repository.get(ref.name)
    if image is None:
        return Change(file, line, value, value, "other")
    build = chosen.get(image)
    if ref.digest is not None and not project.ledger.find(ref.digest):
        return Change(file, line, value, value, "unknown", build)
    if build is None:
        return Change(file, line, value, value, "tag" if ref.digest is None else "current")
    repository = value.split("@", 1)[0]
    if ref.tag is not None:
        repository = repository[: repository.rfind(":")]
    new = f"{repository}@{build.digest}"
    status = "current" if ref.digest == build.digest else "tag" if ref.digest is None else "behind"
    return Change(file, line, value, new, status, build)


def _apply(text: str, spans: list[tuple[int, int, str, int, str]]) -> str:
    """The text with each reference replaced and its line's imgtrack comment set, from the end backwards
    so that earlier offsets stay true. A comment of the user's on that line stays, and gets no company."""
    out = text
    for start, end, replacement, line_end, note in sorted(spans, reverse=True):
        rest = out[end:line_end]
        ours = rest.find(COMMENT)
        if ours != -1:
            rest = rest[:ours].rstrip()
        tail = rest if "#" in rest else f"{rest.rstrip()}  {COMMENT} {note}"
        out = out[:start] + replacement + tail + out[line_end:]
    return out
