"""Build small, real OCI image layouts for tests (deterministic per seed)."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
from pathlib import Path

from imgtrack.oci.layout import REF_NAME, Descriptor, LayoutWriter
from imgtrack.oci.mediatypes import OCI_INDEX, OCI_MANIFEST

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"


def layer_bytes(seed: int, size: int = 2048) -> bytes:
    """A gzipped tar holding one file of `size` seeded random bytes."""
    data = random.Random(seed).randbytes(size)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"file-{seed}")
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _manifest(
    writer: LayoutWriter,
    platform: str,
    seed: int,
    layers: int,
    layer_size: int,
    base: int = 0,
    config_extra: dict[str, object] | None = None,
) -> Descriptor:
    os_, arch, *variant = platform.split("/")
    layer_descs = []
    for i in range(layers):
        # The first `base` layers are the same in every image of this platform: a shared base image.
        blob = layer_bytes(-(i + 1) if i < base else seed * 100 + i, layer_size)
        layer_descs.append(Descriptor(LAYER, writer.put_bytes(blob), len(blob)))
    config = {
        "architecture": arch,
        "os": os_,
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Env": [f"SEED={seed}"], **(config_extra or {})},
    }
    if variant:
        config["variant"] = variant[0]
    config_bytes = json.dumps(config).encode()
    config_desc = Descriptor(CONFIG, writer.put_bytes(config_bytes), len(config_bytes))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc.to_json(),
        "layers": [d.to_json() for d in layer_descs],
    }
    data = json.dumps(manifest).encode()
    return Descriptor(OCI_MANIFEST, writer.put_bytes(data), len(data), platform)


def build_layout(
    path: Path,
    seed: int = 1,
    platforms: tuple[str, ...] = ("linux/amd64",),
    layers: int = 2,
    layer_size: int = 2048,
    ref_name: str = "latest-build",
    index: bool | None = None,
    base: int = 0,
    config: dict[str, object] | None = None,
) -> Descriptor:
    """Write an OCI layout at `path` holding one image; return the top descriptor (index or manifest).
    `base` layers are shared with every other image built with one; `config` adds image config fields
    (Cmd, User, Labels, …) beside the seed's Env."""
    writer = LayoutWriter(path)
    children = [_manifest(writer, p, seed * 10 + i, layers, layer_size, base, config) for i, p in enumerate(platforms)]
    if index or (index is None and len(platforms) > 1):
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [c.to_json() for c in children]}
        data = json.dumps(doc).encode()
        top = Descriptor(OCI_INDEX, writer.put_bytes(data), len(data), annotations={REF_NAME: ref_name})
    else:
        c = children[0]
        top = Descriptor(c.media_type, c.digest, c.size, annotations={REF_NAME: ref_name})
    writer.add_to_index(top)
    return top


def layout_tar(layout: Path, target: Path) -> Path:
    """Pack a layout directory into a tar, as `docker buildx --output type=oci` writes it."""
    with tarfile.open(target, "w") as tar:
        for root, _, files in os.walk(layout):
            for name in sorted(files):
                full = Path(root) / name
                tar.add(full, arcname=str(full.relative_to(layout)))
    return target


def biggest_blob(layout: Path) -> Path:
    """The largest blob file of a layout: in these test images, always a layer."""
    return max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
