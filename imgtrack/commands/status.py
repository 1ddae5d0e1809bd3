"""`imgtrack status [IMAGE]`: for each image its newest release and, per environment, what runs there
(version, commit, since when, commits behind the newest release), from the ledger's deploy and audit
facts: offline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from imgtrack.ledger.ledger import Ledger
from imgtrack.ledger.schema import Build, Fact
from imgtrack.project import Project


@dataclass(frozen=True)
class Running:
    env: str
    build: Build
    since: datetime  # the first deploy or sighting of this build in the run that is still current
    how: str  # "deploy" or "seen"
    behind: int | None  # commits behind the newest release; None when there is none, or no history


@dataclass(frozen=True)
class ImageStatus:
    image: str
    newest: Build | None  # the highest release recorded
    running: list[Running]


def image_status(project: Project, image: str) -> ImageStatus:
    ledger: Ledger = project.ledger
    newest_version = ledger.index().highest_release(image)
    newest = ledger.find_one(f"{image}@{newest_version}") if newest_version else None
    running = []
    distances: dict[str, int | None] = {}  # environments often run one build: ask git once per commit
    for env, (event, since, how) in sorted(ledger.current_runs(image).items()):
        build = ledger.read(event.path)
        if newest is not None and build.commit not in distances:
            counts = project.repo.ahead_behind(build.commit, newest.commit)
            distances[build.commit] = counts[1] if counts is not None and counts[0] == 0 else None
        running.append(Running(env, build, since, how, distances.get(build.commit)))
    return ImageStatus(image, newest, running)


def status(project: Project, image: str | None = None) -> list[ImageStatus]:
    if image is not None:
        project.ledger.require_image(image)
    images = [image] if image is not None else project.ledger.index().images()
    return [image_status(project, name) for name in images]


TIMELINE_RELEASES = 40  # the newest releases a page draws per image
TIMELINE_EVENTS = 400  # the newest deploys, sightings and bad marks it draws per image


@dataclass(frozen=True)
class Timeline:
    """What `status --html` draws for one image: its newest releases and environment events, oldest first."""

    status: ImageStatus
    releases: list[Build]
    events: list[tuple[Fact, Build]]


def timelines(project: Project, statuses: list[ImageStatus]) -> list[Timeline]:
    ledger = project.ledger
    drawn = []
    for s in statuses:
        paths = ledger.index().newest_releases(s.image, TIMELINE_RELEASES)
        releases = sorted((ledger.read(p) for p in paths), key=lambda b: b.recorded_at)
        events = ledger.environment_events(s.image, TIMELINE_EVENTS)
        drawn.append(Timeline(s, releases, events))
    return drawn
