"""Shell completion for bash, zsh and fish, generated from the command line's own parser.

`imgtrack completion SHELL` walks the argparse tree (`cli.build_parser`): every command and sub-command,
every option, which options take a value and what kind of value. The script it prints holds that as
data (a `case` per command path) and a small driver per shell; nothing is listed by hand, so a new
command or option completes as soon as it exists. Values that live in the project — configured image
and environment names, recorded `IMAGE@VERSION`s — are asked of `imgtrack completion --list KIND` at
the moment of completion, which prints nothing (and fails silently) outside a project.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
KINDS = ("images", "environments", "builds")  # what `completion --list` prints

# What a value is, by the option or argument it belongs to: the parser says which take values and which
# are paths (type=Path); these name the values only the project knows.
_VALUE_KINDS = {"--image": "images", "--env": "environments"}
_POSITIONAL_KINDS = {"image": "images", "ref": "builds", "a": "builds", "b": "builds", "spec": "builds"}


@dataclass
class Node:
    """One command path (`""`, `"hooks"`, `"hooks install"`): what may follow it."""

    subcommands: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # option -> files | images | ... | "choices:a b"
    positional: str = ""  # the kind of its first positional argument, if it takes one


def command_tree(parser: argparse.ArgumentParser) -> dict[str, Node]:
    tree: dict[str, Node] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        node = tree.setdefault(path, Node())
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    node.subcommands.append(name)
                    walk(sub, f"{path} {name}".strip())
            elif action.option_strings:
                if action.help == argparse.SUPPRESS:
                    continue
                node.options += action.option_strings
                if action.nargs != 0:
                    kind = _value_kind(action)
                    for option in action.option_strings:
                        node.values[option] = kind
            elif not node.positional:
                node.positional = _POSITIONAL_KINDS.get(action.dest) or (
                    _value_kind(action)
                    if action.choices
                    else "files"
                    if action.type is Path or action.dest == "source"
                    else "none"
                )

    walk(parser, "")
    return tree


def _value_kind(action: argparse.Action) -> str:
    if action.choices:
        return "choices:" + " ".join(str(c) for c in action.choices)
    for option in action.option_strings:
        if option in _VALUE_KINDS:
            return _VALUE_KINDS[option]
    return "files" if action.type is Path else "none"


def _sh_case(func: str, rows: dict[str, str]) -> str:
    """A POSIX-shell function printing the value of its argument from `rows` (bash and zsh share it)."""
    lines = [f"{func}() {{", '    case "$1" in']
    for key, value in rows.items():
        lines.append(f"        {_sh_quote(key)}) echo {_sh_quote(value)} ;;")
    lines += ["    esac", "}"]
    return "\n".join(lines)


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _tables(tree: dict[str, Node]) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    subs = {path: " ".join(n.subcommands) for path, n in tree.items() if n.subcommands}
    opts = {path: " ".join(n.options) for path, n in tree.items() if n.options}
    values = {f"{path}|{opt}": kind for path, n in tree.items() for opt, kind in n.values.items()}
    positional = {path: n.positional for path, n in tree.items() if n.positional and not n.subcommands}
    return subs, opts, values, positional


_BASH_DRIVER = r"""
_imgtrack_path() {
    # The command path ("" or "hooks install") of the words given, skipping options and their values.
    local w cmdpath="" skip=""
    for w in "$@"; do
        if [ -n "$skip" ]; then
            skip=""
        elif [ "${w#-}" != "$w" ]; then
            [ -n "$(_imgtrack_value "$cmdpath|$w")" ] && skip=1
        elif [ -n "$cmdpath" ] && [ -z "$(_imgtrack_subs "$cmdpath")" ]; then
            :  # an argument of a command that has no sub-commands
        else
            case " $(_imgtrack_subs "$cmdpath") " in *" $w "*) cmdpath="${cmdpath:+$cmdpath }$w" ;; esac
        fi
    done
    echo "$cmdpath"
}
"""

_BASH = r"""
_imgtrack() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmdpath kind words
    cmdpath=$(_imgtrack_path "${COMP_WORDS[@]:1:COMP_CWORD-1}")
    kind=$(_imgtrack_value "$cmdpath|$prev")
    if [ -z "$kind" ]; then
        if [ "${cur#-}" != "$cur" ]; then
            words=$(_imgtrack_opts "$cmdpath")
        else
            words=$(_imgtrack_subs "$cmdpath")
            [ -z "$words" ] && kind=$(_imgtrack_positional "$cmdpath")
        fi
    fi
    case "$kind" in
        files) COMPREPLY=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null; return ;;
        images|environments|builds) words=$(command imgtrack completion --list "$kind" 2>/dev/null) ;;
        choices:*) words=${kind#choices:} ;;
        none) return ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _imgtrack imgtrack
"""

_ZSH = r"""
_imgtrack() {
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]} cmdpath kind candidates
    cmdpath=$(_imgtrack_path "${(@)words[2,CURRENT-1]}")
    kind=$(_imgtrack_value "$cmdpath|$prev")
    if [[ -z $kind ]]; then
        if [[ $cur == -* ]]; then
            candidates=$(_imgtrack_opts "$cmdpath")
        else
            candidates=$(_imgtrack_subs "$cmdpath")
            [[ -z $candidates ]] && kind=$(_imgtrack_positional "$cmdpath")
        fi
    fi
    case $kind in
        files) _files; return ;;
        images|environments|builds) candidates=$(command imgtrack completion --list "$kind" 2>/dev/null) ;;
        choices:*) candidates=${kind#choices:} ;;
        none) return 1 ;;
    esac
    compadd -- ${=candidates}
}
compdef _imgtrack imgtrack
"""


def _fish_switch(func: str, rows: dict[str, str]) -> str:
    lines = [f"function {func}", "    switch $argv[1]"]
    for key, value in rows.items():
        lines += [f"        case {_fish_quote(key)}", f"            echo {_fish_quote(value)}"]
    lines += ["    end", "end"]
    return "\n".join(lines)


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


_FISH = r"""
function __imgtrack_path
    set -l path ''
    set -l skip ''
    for w in $argv
        if test -n "$skip"
            set skip ''
        else if string match -q -- '-*' $w
            test -n "$(__imgtrack_value "$path|$w")"; and set skip 1
        else if test -n "$path"; and test -z "$(__imgtrack_subs "$path")"
            continue
        else if contains -- $w (string split ' ' -- (__imgtrack_subs "$path"))
            set path (string trim -- "$path $w")
        end
    end
    echo $path
end

function __imgtrack_complete
    set -l tokens (commandline -opc)
    set -l cur (commandline -ct)
    set -l path (__imgtrack_path $tokens[2..-1])
    set -l kind (__imgtrack_value "$path|$tokens[-1]")
    set -l words
    if test -z "$kind"
        if string match -q -- '-*' "$cur"
            set words (__imgtrack_opts "$path")
        else
            set words (__imgtrack_subs "$path")
            test -z "$words"; and set kind (__imgtrack_positional "$path")
        end
    end
    switch "$kind"
        case files
            __fish_complete_path "$cur"
            return
        case images environments builds
            set words (command imgtrack completion --list $kind 2>/dev/null)
        case 'choices:*'
            set words (string replace 'choices:' '' -- $kind)
        case none
            return
    end
    string split ' ' -- $words | string match -v ''
end

complete -c imgtrack -f -a '(__imgtrack_complete)'
"""


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for `shell`, from `parser`."""
    subs, opts, values, positional = _tables(command_tree(parser))
    head = f"# imgtrack completion for {shell}, generated from imgtrack's parser by `imgtrack completion {shell}`.\n"
    if shell == "fish":
        parts = [
            _fish_switch("__imgtrack_subs", subs),
            _fish_switch("__imgtrack_opts", opts),
            _fish_switch("__imgtrack_value", values),
            _fish_switch("__imgtrack_positional", positional),
            _FISH,
        ]
        return head + "\n".join(parts)
    parts = [
        _sh_case("_imgtrack_subs", subs),
        _sh_case("_imgtrack_opts", opts),
        _sh_case("_imgtrack_value", values),
        _sh_case("_imgtrack_positional", positional),
        _BASH_DRIVER,
        _BASH if shell == "bash" else _ZSH,
    ]
    prefix = "#compdef imgtrack\n" if shell == "zsh" else ""
    return prefix + head + "\n".join(parts)


def install_path(shell: str, home: Path, data_home: Path | None, config_home: Path | None) -> Path:
    """Where each shell looks for a user's completions without any set-up (zsh: a folder to put on fpath)."""
    if shell == "bash":
        return (data_home or home / ".local" / "share") / "bash-completion" / "completions" / "imgtrack"
    if shell == "fish":
        return (config_home or home / ".config") / "fish" / "completions" / "imgtrack.fish"
    return (data_home or home / ".local" / "share") / "zsh" / "site-functions" / "_imgtrack"


def list_words(kind: str) -> list[str]:
    """Configured images or environments, or recorded IMAGE@VERSION (newest first, 100 an image), of the
    project here; nothing outside one."""
    from imgtrack.errors import ImgtrackError
    from imgtrack.project import Project

    try:
        project = Project.open()
        if kind == "images":
            return sorted(project.config.images)
        if kind == "environments":
            return sorted(project.config.environments)
        index = project.ledger.index()
        found = []
        for image in index.images():
            found += [f"{image}@{version}" for version in index.newest_versions(image, 100)]
        return found
    except (ImgtrackError, OSError):
        return []
