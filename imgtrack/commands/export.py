"""`imgtrack export allowlist --format kyverno`: a Kyverno ClusterPolicy that admits a Pod only when
every container image is pinned to a digest the ledger records.

The policy is plain data: every recorded digest (an index and its platform manifests) becomes a
`*@sha256:…` pattern, and one `foreach` rule denies a container, init container or ephemeral container
whose image matches none. Tags are not admitted: a tag can move, a digest cannot (pin images with
`imgtrack resolve`). Kyverno turns the Pod rule into rules for Deployments, Jobs and the other pod
controllers itself. See docs/audit.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imgtrack.errors import UsageError
from imgtrack.ledger.schema import Build
from imgtrack.project import Project

FORMATS = ("kyverno",)
# The API server refuses an object above etcd's request limit (1.5 MiB by default): such a policy could
# be written but never applied, so it is refused here with the ways to narrow it.
MAX_POLICY_BYTES = 1_572_864
CONTAINER_LISTS = "request.object.spec.[ephemeralContainers, initContainers, containers][]"


@dataclass(frozen=True)
class Allowlist:
    policy: dict[str, object]
    text: str  # YAML, with a comment naming the commit it came from
    records: int
    digests: int


def select_records(project: Project, images: list[str], releases_only: bool) -> list[Build]:
    """The records an allowlist admits, by image then version: all of them, or only releases (no
    pre-release version, clean work tree)."""
    index = project.ledger.index()
    known = index.images()
    unknown = [name for name in images if name not in known]
    if unknown:
        raise UsageError(
            f"--image {unknown[0]}: no records of that image in the ledger; see `imgtrack log` for what is recorded"
        )
    chosen: list[Build] = []
    for image in images or known:
        paths = [path for _, path in sorted(index.versions(image, releases_only=releases_only))]
        records = [project.ledger.read(path) for path in paths]
        chosen += [r for r in records if not (releases_only and r.dirty)]
    return chosen


def admitted_digests(records: list[Build]) -> list[str]:
    """What a Pod may name: each record's digest and its platform manifests' (not configs: no runtime
    pulls an image by its config's digest)."""
    return list(dict.fromkeys(d for r in records for d in [r.digest, *(m.digest for m in r.manifests)]))


def kyverno_policy(records: list[Build], digests: list[str], name: str, audit: bool, commit: str) -> dict[str, object]:
    """The ClusterPolicy (kyverno.io/v1) as data."""
    images = sorted({r.image for r in records})
    return {
        "apiVersion": "kyverno.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {
            "name": name,
            "annotations": {
                "policies.kyverno.io/title": "Images recorded by imgtrack",
                "policies.kyverno.io/subject": "Pod",
                "policies.kyverno.io/description": (
                    "Admits a Pod only if each of its containers, init containers and ephemeral containers "
                    "names its image by a digest that the imgtrack ledger records "
                    f"({len(records)} record{'s' if len(records) != 1 else ''} of {', '.join(images)})."
                ),
                "imgtrack/generated-at-commit": commit,
            },
        },
        "spec": {
            "background": True,
            "rules": [
                {
                    "name": "recorded-digests-only",
                    "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                    "preconditions": {
                        "all": [
                            {
                                "key": "{{ request.operation || 'BACKGROUND' }}",
                                "operator": "NotEquals",
                                "value": "DELETE",
                            },
                        ]
                    },
                    "validate": {
                        "failureAction": "Audit" if audit else "Enforce",
                        "message": (
                            "every container image must be pinned to a digest the imgtrack ledger records "
                            "(REPOSITORY@sha256:DIGEST); `imgtrack resolve IMAGE@VERSION --repository REPOSITORY` prints one"
                        ),
                        "foreach": [
                            {
                                "list": CONTAINER_LISTS,
                                "deny": {
                                    "conditions": {
                                        "any": [
                                            # Kyverno matches wildcards both ways, so an image holding * or ? could match
                                            # any pattern; no valid image reference contains either.
                                            {
                                                "key": "{{ contains(element.image, '*') || contains(element.image, '?') }}",
                                                "operator": "Equals",
                                                "value": True,
                                            },
                                            {
                                                "key": "{{ element.image }}",
                                                "operator": "AnyNotIn",
                                                "value": [f"*@{d}" for d in digests],
                                            },
                                        ]
                                    }
                                },
                            }
                        ],
                    },
                }
            ],
        },
    }


def export_allowlist(
    project: Project,
    fmt: str,
    images: list[str],
    releases_only: bool,
    name: str,
    audit: bool,
) -> Allowlist:
    import yaml

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: unknown format; choose from {', '.join(FORMATS)}")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name):
        raise UsageError(f"--name {name!r}: not a Kubernetes object name; use lower-case letters, digits, '-' and '.'")
    records = select_records(project, images, releases_only)
    if not records:
        raise UsageError(
            "no record matches, so the policy would admit no image at all; "
            + ("drop --releases-only or tag a release" if releases_only else "record a build first")
        )
    commit = project.repo.head_commit()
    digests = admitted_digests(records)
    policy = kyverno_policy(records, digests, name, audit, commit)
    text = (
        f"# Generated by `imgtrack export allowlist` at commit {commit[:12]}; regenerate it after each release.\n"
        + yaml.safe_dump(policy, sort_keys=False, default_flow_style=False, width=1000)
    )
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise UsageError(
            f"the policy would be {len(text.encode()) // 1024} KiB, over the 1.5 MiB Kubernetes accepts for one "
            "object; narrow it with --releases-only or --image NAME"
        )
    return Allowlist(policy, text, len(records), len(digests))
