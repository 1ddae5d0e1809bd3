"""Shell completion: scripts generated from the parser, exercised in real bash, fish and zsh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgtrack.cli import build_parser
from tests.conftest import LayoutFactory, run


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each shell's script as `imgtrack completion SHELL` prints it, and a PATH whose `imgtrack` is this
    checkout (the scripts ask it for image names and versions)."""
    folder = tmp_path_factory.mktemp("completion")
    found = {}
    for shell in ("bash", "zsh", "fish"):
        result = run(["completion", shell], folder)
        assert result.code == 0, result.err
        found[shell] = folder / f"imgtrack.{shell}"
        found[shell].write_text(result.out)
    wrapper = folder / "bin" / "imgtrack"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m imgtrack "$@"\n')
    wrapper.chmod(0o755)
    found["bin"] = wrapper.parent
    return found


def _env(scripts: dict[str, Path]) -> dict[str, str]:
    return {**os.environ, "PATH": f"{scripts['bin']}{os.pathsep}{os.environ['PATH']}"}


def bash_complete(scripts: dict[str, Path], line: str, cwd: Path) -> list[str]:
    """What bash offers for `line` (the last word is the one being completed)."""
    words = line.split(" ")
    program = (
        f"source {scripts['bash']}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; COMPREPLY=()\n"
        "_imgtrack\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    out = subprocess.run(["bash", "-c", program], cwd=cwd, capture_output=True, text=True, env=_env(scripts))
    assert out.returncode == 0, out.stderr
    return [w for w in out.stdout.splitlines() if w]


def test_bash_completes_commands_and_options(scripts: dict[str, Path], tmp_path: Path) -> None:
    assert bash_complete(scripts, "imgtrack pu", tmp_path) == ["push", "pull"]
    assert bash_complete(scripts, "imgtrack record --im", tmp_path) == ["--image"]
    assert bash_complete(scripts, "imgtrack hooks install --s", tmp_path) == ["--server"]
    assert bash_complete(scripts, "imgtrack completion ", tmp_path) == ["bash", "zsh", "fish"]
    assert bash_complete(scripts, "imgtrack push build --to oci:x --ver", tmp_path) == ["--version"]
    (tmp_path / "layout-dir").mkdir()
    assert bash_complete(scripts, "imgtrack pull api@1.4.0 --to lay", tmp_path) == ["layout-dir"]  # a path


def test_every_command_of_the_parser_completes(scripts: dict[str, Path], tmp_path: Path) -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    offered = bash_complete(scripts, "imgtrack ", tmp_path)
    assert sorted(offered) == sorted(commands.choices)  # type: ignore[arg-type]


def test_bash_completes_configured_images_and_recorded_versions(
    scripts: dict[str, Path], project: Path, layouts: LayoutFactory
) -> None:
    assert bash_complete(scripts, "imgtrack record --image ", project) == ["api", "web"]
    assert bash_complete(scripts, "imgtrack log ", project) == ["api", "web"]
    path, _ = layouts()
    recorded = run(["record", str(path), "--image", "api", "--version", "1.4.0", "--json"], project)
    assert recorded.code == 0, recorded.err
    assert bash_complete(scripts, "imgtrack show api@", project) == ["api@1.4.0"]
    # Outside a project the same completion offers nothing, and says nothing.
    assert bash_complete(scripts, "imgtrack record --image ", project.parent) == []


def test_fish_and_zsh_complete_the_same(scripts: dict[str, Path], project: Path) -> None:
    fish = subprocess.run(
        [
            "fish",
            "--no-config",
            "-c",
            f"source {scripts['fish']}; complete -C 'imgtrack pu'; "
            "complete -C 'imgtrack record --im'; complete -C 'imgtrack record --image '",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        env=_env(scripts),
    )
    assert fish.returncode == 0, fish.stderr
    assert [line.split("\t")[0] for line in fish.stdout.splitlines()] == ["pull", "push", "--image", "api", "web"]
    # zsh outside its completion system: compadd and _files stand in, so the candidates can be read.
    zsh = subprocess.run(
        [
            "zsh",
            "-f",
            "-c",
            'compdef() { : }; compadd() { [[ $1 == -- ]] && shift; print -r -- "$@" }; _files() { print FILES }; '
            f"source {scripts['zsh']}; "
            "words=(imgtrack hooks ''); CURRENT=3; _imgtrack; "
            "words=(imgtrack record --image ''); CURRENT=4; _imgtrack; "
            "words=(imgtrack pull --to ''); CURRENT=4; _imgtrack",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        env=_env(scripts),
    )
    assert zsh.returncode == 0, zsh.stderr
    assert zsh.stdout.splitlines() == ["install uninstall status", "api web", "FILES"]


def test_install_writes_where_the_shell_looks(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run(["completion", "bash", "--install"], tmp_path, env={"XDG_DATA_HOME": str(data)})
    assert result.code == 0, result.err
    target = data / "bash-completion" / "completions" / "imgtrack"
    assert target.read_text() == run(["completion", "bash"], tmp_path).out
    assert str(target) in result.out
    missing = run(["completion"], tmp_path)
    assert missing.code == 2 and "bash|zsh|fish" in missing.err
