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


def point_values_mm(point) -> tuple[float, float, float] | None:
    """Three finite floats from a sequence or an ``"X,Y,Z"`` text (``;`` also separates); None when it is not that."""
    if isinstance(point, str):
        point = [p for p in point.replace(";", ",").split(",") if p.strip()]
    try:
        vals = tuple(float(v) for v in point)
    except (TypeError, ValueError):
        return None
    if len(vals) != 3 or not all(math.isfinite(v) for v in vals):
        return None
    return vals


def point_mm(text: str) -> tuple[float, float, float]:
    """``type=`` of a 3D point option: three finite numbers ``X,Y,Z`` in mm (a usage error names the bad value)."""
    vals = point_values_mm(text)
    if vals is None:
        raise argparse.ArgumentTypeError(f"expected three finite numbers X,Y,Z in mm, got {text!r}")
    return vals


def add_l45_point_options(parser: argparse.ArgumentParser) -> None:
    """``--l45-point X,Y,Z`` and ``--ras``: a hand-placed L4-5 disc centre for the coarse-to-fine 3D segmentation."""
    parser.add_argument("--l45-point", type=point_mm, default=None, metavar="X,Y,Z",
                        help="centre of the L4-5 disc in LPS mm (with --ras: RAS mm); overrides the locator when "
                             "it took the wrong level (coarse-to-fine models only; write --l45-point=X,Y,Z when X < 0)")
    parser.add_argument("--ras", action="store_true", help="--l45-point is given in RAS (3D Slicer) instead of LPS")


def l45_point_lps(args) -> tuple[float, float, float] | None:
    """The ``--l45-point`` of parsed ``args`` in LPS mm (None when not given); ``--ras`` alone is an input error."""
    from spinemorph.errors import InputError

    if args.ras and args.l45_point is None:
        raise InputError("--ras applies to --l45-point; give the point too")
    if args.l45_point is None:
        return None
    x, y, z = args.l45_point
    return (-x, -y, z) if args.ras else (x, y, z)
