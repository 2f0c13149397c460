"""Training-run files: configuration (a JSON object laid over a dictionary of defaults) and the history CSV.

Shared by the 3D trainers (``FORAMEN3DLib.train3d`` and ``FORAMEN3DLib.train_fine``): unknown keys are refused with
their dotted path, nested dictionaries merge key by key except the ``leaves`` (replaced whole, e.g. a network
description), and every value is deep-copied so the defaults are never modified.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
from pathlib import Path

from .atomic import atomic_write_text
from .errors import InputError


def merge_config(base: dict, over: dict, leaves: tuple[str, ...] = (), where: str = "", kind: str = "config") -> dict:
    """``over`` laid over ``base``; an unknown key raises :class:`InputError` naming it (``kind`` words the error)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise InputError(f"unknown {kind} key {where}{k!r}; known: {', '.join(sorted(base))}")
        if isinstance(base[k], dict) and isinstance(v, dict) and k not in leaves:
            out[k] = merge_config(base[k], v, leaves, f"{where}{k}.", kind)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_config_json(path: str | os.PathLike, hint: str = "") -> dict:
    """The JSON object in ``path``; a missing file, invalid JSON or a non-object raises one :class:`InputError`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config {p} does not exist{hint}")
    try:
        raw = json.loads(p.read_text())
    except ValueError as exc:
        raise InputError(f"config {p} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"config {p} must hold a JSON object")
    return raw


def write_history_csv(history: list[dict], path: str | os.PathLike) -> None:
    """One row per history entry, columns = every key seen (first-seen order); atomic; nothing for an empty history."""
    if not history:
        return
    keys = list(dict.fromkeys(k for h in history for k in h))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for h in history:
        w.writerow(h)
    atomic_write_text(path, buf.getvalue())
