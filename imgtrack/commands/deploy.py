"""`imgtrack deploy IMAGE@VERSION --env NAME`: record that a build was rolled out to an environment (a
ledger fact: who, when, from where), promoting it there first with `--to`; `--bad` marks it bad there
instead, so that a rollback never goes back to it."""

from __future__ import annotations

from dataclasses import dataclass

from imgtrack.errors import UsageError
from imgtrack.ledger.schema import Build, Fact, now
from imgtrack.oci.pool import Registries
from imgtrack.oci.reference import parse_repository
from imgtrack.project import Project


@dataclass(frozen=True)
class DeployResult:
    build: Build
    fact: Fact
    promoted_to: str = ""


def deploy(
    project: Project, ref: str, env: str, registries: Registries, to: str | None = None, bad: bool = False
) -> DeployResult:
    config = project.config.environment(env, project.config_path)  # an unknown environment is refused first
    if bad and to:
        raise UsageError("--bad marks a build bad in an environment; it deploys nothing: drop --to")
    build = project.ledger.find_one(ref)
    repository = ""
    if to:
        repository = parse_repository(to, "--to").name
        from imgtrack.commands.push import push_image

        push_image(project, ref, None, [to], registries, promote=True)
    elif not bad:
        # Where it runs from, when the environment names one repository for it and the build is there.
        pushed = {p.repository for p in build.pushes}
        mine = [r for r in config.repositories if parse_repository(r, "repositories").name in pushed]
        repository = parse_repository(mine[0], "repositories").name if len(mine) == 1 else ""
    fact = Fact(
        kind="bad" if bad else "deploy",
        image=build.image,
        record=build.digest,
        at=now(),
        by=project.repo.identity(),
        env=env,
        repository=repository,
    )
    project.ledger.add_fact(fact)
    return DeployResult(project.ledger.get(build.image, build.digest) or build, fact, repository if to else "")
