"""OCI image layouts on disk: directories and tars (read), directories (write).

Nothing here trusts a digest before checking it: digests are validated before they become paths,
every blob is hashed before it counts, and a blob written into a layout becomes visible only by an
atomic rename after its bytes matched.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from imgtrack.errors import LayoutError, RegistryError
from imgtrack.fsutil import lock_temp, sweep_if_stale, write_atomic
from imgtrack.oci.digest import check_digest, digest_bytes, hasher, is_digest
from imgtrack.oci.mediatypes import ALL_MANIFEST_TYPES, INDEX_TYPES, MANIFEST_TYPES, MAX_MANIFEST_BYTES, OCI_INDEX

if TYPE_CHECKING:
    from tarfile import TarInfo

REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class PlatformManifest:
    """One platform's manifest inside an index (or the image itself, for a single manifest)."""

    platform: str
    digest: str
    config: str


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str = ""
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    artifact_type: str = field(default="", compare=False)  # an artifact's (a referrer's) `artifactType`

    @classmethod
    def from_json(cls, data: Any, where: str) -> Descriptor:
        if not isinstance(data, dict):
            raise LayoutError(f"{where}: a descriptor must be an object; the layout is malformed, rebuild it")
        digest, size, media_type = data.get("digest"), data.get("size"), data.get("mediaType", "")
        if not isinstance(digest, str) or not is_digest(digest):
            raise LayoutError(f"{where}: descriptor digest {str(digest)[:80]!r} is not a digest; rebuild the layout")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise LayoutError(f"{where}: descriptor {digest[:19]}… has no valid size; rebuild the layout")
        if not isinstance(media_type, str):
            raise LayoutError(f"{where}: descriptor {digest[:19]}… has a non-string mediaType; rebuild the layout")
        annotations = data.get("annotations") or {}
        if not isinstance(annotations, dict):
            annotations = {}
        artifact_type = data.get("artifactType", "")
        if not isinstance(artifact_type, str):
            artifact_type = ""
        return cls(media_type, digest, size, _platform(data.get("platform")), annotations, artifact_type[:255])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        if self.platform:
            parts = self.platform.split("/")
            plat = {"os": parts[0], "architecture": parts[1] if len(parts) > 1 else ""}
            if len(parts) > 2:
                plat["variant"] = parts[2]
            out["platform"] = plat
        return out


def _platform(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("os", "")), str(data.get("architecture", ""))]
    if data.get("variant"):
        parts.append(str(data["variant"]))
    return "/".join(parts)


class Layout(ABC):
    """Read access to an OCI image layout (`blobs/<algo>/<hex>`, `index.json`)."""

    name: str
    # A local layout's blobs are hashed by `describe`; a remote one's are hashed as they are copied.
    local = True

    @abstractmethod
    def open_blob(self, digest: str) -> IO[bytes]: ...

    @abstractmethod
    def has_blob(self, digest: str) -> bool: ...

    @abstractmethod
    def read_index_json(self) -> bytes: ...

    def close(self) -> None:
        pass

    @contextmanager
    def iter_blob(self, digest: str) -> Iterator[Iterator[bytes]]:
        """A blob's bytes in chunks (not yet verified: the writer hashes them)."""
        with self.open_blob(digest) as f:
            yield iter(lambda: f.read(CHUNK), b"")

    def blob_extent(self, digest: str) -> tuple[Path, int] | None:
        """Where a blob's bytes lie whole in one file, (file, offset), for zero-copy sending; None
        when they do not (a compressed tar, a registry)."""
        return None

    def read_range(self, digest: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of a blob, in chunks (local layouts only: they can seek)."""
        with self.open_blob(digest) as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise LayoutError(f"{self.name}: blob {digest[:19]}… is shorter than its descriptor says")
                left -= len(chunk)
                yield chunk

    def read_blob(self, digest: str, limit: int = MAX_MANIFEST_BYTES, media_type: str = "") -> bytes:
        """A small blob (a manifest or config), verified against its digest. `media_type` tells a
        remote source whether to ask for a manifest or a blob."""
        if not self.has_blob(digest):
            raise LayoutError(f"{self.name}: blob {digest} is missing; the layout is incomplete, rebuild or re-pull it")
        with self.open_blob(digest) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise LayoutError(f"{self.name}: blob {digest[:19]}… is over {limit} bytes, too big for a manifest")
        if digest_bytes(data, digest.split(":")[0]) != digest:
            raise LayoutError(
                f"{self.name}: blob {digest} does not match its digest (corrupt); rebuild or re-pull the layout"
            )
        return data

    def verify_blob(self, desc: Descriptor) -> None:
        """Hash a blob of any size, streaming, against its descriptor."""
        if not self.has_blob(desc.digest):
            raise LayoutError(
                f"{self.name}: blob {desc.digest} is missing; the layout is incomplete, rebuild or re-pull it"
            )
        h, size = hasher(desc.digest), 0
        with self.open_blob(desc.digest) as f:
            # Never past the descriptor's size: a file far bigger than it says (a sparse 10 GB file for a
            # 256-byte layer) is refused after one byte too many, not after hashing all of it.
            while chunk := f.read(min(CHUNK, desc.size + 1 - size)):
                h.update(chunk)
                size += len(chunk)
                if size > desc.size:
                    raise LayoutError(
                        f"{self.name}: blob {desc.digest[:19]}… is bigger than the {desc.size} bytes "
                        "its descriptor says; rebuild or re-pull the layout"
                    )
        if f"{desc.digest.split(':')[0]}:{h.hexdigest()}" != desc.digest:
            raise LayoutError(
                f"{self.name}: blob {desc.digest} does not match its digest (corrupt); rebuild or re-pull the layout"
            )
        if size != desc.size:
            raise LayoutError(f"{self.name}: blob {desc.digest[:19]}… is {size} bytes, its descriptor says {desc.size}")

    def index_annotations(self) -> dict[str, str]:
        """The annotations of `index.json` itself."""
        doc = self._index_doc()
        found = doc.get("annotations")
        return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}

    def entries(self) -> list[Descriptor]:
        """The descriptors `index.json` lists (readers return at most one byte over the limit)."""
        doc = self._index_doc()
        return [Descriptor.from_json(d, f"{self.name}: index.json") for d in doc["manifests"]]

    def _index_doc(self) -> dict[str, Any]:
        data = self.read_index_json()
        if len(data) > MAX_MANIFEST_BYTES:
            raise LayoutError(f"{self.name}: index.json is over 4 MiB; refused (an image index is far smaller)")
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LayoutError(f"{self.name}: index.json is not valid JSON ({exc}); rebuild the layout") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise LayoutError(f"{self.name}: index.json has no manifests list; rebuild the layout")
        return doc


class DirLayout(Layout):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def _blob_path(self, digest: str) -> Path:
        algo, _, hexpart = check_digest(digest).partition(":")
        return self.path / "blobs" / algo / hexpart

    def has_blob(self, digest: str) -> bool:
        p = self._blob_path(digest)
        return p.is_file() and not p.is_symlink()  # a symlink could point anywhere on this machine

    def open_blob(self, digest: str) -> IO[bytes]:
        return open(self._blob_path(digest), "rb")

    def blob_extent(self, digest: str) -> tuple[Path, int] | None:
        return (self._blob_path(digest), 0) if self.has_blob(digest) else None

    def read_index_json(self) -> bytes:
        try:
            with open(self.path / "index.json", "rb") as f:
                return f.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            raise LayoutError(
                f"{self.path} has no index.json, so it is not an OCI image layout; "
                "build one with `docker buildx build --output type=oci,tar=false,dest=DIR`"
            ) from None


MAX_TAR_MEMBERS = 50_000


class TarLayout(Layout):
    """An OCI layout tar, read in place: nothing is extracted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        import tarfile  # here: most commands never read a tar

        try:
            self._tar = tarfile.open(path, "r:*")
            self._members = {}
            for count, m in enumerate(self._tar, 1):
                if count > MAX_TAR_MEMBERS:
                    raise LayoutError(
                        f"{path} holds over {MAX_TAR_MEMBERS:,} entries; refused (a layout tar holds "
                        "one file a blob and a few more)"
                    )
                self._members[m.name.removeprefix("./")] = m
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            raise LayoutError(f"{path} is not a readable tar ({exc}); check the file") from None

    def _member(self, name: str) -> TarInfo | None:
        m = self._members.get(name)
        return m if m is not None and m.isfile() else None

    def has_blob(self, digest: str) -> bool:
        algo, _, hexpart = check_digest(digest).partition(":")
        return self._member(f"blobs/{algo}/{hexpart}") is not None

    def blob_extent(self, digest: str) -> tuple[Path, int] | None:
        algo, _, hexpart = check_digest(digest).partition(":")
        member = self._member(f"blobs/{algo}/{hexpart}")
        # A plain tar stores a member's bytes whole and as they are; a compressed tar, or a sparse member, does not.
        if member is None or member.issparse() or not isinstance(self._tar.fileobj, io.BufferedReader):
            return None
        return self.path, member.offset_data

    def open_blob(self, digest: str) -> IO[bytes]:
        algo, _, hexpart = check_digest(digest).partition(":")
        member = self._member(f"blobs/{algo}/{hexpart}")
        assert member is not None
        f = self._tar.extractfile(member)
        assert f is not None
        return f

    def read_index_json(self) -> bytes:
        member = self._member("index.json")
        if member is None:
            raise LayoutError(
                f"{self.path} holds no index.json, so it is not an OCI layout tar; "
                "use `docker buildx build --output type=oci,dest=FILE.tar` or `docker save` (Docker 25+)"
            )
        f = self._tar.extractfile(member)
        assert f is not None
        return f.read(MAX_MANIFEST_BYTES + 1)

    def close(self) -> None:
        self._tar.close()


@dataclass(frozen=True)
class ImageDescription:
    """What a build produced: the digest a registry will serve, its platforms, and every blob."""

    digest: str
    media_type: str
    size: int
    manifests: tuple[PlatformManifest, ...]
    # Every blob in push order: layers and configs first, then child manifests, then the top manifest.
    blobs: tuple[Descriptor, ...] = ()
    ref_name: str = ""


def open_layout(path: Path) -> Layout:
    """A directory or tar OCI layout at `path`."""
    if path.is_dir():
        return DirLayout(path)
    import tarfile

    if tarfile.is_tarfile(path):
        return TarLayout(path)
    raise LayoutError(
        f"{path} is neither an OCI image layout directory nor an OCI layout tar; "
        "pass a layout, a layout tar, or a `docker buildx --metadata-file` JSON"
    )


def select_entry(layout: Layout, ref_name: str | None, digest: str | None = None) -> Descriptor:
    everything = layout.entries()
    entries = [d for d in everything if not d.artifact_type]  # referrers are about an image, not images
    if digest is not None:
        for d in everything:
            if d.digest == digest:
                return d
        raise LayoutError(
            f"{layout.name} does not list {digest[:19]}… in its index.json; it no longer holds that image"
        )
    if ref_name is not None:
        chosen = [
            d
            for d in entries
            if d.annotations.get(REF_NAME) == ref_name or d.annotations.get("io.containerd.image.name") == ref_name
        ]
        if not chosen:
            names = ", ".join(sorted({d.annotations.get(REF_NAME, "") for d in entries} - {""})) or "none"
            raise LayoutError(f"{layout.name}: no manifest has ref name {ref_name!r} (ref names: {names})")
        return chosen[0]
    if not entries:
        raise LayoutError(f"{layout.name}: index.json lists no manifests; the layout holds no image")
    if len({d.digest for d in entries}) > 1:  # one image under several tags is one image
        names = ", ".join(d.annotations.get(REF_NAME, d.digest[:19] + "…") for d in entries)
        raise LayoutError(
            f"{layout.name}: index.json lists {len(entries)} manifests ({names}); choose one with --ref-name"
        )
    return entries[0]


def describe(
    layout: Layout,
    ref_name: str | None = None,
    verify: bool = True,
    digest: str | None = None,
    entry: Descriptor | None = None,
) -> ImageDescription:
    """Read the image a layout holds (chosen by digest, ref name, or as its only entry; or `entry`, a
    manifest the layout holds but does not list, such as a referrer): its digests, platforms and blobs,
    every blob verified."""
    top = entry or select_entry(layout, ref_name, digest)
    blobs: list[Descriptor] = []
    manifests: list[PlatformManifest] = []
    try:
        media_type = _walk(layout, top, blobs, manifests, depth=0)
    except LayoutError as error:
        if layout.local:
            raise
        # a registry's malformed image is the registry's failure (exit 3), and rebuilding is no advice
        raise RegistryError(f"{str(error).split('; ')[0]}; the registry served a malformed image, refused") from None
    if verify and layout.local:
        _verify_all(layout, [b for b in dict.fromkeys(blobs) if b.media_type not in ALL_MANIFEST_TYPES])
    return ImageDescription(
        digest=top.digest,
        media_type=media_type,
        size=top.size,
        manifests=tuple(manifests),
        blobs=tuple(dict.fromkeys(blobs)),
        ref_name=top.annotations.get(REF_NAME, ""),
    )


PARALLEL_HASH_BYTES = 16 << 20


def _verify_all(layout: Layout, blobs: list[Descriptor]) -> None:
    """Hash every blob (manifests were checked as they were read). A directory's blobs are hashed in
    parallel threads (hashlib releases the GIL) once they are big enough to repay the pool's import,
    which alone takes longer than hashing a small image; a tar's share one file position, so one at a
    time."""
    if isinstance(layout, DirLayout) and len(blobs) > 1 and sum(b.size for b in blobs) > PARALLEL_HASH_BYTES:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(layout.verify_blob, blobs))
    else:
        for blob in blobs:
            layout.verify_blob(blob)


def _json_blob(layout: Layout, desc: Descriptor) -> tuple[dict[str, Any], bytes]:
    data = layout.read_blob(desc.digest, media_type=desc.media_type or OCI_INDEX)
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        if not layout.local:  # a registry's failure, not the user's layout (exit 3)
            raise RegistryError(f"{layout.name} served a manifest {desc.digest[:19]}… that is not JSON; refused")
        raise LayoutError(f"{layout.name}: manifest {desc.digest[:19]}… is not a JSON object; rebuild the layout")
    return doc, data


def _check_unambiguous(layout: Layout, desc: Descriptor, doc: dict[str, Any]) -> None:
    """A document must be what its descriptor (or the registry's Content-Type) says it is: a manifest
    read as an index, or one holding both `layers` and `manifests`, could mean two images under one
    digest (the image-spec's mediaType rule, after CVE-2021-41190)."""
    declared = doc.get("mediaType")
    problem = ""
    if "manifests" in doc and "layers" in doc:
        problem = "has both manifests and layers, so it could name two different images"
    elif declared and desc.media_type in ALL_MANIFEST_TYPES and declared != desc.media_type:
        problem = f"says it is {declared} but was served as {desc.media_type}"
    if problem:  # describe() makes it the registry's failure when a registry served it
        raise LayoutError(f"{layout.name}: manifest {desc.digest[:19]}… {problem}; rebuild the layout")


def _walk(
    layout: Layout,
    desc: Descriptor,
    blobs: list[Descriptor],
    manifests: list[PlatformManifest],
    depth: int,
) -> str:
    if depth > 2:
        raise LayoutError(f"{layout.name}: indexes nest deeper than two levels; rebuild the layout")
    doc, data = _json_blob(layout, desc)
    _check_unambiguous(layout, desc, doc)
    media_type = doc.get("mediaType") or desc.media_type
    if media_type not in ALL_MANIFEST_TYPES:
        media_type = OCI_INDEX if "manifests" in doc else desc.media_type
    if media_type in INDEX_TYPES or "manifests" in doc:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise LayoutError(f"{layout.name}: index {desc.digest[:19]}… has no manifests list")
        for child in children:
            cd = Descriptor.from_json(child, f"{layout.name}: index {desc.digest[:19]}…")
            _walk(layout, cd, blobs, manifests, depth + 1)
    elif media_type in MANIFEST_TYPES or "layers" in doc:
        config = Descriptor.from_json(doc.get("config"), f"{layout.name}: manifest {desc.digest[:19]}…")
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise LayoutError(f"{layout.name}: manifest {desc.digest[:19]}… has no layers list")
        layer_descs = [Descriptor.from_json(x, f"{layout.name}: manifest {desc.digest[:19]}…") for x in layers]
        for d in (config, *layer_descs):
            if not layout.has_blob(d.digest):
                raise LayoutError(f"{layout.name}: blob {d.digest} is missing; the layout is incomplete")
            blobs.append(d)
        if not is_attestation(desc):  # an attestation is about the image's platforms, never one of them
            platform = desc.platform or _config_platform(layout, config)
            manifests.append(PlatformManifest(platform=platform, digest=desc.digest, config=config.digest))
    else:
        raise LayoutError(
            f"{layout.name}: {desc.digest[:19]}… has media type {media_type!r}, not an image manifest or index"
        )
    if len(data) != desc.size:
        raise LayoutError(
            f"{layout.name}: manifest {desc.digest[:19]}… is {len(data)} bytes, its descriptor says {desc.size}"
        )
    blobs.append(Descriptor(media_type, desc.digest, desc.size, desc.platform))
    return str(media_type)


ATTESTATION_MANIFEST_TYPE = "application/vnd.docker.attestation.manifest.v1+json"


def is_attestation(desc: Descriptor) -> bool:
    """An index entry that is a BuildKit attestation manifest, not a platform image, in either form BuildKit
    writes: `unknown/unknown` with `vnd.docker.reference.type: attestation-manifest` (before 0.32), or an
    `artifactType` of attestation manifest (0.32 on)."""
    return (
        desc.artifact_type == ATTESTATION_MANIFEST_TYPE
        or desc.annotations.get("vnd.docker.reference.type") == "attestation-manifest"
        or desc.platform == "unknown/unknown"
    )


def _config_platform(layout: Layout, config: Descriptor) -> str:
    try:
        doc = json.loads(layout.read_blob(config.digest))
    except (json.JSONDecodeError, UnicodeDecodeError, LayoutError):
        return "unknown/unknown"
    return _platform(doc) if isinstance(doc, dict) and doc.get("os") else "unknown/unknown"


# --- writing -------------------------------------------------------------------------------------


class LayoutWriter:
    """Writes an OCI image layout directory; blobs appear only complete and verified."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs").mkdir(parents=True, exist_ok=True)
        # A valid layout from the first moment: a pull that fails part way leaves one that any tool
        # reads (and the blobs it got, for the next run), never blobs without an index.
        if not (path / "oci-layout").exists():
            write_atomic(path / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        if not (path / "index.json").exists():
            with self.locked():
                if not (path / "index.json").exists():
                    self.set_index([])
        self.reader = DirLayout(path)
        for folder in (path / "blobs").iterdir():  # what a killed writer left: hidden, never a blob
            if folder.is_dir():
                for entry in os.scandir(folder):
                    sweep_if_stale(entry)

    def has_blob(self, digest: str) -> bool:
        return self.reader.has_blob(digest)

    def put_bytes(self, data: bytes, algo: str = "sha256") -> str:
        digest = digest_bytes(data, algo)
        self.put_stream(digest, iter([data]))
        return digest

    def put_stream(self, digest: str, chunks: Iterator[bytes], size: int | None = None) -> None:
        """Write a blob from `chunks`, hashing as it goes; renamed into place only if it matches. With
        `size`, a stream that runs past it is cut off at once (a hostile source may never stop)."""
        final = self.reader._blob_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.{os.getpid()}.{threading.get_ident()}.partial"
        h = hasher(digest)
        try:
            # No fsync: the rename makes a blob visible only whole and verified, and every read of a
            # layout verifies digests again, so a blob torn by a power loss is caught, never trusted.
            written = 0
            with open(tmp, "wb") as f:
                lock_temp(f.fileno())
                for chunk in chunks:
                    written += len(chunk)
                    if size is not None and written > size:
                        raise LayoutError(
                            f"blob {digest[:19]}… runs past its {size} bytes; the source is broken: nothing was kept"
                        )
                    h.update(chunk)
                    f.write(chunk)
            actual = f"{digest.split(':')[0]}:{h.hexdigest()}"
            if actual != digest:
                raise LayoutError(
                    f"blob {digest} arrived as {actual}: content does not match its digest; nothing was kept"
                )
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    def copy_from(self, source: Layout, digest: str, size: int | None = None) -> None:
        with source.iter_blob(digest) as chunks:
            self.put_stream(digest, chunks, size)

    def set_index(self, entries: list[Descriptor], annotations: dict[str, str] | None = None) -> None:
        """Write `index.json` atomically, keeping its annotations unless given others."""
        if annotations is None:
            try:
                annotations = self.reader.index_annotations() if hasattr(self, "reader") else {}
            except LayoutError:
                annotations = {}
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d.to_json() for d in entries]}
        if annotations:
            doc["annotations"] = annotations
        write_atomic(self.path / "index.json", json.dumps(doc, indent=2).encode())

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the layout's lock: an flock on its folder, so writers of `index.json` take turns (two pulls
        into one layout each keep their entry); the kernel drops it if the process dies."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def add_to_index(self, *descs: Descriptor) -> None:
        """Add entries to `index.json` in one atomic write; an entry with the same ref name (a tag)
        is replaced, so a tag names one manifest in a layout as in a registry."""
        with self.locked():
            self._add_to_index(descs)

    def _add_to_index(self, descs: tuple[Descriptor, ...]) -> None:
        try:
            entries = self.reader.entries()
        except LayoutError:
            entries = []
        for desc in descs:
            name = desc.annotations.get(REF_NAME)
            entries = [
                e
                for e in entries
                if not (
                    e.annotations.get(REF_NAME) == name
                    if name
                    else e.digest == desc.digest and REF_NAME not in e.annotations
                )
            ]
            entries.append(desc)
        self.set_index(entries)
