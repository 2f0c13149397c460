"""Entry-point alias: the inference worker lives in :mod:`spinemorph.app.inference_worker`.

``PythonSlicer -m spinemorph.inference_worker dsca|foramen ...`` is the launcher name the Slicer modules start (see
:func:`spinemorph.app.inference_worker.worker_command`) and the README documents, so it stays stable across
releases. Allow-listed in ``Testing/test_import_layers.py`` (an application entry point at a core path); code
imports :mod:`spinemorph.app.inference_worker`.
"""

from __future__ import annotations

import sys

from spinemorph.app.inference_worker import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
