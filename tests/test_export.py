"""`imgtrack export allowlist --format kyverno`: a ClusterPolicy valid under Kyverno's current CRD
schema, admitting a Pod only when every container is pinned to a recorded digest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import kyverno
from tests.conftest import LayoutFactory, commit_file, git, run


@pytest.fixture(scope="module")
def kyverno_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return kyverno.clusterpolicy_model(tmp_path_factory.mktemp("kyverno"))


@pytest.fixture
def ledger(project: Path, layouts: LayoutFactory) -> dict[str, dict[str, Any]]:
    """A release of `api` (two platforms), a later dev build of `api`, and a release of `web`."""
    git(project, "tag", "v1.0.0")
    multi, _ = layouts(platforms=("linux/amd64", "linux/arm64"))
    release = run(["record", str(multi), "--image", "api", "--json"], project).json()
    web = run(["record", str(layouts()[0]), "--image", "web", "--json"], project).json()
    commit_file(project)
    dev = run(["record", str(layouts()[0]), "--image", "api", "--json"], project).json()
    assert "-dev." in dev["version"]
    return {"release": release, "dev": dev, "web": web}


def _pod(*images: str, init: tuple[str, ...] = (), ephemeral: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]}
    if init:
        spec["initContainers"] = [{"name": f"i{i}", "image": im} for i, im in enumerate(init)]
    if ephemeral:
        spec["ephemeralContainers"] = [{"name": f"e{i}", "image": im} for i, im in enumerate(ephemeral)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "prod"}, "spec": spec}


def _export(project: Path, *args: str) -> dict[str, Any]:
    result = run(["export", "allowlist", "--format", "kyverno", *args], project)
    assert result.code == 0, result.err
    doc = yaml.safe_load(result.out)
    assert isinstance(doc, dict)
    return doc


def test_the_policy_is_valid_under_kyvernos_clusterpolicy_schema(
    project: Path,
    ledger: dict[str, dict[str, Any]],
    kyverno_models: Any,
) -> None:
    doc = _export(project)
    policy = kyverno_models.ClusterPolicy.model_validate(doc)  # unknown fields and bad enums are refused
    assert policy.spec.rules[0].validate_.failure_action == "Enforce"
    assert policy.metadata.name == "imgtrack-recorded-images"
    used = {c["operator"] for c in doc["spec"]["rules"][0]["validate"]["foreach"][0]["deny"]["conditions"]["any"]}
    used |= {c["operator"] for c in doc["spec"]["rules"][0]["preconditions"]["all"]}
    assert used <= kyverno.operators(kyverno_models)
    audit = kyverno_models.ClusterPolicy.model_validate(_export(project, "--audit", "--name", "prod.images"))
    assert audit.spec.rules[0].validate_.failure_action == "Audit" and audit.metadata.name == "prod.images"


def test_the_schema_check_refuses_what_kyverno_would_refuse(
    kyverno_models: Any, project: Path, ledger: dict[str, dict[str, Any]]
) -> None:
    import pydantic

    doc = _export(project)
    doc["spec"]["rules"][0]["validate"]["failureAction"] = "Block"
    with pytest.raises(pydantic.ValidationError):
        kyverno_models.ClusterPolicy.model_validate(doc)
    doc = _export(project)
    doc["spec"]["rules"][0]["validate"]["foreachh"] = doc["spec"]["rules"][0]["validate"].pop("foreach")
    with pytest.raises(pydantic.ValidationError):
        kyverno_models.ClusterPolicy.model_validate(doc)


def test_pods_pinned_to_recorded_digests_are_admitted_and_others_denied(
    project: Path,
    ledger: dict[str, dict[str, Any]],
) -> None:
    policy = _export(project)
    release, dev, web = ledger["release"], ledger["dev"], ledger["web"]
    platform = release["manifests"][1]["digest"]
    unknown = "sha256:" + "e" * 64
    admitted = [
        _pod(f"registry.example.com/team/api@{release['digest']}"),
        _pod(f"registry.example.com/team/api:1.0.0@{release['digest']}", init=(f"mirror.local/web@{web['digest']}",)),
        _pod(f"registry.example.com/team/api@{platform}"),  # a platform manifest of a recorded index
        _pod(f"registry.example.com/team/api@{dev['digest']}", ephemeral=(f"debug/web@{web['digest']}",)),
    ]
    denied = [
        _pod("registry.example.com/team/api:1.0.0"),  # a tag can move
        _pod(f"registry.example.com/team/api@{unknown}"),  # built outside the pipeline
        _pod(f"registry.example.com/team/api@{release['digest']}", init=("busybox:latest",)),
        _pod(f"registry.example.com/team/api@{release['digest']}", ephemeral=(f"debug/x@{unknown}",)),
        _pod("*"),  # a wildcard would match every pattern in Kyverno's two-way matching
        _pod(f"*@{unknown}"),
        _pod(f"registry.example.com/team/api@{release['digest']}x"),
    ]
    assert all(kyverno.admits(policy, pod) for pod in admitted)
    assert not any(kyverno.admits(policy, pod) for pod in denied)
    assert kyverno.admits(policy, _pod("anything:latest"), operation="DELETE")  # deleting is never blocked


def test_releases_only_and_image_narrow_the_policy(project: Path, ledger: dict[str, dict[str, Any]]) -> None:
    release, dev, web = ledger["release"], ledger["dev"], ledger["web"]
    only_releases = _export(project, "--releases-only")
    assert kyverno.admits(only_releases, _pod(f"r/api@{release['digest']}"))
    assert not kyverno.admits(only_releases, _pod(f"r/api@{dev['digest']}"))
    only_web = _export(project, "--image", "web")
    assert kyverno.admits(only_web, _pod(f"r/web@{web['digest']}"))
    assert not kyverno.admits(only_web, _pod(f"r/api@{release['digest']}"))


def test_bad_requests_exit_2_with_one_line_and_write_nothing(
    project: Path,
    ledger: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    out = tmp_path / "policy.yaml"
    for args, words in [
        (["--format", "gatekeeper"], "unknown format"),
        (["--image", "nope"], "no records of that image"),
        (["--name", "Not_A_Name"], "not a Kubernetes object name"),
    ]:
        result = run(["export", "allowlist", *args, "-o", str(out)], project)
        assert result.code == 2 and words in result.err and len(result.err.strip().splitlines()) == 1, result.err
        assert not out.exists()


def test_no_matching_record_is_refused_rather_than_a_policy_that_admits_nothing(project: Path) -> None:
    result = run(["export", "allowlist"], project)
    assert result.code == 2 and "record a build first" in result.err and result.out == ""


def test_output_file_is_written_whole(project: Path, ledger: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "policy.yaml"
    out.parent.mkdir()  # -o makes the file, not folders on the way to it (docs/transfer.md)
    result = run(["export", "allowlist", "-o", str(out)], project)
    assert result.code == 0 and "admitting 5 digests of 3 records" in result.out, result.out
    assert yaml.safe_load(out.read_text()) == _export(project)
    assert [p.name for p in out.parent.iterdir()] == ["policy.yaml"]


def test_a_policy_over_the_kubernetes_object_limit_is_refused(
    project: Path,
    ledger: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from imgtrack.commands import export
    from imgtrack.errors import UsageError
    from imgtrack.project import Project

    size = len(export.export_allowlist(Project.open(project), "kyverno", [], False, "p", False).text.encode())
    monkeypatch.setattr(export, "MAX_POLICY_BYTES", size - 1)
    with pytest.raises(UsageError, match="over the 1.5 MiB Kubernetes accepts.*--releases-only or --image"):
        export.export_allowlist(Project.open(project), "kyverno", [], False, "p", False)


def test_json_is_the_same_policy(project: Path, ledger: dict[str, dict[str, Any]]) -> None:
    result = run(["export", "allowlist", "--json"], project)
    assert result.code == 0 and result.json() == _export(project)
