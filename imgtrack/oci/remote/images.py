"""Images in a registry repository: read through the `Layout` interface (so `describe` and
`copy_blobs` serve pulls unchanged), and pushed from any `Layout` in the order the spec needs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO

from imgtrack.errors import RegistryError, TransferInterrupted
from imgtrack.oci.copy import BLOB_TRIES, BlobProgress, CopyStats, no_progress
from imgtrack.oci.digest import digest_bytes, is_digest
from imgtrack.oci.layout import REF_NAME, Descriptor, ImageDescription, Layout
from imgtrack.oci.mediatypes import ALL_MANIFEST_TYPES, MAX_MANIFEST_BYTES, OCI_MANIFEST
from imgtrack.oci.remote.registry import RegistryClient


class RegistryLayout(Layout):
    """One image of a registry repository, named by tag or digest, seen as a read-only layout."""

    local = False

    def __init__(self, client: RegistryClient, repo: str, reference: str) -> None:
        self.client, self.repo = client, repo
        self.name = f"{client.registry}/{repo}"
        data, media_type = client.get_manifest(repo, reference)
        digest = digest_bytes(data)
        if is_digest(reference) and digest != reference:
            raise RegistryError(
                f"{self.name} served {digest[:19]}… when asked for {reference[:19]}…; the registry altered it"
            )
        if media_type not in ALL_MANIFEST_TYPES:
            media_type = _media_type_of(data)
        self.top = Descriptor(media_type, digest, len(data), annotations={REF_NAME: reference})
        self._manifests = {digest: data}

    def read_index_json(self) -> bytes:
        return json.dumps({"schemaVersion": 2, "manifests": [self.top.to_json()]}).encode()

    def has_blob(self, digest: str) -> bool:
        return True  # a missing blob shows as a 404 when it is read

    def open_blob(self, digest: str) -> IO[bytes]:
        raise RegistryError(f"{self.name}: blobs are streamed, not opened")  # iter_blob is overridden

    def read_blob(self, digest: str, limit: int = MAX_MANIFEST_BYTES, media_type: str = "") -> bytes:
        if digest not in self._manifests:
            if media_type in ALL_MANIFEST_TYPES:
                data, _ = self.client.get_manifest(self.repo, digest)
            else:
                data = self._small_blob(digest, limit)
            if digest_bytes(data, digest.split(":")[0]) != digest:
                raise RegistryError(f"{self.name} served other content for {digest[:19]}…; nothing was kept")
            self._manifests[digest] = data
        return self._manifests[digest]

    def _small_blob(self, digest: str, limit: int) -> bytes:
        for attempt in range(1, BLOB_TRIES + 1):
            try:
                with self.client.blob_stream(self.repo, digest) as chunks:
                    return b"".join(_limited(chunks, limit, f"{self.name}: blob {digest[:19]}…"))
            except TransferInterrupted:
                if attempt == BLOB_TRIES:
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def iter_blob(self, digest: str) -> Iterator[Iterator[bytes]]:
        if digest in self._manifests:
            yield iter([self._manifests[digest]])
            return
        with self.client.blob_stream(self.repo, digest) as chunks:
            yield chunks


def _limited(chunks: Iterator[bytes], limit: int, what: str) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise RegistryError(f"{what} is over {limit} bytes; refused")
        yield chunk


def _media_type_of(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RegistryError("the registry served a manifest that is not JSON") from None
    media_type = doc.get("mediaType") if isinstance(doc, dict) else None
    return media_type if media_type in ALL_MANIFEST_TYPES else OCI_MANIFEST


def _chunks(layout: Layout, digest: str) -> Iterator[bytes]:
    with layout.iter_blob(digest) as chunks:
        yield from chunks


def push_to_registry(
    client: RegistryClient,
    repo: str,
    source: Layout,
    image: ImageDescription,
    tags: tuple[str, ...],
    jobs: int = 4,
    mount_from: tuple[str, ...] = (),
    progress: BlobProgress = no_progress,
) -> CopyStats:
    """Blobs (in parallel: HEAD, then a mount from a repository known to hold them, then a streamed
    upload), then child manifests, then the top manifest by digest and by every tag."""
    manifests = [d for d in image.blobs if d.media_type in ALL_MANIFEST_TYPES]
    blobs = [d for d in image.blobs if d.media_type not in ALL_MANIFEST_TYPES]
    top = manifests[-1]

    def send(blob: Descriptor) -> int:
        if client.has_blob(repo, blob.digest):
            progress("present", blob)
            return -1
        if any(client.mount_blob(repo, blob.digest, other) for other in mount_from if other != repo):
            progress("mounted", blob)
            return -1
        if source.local and blob.size > client.chunk_size:
            client.upload_blob_chunked(
                repo,
                blob.digest,
                blob.size,
                lambda start, end: source.read_range(blob.digest, start, end),
                client.chunk_size,
            )
        else:
            client.upload_blob(
                repo, blob.digest, blob.size, lambda: _chunks(source, blob.digest), source.blob_extent(blob.digest)
            )
        progress("copied", blob)
        return blob.size

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        sent = list(pool.map(send, blobs))
    for manifest in manifests:
        client.put_manifest(
            repo,
            manifest.digest,
            source.read_blob(manifest.digest, media_type=manifest.media_type),
            manifest.media_type,
        )
        progress("copied", manifest)
    data = source.read_blob(top.digest, media_type=top.media_type)
    for tag in tags:
        client.put_manifest(repo, tag, data, top.media_type)
    copied = [s for s in sent if s >= 0]
    return CopyStats(copied=len(copied) + len(manifests), skipped=len(sent) - len(copied), bytes_copied=sum(copied))
