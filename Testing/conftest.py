"""Shared pytest fixtures of the Slicer-free suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Plots are written without a display.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def spider_root() -> Path:
    """Path of the real SPIDER data, or skip the test when it is absent."""
    root = Path(os.environ.get("SPINEMORPH_SPIDER", REPO_ROOT.parent / "shared" / "data" / "spider"))
    if not (root / "masks" / "manifest.csv").is_file():
        pytest.skip(f"real SPIDER data not found at {root} (set SPINEMORPH_SPIDER); test needs it")
    return root
