"""argparse value types shared by the command-line parsers."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """``type=`` for options that take a whole number >= 1 (a usage error names the bad value)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def positive_float(text: str) -> float:
    """``type=`` for options that take a finite number > 0 (a usage error names the bad value)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return v


def point_mm(text: str) -> tuple[float, float, float]:
    """``type=`` of a 3D point option: three finite numbers ``X,Y,Z`` in mm (a usage error names the bad value)."""
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers X,Y,Z in mm, got {text!r}") from None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"expected three finite numbers X,Y,Z in mm, got {text!r}")
    return vals
