"""Image references: docker's grammar (`host[:port]/path[:tag][@digest]`, docker.io defaults) and
`oci:PATH[:tag|@digest]` for an OCI image layout on disk."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from imgtrack.errors import InvalidReference
from imgtrack.oci.digest import DIGEST_RE

DEFAULT_REGISTRY = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?$")


@dataclass(frozen=True)
class Reference:
    """A repository (registry + path) or an OCI layout, optionally with a tag and/or a digest."""

    registry: str  # "" for a layout
    repository: str  # the path in the registry, or the layout directory
    tag: str | None = None
    digest: str | None = None

    @property
    def is_layout(self) -> bool:
        return not self.registry

    @property
    def name(self) -> str:
        """The repository as users write it: `host/path` or `oci:/abs/dir`."""
        return f"oci:{self.repository}" if self.is_layout else f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str) -> Reference:
    """Parse a reference; InvalidReference says what is wrong with it."""
    if text.startswith("oci:"):
        return _parse_layout(text)
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise InvalidReference(f"reference {text!r}: {digest!r} is not a digest (sha256: and 64 hex)")
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"reference {text!r}: tag {tag!r} is not a valid tag")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first, remainder
        if not _HOST_RE.match(registry):
            raise InvalidReference(f"reference {text!r}: {registry!r} is not a registry host")
    else:
        registry, path = DEFAULT_REGISTRY, rest
        if "/" not in path:
            path = f"library/{path}"
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DEFAULT_REGISTRY
    if not path or not _PATH_RE.match(path) or len(path) > 255:
        raise InvalidReference(
            f"reference {text!r}: repository {path!r} must be lowercase path components "
            "(a-z 0-9, separated by . _ __ - and /); fix the name"
        )
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)


def _parse_layout(text: str) -> Reference:
    body = text[len("oci:"):]
    digest = tag = None
    if "@" in body:
        body, digest = body.rsplit("@", 1)
        if not DIGEST_RE.match(digest):
            raise InvalidReference(f"reference {text!r}: {digest!r} is not a digest")
    name = Path(body).name
    if ":" in name:
        body, tag = body.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"reference {text!r}: tag {tag!r} is not a valid tag")
    if not body:
        raise InvalidReference(f"reference {text!r} names no directory; write oci:PATH")
    return Reference(registry="", repository=str(Path(body).expanduser().resolve()), tag=tag, digest=digest)
