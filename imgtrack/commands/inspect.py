"""`imgtrack inspect REFERENCE`: an image and what is attached to it, from the registry (or layout) alone.

No git repository is needed: the answer to "which commit and version is this digest?" comes from the
record artifact `push` attached to the image (docs/security.md says what that does and does not prove).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgtrack.artifact import attached_record
from imgtrack.errors import InvalidReference
from imgtrack.oci.layout import Descriptor, describe, open_layout, select_entry
from imgtrack.oci.pool import Registries
from imgtrack.oci.reference import parse_reference
from imgtrack.oci.referrers import layout_referrers


@dataclass
class Inspection:
    reference: str
    digest: str
    media_type: str
    platforms: list[tuple[str, str]]  # (platform, manifest digest)
    record: dict[str, Any] | None  # the attached imgtrack record, if any
    record_artifact: str = ""  # its artifact's digest
    referrers: list[Descriptor] = field(default_factory=list)  # every referrer, the record's too


def inspect_image(text: str, registries: Registries) -> Inspection:
    ref = parse_reference(text)
    if ref.is_layout:
        path = Path(ref.repository)
        if not (path / "index.json").is_file() and not path.is_file():
            raise InvalidReference(f"{text}: no OCI layout at {path}; give oci:DIR[:TAG] of a layout")
        layout = open_layout(path)
        try:
            top = select_entry(layout, ref.tag, ref.digest)
            image = describe(layout, digest=top.digest, verify=False)
            found = layout_referrers(layout, image.digest)
            record, artifact = attached_record(layout, found, image.digest, text)
        finally:
            layout.close()
    else:
        registries.targets.add(ref.registry)  # flag or environment credentials go to this registry
        reference = ref.digest or ref.tag or "latest"
        layout = registries.open(ref, reference)
        try:
            image = describe(layout, verify=False)
            found = registries.referrers(ref).of(image.digest)
            record, artifact = attached_record(layout, found, image.digest, text)
        finally:
            layout.close()
    return Inspection(
        reference=text,
        digest=image.digest,
        media_type=image.media_type,
        platforms=[(m.platform, m.digest) for m in image.manifests],
        record=record,
        record_artifact=artifact,
        referrers=found,
    )
