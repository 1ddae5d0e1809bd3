"""Environments, for real: deploy, status and rollback over three releases in two environments against
the real registry, a rollback target deleted from it, builds marked bad, and audit --env sightings."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from testkit.registries import Registry
from tests.conftest import LayoutFactory, commit_file, fact_files, run


def _environments(project: Path, staging: str, prod: str) -> None:
    with open(project / ".imgtrack" / "config.toml", "a") as f:
        f.write(
            f'\n[environments.staging]\nrepositories = ["{staging}"]\n'
            f'\n[environments.prod]\nrepositories = ["{prod}"]\n'
        )


def test_deploy_status_and_rollback_over_three_releases(
    project: Path, layouts: LayoutFactory, plain_registry: Registry
) -> None:
    staging, prod = plain_registry.repo("staging"), plain_registry.repo("prod")
    _environments(project, staging, prod)
    releases = {}
    for i, version in enumerate(("1.0.0", "1.1.0", "1.2.0")):
        commit_file(project, message=f"for {version}")
        path, _ = layouts(seed=70 + i)
        pushed = run(
            ["push", str(path), "--image", "api", "--version", version, "--to", staging, "-q", "--json"], project
        )
        assert pushed.code == 0, pushed.err
        releases[version] = pushed.json()["digest"]  # type: ignore[index]
        assert run(["deploy", f"api@{version}", "--env", "staging"], project).code == 0
        promoted = run(["deploy", f"api@{version}", "--env", "prod", "--to", prod, "-q"], project)
        assert promoted.code == 0, promoted.err
        assert f"deployed to prod from {prod}" in promoted.out
    commit_file(project, message="after 1.2.0")
    path, _ = layouts(seed=79)
    assert run(["record", str(path), "--image", "api", "--version", "1.3.0"], project).code == 0

    status = run(["status", "--json"], project).json()
    (api,) = [s for s in status if s["image"] == "api"]  # type: ignore[union-attr]
    assert api["newest_release"] == "1.3.0"
    envs = {e["env"]: e for e in api["environments"]}
    assert envs["prod"]["version"] == "1.2.0" and envs["staging"]["version"] == "1.2.0"
    assert envs["prod"]["commits_behind"] == 1 and envs["prod"]["how"] == "deploy"
    assert "prod         1.2.0" in run(["status", "api"], project).out

    back = run(["rollback", "api", "--env", "prod", "--json"], project)
    assert back.code == 0, back.err
    assert back.json()["reference"] == f"{prod}@{releases['1.1.0']}" and back.json()["checked"] is True  # type: ignore[index]

    # 1.1.0 marked bad in prod: the rollback passes it over, to 1.0.0.
    assert run(["deploy", "api@1.1.0", "--env", "prod", "--bad"], project).code == 0
    back = run(["rollback", "api", "--env", "prod"], project)
    assert back.out.strip() == f"{prod}@{releases['1.0.0']}" and "skipped 1.1.0: marked bad in prod" in back.err

    # 1.0.0 deleted from prod's registry (a garbage collection): nothing left to roll back to, and why.
    subprocess.run(["skopeo", "delete", "--tls-verify=false", f"docker://{prod}@{releases['1.0.0']}"], check=True)
    none = run(["rollback", "api", "--env", "prod"], project)
    assert none.code == 1 and len(none.err.strip().splitlines()) == 1, none
    assert "1.0.0: its manifest no longer exists" in none.err and "1.1.0: marked bad" in none.err

    # Staging still rolls back, from its own repository.
    assert run(["rollback", "api", "--env", "staging"], project).out.strip() == f"{staging}@{releases['1.1.0']}"
    assert run(["verify"], project).code == 0


def test_a_rollback_after_a_redeploy_goes_to_the_one_before(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    _environments(project, f"oci:{tmp_path / 's'}", f"oci:{tmp_path / 'p'}")
    for i, version in enumerate(("2.0.0", "2.1.0")):
        commit_file(project, message=version)
        path, _ = layouts(seed=80 + i)
        assert (
            run(
                ["push", str(path), "--image", "api", "--version", version, "--to", f"oci:{tmp_path / 'p'}", "-q"],
                project,
            ).code
            == 0
        )
        assert run(["deploy", f"api@{version}", "--env", "prod"], project).code == 0
    assert run(["deploy", "api@2.0.0", "--env", "prod"], project).code == 0  # rolled back by hand
    assert run(["deploy", "api@2.1.0", "--env", "prod"], project).code == 0  # and forward again
    back = run(["rollback", "api", "--env", "prod", "--json"], project).json()
    assert back["version"] == "2.0.0" and back["checked"] is True  # type: ignore[index]


def test_audit_env_records_what_it_saw_running(project: Path, layouts: LayoutFactory, tmp_path: Path) -> None:
    _environments(project, "registry.example.com/staging/api", "registry.example.com/prod/api")
    path, digest = layouts()
    rec = run(["record", str(path), "--image", "api", "--version", "3.0.0", "--json"], project).json()
    pods = {
        "kind": "List",
        "items": [
            {
                "kind": "Pod",
                "metadata": {"name": f"p{i}"},
                "spec": {"containers": [{"name": "api", "image": f"registry.example.com/prod/api@{digest}"}]},
            }
            for i in range(3)
        ],
    }
    assert run(["audit", "-", "--env", "prod"], project, stdin=json.dumps(pods)).code == 0
    assert len(fact_files(project, rec, "seen")) == 1  # three pods, one build: one sighting
    envs = run(["status", "api", "--json"], project).json()[0]["environments"]  # type: ignore[index]
    assert [(e["env"], e["version"], e["how"]) for e in envs] == [("prod", "3.0.0", "seen")]


def test_unknown_environments_and_nothing_to_roll_back(project: Path, layouts: LayoutFactory) -> None:
    path, _ = layouts()
    assert run(["record", str(path), "--image", "api", "--version", "4.0.0"], project).code == 0
    for args in (
        ["deploy", "api@4.0.0", "--env", "moon"],
        ["rollback", "api", "--env", "moon"],
        ["audit", "-", "--env", "moon"],
    ):
        result = run(args, project, stdin="")
        assert result.code == 2 and "environment 'moon' is not configured" in result.err, (args, result)
    _environments(project, "registry.example.com/s/api", "registry.example.com/p/api")
    assert run(["deploy", "api@4.0.0", "--env", "prod"], project).code == 0
    alone = run(["rollback", "api", "--env", "prod"], project)
    assert alone.code == 1 and "no earlier build of api to roll prod back to" in alone.err
    assert run(["rollback", "api", "--env", "staging"], project).code == 1
    assert (
        run(["deploy", "api@4.0.0", "--env", "prod", "--bad", "--to", "registry.example.com/p/api"], project).code == 2
    )
