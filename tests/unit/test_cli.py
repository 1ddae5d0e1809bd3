"""What every CLI user types first: --version, and the worked examples at the end of each --help."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest

from imgtrack.cli import EXAMPLES, build_parser
from tests.conftest import ROOT, run


def test_version_is_the_packages(tmp_path: Path) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = run(["--version"], tmp_path)
    assert result.code == 0 and result.out.strip() == f"imgtrack {version}"


def _example_commands() -> list[tuple[str, list[str]]]:
    found = []
    for func, text in EXAMPLES.items():
        for line in text.splitlines():
            for part in line.split("#", 1)[0].replace("&&", "|").split("|"):
                words = shlex.split(part)
                if words and words[0] == "imgtrack":
                    found.append((func, words[1:]))
    return found


@pytest.mark.parametrize(("func", "args"), _example_commands(), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_every_example_in_help_is_a_command_line_imgtrack_accepts(func: str, args: list[str]) -> None:
    parsed = build_parser().parse_args(args)
    assert parsed.func.__name__ in (func, "hooks_status")  # `hooks install && hooks status`


def test_every_command_help_ends_with_examples() -> None:
    parser = build_parser()
    seen = set()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            commands = [(name, sub)]
            if sub._subparsers is not None:  # a group: export, ledger, hooks, hook
                commands = [(f"{name} {n}", s) for a in sub._subparsers._group_actions for n, s in a.choices.items()]
            for full, command in commands:
                func = command.get_default("func").__name__
                if full in ("hook pre-push", "hook pre-receive", "hooks uninstall", "hooks status"):
                    continue  # run by git, or one word with nothing to show
                assert "examples:" in command.format_help(), full
                seen.add(func)
    assert seen == set(EXAMPLES)


def test_the_parser_built_for_one_command_parses_and_helps_as_the_whole_one() -> None:
    """A run builds only the invoked command's parser; its examples, options and help are the whole one's."""
    for func, args in _example_commands():
        whole = build_parser().parse_args(args)
        assert vars(build_parser(args[0]).parse_args(args)) == vars(whole), args
    parser = build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            alone = build_parser(name)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
            assert list(alone) == [name] and alone[name].format_help() == sub.format_help(), name


def test_a_word_that_is_no_command_is_refused_naming_every_command(tmp_path: Path) -> None:
    result = run(["pus"], tmp_path)
    assert (
        result.code == 2 and "invalid choice: 'pus'" in result.err and "'push'" in result.err and "'hook'" in result.err
    )
    assert "\n    promote " in run(["-h"], tmp_path).out
