"""Where an image is written: an OCI layout or a registry repository, behind one interface, so that the
commands that write or check images (push, promote, verify, rollback) never ask which of the two it is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from imgtrack.oci.carry import carry_to_layout, carry_to_registry, referrers_at, subjects_of
from imgtrack.oci.copy import BlobProgress, CopyStats, copy_blobs, no_progress
from imgtrack.oci.layout import REF_NAME, Descriptor, ImageDescription, Layout, LayoutWriter, open_layout
from imgtrack.oci.referrers import Artifact, RegistryReferrers, attach_to_layout, layout_referrers

if TYPE_CHECKING:
    from imgtrack.oci.remote.registry import RegistryClient


class Destination(ABC):
    """One repository or layout that images are written to and checked in."""

    name: str

    @abstractmethod
    def tags(self, tags: tuple[str, ...]) -> dict[str, str]:
        """What each of `tags` names here now (a tag naming nothing is left out)."""

    @abstractmethod
    def holds(self, digest: str) -> bool:
        """Whether the manifest `digest` is here."""

    @abstractmethod
    def write_image(
        self,
        source: Layout,
        image: ImageDescription,
        tags: tuple[str, ...],
        jobs: int = 4,
        progress: BlobProgress = no_progress,
        mount_from: tuple[str, ...] = (),
    ) -> CopyStats:
        """Copy the blobs of `image` this place lacks, then its manifests, then name it by each tag."""

    @abstractmethod
    def subject_size(self, digest: str) -> int:
        """The size of the manifest `digest` here (what an artifact's subject descriptor needs)."""

    @abstractmethod
    def attach(self, subject: str, artifact: Artifact) -> bool:
        """Make `artifact` a referrer of `subject` here; False when it was one already."""

    @abstractmethod
    def referrers(self, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        """The referrers of `subject` here (of one artifact type if given)."""

    def carry(
        self, source: Layout, image: ImageDescription, jobs: int = 4, progress: BlobProgress = no_progress
    ) -> int:
        """Copy every referrer `image` has at `source` that is not listed here yet, and list it (the number
        carried). Only subjects that have referrers at `source` are asked about here."""
        listed: dict[str, set[str]] = {}
        missing: list[tuple[str, Descriptor]] = []
        for subject, ref in referrers_at(source, subjects_of(image)):
            if subject not in listed:
                listed[subject] = {d.digest for d in self.referrers(subject)}
            if ref.digest not in listed[subject]:
                missing.append((subject, ref))
        if missing:
            self._carry(source, missing, jobs, progress)
        return len(missing)

    @abstractmethod
    def _carry(self, source: Layout, found: list[tuple[str, Descriptor]], jobs: int, progress: BlobProgress) -> None:
        """Copy each (subject, referrer) of `found` at `source` here, and list it."""


class LayoutDestination(Destination):
    """An OCI layout directory (created on the first write)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"oci:{path}"
        self._writer: LayoutWriter | None = None

    @property
    def writer(self) -> LayoutWriter:
        if self._writer is None:
            self._writer = LayoutWriter(self.path)
        return self._writer

    def _entries(self) -> list[Descriptor]:
        if not (self.path / "index.json").exists():
            return []
        return open_layout(self.path).entries()

    def tags(self, tags: tuple[str, ...]) -> dict[str, str]:
        named = {d.annotations[REF_NAME]: d.digest for d in self._entries() if REF_NAME in d.annotations}
        return {t: named[t] for t in tags if t in named}

    def holds(self, digest: str) -> bool:
        return any(d.digest == digest for d in self._entries())

    def write_image(
        self,
        source: Layout,
        image: ImageDescription,
        tags: tuple[str, ...],
        jobs: int = 4,
        progress: BlobProgress = no_progress,
        mount_from: tuple[str, ...] = (),
    ) -> CopyStats:
        stats = copy_blobs(source, image, self.writer, jobs=jobs, progress=progress)
        self.writer.add_to_index(
            *(
                Descriptor(image.media_type, image.digest, image.size, annotations={REF_NAME: tag} if tag else {})
                for tag in tags or ("",)
            )
        )
        return stats

    def subject_size(self, digest: str) -> int:
        return next(d.size for d in self._entries() if d.digest == digest)

    def attach(self, subject: str, artifact: Artifact) -> bool:
        return attach_to_layout(self.writer, artifact, subject)

    def referrers(self, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        if not (self.path / "index.json").exists():
            return []
        layout = open_layout(self.path)
        try:
            found = layout_referrers(layout, subject)
        finally:
            layout.close()
        return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]

    def _carry(self, source: Layout, found: list[tuple[str, Descriptor]], jobs: int, progress: BlobProgress) -> None:
        carry_to_layout(source, found, self.writer, jobs=jobs, progress=progress)


class RegistryDestination(Destination):
    """A repository of a registry; whether it has the referrers API is learnt once (`RegistryReferrers`)."""

    def __init__(self, client: RegistryClient, repo: str) -> None:
        self.client, self.repo = client, repo
        self.name = f"{client.registry}/{repo}"
        self.lister = RegistryReferrers(client, repo)

    def tags(self, tags: tuple[str, ...]) -> dict[str, str]:
        return {t: d for t in tags if (d := self.client.manifest_digest(self.repo, t))}

    def holds(self, digest: str) -> bool:
        return self.client.manifest_digest(self.repo, digest) == digest

    def write_image(
        self,
        source: Layout,
        image: ImageDescription,
        tags: tuple[str, ...],
        jobs: int = 4,
        progress: BlobProgress = no_progress,
        mount_from: tuple[str, ...] = (),
    ) -> CopyStats:
        from imgtrack.oci.remote.images import push_to_registry

        return push_to_registry(
            self.client, self.repo, source, image, tags, jobs=jobs, mount_from=mount_from, progress=progress
        )

    def subject_size(self, digest: str) -> int:
        return self.client.manifest_size(self.repo, digest)

    def attach(self, subject: str, artifact: Artifact) -> bool:
        return self.lister.attach(subject, artifact)

    def referrers(self, subject: str, artifact_type: str | None = None) -> list[Descriptor]:
        return self.lister.of(subject, artifact_type)

    def _carry(self, source: Layout, found: list[tuple[str, Descriptor]], jobs: int, progress: BlobProgress) -> None:
        carry_to_registry(source, found, self.lister, jobs=jobs, progress=progress)
