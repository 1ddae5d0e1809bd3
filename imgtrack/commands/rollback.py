"""`imgtrack rollback IMAGE --env NAME`: the pinned reference of the release that ran in an environment
before the one running now, skipping builds marked bad there, and checked by HEAD to still exist where
the environment pulls it from (registries garbage-collect what no tag holds)."""

from __future__ import annotations

from dataclasses import dataclass, field

from imgtrack.errors import ImgtrackError, NotFound
from imgtrack.ledger.ledger import current_runs
from imgtrack.ledger.schema import Build
from imgtrack.oci.pool import Registries
from imgtrack.oci.reference import parse_reference
from imgtrack.project import Project


@dataclass(frozen=True)
class RollbackResult:
    current: Build
    target: Build
    pinned: str  # REPOSITORY@sha256:…, or IMAGE@sha256:… when no repository is known
    checked: bool  # the manifest was found there by HEAD
    skipped: list[tuple[Build, str]] = field(default_factory=list)  # builds passed over, and why
    unchecked: str = ""  # why the target's presence could not be checked, when it could not


def rollback(project: Project, image: str, env: str, registries: Registries) -> RollbackResult:
    config = project.config.environment(env, project.config_path)
    project.ledger.require_image(image)
    ledger = project.ledger
    events = ledger.environment_facts(image, env)  # from the cache: a build is read only when it is weighed
    now = current_runs(events).get(env)
    if now is None:
        raise NotFound(f"nothing of {image} is recorded as running in {env}; record a rollout with imgtrack deploy")
    current = ledger.read(now[0].path)
    bad = {e.record for e in events if e.kind == "bad"}
    seen: set[str] = {current.digest}
    skipped: list[tuple[Build, str]] = []
    for fact in reversed(events):
        if fact.kind == "bad" or fact.record in seen or fact.at > now[1]:
            continue
        seen.add(fact.record)
        build = ledger.read(fact.path)
        if build.digest in bad:
            skipped.append((build, f"marked bad in {env}"))
            continue
        repositories = [fact.repository] if fact.repository else list(config.repositories)
        where, state, why = _locate(build, repositories, registries)
        if state == "missing":
            skipped.append((build, why))
            continue
        return RollbackResult(current, build, f"{where or image}@{build.digest}", state == "found", skipped, why)
    reasons = "; ".join(f"{b.version}: {why}" for b, why in skipped)
    raise NotFound(f"no earlier build of {image} to roll {env} back to" + (f" ({reasons})" if reasons else ""))


def _locate(build: Build, repositories: list[str], registries: Registries) -> tuple[str, str, str]:
    """(repository, "found" | "missing" | "unknown", why): whether HEAD finds the build's manifest where
    the environment pulls it from. "unknown" when no repository is known or none could be asked."""
    why = "" if repositories else "no repository is known for it: deploy with --to, or list the environment's"
    missing = ""
    for text in repositories:
        try:
            ref = parse_reference(text)
            present = registries.destination(ref).holds(build.digest)
        except ImgtrackError as exc:
            why = f"{text} could not be asked ({exc})"
            continue
        if present:
            return ref.name, "found", ""
        missing = f"its manifest no longer exists in {ref.name} (deleted or garbage-collected)"
    return ("", "missing", missing) if missing else ("", "unknown", why)
