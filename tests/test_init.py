"""`imgtrack init`: commented defaults, idempotent, refuses outside a git work tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.conftest import git, run


def test_init_writes_commented_defaults_once(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    result = run(["init"], repo)
    assert result.code == 0 and "initialised" in result.out
    config = repo / ".imgtrack" / "config.toml"
    text = config.read_text()
    data = tomllib.loads(text)
    assert data["tags"] == {
        "templates": ["{version}", "{major}.{minor}", "sha-{short}"],
        "immutable": ["{version}", "sha-*"],
        "floating": ["{major}.{minor}", "{major}"],
        "latest": False,
    }
    assert data["images"] == {} and data["versions"]["tag_prefix"] == "v"
    assert text.count("#") > 10, "defaults are explained in comments"
    config.write_text(text + "\n[images.api]\n")
    again = run(["init"], repo)
    assert again.code == 0 and "left as it is" in again.out
    assert "api" in tomllib.loads(config.read_text())["images"]
    assert run(["init", "--force"], repo).code == 0
    assert tomllib.loads(config.read_text())["images"] == {}


def test_bad_config_is_named(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    run(["init"], repo)
    config = repo / ".imgtrack" / "config.toml"
    config.write_text('[tags]\ntemplates = ["{verison}"]\n')
    result = run(["log"], repo)
    assert result.code == 2 and "{verison}" in result.err and "known placeholders" in result.err
    config.write_text("[tags\n")
    result = run(["log"], repo)
    assert result.code == 2 and "not valid TOML" in result.err
