"""`imgtrack pin FILE…`: rewrite the image references of deployment files to digests from the ledger.

Kubernetes workloads (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob; containers
and init containers; multi-document files), kustomization `images:`, Helm values `image:` blocks and
compose files (`services.*.image`) (docs/release.md). A reference whose
repository is a configured image's becomes `repository@sha256:…` of the chosen build, with a comment
naming its version and commit. The YAML is parsed to find each reference, and only its characters and
its line's end are replaced: comments, key order, quoting and indentation elsewhere stay byte for byte.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imgtrack.errors import ImgtrackError, LocalIOError, UsageError
from imgtrack.fsutil import write_atomic
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
    left_alone: str | None = None  # why pin cannot rewrite it, though it is a configured image's

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
    edits: dict[Path, list[Edit]] = {}
    for path, text in texts.items():
        try:
            sites = _sites(text, str(path))
        except _NotDeployment as exc:
            report.skipped.append((str(path), str(exc)))
            continue
        for site in sites:
            change = _judge(project, str(path), site.line, site.ref, by_repository, chosen)
            if change.build is not None and change.status != "unknown":
                try:
                    edits.setdefault(path, []).extend(_edits(text, site, change))
                except _NotDeployment as exc:
                    change = replace(change, left_alone=str(exc))
            report.changes.append(change)
    unwritable = [p for p in edits if not _writable(p)]
    if unwritable and not check:
        raise LocalIOError(
            f"{unwritable[0]} cannot be replaced (its folder is not writable); nothing was changed. "
            "Check its permissions or the mount, then run pin again"
        )
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
        run = ledger.current_runs(image).get(env)
        if run is not None:
            chosen[image] = ledger.read(run[0].path)
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
    """A file holding no workload, kustomization, Helm image or compose service: left alone, and said so."""


@dataclass(frozen=True)
class _Site:
    """One image reference in a file. `node` is the scalar holding it (a workload or compose `image:`),
    or the mapping whose fields make it up (a kustomization `images:` entry, a Helm `image:` block);
    `tag_key` is that mapping's tag field, which a kustomization loses beside the digest."""

    line: int
    ref: str  # the reference a runtime would pull
    node: Any
    tag_key: str | None = None
    drop_tag: bool = False


Edit = tuple[int, int, str, int, str]  # start, end, replacement, end of the line for our comment (-1: none), note


def _sites(text: str, name: str) -> list[_Site]:
    """Every image reference of the workloads, kustomizations, Helm values and compose files in `text`."""
    import yaml

    try:
        docs = [d for d in yaml.compose_all(text, Loader=yaml.SafeLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        raise UsageError(f"{where}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    except RecursionError:
        raise UsageError(f"{name} is nested too deeply to be a deployment file") from None
    found: list[_Site] = []
    kinds = []
    for doc in docs:
        if not isinstance(doc, yaml.MappingNode):
            continue
        top = _mapping(doc)
        kind = top.get("kind")
        kinds.append(kind.value if isinstance(kind, yaml.ScalarNode) else None)
        if isinstance(kind, yaml.ScalarNode) and kind.value in (*_POD_KINDS, "CronJob"):
            found += [_Site(n.start_mark.line + 1, n.value, n) for n in _from_workload(top, kind.value)]
        elif isinstance(kind, yaml.ScalarNode) and kind.value == "Kustomization":
            found += _from_kustomization(top)
        elif kind is None and isinstance(top.get("services"), yaml.MappingNode):
            for service in top["services"].value:
                image = _mapping(service[1]).get("image") if isinstance(service[1], yaml.MappingNode) else None
                if isinstance(image, yaml.ScalarNode):
                    found.append(_Site(image.start_mark.line + 1, image.value, image))
        elif kind is None and "apiVersion" not in top:
            found += _from_helm_values(doc)
    if not found:
        seen = ", ".join(sorted({k for k in kinds if k})) or "no workload"
        raise _NotDeployment(
            f"holds {seen}; pin reads Kubernetes workloads, kustomizations, Helm values and compose files"
        )
    return found


def _scalar(fields: dict[str, Any], key: str) -> str:
    """The text of a scalar field, or "" when it is absent, empty, null or not a scalar."""
    import yaml

    node = fields.get(key)
    if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
        return ""
    return str(node.value)


def _compose(repository: str, tag: str, digest: str) -> str:
    return repository + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _from_kustomization(top: dict[str, Any]) -> list[_Site]:
    """`images:` entries: `name` (as the resources write it), `newName`, `newTag`, `digest`."""
    import yaml

    images = top.get("images")
    if not isinstance(images, yaml.SequenceNode):
        return []
    sites = []
    for entry in images.value:
        if not isinstance(entry, yaml.MappingNode):
            continue
        fields = _mapping(entry)
        repository = _scalar(fields, "newName") or _scalar(fields, "name")
        if repository:
            ref = _compose(repository, _scalar(fields, "newTag"), _scalar(fields, "digest"))
            sites.append(_Site(entry.start_mark.line + 1, ref, entry, "newTag", drop_tag=True))
    return sites


def _from_helm_values(doc: Any) -> list[_Site]:
    """Every `image:` block with a `repository` (and optionally `registry`, `tag`, `digest`), at any depth:
    the keys most charts read. The tag stays beside the digest: charts differ in what they do with it."""
    import yaml

    sites = []
    seen: set[int] = set()
    stack = [doc]
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias points back at its anchor
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack += node.value
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == "image" and isinstance(value, yaml.MappingNode):
                    fields = _mapping(value)
                    repository = _scalar(fields, "repository")
                    if repository:
                        registry = _scalar(fields, "registry")
                        full = f"{registry}/{repository}" if registry else repository
                        ref = _compose(full, _scalar(fields, "tag"), _scalar(fields, "digest"))
                        sites.append(_Site(value.start_mark.line + 1, ref, value, "tag"))
                        continue
                stack.append(value)
    return sorted(sites, key=lambda s: s.node.start_mark.index)


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


def _edits(text: str, site: _Site, change: Change) -> list[Edit]:
    """The replacements that pin one site to `change.new`, with our comment on the line holding the digest.
    Raises _NotDeployment for a mapping in flow style ({...}), which pin does not rewrite."""
    import yaml

    assert change.build is not None
    note = f"{change.build.image} {change.build.version} {change.build.commit[:7]}"
    node = site.node
    if isinstance(node, yaml.ScalarNode):
        quote = text[node.start_mark.index] if text[node.start_mark.index] in "'\"" else ""
        start, end = node.start_mark.index, node.end_mark.index
        return [(start, end, f"{quote}{change.new}{quote}", _line_end(text, end), note)]
    if node.flow_style:
        raise _NotDeployment("the image is a {...} mapping; write it in block style to pin it")
    digest = change.build.digest
    pairs = {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}
    tag = pairs.get(site.tag_key) if site.tag_key else None
    edits: list[Edit] = []
    if "digest" in pairs and not isinstance(pairs["digest"][1], yaml.ScalarNode):
        raise _NotDeployment("its digest is not a string; write `digest: sha256:…` or remove the key to pin it")
    if "digest" in pairs:
        value = pairs["digest"][1]
        start, end = value.start_mark.index, value.end_mark.index
        if start == end:  # `digest:` with nothing after it
            edits.append((start, end, f" {digest}", _line_end(text, end), note))
        else:
            quote = text[start] if text[start] in "'\"" else ""
            edits.append((start, end, f"{quote}{digest}{quote}", _line_end(text, end), note))
        if site.drop_tag and tag is not None and _own_line(text, tag[0], tag[1]):
            line_start = text.rfind("\n", 0, tag[0].start_mark.index) + 1
            edits.append((line_start, _line_end(text, tag[1].end_mark.index) + 1, "", -1, ""))
    elif site.drop_tag and tag is not None and isinstance(tag[1], yaml.ScalarNode):
        start, end = tag[0].start_mark.index, tag[1].end_mark.index
        edits.append((start, end, f"digest: {digest}", _line_end(text, end), note))
    else:
        indent = " " * node.value[0][0].start_mark.column
        last = node.value[-1][1].end_mark.index
        if last > 0 and text[last - 1] == "\n":  # the last value ends its line (a nested block)
            edits.append((last, last, f"{indent}digest: {digest}  {COMMENT} {note}\n", -1, ""))
        else:
            at = _line_end(text, last)
            edits.append((at, at, f"\n{indent}digest: {digest}  {COMMENT} {note}", -1, ""))
    return edits


def _own_line(text: str, key: Any, value: Any) -> bool:
    """Whether a key and its value fill their line alone (so the line can go), not after a `- `."""
    line_start = text.rfind("\n", 0, key.start_mark.index) + 1
    return text[line_start : key.start_mark.index].strip() == "" and key.start_mark.line == value.end_mark.line


def _writable(path: Path) -> bool:
    """Whether `path` can be replaced: its folder takes a new file (write_atomic renames one over it)."""
    return os.access(path.parent, os.W_OK | os.X_OK)


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end == -1 else end


def _judge(
    project: Project,
    file: str,
    line: int,
    value: str,
    by_repository: dict[str, str],
    chosen: dict[str, Build],
) -> Change:
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


def _apply(text: str, spans: list[Edit]) -> str:
    """The text with each reference replaced and its line's imgtrack comment set, from the end backwards
    so that earlier offsets stay true. A comment of the user's on that line stays, and gets no company."""
    out = text
    for start, end, replacement, line_end, note in sorted(spans, reverse=True):
        if line_end < 0:
            out = out[:start] + replacement + out[end:]
            continue
        rest = out[end:line_end]
        ours = rest.find(COMMENT)
        if ours != -1:
            rest = rest[:ours].rstrip()
        tail = rest if "#" in rest else f"{rest.rstrip()}  {COMMENT} {note}"
        out = out[:start] + replacement + tail + out[line_end:]
    return out
