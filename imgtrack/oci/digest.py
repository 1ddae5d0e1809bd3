"""Content digests: validation (before a digest ever becomes a path) and hashing."""

from __future__ import annotations

import hashlib
import re

from imgtrack.errors import InvalidReference

# The one digest grammar. Use these with fullmatch: `$` would let a final newline through.
DIGEST_PATTERN = r"(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})"
DIGEST_RE = re.compile(DIGEST_PATTERN, re.ASCII)
DIGEST_PREFIX_RE = re.compile(r"(?:sha256|sha512):[a-f0-9]{1,128}", re.ASCII)


def is_digest(text: str) -> bool:
    return DIGEST_RE.fullmatch(text) is not None


def check_digest(text: str, what: str = "digest") -> str:
    """`text` if it is a well-formed sha256/sha512 digest; InvalidReference otherwise."""
    if not is_digest(text):
        raise InvalidReference(
            f"{what} {text[:80]!r} is not a digest (sha256: and 64 lowercase hex, or sha512: and 128); fix it"
        )
    return text


def hasher(digest: str) -> hashlib._Hash:
    algo = digest.split(":", 1)[0]
    return hashlib.new(algo)


def digest_bytes(data: bytes, algo: str = "sha256") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def file_name(digest: str) -> str:
    """`sha256:ab…` as a ledger file stem `sha256-ab…`."""
    return check_digest(digest).replace(":", "-", 1)
