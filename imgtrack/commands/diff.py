"""`imgtrack diff A B`: what changed between two recorded builds — the commits between them (from git),
and, when both images can be read, the layers and the image config per platform."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from imgtrack.errors import ImgtrackError, InvalidReference, LayoutError, NotFound
from imgtrack.ledger.ledger import Ledger
from imgtrack.ledger.schema import Build
from imgtrack.oci.digest import is_digest
from imgtrack.oci.layout import Layout
from imgtrack.oci.mediatypes import OCI_MANIFEST
from imgtrack.oci.pool import Registries
from imgtrack.project import Project
from imgtrack.sources import recorded_copy

# The image config fields a release engineer reads when two builds behave differently.
CONFIG_FIELDS = ("Env", "Entrypoint", "Cmd", "User", "WorkingDir", "ExposedPorts", "Labels", "StopSignal", "Volumes")


@dataclass(frozen=True)
class Commit:
    sha: str
    date: str  # author date, ISO 8601
    author: str
    subject: str


@dataclass(frozen=True)
class PlatformDiff:
    platform: str
    layers_added: list[tuple[str, int]] = field(default_factory=list)  # (digest, size), in B's order
    layers_removed: list[tuple[str, int]] = field(default_factory=list)
    config: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (in A, in B), when they differ
    only_in: str = ""  # "a" or "b" when the platform is in one image only


@dataclass(frozen=True)
class DiffResult:
    a: Build
    b: Build
    direction: str  # "same", "forward" (B descends from A), "rollback" (B is older), or "diverged"
    commits: list[Commit]  # newest first: B's new commits; for a rollback, the ones it would undo
    paths: tuple[str, ...]  # the image's configured source paths the commits were narrowed to
    platforms: list[PlatformDiff] | None  # None when the contents could not be read
    contents_note: str = ""  # why they could not, or ""


def find_build(ledger: Ledger, text: str) -> Build:
    """What `show` accepts, or an image reference as a runtime reports it (`registry/repo@sha256:…`)."""
    head, sep, tail = text.rpartition("@")
    if sep and is_digest(tail) and ("/" in head or "." in head or ":" in head):
        text = tail  # a reference's repository is where it was pulled from, not a ledger name
    try:
        return ledger.find_one(text)
    except InvalidReference as exc:
        if "matches no record" in str(exc):
            raise NotFound(str(exc)) from None
        raise


def diff_builds(project: Project, a_text: str, b_text: str, registries: Registries) -> DiffResult:
    ledger, repo = project.ledger, project.repo
    a, b = find_build(ledger, a_text), find_build(ledger, b_text)
    image_config = project.config.images.get(b.image) if a.image == b.image else None
    paths = image_config.paths if image_config else ()
    if a.commit == b.commit:
        direction, commits = "same", []
    elif repo.is_ancestor(a.commit, b.commit):
        direction, commits = "forward", repo.log_between(a.commit, b.commit, paths)
    elif repo.is_ancestor(b.commit, a.commit):
        direction, commits = "rollback", repo.log_between(b.commit, a.commit, paths)
    else:
        direction, commits = "diverged", repo.log_between(a.commit, b.commit, paths)
    platforms, note = None, ""
    try:
        platforms = _contents(a, b, registries)
    except (NotFound, LayoutError) as exc:
        note = str(exc)
    except ImgtrackError as exc:  # a registry that cannot be reached: the commits still answer
        note = f"the images could not be read: {exc}"
    return DiffResult(a, b, direction, [Commit(*c) for c in commits], paths, platforms, note)


def _contents(a: Build, b: Build, registries: Registries) -> list[PlatformDiff]:
    layout_a = recorded_copy(a, registries)
    try:
        layout_b = recorded_copy(b, registries)
        try:
            return _platform_diffs(layout_a, a, layout_b, b)
        finally:
            layout_b.close()
    finally:
        layout_a.close()


def _platform_diffs(layout_a: Layout, a: Build, layout_b: Layout, b: Build) -> list[PlatformDiff]:
    mine = {m.platform: m for m in a.record.manifests}
    theirs = {m.platform: m for m in b.record.manifests}
    diffs = []
    for platform in sorted(set(mine) | set(theirs)):
        if platform not in theirs:
            diffs.append(PlatformDiff(platform, only_in="a"))
            continue
        if platform not in mine:
            diffs.append(PlatformDiff(platform, only_in="b"))
            continue
        layers_a, config_a = _read(layout_a, mine[platform].digest, mine[platform].config)
        layers_b, config_b = _read(layout_b, theirs[platform].digest, theirs[platform].config)
        in_a, in_b = dict(layers_a), dict(layers_b)
        changed = {
            key: (config_a.get(key), config_b.get(key))
            for key in CONFIG_FIELDS
            if config_a.get(key) != config_b.get(key)
        }
        diffs.append(
            PlatformDiff(
                platform,
                layers_added=[(d, s) for d, s in layers_b if d not in in_a],
                layers_removed=[(d, s) for d, s in layers_a if d not in in_b],
                config=changed,
            )
        )
    return diffs


def _read(layout: Layout, manifest_digest: str, config_digest: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """A platform manifest's layers (digest, size) and its image config's `config` object, both verified
    against their digests as they are read."""
    try:
        manifest = json.loads(layout.read_blob(manifest_digest, media_type=OCI_MANIFEST))
        config = json.loads(layout.read_blob(config_digest)) if config_digest else {}
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise LayoutError(f"{layout.name}: a manifest or config of the image is not JSON ({exc})") from None
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    found = [
        (str(entry["digest"]), int(entry.get("size", 0)))
        for entry in (layers if isinstance(layers, list) else [])
        if isinstance(entry, dict) and isinstance(entry.get("digest"), str) and isinstance(entry.get("size", 0), int)
    ]
    inner = config.get("config") if isinstance(config, dict) else None
    return found, inner if isinstance(inner, dict) else {}
