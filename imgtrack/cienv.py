"""What CI systems' environments say about the commit a job has checked out.

A pull-request pipeline may build a merge commit the CI service made to test the change: GitHub's
`pull_request` event checks out `refs/pull/N/merge` (`GITHUB_SHA` is that merge), GitLab's merged results
pipelines build a merge ref (`CI_COMMIT_SHA`). No branch keeps such a commit once the pipeline is done,
so a record of it could never be traced; the pull request's own head commit is what a record should name
(docs/ci.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

MAX_EVENT_BYTES = 8 * 1024 * 1024  # GitHub's event file: a few KB to a few hundred


def pull_request_merge(environ: Mapping[str, str], head: str) -> tuple[str, str | None] | None:
    """(what made the merge, the pull request's head commit if the environment names it) when `head` is
    a CI service's test merge of a pull request; None otherwise."""
    if (
        environ.get("GITHUB_ACTIONS") == "true"
        and environ.get("GITHUB_EVENT_NAME") == "pull_request"
        and environ.get("GITHUB_SHA") == head
    ):
        return "GitHub's test merge of the pull request (GITHUB_SHA)", _github_head(environ.get("GITHUB_EVENT_PATH"))
    if (
        environ.get("GITLAB_CI") == "true"
        and environ.get("CI_MERGE_REQUEST_EVENT_TYPE") == "merged_result"
        and environ.get("CI_COMMIT_SHA") == head
    ):
        return (
            "GitLab's merged result of the merge request (CI_COMMIT_SHA)",
            environ.get("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA") or None,
        )
    return None


def _github_head(path: str | None) -> str | None:
    """pull_request.head.sha of GitHub's event file, read with a limit; None if it cannot be read."""
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_EVENT_BYTES + 1)
        if len(data) > MAX_EVENT_BYTES:
            return None
        sha = json.loads(data).get("pull_request", {}).get("head", {}).get("sha")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return sha if isinstance(sha, str) and len(sha) in (40, 64) and all(c in "0123456789abcdef" for c in sha) else None
