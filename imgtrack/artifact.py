"""The record as an OCI artifact attached to its image (docs/security.md, "The record artifact"), and
read back from one: what lets a registry answer "which commit is this digest?" with no git at all."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from imgtrack.errors import ImgtrackError, LayoutError, RegistryError
from imgtrack.ledger.schema import Record
from imgtrack.oci.layout import Descriptor, Layout
from imgtrack.oci.referrers import Artifact, make_artifact

RECORD_ARTIFACT_TYPE = "application/vnd.imgtrack.record.v1+json"
PAYLOAD_SCHEMA = 1
MAX_PAYLOAD_BYTES = 256 * 1024  # a record is a few KB

REVISION = "org.opencontainers.image.revision"
VERSION = "org.opencontainers.image.version"
CREATED = "org.opencontainers.image.created"
SOURCE = "org.opencontainers.image.source"


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_payload(record: Record, source: str = "") -> bytes:
    """The record file's facts as JSON, keys sorted: the same record always gives the same bytes."""
    doc: dict[str, Any] = {
        "payload_schema": PAYLOAD_SCHEMA,
        "image": record.image,
        "digest": record.digest,
        "media_type": record.media_type,
        "version": record.version,
        "commit": record.commit,
        "tree": record.tree,
        "tags": list(record.tags),
        "recorded_at": _rfc3339(record.recorded_at),
        "recorded_by": record.recorded_by,
        "manifests": [{"platform": m.platform, "digest": m.digest, "config": m.config} for m in record.manifests],
    }
    if source:
        doc["source"] = source
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def record_artifact(record: Record, subject_size: int, source: str = "") -> Artifact:
    """The artifact of `record` about its image (`subject_size`: the size of the image's top manifest)."""
    annotations = {REVISION: record.commit, VERSION: record.version, CREATED: _rfc3339(record.recorded_at)}
    if source:
        annotations[SOURCE] = source
    subject = Descriptor(record.media_type, record.digest, subject_size)
    return make_artifact(
        subject, RECORD_ARTIFACT_TYPE, record_payload(record, source), RECORD_ARTIFACT_TYPE, annotations
    )


def parse_payload(data: bytes, where: str, subject: str, error: type[ImgtrackError] = RegistryError) -> dict[str, Any]:
    """An attached record, checked: JSON of the documented shape, about `subject` (`error`: what a
    refusal is, RegistryError from a registry, LayoutError from a layout)."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise error(f"{where}: the attached record is over {MAX_PAYLOAD_BYTES // 1024} KiB; refused")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise error(f"{where}: the attached record is not JSON; it was not written by imgtrack") from None
    wanted = {"image": str, "digest": str, "version": str, "commit": str, "tree": str, "tags": list}
    if not isinstance(doc, dict) or any(not isinstance(doc.get(k), t) for k, t in wanted.items()):
        raise error(f"{where}: the attached record lacks image, digest, version, commit, tree or tags")
    if doc["digest"] != subject:
        raise error(
            f"{where}: the attached record is about {str(doc['digest'])[:19]}…, not this image {subject[:19]}…; "
            "it was attached to the wrong image"
        )
    return doc


def attached_record(
    layout: Layout, referrers: list[Descriptor], subject: str, where: str
) -> tuple[dict[str, Any] | None, str]:
    """The newest imgtrack record among `referrers` (read from `layout`, where they are, and checked),
    with its artifact's digest; (None, "") when there is none."""
    ours = [d for d in referrers if d.artifact_type == RECORD_ARTIFACT_TYPE]
    for desc in reversed(ours):
        try:
            manifest = json.loads(layout.read_blob(desc.digest, media_type=desc.media_type))
        except (ValueError, UnicodeDecodeError, RecursionError):
            error = LayoutError if layout.local else RegistryError
            raise error(
                f"{where}: record artifact {desc.digest[:19]}… is not JSON; it was not written by imgtrack"
            ) from None
        layers = manifest.get("layers") if isinstance(manifest, dict) else None
        if not isinstance(layers, list) or not layers:
            continue
        layer = Descriptor.from_json(layers[0], f"{where}: record artifact {desc.digest[:19]}…")
        payload = layout.read_blob(layer.digest, limit=256 * 1024)
        error = LayoutError if layout.local else RegistryError
        return parse_payload(payload, f"{where}: record artifact {desc.digest[:19]}…", subject, error), desc.digest
    return None, ""
