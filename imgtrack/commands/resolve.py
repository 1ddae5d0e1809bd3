"""`imgtrack resolve`: the highest recorded version in a range, pinned by digest for a deployment."""

from __future__ import annotations

from dataclasses import dataclass

from imgtrack.errors import NotFound, UsageError
from imgtrack.ledger.ledger import Ledger
from imgtrack.ledger.schema import Build
from imgtrack.oci.reference import parse_repository
from imgtrack.versions import parse_range


@dataclass(frozen=True)
class Resolved:
    record: Build
    pinned: str  # IMAGE@sha256:… or REPOSITORY@sha256:…


def resolve_range(ledger: Ledger, spec: str, repository: str | None = None) -> Resolved:
    """The highest recorded version in `IMAGE@RANGE`, as a digest-pinned reference."""
    image, sep, text = spec.partition("@")
    if not sep or not image or not text:
        raise UsageError(f"{spec!r} is not IMAGE@RANGE; write e.g. api@^1.4, api@~1.4.2 or api@1.x")
    version_range = parse_range(text)
    if repository is not None:
        parse_repository(repository, "--repository")
    ledger.require_image(image)
    record = ledger.resolve(image, version_range)
    if record is None:
        raise NotFound(f"no recorded version of {image} satisfies {text!r}; see `imgtrack log {image}`")
    return Resolved(record=record, pinned=f"{repository or image}@{record.digest}")
