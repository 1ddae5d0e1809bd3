"""Artifacts attached to an image (OCI image-spec 1.1 `subject`, distribution-spec 1.1 referrers).

An artifact is an image manifest with an `artifactType`, the empty config and a `subject` naming the image
it is about. A registry with the referrers API indexes it on its own (it answers the manifest PUT with
an `OCI-Subject` header, and `GET /v2/<name>/referrers/<digest>` with an index of the referrers). A
registry without it gets the spec's fallback: the tag `<alg>-<hex>` of the subject's digest holds an
index of the referrers, which the writer updates read-modify-write, checks after the write and retries
when another writer's update replaced its own. An OCI layout keeps them beside its images (below).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from imgtrack.errors import RegistryError
from imgtrack.oci.digest import digest_bytes
from imgtrack.oci.layout import Descriptor, Layout, LayoutWriter
from imgtrack.oci.mediatypes import MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST


class RegistryAPI(Protocol):
    """What attaching and listing referrers asks of a registry client (oci/remote/registry.py's)."""

    registry: str

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor] | None: ...
    def get_manifest_if_any(self, repo: str, reference: str) -> tuple[bytes, str] | None: ...
    def manifest_digest(self, repo: str, reference: str) -> str | None: ...
    def has_blob(self, repo: str, digest: str) -> bool: ...
    def upload_blob(
        self, repo: str, digest: str, size: int, chunks: Callable[[], Iterator[bytes]], extent: Any
    ) -> None: ...
    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str | None: ...


EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BYTES = b"{}"
EMPTY = Descriptor(EMPTY_MEDIA_TYPE, digest_bytes(EMPTY_BYTES), len(EMPTY_BYTES))

FALLBACK_TRIES = 5


def fallback_tag(digest: str) -> str:
    """The referrers tag schema of distribution-spec 1.1: `sha256:<hex>` -> `sha256-<hex>`."""
    return digest.replace(":", "-", 1)


@dataclass(frozen=True)
class Artifact:
    """An artifact manifest ready to attach: its bytes, its descriptor (as a referrers index lists it),
    and the blobs it needs besides the empty config."""

    manifest: bytes
    descriptor: Descriptor
    layers: tuple[tuple[Descriptor, bytes], ...]


def make_artifact(
    subject: Descriptor, artifact_type: str, payload: bytes, payload_type: str, annotations: dict[str, str]
) -> Artifact:
    """An artifact with one layer (`payload`) about `subject`; the same inputs give the same bytes."""
    layer = Descriptor(payload_type, digest_bytes(payload), len(payload))
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY.to_json(),
        "layers": [layer.to_json()],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": dict(sorted(annotations.items())),
    }
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    descriptor = Descriptor(
        OCI_MANIFEST, digest_bytes(data), len(data), annotations=doc["annotations"], artifact_type=artifact_type
    )
    return Artifact(data, descriptor, ((layer, payload),))


def index_bytes(descriptors: list[Descriptor]) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d.to_json() for d in descriptors]},
        separators=(",", ":"),
    ).encode()


def parse_referrers_index(data: bytes, where: str) -> list[Descriptor]:
    """The descriptors of a referrers index (an image index), refusing what is not one."""
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RegistryError(f"{where} is not JSON; the registry's referrers index is broken") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
        raise RegistryError(f"{where} is not an image index; the registry's referrers index is broken")
    found = []
    for item in doc.get("manifests", []):
        try:
            found.append(Descriptor.from_json(item, where))
        except Exception as exc:  # a LayoutError names the layout; this is the registry's
            raise RegistryError(
                f"{where}: {exc}".split("; ")[0] + "; the registry's referrers index is broken"
            ) from None
    return found


# --- a registry --------------------------------------------------------------------------------


class RegistryReferrers:
    """Attach and list referrers in one registry repository, the API or the fallback tag, decided once
    per command and repository."""

    def __init__(self, client: RegistryAPI, repo: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.repo, self._sleep = client, repo, sleep
        self.api: bool | None = None  # None: not known yet

    def _knows_api(self, subject: str) -> bool:
        if self.api is None:
            self.api = self.client.referrers(self.repo, subject) is not None
        return self.api

    def of(self, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        """The referrers of `subject` (of one artifact type if given)."""
        found = self.client.referrers(self.repo, subject, artifact_type) if self.api is not False else None
        if found is not None:
            self.api = True
        else:
            self.api = False
            found = self._fallback(subject)
        return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]

    def _fallback(self, subject: str) -> list[Descriptor]:
        got = self.client.get_manifest_if_any(self.repo, fallback_tag(subject))
        if got is None:
            return []
        return parse_referrers_index(got[0], f"{self.client.registry}/{self.repo}:{fallback_tag(subject)}")

    def attach(self, subject: str, artifact: Artifact) -> bool:
        """Make `artifact` a referrer of `subject` here; False when it was one already (nothing written)."""
        client, repo = self.client, self.repo
        present = client.manifest_digest(repo, artifact.descriptor.digest) == artifact.descriptor.digest
        if present and self._knows_api(subject):
            return False
        wrote = False
        if not present:
            for layer, data in (*artifact.layers, (EMPTY, EMPTY_BYTES)):
                if not client.has_blob(repo, layer.digest):
                    client.upload_blob(repo, layer.digest, layer.size, lambda d=data: iter([d]), None)  # type: ignore[misc]
            said = client.put_manifest(repo, artifact.descriptor.digest, artifact.manifest, OCI_MANIFEST)
            wrote = True
            if said is not None:
                self.api = True
                return True
            if self.api is None:
                # The PUT did not answer with OCI-Subject: the spec tells a client to use the fallback tag.
                self.api = False
        if self.api:
            return wrote
        return self._add_to_fallback(subject, artifact.descriptor) or wrote

    def register(self, subject: str, descriptor: Descriptor) -> bool:
        """List a referrer whose manifest is already in this repository (a carried one): the referrers
        API indexed it on the PUT; else it goes into the fallback tag. False when it was listed already."""
        if self._knows_api(subject):
            return False
        return self._add_to_fallback(subject, descriptor)

    def _add_to_fallback(self, subject: str, descriptor: Descriptor) -> bool:
        tag = fallback_tag(subject)
        for attempt in range(1, FALLBACK_TRIES + 1):
            current = self._fallback(subject)
            if any(d.digest == descriptor.digest for d in current):
                return attempt > 1  # there already (or our write of the last round survived)
            data = index_bytes([*current, descriptor])
            if len(data) > MAX_MANIFEST_BYTES:
                raise RegistryError(
                    f"{self.client.registry}/{self.repo}:{tag} would pass 4 MiB with one more referrer; refused"
                )
            self.client.put_manifest(self.repo, tag, data, OCI_INDEX)
            if any(d.digest == descriptor.digest for d in self._fallback(subject)):
                return True
            self._sleep(random.uniform(0.05, 0.2) * attempt)  # another writer replaced it: read it again
        raise RegistryError(
            f"{self.client.registry}/{self.repo}: the referrers tag {tag[:19]}… kept changing under this write "
            f"({FALLBACK_TRIES} tries); run the command again"
        )


# --- a layout ----------------------------------------------------------------------------------

# An OCI layout keeps its referrers beside its images, not among them: `index.json` lists the images
# alone (so skopeo, umoci and crane read `oci:DIR` as before), and its annotation LAYOUT_REFERRERS names a
# blob mapping each subject digest to its referrers' descriptors. Referrers listed in `index.json` with an
# `artifactType` (as other tools write them) are found too.
LAYOUT_REFERRERS = "vnd.imgtrack.referrers"
LAYOUT_REFERRERS_TYPE = "application/vnd.imgtrack.layout-referrers.v1+json"
MAX_LAYOUT_REFERRERS = 4 * 1024 * 1024


def _layout_map(layout: Layout) -> dict[str, list[Descriptor]]:
    from imgtrack.oci.digest import is_digest

    digest = layout.index_annotations().get(LAYOUT_REFERRERS, "")
    if not is_digest(digest) or not layout.has_blob(digest):
        return {}
    try:
        doc = json.loads(layout.read_blob(digest, limit=MAX_LAYOUT_REFERRERS))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    listed = doc.get("referrers") if isinstance(doc, dict) else None
    found: dict[str, list[Descriptor]] = {}
    for subject, items in listed.items() if isinstance(listed, dict) else ():
        if isinstance(subject, str) and is_digest(subject) and isinstance(items, list):
            for item in items:
                try:
                    found.setdefault(subject, []).append(Descriptor.from_json(item, layout.name))
                except Exception:
                    continue
    return found


def add_layout_referrer(writer: LayoutWriter, subject: str, descriptor: Descriptor) -> bool:
    """List `descriptor` (its manifest and blobs already in the layout) as a referrer of `subject`; False if
    it was listed already."""
    with writer.locked():
        listed = _layout_map(writer.reader)
        if any(d.digest == descriptor.digest for d in listed.get(subject, [])):
            return False
        listed.setdefault(subject, []).append(descriptor)
        doc = {
            "mediaType": LAYOUT_REFERRERS_TYPE,
            "referrers": {k: [d.to_json() for d in v] for k, v in sorted(listed.items())},
        }
        digest = writer.put_bytes(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
        annotations = {**writer.reader.index_annotations(), LAYOUT_REFERRERS: digest}
        writer.set_index(writer.reader.entries(), annotations)
    return True


def attach_to_layout(writer: LayoutWriter, artifact: Artifact, subject: str) -> bool:
    """Write `artifact` into an OCI layout as a referrer of `subject`; False if it was there."""
    for layer, data in (*artifact.layers, (EMPTY, EMPTY_BYTES)):
        if not writer.has_blob(layer.digest):
            writer.put_bytes(data, layer.digest.split(":")[0])
    writer.put_bytes(artifact.manifest)
    return add_layout_referrer(writer, subject, artifact.descriptor)


def layout_referrers(layout: Layout, subject: str) -> list[Descriptor]:
    """The referrers of `subject` a layout keeps: imgtrack's list, then `index.json` entries with an
    `artifactType` whose manifest names `subject`."""
    found = list(_layout_map(layout).get(subject, []))
    for entry in layout.entries():
        if not entry.artifact_type or not layout.has_blob(entry.digest) or any(d.digest == entry.digest for d in found):
            continue
        try:
            doc = json.loads(layout.read_blob(entry.digest, media_type=entry.media_type))
        except (ValueError, UnicodeDecodeError):
            continue
        named = doc.get("subject") if isinstance(doc, dict) else None
        if isinstance(named, dict) and named.get("digest") == subject:
            found.append(entry)
    return found
