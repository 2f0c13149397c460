"""argparse value types shared by the command-line parsers."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """``type=`` for options that take a whole number >= 1 (a usage error names the bad value)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v
