"""Entry-point alias: the command line lives in :mod:`spinemorph.app.cli`.

Kept so that ``python -m spinemorph.cli ...`` (README, ``scripts/*.sh``, running trainings) and
``from spinemorph.cli import main`` go on working. Allow-listed in ``Testing/test_import_layers.py`` (an application
entry point at a core path); new code imports :mod:`spinemorph.app.cli`.
"""

from __future__ import annotations

import sys

from spinemorph.app.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
