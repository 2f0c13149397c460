"""The ``spinemorph`` command line.

Each subcommand lives in its own module, which defines ``register(subparsers)``: it adds an
``argparse`` parser and sets ``func`` (called with the parsed namespace, returns an exit code).
Subcommands are listed in :data:`COMMAND_MODULES` once their feature has landed.

Exit codes: 0 success, 1 failure (one-line ``error: ...`` message), 2 bad usage, 3 partial success
(a batch ran, some cases failed; see the report it wrote).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
import traceback
import warnings

from spinemorph import __version__
from spinemorph.errors import SpineMorphError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

#: modules that define ``register(subparsers)``, in the order shown by ``--help``
COMMAND_MODULES: list[str] = [
    "spinemorph.app.cmd_phantom",
    "spinemorph.app.cmd_synth",
    "DuralSacSegLib.cli",
    "FORAMEN3DLib.cli",
    "spinemorph.app.cmd_plan",
    "spinemorph.app.cmd_bench",
    "spinemorph.app.cmd_study",
    "spinemorph.app.cmd_batch",
]


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line (no usage dump) and exit 2."""

    def error(self, message):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spinemorph",
        description=(
            "Lumbar spine MRI morphometry: dural sac cross-sectional area (DSCA) and L4-5 intervertebral foramen. "
            "Slicer-free command line of the SpineMorph 3D Slicer extension."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"spinemorph {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spinemorph`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except SpineMorphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("error: out of memory; use a smaller input or close other programs", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:  # a file operation not wrapped by the command (disk full, permissions, vanished file)
        print(f"error: {_describe_os_error(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # noqa: BLE001 - last resort: a bug must still end in one line, not a traceback
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        if args.verbose:
            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {first}); this is a bug - please report it with the output "
              "of the same command run with 'spinemorph -v'", file=sys.stderr)
        return EXIT_FAILURE


def _describe_os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device{where}; free disk space and run again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"permission denied{where}; choose a readable input and a writable --out folder"
    return f"{exc.strerror or type(exc).__name__}{where}"


if __name__ == "__main__":
    sys.exit(main())
