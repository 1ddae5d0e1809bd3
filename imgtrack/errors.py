"""The exceptions imgtrack raises, one flat tree under `ImgtrackError`.

Each class carries the process exit status the CLI maps it to (README, docs/ledger.md):
1 a check failed, 2 bad usage or bad input, 3 registry or network failure, 74 a local file could not
be written or read (disk full, permissions), 70 internal error.
Messages are one line: the thing, the reason, and the next step.
"""

from __future__ import annotations


class ImgtrackError(Exception):
    """Base of every error imgtrack reports to a user."""

    exit_code = 70


class UsageError(ImgtrackError):
    """The command line or an input file is wrong; nothing was written."""

    exit_code = 2


class NotAGitRepository(UsageError):
    """The working directory is not inside a git work tree."""

    @classmethod
    def from_path(cls, path: str) -> NotAGitRepository:
        return cls(
            f"{path} is not inside a git work tree; run imgtrack in a clone of your project (git init for a new "
            "one; a CI job with no checkout records from any clone: record --digest … --commit … --version …)"
        )


class GitStateError(UsageError):
    """The repository is in a state imgtrack cannot work from (no commits, shallow, dirty)."""


class GitError(GitStateError):
    """A git command failed: the message carries git's own last line (a held index.lock, a corrupt
    object), which names what to fix in the repository."""


class ConfigError(UsageError):
    """`.imgtrack/config.toml` is missing or malformed."""


class LedgerError(UsageError):
    """A ledger record is malformed; the message names the file and line."""


class LayoutError(UsageError):
    """An OCI image layout, layout tar or build metadata file cannot be read."""


class InvalidVersion(UsageError):
    """A version is not semver or contradicts the git tags."""


class InvalidTag(UsageError):
    """A tag breaks the registry tag grammar."""


class InvalidReference(UsageError):
    """An image reference, digest or ledger reference cannot be parsed or found."""


class PolicyViolation(ImgtrackError):
    """The tagging policy refuses the operation."""

    exit_code = 1


class RegistryError(ImgtrackError):
    """A registry or the network failed after retries."""

    exit_code = 3


class NotTLS(RegistryError):
    """The server answered a TLS handshake with plain HTTP."""


class TransferInterrupted(RegistryError):
    """A blob's bytes stopped arriving part way; the blob may be fetched again from its start."""


class NotFound(ImgtrackError):
    """A lookup found nothing: no record for that reference, no version in that range."""

    exit_code = 1


class LocalIOError(ImgtrackError):
    """The local file system failed under imgtrack (no space left, permission denied, read-only); what
    was being written is left as it was."""

    exit_code = 74
