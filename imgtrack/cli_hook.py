"""The installed pre-push hook's entry point: `python -m imgtrack.cli_hook REMOTE URL`, git's stdin.

The same check as `imgtrack hook pre-push`, without building the whole command line's parser, since a
hook's start-up is paid on every push. Installed hooks name this module: keep it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from imgtrack import output
from imgtrack.exits import run_main


def main() -> None:
    def call(args: list[str]) -> int:
        from imgtrack.commands.prepush import pre_push_problems

        problems = pre_push_problems(Path.cwd(), args[0] if args else "", sys.stdin, dict(os.environ))
        return output.push_refusal(problems) if problems else 0

    sys.exit(run_main(call, sys.argv[1:]))


if __name__ == "__main__":
    main()
