"""What is running, read from the usual places: reference/digest lines, `kubectl get pods -o json`,
Kubernetes manifests (multi-document YAML, `List`), and docker compose files. Pure: text in, images out."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from imgtrack.errors import UsageError
from imgtrack.oci.digest import DIGEST_PATTERN, is_digest

_DIGEST_IN_RE = re.compile(DIGEST_PATTERN)
_POD_TEMPLATE_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
_STATUS_LISTS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")


@dataclass(frozen=True)
class RunningImage:
    """One image in use: where it was found, the reference as written, and the digest the runtime reports."""

    where: str
    reference: str
    digest: str | None


# Limits for input nobody vouches for (docs/audit.md): what a cluster's whole `kubectl get -o json` stays
# well inside, and what a hostile file cannot get past.
MAX_INPUT_BYTES = 512 * 1024 * 1024
MAX_ALIASED = 1_000_000  # values YAML aliases may add to a document, beyond those written out


def parse_input(text: str, name: str = "input") -> list[RunningImage]:
    """Detect the input's shape and read the images from it; UsageError for what cannot be read."""
    stripped = text.lstrip()
    if not stripped:
        return []
    try:
        if stripped.startswith(("{", "[")):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{name} looks like JSON but is not ({exc}); pass kubectl's -o json output whole"
                ) from None
            return list(_from_kubernetes(doc, name))
        if _looks_like_yaml_document(stripped):
            images: list[RunningImage] = []
            for doc in _yaml_documents(text, name):
                if isinstance(doc, dict) and isinstance(doc.get("services"), dict) and "kind" not in doc:
                    images += _from_compose(doc, name)
                else:
                    images += _from_kubernetes(doc, name)
            return images
    except RecursionError:
        raise UsageError(
            f"{name} is nested too deeply to be a workload list; pass kubectl's or compose's output"
        ) from None
    return list(_from_lines(text, name))


def _yaml_documents(text: str, name: str) -> Iterator[Any]:
    """The documents of a YAML stream, each checked before it is built: no alias that refers to itself,
    and no more than MAX_ALIASED values added by aliases (an alias bomb is small on disk)."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            sizes = _expanded_size(node)
            if sizes is None:
                raise UsageError(f"{name}: a YAML alias refers to the value that holds it; fix the file")
            if sizes[0] - sizes[1] > MAX_ALIASED:
                raise UsageError(
                    f"{name}: the YAML's aliases add more than {MAX_ALIASED:,} values; pass the workloads without them"
                )
            doc = loader.construct_document(node)
            if doc is not None:
                yield doc
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f"{name}:{line + 1}" if line is not None else name
        raise UsageError(f"{where}: not valid YAML ({str(exc).splitlines()[0]}); fix the file") from None
    finally:
        loader.dispose()


def _expanded_size(root: Any) -> tuple[int, int] | None:
    """(values with every alias expanded, values written out) of `root`, counted without expanding
    anything (each node once); None when a node contains itself. Iterative: a deep document cannot
    exhaust the stack."""
    import yaml

    def children(node: Any) -> list[Any]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        return []

    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            sizes[key] = min(2 * MAX_ALIASED + len(sizes), 1 + sum(sizes[id(c)] for c in children(node)))
            continue
        if key in sizes:
            continue
        if key in on_path:
            return None
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in sizes)
    return sizes[id(root)], len(sizes)


_YAML_KEY_RE = re.compile(r"^(---\s*$|[A-Za-z_][\w.-]*:(\s|$))")


def _looks_like_yaml_document(text: str) -> bool:
    """A top-level `key:` or `---` line. A reference line never matches: a colon in one (a port or a tag)
    is followed by a character, not by a space or the line's end."""
    return any(_YAML_KEY_RE.match(line) for line in text.splitlines() if not line.lstrip().startswith("#"))


def _from_lines(text: str, name: str) -> Iterator[RunningImage]:
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if " " in line:
            raise UsageError(f"{name}:{number}: {line[:80]!r} is not one image reference or digest a line")
        digest = line if is_digest(line) else _digest_in(line)
        yield RunningImage(f"{name}:{number}", line, digest)


def _digest_in(text: str) -> str | None:
    tail = text[text.rfind("@") + 1 :]  # the usual place: repo@sha256:…, docker-pullable://repo@sha256:…
    if is_digest(tail):
        return tail
    m = _DIGEST_IN_RE.search(text)
    return m.group(0) if m else None


def _from_compose(doc: dict[str, Any], name: str) -> Iterator[RunningImage]:
    for service, spec in doc["services"].items():
        if isinstance(spec, dict) and isinstance(spec.get("image"), str):
            yield RunningImage(f"{name}: service {service}", spec["image"], _digest_in(spec["image"]))


def _from_kubernetes(doc: Any, name: str) -> Iterator[RunningImage]:
    if isinstance(doc, list):
        for item in doc:
            yield from _from_kubernetes(item, name)
        return
    if not isinstance(doc, dict):
        return
    kind = doc.get("kind")
    if kind == "List" or kind and kind.endswith("List") or "items" in doc and kind is None:
        for item in doc.get("items") or []:
            yield from _from_kubernetes(item, name)
        return
    meta = doc.get("metadata") or {}
    label = f"{kind or 'object'} {meta.get('namespace', 'default') + '/' if meta.get('namespace') else ''}{meta.get('name', '?')}"
    spec = doc.get("spec") or {}
    if kind == "Pod":
        yield from _from_pod(spec, doc.get("status") or {}, label)
    elif kind in _POD_TEMPLATE_KINDS:
        yield from _from_pod(((spec.get("template") or {}).get("spec")) or {}, {}, label)
    elif kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        yield from _from_pod(((job.get("template") or {}).get("spec")) or {}, {}, label)


def _from_pod(spec: dict[str, Any], status: dict[str, Any], label: str) -> Iterator[RunningImage]:
    reported: dict[str, str] = {}
    for key in _STATUS_LISTS:
        for entry in status.get(key) or []:
            if isinstance(entry, dict) and entry.get("name") and entry.get("imageID"):
                # "docker-pullable://repo@sha256:…", "docker.io/library/nginx@sha256:…" or "sha256:…".
                digest = _digest_in(str(entry["imageID"]))
                if digest:
                    reported[entry["name"]] = digest
    for key in _CONTAINER_LISTS:
        for container in spec.get(key) or []:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                cname = container.get("name", "?")
                image = container["image"]
                yield RunningImage(f"{label} {cname}", image, reported.get(cname) or _digest_in(image))
