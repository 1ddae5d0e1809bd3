"""The one place an outcome becomes the process's exit status (README, docs/ledger.md): 0 ok, 1 a check
failed, 2 bad usage or input, 3 registry or network failure, 74 the local file system failed, 70 an
internal error. Every entry point, the command line (`cli.main`), the installed hook (`cli_hook.main`)
and the CI job (`cli.run_ci_job`), runs its work through `run_main`; no traceback reaches a user
without --debug."""

from __future__ import annotations

from collections.abc import Callable

from imgtrack.errors import ImgtrackError
from imgtrack.output import error


def run_main(call: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Strip `--debug` from `argv`, run `call` on the rest, and return the status its outcome maps to
    (the entry points exit with it)."""
    debug = "--debug" in argv
    args = [a for a in argv if a != "--debug"]
    return run_guarded(lambda: call(args), debug)


def run_guarded(call: Callable[[], int | None], debug: bool) -> int:
    """Run a command and turn every outcome into its exit status (README: 0, 1, 2, 3, 70); errors are one line."""
    try:
        status = call()
    except ImgtrackError as exc:
        if str(exc):  # empty: whatever failed has said why already (a step of the CI job)
            error(str(exc))
        if debug:
            import traceback

            traceback.print_exc()
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # the machine, not imgtrack: one line naming the file and the reason
        if debug:
            import traceback

            traceback.print_exc()
        code, message = os_error_message(exc)
        error(message)
        return code
    except Exception as exc:  # the last line of defence: one line, details with --debug
        if debug:
            import traceback

            traceback.print_exc()
        error(f"internal error: {type(exc).__name__}: {exc}; run again with --debug and report it")
        return 70
    return status if isinstance(status, int) else 0


def os_error_message(exc: OSError) -> tuple[int, str]:
    """The exit status and the one line for an OSError no command turned into its own message."""
    import errno

    if isinstance(exc, (ConnectionError, TimeoutError)):
        return 3, f"the network failed ({exc.strerror or exc}); check the connection and run the command again"
    where = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return 74, f"no space left for {where}; free some space and run the command again (nothing partial was kept)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return 74, f"{where}: {exc.strerror}; check its permissions (or the mount), then run the command again"
    if exc.errno in (errno.ENOTDIR, errno.EISDIR):
        return 74, (
            f"{where}: {exc.strerror}: a file stands where a folder should be, or a folder where a file "
            "should; move it away and run the command again"
        )
    return 74, f"{where}: {exc.strerror or exc}; check the path, then run the command again"
