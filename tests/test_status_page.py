"""`imgtrack status --html`, looked at in a real browser: the page is rendered by headless Chromium, its
DOM holds every image, environment and version, it reaches for nothing outside itself, and the
screenshot shows the timeline drawn (the newest release's green, the current run's band)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import LayoutFactory, commit_file, run
from tests.pngread import pixels

NEWEST_GREEN = (0x1A, 0x7F, 0x37)  # imgtrack/htmlpage.py: the newest release's dot


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium")
    assert browser, "chromium is installed by scripts/test"
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 8 for a, b in zip(pixel, colour, strict=True))


def _solid(rows: list[bytes], colour: tuple[int, int, int], size: int = 5) -> bool:
    """Whether a size x size square of `colour` is drawn somewhere: a shape, thicker than any letter's stroke."""
    grid = [[_near(tuple(row[i : i + 3]), colour) for i in range(0, len(row), 3)] for row in rows]
    for y in range(len(grid) - size):
        for x in (x for x, hit in enumerate(grid[y]) if hit):
            if all(grid[y + dy][x + dx] for dy in range(size) for dx in range(size) if x + dx < len(grid[y])):
                return True
    return False


def test_status_page_renders_every_image_environment_and_version(
    project: Path, layouts: LayoutFactory, tmp_path: Path
) -> None:
    with open(project / ".imgtrack" / "config.toml", "a") as f:
        f.write("\n[environments.staging]\n\n[environments.prod]\n")
    versions = {"api": ("1.0.0", "1.1.0", "1.2.0"), "web": ("2.0.0", "2.1.0")}
    for image, releases in versions.items():
        for i, version in enumerate(releases):
            commit_file(project, message=f"{image} {version}")
            path, _ = layouts(seed=100 + 10 * len(image) + i + (5 if image == "web" else 0))
            assert run(["record", str(path), "--image", image, "--version", version], project).code == 0
            assert run(["deploy", f"{image}@{version}", "--env", "staging"], project).code == 0
            if i < len(releases) - 1:
                assert run(["deploy", f"{image}@{version}", "--env", "prod"], project).code == 0
    assert run(["deploy", "api@1.0.0", "--env", "prod", "--bad"], project).code == 0

    page = tmp_path / "status.html"
    written = run(["status", "--html", str(page)], project)
    assert written.code == 0 and f"wrote {page}" in written.err, written
    html = page.read_text()
    assert not re.search(r"<script|<link|<img|@import|url\(|\b(src|href)=", html), "the page is self-contained"

    dom = _chromium("--dump-dom", page.as_uri())
    assert dom.returncode == 0 and "<svg" in dom.stdout, dom.stderr
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    for image, releases in versions.items():
        assert f'id="image-{image}"' in dom.stdout
        for version in releases:
            assert version in text, version
    for env in ("staging", "prod"):
        assert text.count(env) >= 3, env  # in the table of each image and as a timeline lane
    status = run(["status", "--json"], project).json()
    for s in status:  # type: ignore[union-attr]
        for e in s["environments"]:  # every row of the table is there, as `status --json` says
            assert re.search(rf"{e['env']}\s+{re.escape(e['version'])}\s+{e['commit'][:7]}", text), e
    assert "1.0.0 bad" in text

    shot = tmp_path / "status.png"
    done = _chromium("--window-size=1000,900", f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr
    width, height, rows = pixels(shot.read_bytes())
    seen = [tuple(row[i : i + 3]) for row in rows for i in range(0, len(row), 3)]
    assert sum(1 for p in seen if p != (255, 255, 255)) > width * height // 50, "the page is not blank"
    assert _solid(rows, NEWEST_GREEN), "the newest release's dot is drawn"


def test_status_page_bad_output_path(project: Path) -> None:
    missing = project / "no" / "such" / "status.html"
    result = run(["status", "--html", str(missing)], project)
    assert result.code == 2 and "does not exist; create it first" in result.err and not missing.exists()
    assert json.loads(run(["status", "--json"], project).out) == []
