"""Registries for the length of one command: one client per registry (flag > environment > config >
default, resolved by the caller), and what a destination's tags name, in a registry or a layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from imgtrack.oci.copy import BlobProgress, no_progress
from imgtrack.oci.layout import Layout
from imgtrack.oci.reference import Reference

if TYPE_CHECKING:  # httpx is imported only by commands that talk to a registry
    from imgtrack.oci.destination import Destination
    from imgtrack.oci.referrers import RegistryReferrers
    from imgtrack.oci.remote.registry import RegistryClient

DEFAULT_CHUNK_SIZE = 128 * 1024 * 1024


@dataclass
class Registries:
    """One client per registry for the length of a command."""

    insecure_hosts: frozenset[str] = frozenset()  # registries the config marks insecure
    ca_file: Path | None = None
    insecure: bool = False
    username: str | None = None
    password: str | None = None
    jobs: int = 4
    timeout: float = 60.0
    progress: BlobProgress = no_progress
    # Blobs above this size upload in resumable chunks of it (the caller reads IMGTRACK_CHUNK_SIZE).
    chunk_size: int = DEFAULT_CHUNK_SIZE
    # Carry an image's referrers (signatures, SBOMs, attestations, records) with it (--no-referrers: not).
    carry_referrers: bool = True
    # The registries this command targets: only they get flag or environment credentials.
    targets: set[str] = field(default_factory=set)
    _clients: dict[str, RegistryClient] = field(default_factory=dict)
    _destinations: dict[str, Destination] = field(default_factory=dict)

    def client(self, registry: str) -> RegistryClient:
        from imgtrack.oci.remote.auth import find_credentials
        from imgtrack.oci.remote.registry import RegistryClient

        if registry not in self._clients:
            self._clients[registry] = RegistryClient(
                registry,
                find_credentials(registry, self.username, self.password, explicit=registry in self.targets),
                insecure=self.insecure or registry in self.insecure_hosts,
                ca_file=self.ca_file,
                jobs=self.jobs,
                timeout=self.timeout,
                chunk_size=self.chunk_size,
            )
        return self._clients[registry]

    def destination(self, ref: Reference) -> Destination:
        """Where `ref` (a registry repository or a layout) is written and checked, one a command."""
        from imgtrack.oci.destination import LayoutDestination, RegistryDestination

        if ref.name not in self._destinations:
            self._destinations[ref.name] = (
                LayoutDestination(Path(ref.repository))
                if ref.is_layout
                else RegistryDestination(self.client(ref.registry), ref.repository)
            )
        return self._destinations[ref.name]

    def referrers(self, ref: Reference) -> RegistryReferrers:
        """Referrers of images in one registry repository; whether it has the referrers API is learnt once."""
        from imgtrack.oci.destination import RegistryDestination

        dest = self.destination(ref)
        assert isinstance(dest, RegistryDestination), ref
        return dest.lister

    def open(self, ref: Reference, reference: str) -> Layout:
        from imgtrack.oci.remote.images import RegistryLayout

        return RegistryLayout(self.client(ref.registry), ref.repository, reference)

    def tags_at(self, ref: Reference, tags: tuple[str, ...]) -> dict[str, str]:
        """What each of `tags` names at `ref` now (tags naming nothing are left out)."""
        return self.destination(ref).tags(tags)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
