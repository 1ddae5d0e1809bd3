"""`imgtrack status --html FILE`: one self-contained page (no script, no network, no external style or font):
the status table, and per image a timeline (inline SVG) of its releases with where each environment
has stood, its deploys, the sightings audits recorded, and the builds marked bad."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape

from imgtrack.commands.status import ImageStatus, Timeline
from imgtrack.ledger.schema import Build, Fact

WIDTH = 1000  # the picture's width in SVG units; it scales to the page
LEFT = 130  # room for the lane names
RIGHT = 90  # room for the last label
LANE = 54  # the height of one lane
TOP = 26  # room above the release lane for its labels

# Colour per environment lane, in order; picked for contrast with each other and with white.
PALETTE = ("#1f6feb", "#8250df", "#bf3989", "#1a7f37", "#9a6700", "#0969da", "#cf222e")

STYLE = """
:root { color-scheme: light; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  margin: 2rem auto; max-width: 70rem; padding: 0 1.5rem; color: #1f2328; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .4rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
p.meta { color: #59636e; margin: 0 0 1.5rem; }
p.legend { color: #59636e; margin: 1rem 0 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #d0d7de; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.image { font-weight: 600; }
td { white-space: nowrap; }
th { white-space: normal; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.current { color: #1a7f37; font-weight: 600; }
.behind { color: #9a6700; font-weight: 600; }
.none { color: #59636e; }
figure { margin: .6rem 0 0; }
figcaption { color: #59636e; font-size: .9rem; margin-top: .3rem; }
svg { width: 100%; height: auto; display: block; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
"""


def render(timelines: list[Timeline], project_name: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>imgtrack status: {escape(project_name)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>What runs where: {escape(project_name)}</h1>",
        f'<p class="meta">Written by imgtrack status on {_when(now)} UTC, from the ledger.</p>',
        _table([t.status for t in timelines], now),
        '<p class="legend">In each timeline, the dots on the top line are releases (green: the newest); each '
        "environment's bands are the builds it ran (solid: what runs now), with ● a deploy, ○ a sighting by an "
        "audit, ✕ a build marked bad there.</p>",
    ]
    for t in timelines:
        parts.append(f'<section id="image-{escape(t.status.image)}"><h2>{escape(t.status.image)}</h2>')
        parts.append(_timeline(t, now))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _age(delta: timedelta) -> str:
    if delta.days:
        return f"{delta.days} d"
    hours = delta.seconds // 3600
    return f"{hours} h" if hours else f"{delta.seconds // 60} min"


def _table(statuses: list[ImageStatus], now: datetime) -> str:
    rows = []
    for s in statuses:
        newest = escape(s.newest.version) if s.newest else '<span class="none">none</span>'
        span = max(1, len(s.running))
        head = f'<td class="image" rowspan="{span}">{escape(s.image)}</td><td rowspan="{span}">{newest}</td>'
        if not s.running:
            rows.append(f'<tr>{head}<td colspan="7" class="none">no deployments or audits recorded</td></tr>')
        for i, r in enumerate(s.running):
            if r.behind is None:
                behind = '<span class="none">unknown</span>'
            elif r.behind == 0:
                behind = '<span class="current">current</span>'
            else:
                behind = f'<span class="behind">{r.behind} commit{"s" if r.behind != 1 else ""} behind</span>'
            how = "deployed" if r.how == "deploy" else "seen by audit"
            rows.append(
                f"<tr>{head if i == 0 else ''}<td>{escape(r.env)}</td><td>{escape(r.build.version)}</td>"
                f"<td><code>{escape(r.build.commit[:7])}</code></td><td>{_when(r.since)}</td>"
                f"<td>{_age(now - r.since)}</td><td>{behind}</td><td>{how}</td></tr>"
            )
    header = (
        "<tr><th>Image</th><th>Newest release</th><th>Environment</th><th>Version</th><th>Commit</th>"
        "<th>Since (UTC)</th><th>Age</th><th>Against newest</th><th>Known from</th></tr>"
    )
    return f"<table><thead>{header}</thead><tbody>{''.join(rows)}</tbody></table>"


def _timeline(t: Timeline, now: datetime) -> str:
    envs = sorted({fact.env for fact, _ in t.events} | {r.env for r in t.status.running})
    moments = [b.recorded_at for b in t.releases] + [fact.at for fact, _ in t.events]
    if not moments:
        return '<p class="none">No releases recorded yet.</p>'
    start, end = min(moments), max(max(moments), now)
    span = max((end - start).total_seconds(), 1.0)
    start -= timedelta(seconds=span * 0.03)
    span *= 1.03
    # Dates on the axis; times too when the picture spans days rather than months.
    axis_format = "%Y-%m-%d" if span > 10 * 86400 else "%m-%d %H:%M" if span > 600 else "%H:%M:%S"

    def x(moment: datetime) -> float:
        return LEFT + (moment - start).total_seconds() / span * (WIDTH - LEFT - RIGHT)

    height = TOP + LANE * (1 + len(envs)) + 40
    out = [
        f'<figure><svg viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-label="Timeline of {escape(t.status.image)}: releases and environments">',
        f"<title>{escape(t.status.image)}: releases and where each environment stands</title>",
    ]
    # The release lane: a tick per release, a label where there is room (the newest always has one).
    y = TOP + LANE / 2
    out.append(_lane_name("releases", y, "#1f2328"))
    out.append(_line(x(start), y, x(end), y, "#d0d7de", 2))
    newest = t.status.newest.digest if t.status.newest is not None else None
    for build in t.releases:  # oldest first, so that the newest is drawn on top
        bx, is_newest = x(build.recorded_at), build.digest == newest
        out.append(
            f'<circle cx="{bx:.1f}" cy="{y}" r="{6 if is_newest else 4.5}" '
            f'fill="{"#1a7f37" if is_newest else "#57606a"}">'
            f"<title>{escape(build.version)}: recorded {_when(build.recorded_at)}, commit {build.commit[:7]}"
            "</title></circle>"
        )
    labelled_at = WIDTH * 2.0
    for i, build in enumerate(reversed(t.releases)):  # labels where there is room, the newest always
        bx, is_newest = x(build.recorded_at), build.digest == newest
        if i == 0 or labelled_at - bx >= 64:
            out.append(_label(bx, y - 14, build.version, "#1a7f37" if is_newest else "#57606a", bold=is_newest))
            labelled_at = bx
    # One lane per environment: a band per run of one build, its deploys, sightings and bad marks.
    for row, env in enumerate(envs):
        y = TOP + LANE * (row + 1.5)
        colour = PALETTE[row % len(PALETTE)]
        out.append(_lane_name(env, y, colour))
        out.append(_line(x(start), y, x(end), y, "#eaeef2", 2))
        events = [(f, b) for f, b in t.events if f.env == env]
        runs = _runs(events, now)
        for i, (build, since, until) in enumerate(runs):
            x0, x1 = x(since), x(until)
            last = i == len(runs) - 1
            out.append(
                f'<rect x="{x0:.1f}" y="{y - 9}" width="{max(x1 - x0, 2):.1f}" height="18" rx="4" '
                f'fill="{colour}" fill-opacity="{0.85 if last else 0.25}">'
                f"<title>{escape(env)} ran {escape(build.version)} ({build.commit[:7]}) from {_when(since)}"
                f"{'' if last else ' to ' + _when(until)}</title></rect>"
            )
            if last or x1 - x0 >= 60:
                out.append(_label(x0 + 4, y - 14, build.version, colour, anchor="start", bold=last))
        for fact, build in events:
            out.append(_mark(fact, build, x(fact.at), y))
    # The time axis.
    axis = TOP + LANE * (1 + len(envs)) + 12
    out.append(_line(LEFT, axis, WIDTH - RIGHT, axis, "#8c959f", 1))
    for k in range(5):
        moment = start + timedelta(seconds=span * k / 4)
        tx = x(moment)
        out.append(_line(tx, axis, tx, axis + 5, "#8c959f", 1))
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"
        out.append(_label(tx, axis + 19, moment.strftime(axis_format), "#59636e", anchor=anchor))
    out.append("</svg></figure>")
    return "\n".join(out)


def _runs(events: list[tuple[Fact, Build]], now: datetime) -> list[tuple[Build, datetime, datetime]]:
    """The builds an environment ran, each from its first deploy or sighting until the next build's."""
    runs: list[tuple[Build, datetime, datetime]] = []
    for fact, build in events:
        if fact.kind == "bad":
            continue
        if runs and runs[-1][0].digest == build.digest:
            continue
        if runs:
            runs[-1] = (runs[-1][0], runs[-1][1], fact.at)
        runs.append((build, fact.at, now))
    return runs


def _mark(fact: Fact, build: Build, cx: float, cy: float) -> str:
    what = {"deploy": "deployed", "seen": "seen running by an audit", "bad": "marked bad"}[fact.kind]
    who = f" by {escape(fact.by)}" if fact.by else ""
    tip = f"<title>{escape(build.version)} {what} in {escape(fact.env)} on {_when(fact.at)}{who}</title>"
    if fact.kind == "bad":
        d = 6
        return (
            f'<g stroke="#cf222e" stroke-width="3" stroke-linecap="round">{tip}'
            f'<line x1="{cx - d:.1f}" y1="{cy - d}" x2="{cx + d:.1f}" y2="{cy + d}"/>'
            f'<line x1="{cx - d:.1f}" y1="{cy + d}" x2="{cx + d:.1f}" y2="{cy - d}"/></g>'
            + _label(cx, cy + 24, f"{build.version} bad", "#cf222e")
        )
    if fact.kind == "seen":
        return f'<circle cx="{cx:.1f}" cy="{cy}" r="4" fill="#fff" stroke="#1f2328" stroke-width="1.5">{tip}</circle>'
    return f'<circle cx="{cx:.1f}" cy="{cy}" r="4" fill="#1f2328">{tip}</circle>'


def _lane_name(name: str, y: float, colour: str) -> str:
    return (
        f'<text x="{LEFT - 14}" y="{y + 5}" text-anchor="end" font-size="14" font-weight="600" '
        f'fill="{colour}">{escape(name)}</text>'
    )


def _label(lx: float, ly: float, text: str, colour: str, anchor: str = "middle", bold: bool = False) -> str:
    weight = ' font-weight="600"' if bold else ""
    return (
        f'<text x="{lx:.1f}" y="{ly}" text-anchor="{anchor}" font-size="12.5" fill="{colour}"{weight}>'
        f"{escape(text)}</text>"
    )


def _line(x1: float, y1: float, x2: float, y2: float, colour: str, width: float) -> str:
    return f'<line x1="{x1:.1f}" y1="{y1}" x2="{x2:.1f}" y2="{y2}" stroke="{colour}" stroke-width="{width}"/>'
