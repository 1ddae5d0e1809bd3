"""What an image says about its own source, read at `record` and compared with the commit recorded.

Sources, each read with limits and nothing trusted beyond its shape:
* config labels and manifest or index annotations `org.opencontainers.image.revision` (also `.version`,
  `.source`, `.created`);
* BuildKit provenance attestations in an index, in both forms BuildKit has written: before 0.32,
  descriptors with platform `unknown/unknown` and the annotations `vnd.docker.reference.type:
  attestation-manifest` and `vnd.docker.reference.digest: <subject>`; from 0.32, manifests with
  `artifactType: application/vnd.docker.attestation.manifest.v1+json` and a `subject`. Their in-toto
  layers (`application/vnd.in-toto+json`) of SLSA provenance v0.2 or v1 give the git revision
  (`vcs.revision` in BuildKit's metadata, or `configSource.digest.sha1`), which buildx marks `-dirty`
  for a build from a dirty work tree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from imgtrack.oci.layout import ATTESTATION_MANIFEST_TYPE, Descriptor, Layout, is_attestation

REVISION = "org.opencontainers.image.revision"
IN_TOTO = "application/vnd.in-toto+json"
PREDICATE_TYPE = "in-toto.io/predicate-type"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
MAX_STATEMENT_BYTES = 4 * 1024 * 1024
_REVISION_RE = re.compile(r"([0-9a-f]{7,64})(-dirty)?", re.ASCII)


@dataclass(frozen=True)
class Statement:
    """One source's word on the revision: where it was read, the revision, whether marked dirty."""

    source: str
    revision: str
    dirty: bool = False

    def agrees_with(self, commit: str) -> bool:
        return commit.startswith(self.revision) and len(self.revision) >= 7


def parse_revision(text: Any) -> tuple[str, bool] | None:
    """(hex revision, dirty) from a revision string (7+ hex, optionally `-dirty`), else None."""
    if not isinstance(text, str):
        return None
    m = _REVISION_RE.fullmatch(text.strip().lower())
    return (m.group(1), m.group(2) is not None) if m else None


def _said(source: str, value: Any, found: list[Statement]) -> None:
    parsed = parse_revision(value)
    if parsed is not None:
        found.append(Statement(source, parsed[0], parsed[1]))


def _json(layout: Layout, desc: Descriptor, limit: int = 4 * 1024 * 1024) -> dict[str, Any]:
    try:
        doc = json.loads(layout.read_blob(desc.digest, limit=limit, media_type=desc.media_type))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def statements(layout: Layout, top: Descriptor) -> list[Statement]:
    """Every statement of the revision `top` (a manifest or an index) and what it holds make."""
    found: list[Statement] = []
    doc = _json(layout, top)
    kind = "index" if isinstance(doc.get("manifests"), list) else "manifest"
    annotations = doc.get("annotations")
    if isinstance(annotations, dict):
        _said(f"{kind} annotation {REVISION}", annotations.get(REVISION), found)
    if kind == "manifest":
        _manifest_statements(layout, doc, "", found)
        return found
    entries = []
    for item in doc.get("manifests", []):
        try:
            entries.append(Descriptor.from_json(item, layout.name))
        except Exception:
            continue
    for entry in entries:
        if is_attestation(entry):
            _attestation_statements(layout, entry, found)
        elif layout.has_blob(entry.digest):
            _manifest_statements(layout, _json(layout, entry), f" of {entry.platform or entry.digest[:19]}", found)
    return found


def _manifest_statements(layout: Layout, doc: dict[str, Any], where: str, found: list[Statement]) -> None:
    annotations = doc.get("annotations")
    if isinstance(annotations, dict):
        _said(f"manifest annotation{where} {REVISION}", annotations.get(REVISION), found)
    config = doc.get("config")
    if not isinstance(config, dict):
        return
    try:
        desc = Descriptor.from_json(config, layout.name)
    except Exception:
        return
    if not layout.has_blob(desc.digest):
        return
    labels = (_json(layout, desc).get("config") or {}).get("Labels") or {}
    if isinstance(labels, dict):
        _said(f"config label{where} {REVISION}", labels.get(REVISION), found)


def _attestation_statements(layout: Layout, entry: Descriptor, found: list[Statement]) -> None:
    if not layout.has_blob(entry.digest):
        return
    form = "BuildKit attestation" + (" (0.32+)" if entry.artifact_type == ATTESTATION_MANIFEST_TYPE else "")
    for item in _json(layout, entry).get("layers") or []:
        try:
            layer = Descriptor.from_json(item, layout.name)
        except Exception:
            continue
        predicate_type = layer.annotations.get(PREDICATE_TYPE, "")
        if layer.media_type != IN_TOTO or predicate_type not in (SLSA_V02, SLSA_V1, ""):
            continue
        if not layout.has_blob(layer.digest) or layer.size > MAX_STATEMENT_BYTES:
            continue
        statement = _json(layout, layer, MAX_STATEMENT_BYTES)
        predicate = statement.get("predicate")
        if not isinstance(predicate, dict):
            continue
        kind = statement.get("predicateType", predicate_type)
        name = f"{form}, SLSA provenance {'v1' if kind == SLSA_V1 else 'v0.2'}"
        for value in _provenance_revisions(predicate, kind):
            _said(name, value, found)


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def _provenance_revisions(predicate: dict[str, Any], kind: str) -> list[Any]:
    """The revisions a SLSA provenance predicate states: BuildKit's `vcs.revision`, and the commit of its
    config source."""
    if kind == SLSA_V1:
        metadata = _get(predicate, "runDetails", "metadata") or {}
        config_source = _get(predicate, "buildDefinition", "externalParameters", "configSource")
    else:
        metadata = predicate.get("metadata") or {}
        config_source = _get(predicate, "invocation", "configSource")
    values = []
    if isinstance(metadata, dict):
        for key in ("https://mobyproject.org/buildkit@v1#metadata", "buildkit_metadata"):
            values.append(_get(metadata, key, "vcs", "revision"))
    values.append(_get(config_source, "digest", "sha1"))
    return [v for v in values if v is not None]


@dataclass(frozen=True)
class Verdict:
    """How the image's word compares with the record: corroborated, uncorroborated, or a mismatch."""

    status: str  # "corroborated" | "uncorroborated" | "mismatch" | "dirty"
    agreed: tuple[Statement, ...] = ()
    disagreed: tuple[Statement, ...] = ()


def judge(found: list[Statement], commit: str, dirty: bool) -> Verdict:
    """Compare every statement with the commit recorded (and the record's tree state)."""
    unique = tuple(dict.fromkeys(found))
    against = tuple(s for s in unique if not s.agrees_with(commit))
    if against:
        return Verdict("mismatch", disagreed=against)
    marked = tuple(s for s in unique if s.dirty and not dirty)
    if marked:
        return Verdict("dirty", disagreed=marked)
    return Verdict("corroborated" if unique else "uncorroborated", agreed=unique)
