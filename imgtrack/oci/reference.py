"""Image references: docker's grammar and normalisation (`host[:port]/path[:tag][@digest]`, docker.io
defaults, as the distribution project's reference package parses them) and `oci:PATH[:tag|@digest]`
for an OCI image layout on disk.

The grammars here are the only ones: a tag and a repository are checked against these patterns
everywhere, always with fullmatch (a `$` would let a final newline through).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from imgtrack.errors import InvalidReference
from imgtrack.oci.digest import is_digest

# The tag a registry without the referrers API keeps a digest's referrers under (distribution-spec 1.1).
FALLBACK_TAG_RE = re.compile(r"(sha256-[0-9a-f]{64}|sha512-[0-9a-f]{128})", re.ASCII)


def is_fallback_tag(tag: str) -> bool:
    """A tag a registry's referrers bookkeeping uses: never a release tag, never drift."""
    return FALLBACK_TAG_RE.fullmatch(tag) is not None


DEFAULT_REGISTRY = "docker.io"
# Docker Hub's other names, which docker reads as docker.io.
_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")
_LIBRARY = "library/"
_PATH_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REMOTE = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
TAG_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
TAG_RE = re.compile(TAG_PATTERN, re.ASCII)
# Any algorithm's digest, as the grammar allows; imgtrack then accepts sha256 and sha512 only.
_ANY_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE_RE = re.compile(
    rf"(?P<host>{_HOST})/(?P<path>{_REMOTE})(?::(?P<tag>{TAG_PATTERN}))?(?:@(?P<digest>{_ANY_DIGEST}))?", re.ASCII
)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
_HOST_RE = re.compile(_HOST, re.ASCII)


def check_registry_host(text: str) -> str:
    """`text` if it is a registry host (`host[:port]`, as in a reference); InvalidReference otherwise."""
    if _HOST_RE.fullmatch(text) is None:
        raise InvalidReference(
            f"registry {text[:200]!r} is not a host[:port] such as registry.example.com:5000; fix it"
        )
    return text


def is_tag(text: str) -> bool:
    return TAG_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class Reference:
    """A repository (registry + path) or an OCI layout, optionally with a tag and/or a digest.

    With both, the digest is what the reference names: transfers fetch by it and never consult the
    tag (as docker does); `audit` checks the tag against the ledger's record of that digest.
    """

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


def split_docker_domain(text: str) -> tuple[str, str]:
    """(registry, the rest) as docker reads a reference: the first component is a host when it holds a
    `.` or a `:`, is `localhost`, or holds an uppercase letter (paths never do); else it is Docker Hub,
    whose one-component names live under `library/`."""
    first, slash, rest = text.partition("/")
    if not slash:
        domain, rest = DEFAULT_REGISTRY, text
    elif first in _HUB_ALIASES:
        domain = DEFAULT_REGISTRY
    elif first == "localhost" or "." in first or ":" in first or first.lower() != first:
        domain = first
    else:
        domain, rest = DEFAULT_REGISTRY, text
    if domain == DEFAULT_REGISTRY and "/" not in rest.split("@", 1)[0]:
        rest = _LIBRARY + rest
    return domain, rest


def parse_reference(text: str) -> Reference:
    """Parse a reference; InvalidReference says what is wrong with it."""
    if text.startswith("oci:"):
        return _parse_layout(text)
    shown = repr(text[:200])
    if not text:
        raise InvalidReference("the image reference is empty; write one such as registry.example.com/team/api:1.4.0")
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidReference(
            f"reference {shown} is 64 hexadecimal digits, which docker reads as an image id, not a repository; "
            "write sha256:… for a digest, or name the repository"
        )
    domain, rest = split_docker_domain(text)
    m = _REFERENCE_RE.fullmatch(f"{domain}/{rest}")
    if m is None:
        raise InvalidReference(f"reference {shown} {_why_not(text, rest)}")
    path, tag, digest = m["path"], m["tag"], m["digest"]
    if len(path) > _PATH_MAX:
        raise InvalidReference(f"reference {shown}: the repository path is {len(path)} characters, {_PATH_MAX} at most")
    if digest is not None and not is_digest(digest):
        raise InvalidReference(
            f"reference {shown}: {digest[:80]!r} is not a digest imgtrack reads (sha256: and 64 lowercase hex, "
            "or sha512: and 128); fix it"
        )
    return Reference(registry=domain, repository=path, tag=tag, digest=digest)


def _why_not(text: str, rest: str) -> str:
    """Why a reference does not parse, as precisely as a one-line message can say."""
    if any(c.isspace() or not c.isprintable() for c in text):
        return "holds whitespace or a control character; remove it"
    name = rest.split("@", 1)[0]
    name = name[: name.rfind(":")] if name.rfind(":") > name.rfind("/") else name
    if name.lower() != name and _REFERENCE_RE.fullmatch(f"h/{name.lower()}"):
        return f"names the repository {name!r}, which must be lowercase; fix the name"
    if "@" in text:
        return "has a malformed digest or a malformed name before it (NAME[:TAG]@sha256:…); fix it"
    return (
        "is not NAME[:TAG][@DIGEST]: the repository is lowercase path components (a-z 0-9, separated by "
        ". _ __ - and /), a tag is 1-128 of A-Z a-z 0-9 _ . - ; fix it"
    )


def parse_repository(text: str, what: str) -> Reference:
    """A repository without tag or digest (`--to`, `--repository`, config `repositories`); InvalidReference
    names `what`."""
    ref = parse_reference(text)
    if ref.tag or ref.digest:
        raise InvalidReference(f"{what} {text!r}: give the repository without a tag or digest")
    return ref


def _parse_layout(text: str) -> Reference:
    body = text[len("oci:") :]
    digest = tag = None
    if any(not c.isprintable() for c in body):
        raise InvalidReference(f"reference {text[:200]!r} holds a control character; remove it")
    if "@" in body:
        body, digest = body.rsplit("@", 1)
        if not is_digest(digest):
            raise InvalidReference(f"reference {text!r}: {digest!r} is not a digest")
    name = Path(body).name
    if ":" in name:
        body, tag = body.rsplit(":", 1)
        if not is_tag(tag):
            raise InvalidReference(f"reference {text!r}: tag {tag!r} is not a valid tag")
    if not body:
        raise InvalidReference(f"reference {text!r} names no directory; write oci:PATH")
    return Reference(registry="", repository=str(Path(body).expanduser().resolve()), tag=tag, digest=digest)
