"""The installed hooks' entry point: `python -m imgtrack.cli_hook REMOTE URL` (pre-push) and
`python -m imgtrack.cli_hook --pre-receive` (a server's pre-receive), git's stdin.

The same checks as `imgtrack hook pre-push` and `imgtrack hook pre-receive`, without building the whole
command line's parser, since a hook's start-up is paid on every push. Installed hooks name this module:
keep it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from imgtrack import output
from imgtrack.exits import run_main


def main() -> None:
    def call(args: list[str]) -> int:
        if args[:1] == ["--pre-receive"]:
            from imgtrack.commands.prereceive import pre_receive_problems

            found = pre_receive_problems(Path.cwd(), sys.stdin.read())
            return output.receive_refusal(found) if found else 0
        from imgtrack.commands.prepush import pre_push_problems

        problems = pre_push_problems(Path.cwd(), args[0] if args else "", sys.stdin, dict(os.environ))
        return output.push_refusal(problems) if problems else 0

    sys.exit(run_main(call, sys.argv[1:]))


if __name__ == "__main__":
    main()
