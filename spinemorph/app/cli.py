"""The ``spinemorph`` command line.

Each subcommand lives in its own module, which defines ``register(subparsers)``: it adds an
``argparse`` parser and sets ``func`` (called with the parsed namespace, returns an exit code).
Subcommands are listed in :data:`COMMAND_MODULES` once their feature has landed.

Exit codes (:mod:`spinemorph.commandline`): 0 success, 1 failure (one-line ``error: ...`` message), 2 bad usage,
3 partial success (a batch ran, some cases failed; see the report it wrote).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from spinemorph import __version__
from spinemorph.commandline import EXIT_USAGE, OneLineParser, run_command

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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="spinemorph",
        description=(
            "Lumbar spine MRI morphometry: dural sac cross-sectional area (DSCA) and L4-5 intervertebral foramen. "
            "Slicer-free command line of the SpineMorph 3D Slicer extension."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"spinemorph {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``spinemorph`` console script (errors: :func:`spinemorph.commandline.run_command`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return run_command(args.func, args, verbose=args.verbose, program="spinemorph")


if __name__ == "__main__":
    sys.exit(main())
