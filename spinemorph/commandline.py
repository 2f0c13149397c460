"""Command-line scaffolding shared by every parser (``spinemorph``, its command groups, stand-alone entries).

- exit codes: :data:`EXIT_OK` 0, :data:`EXIT_FAILURE` 1 (one line ``error: ...``), :data:`EXIT_USAGE` 2 (bad usage),
  :data:`EXIT_PARTIAL` 3 (a batch ran, some cases failed);
- :class:`OneLineParser`: an ``argparse.ArgumentParser`` whose usage errors are one line (no usage dump), exit 2;
- :func:`add_command_group`: a command group (``spinemorph dsca``, ``spinemorph foramen``) that prints its help and
  exits 2 when no sub-command is given;
- :func:`run_command`: call a command's ``func(args)`` and turn every failure into one ``error:`` line and an exit
  code, never a traceback for bad input (DEVELOPERS.md, "Errors").
"""

from __future__ import annotations

import argparse
import errno
import sys
import traceback

from spinemorph.errors import SpineMorphError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
#: exit code after Ctrl-C (128 + SIGINT)
EXIT_INTERRUPTED = 130


class OneLineParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (no usage dump) and exit 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def print_help_and_fail(parser: argparse.ArgumentParser) -> int:
    """Print ``parser``'s help and return :data:`EXIT_USAGE` (a command group called without a sub-command)."""
    parser.print_help()
    return EXIT_USAGE


def add_command_group(subparsers, name: str, *, help: str, description: str, dest: str):  # noqa: A002 - argparse's name
    """Add the command group ``name`` to ``subparsers``: returns ``(group parser, its sub-parsers)``.

    The group without a sub-command prints its help and exits 2; its sub-parsers are of the same parser class as
    the group (one-line usage errors under ``spinemorph``).
    """
    parser = subparsers.add_parser(name, help=help, description=description)
    parser.set_defaults(func=lambda args: print_help_and_fail(parser))
    sub = parser.add_subparsers(dest=dest, metavar="SUBCOMMAND", parser_class=type(parser))
    return parser, sub


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error that no command wrapped (disk full, permissions, a vanished file)."""
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device{where}; free disk space and run again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}; choose a readable input and a writable --out folder"
    return f"{exc.strerror or type(exc).__name__}{where}"


def run_command(func, args, verbose: bool = False, program: str = "spinemorph") -> int:
    """``func(args)`` as an exit code: its return value (None = 0), or 1 / 130 with one ``error:`` line on stderr.

    :class:`~spinemorph.errors.SpineMorphError` prints its message; Ctrl-C, out of memory and OS errors print what
    happened; any other exception is a bug: one line naming it (the traceback too when ``verbose``).
    """
    try:
        return int(func(args) or 0)
    except SpineMorphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("error: out of memory; use a smaller input or close other programs", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # a file operation not wrapped by the command (disk full, permissions, vanished file)
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - last resort: a bug must still end in one line, not a traceback
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        if verbose:
            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {first}); this is a bug - please report it with the output "
              f"of the same command run with '{program} -v'", file=sys.stderr)
        return EXIT_FAILURE
