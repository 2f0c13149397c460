"""Slicer-free logic behind the DuralSacSeg panel: model choices, the per-slice table as typed columns, slice jumps.

The Slicer glue (``slicer_*.py``) copies what these functions return into MRML nodes; everything that decides
*what* is shown lives here and is tested without Slicer (``Testing/test_slicer_glue.py``).

- :func:`model_choices` / :func:`resolve_model`: the model combo box (embedded catalogue + an imported weights file).
- :func:`table_columns`: :class:`DuralSacSegLib.dsca.DscaTable` → typed :class:`TableColumn` list (name, kind, unit,
  values) in the CSV column order, so the Slicer table and the exported CSV agree.
- :func:`row_centre_ras`: where to jump the slice views when a table row is clicked.
- :func:`plot_series`: the area-vs-position chart (axial and angle-corrected DSCA).
- :func:`summary_text`: one line for the panel's status label (smallest *graded* area, count of slices not graded).
- :func:`qc_rows` / :func:`qc_lines`: rows to highlight and the QC lines to show (no stenosis category on a flagged
  slice; the ``stenosis_note`` column says why).
- :data:`DURAL_SAC_TERMINOLOGY`: the segment's standard terminology.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from spinemorph.errors import SpineMorphError
from spinemorph.gui_support import Code, lps_to_ras, terminology_entry

#: value of the "imported weights file" entry of the model combo box
IMPORTED_WEIGHTS = "__weights_file__"
IMPORTED_WEIGHTS_LABEL = "Imported weights file…"

#: display names of the network architectures (keys of ``DuralSacSegLib.networks.NETWORKS``)
ARCHITECTURE_LABELS = {"multiresunet": "MultiResUNet", "unet": "U-Net", "attention_unet": "Attention U-Net"}

#: SNOMED CT "Dura mater" (SCT 18545000, in Slicer's DICOM master segmentation list, CNS segmentation types, cid 7153).
#: There is no "dural sac" / "thecal sac" concept in Slicer's bundled terminology lists; the closest standard code
#: available there is used. The segment *name* stays "dural sac".
DURA_MATER = Code("SCT", "18545000", "Dura mater")
DURAL_SAC_TERMINOLOGY = terminology_entry(DURA_MATER)
DURAL_SAC_SEGMENT_NAME = "dural sac"

#: table columns plotted: x, then the y series
PLOT_X = "position_mm"
PLOT_Y = ("area_mm2", "corrected_area_mm2")


# ---------------------------------------------------------------------------------------------------- models
@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """One entry of the model combo box."""

    label: str
    value: str


def model_choices(catalog_path: str | os.PathLike | None = None) -> tuple[list[ModelChoice], str]:
    """Entries of the model combo box and an error text ('' if the catalogue was read).

    The embedded catalogue models come first (default first), labelled with their architecture; the last entry is
    "Imported weights file…". If the catalogue is missing or unreadable only that entry is returned, with the
    catalogue's one-line error so the panel can show it.
    """
    from DuralSacSegLib import models

    kwargs = {} if catalog_path is None else {"path": catalog_path}
    choices: list[ModelChoice] = []
    error = ""
    try:
        entries = models.catalog_entries(**kwargs)
        for name in models.list_models(**kwargs):
            arch = str(entries.get(name, {}).get("architecture", name))
            label = ARCHITECTURE_LABELS.get(arch, arch)
            choices.append(ModelChoice(label if name == arch else f"{label} ({name})", name))
    except SpineMorphError as exc:
        error = str(exc)
    choices.append(ModelChoice(IMPORTED_WEIGHTS_LABEL, IMPORTED_WEIGHTS))
    return choices, error


def resolve_model(choice: str, weights_path: str | os.PathLike | None = None) -> str:
    """What to pass as ``model=`` to :func:`DuralSacSegLib.segment.segment_volume`.

    Raises
    ------
    SpineMorphError
        "Imported weights file" chosen without an existing file, or an empty choice.
    """
    if choice == IMPORTED_WEIGHTS:
        p = Path(str(weights_path)) if weights_path not in (None, "") else None
        if p is None or str(p) in ("", ".") or not p.is_file():
            raise SpineMorphError(
                "no weights file chosen; pick a .pt file written by 'spinemorph dsca train' or choose an embedded model"
            )
        return str(p)
    if not choice:
        raise SpineMorphError("no model chosen; pick one in the Model list")
    return choice


# ---------------------------------------------------------------------------------------------------- table
@dataclasses.dataclass
class TableColumn:
    """A typed table column: ``kind`` is ``"int"``, ``"double"`` or ``"string"``; NaN is kept for doubles."""

    name: str
    kind: str
    unit: str
    values: list


def _kind(values: list) -> str:
    vals = [v for v in values if v is not None]
    if vals and all(isinstance(v, (bool, np.bool_)) for v in vals):
        return "int"
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in vals):
        return "int"
    if all(isinstance(v, (int, float, np.integer, np.floating)) for v in vals):
        return "double"
    return "string"


def table_columns(table) -> list[TableColumn]:
    """Typed columns of a :class:`DuralSacSegLib.dsca.DscaTable`, in :data:`DuralSacSegLib.dsca.SLICE_COLUMNS` order."""
    from DuralSacSegLib.dsca import SLICE_COLUMNS

    cols = table.as_columns()
    units = dict(SLICE_COLUMNS)
    out = []
    for name, values in cols.items():
        kind = _kind(values) if values else ("string" if name in ("stenosis", "qc_flags", "level") else "double")
        if kind == "int":
            vals = [int(v) for v in values]
        elif kind == "double":
            vals = [float(v) if v is not None else math.nan for v in values]
        else:
            vals = ["" if v is None else str(v) for v in values]
        out.append(TableColumn(name=name, kind=kind, unit=units.get(name, ""), values=vals))
    return out


def row_centre_ras(table, row: int) -> np.ndarray:
    """RAS point (mm) to centre the slice views on when table row ``row`` is clicked: the dural sac centroid, or the
    slice's central pixel when the slice has no dural sac.

    Raises
    ------
    SpineMorphError
        Row out of range.
    """
    if not 0 <= int(row) < len(table.rows):
        raise SpineMorphError(f"table row {row} does not exist (the table has {len(table.rows)} rows)")
    r = table.rows[int(row)]
    centroid = np.asarray(r.centroid_lps, dtype=float)
    point = centroid if np.all(np.isfinite(centroid)) else np.asarray(r.centre_lps, dtype=float)
    return lps_to_ras(point)


def plot_series(table) -> dict[str, np.ndarray]:
    """Arrays of the area chart: ``position_mm`` (x), ``area_mm2`` and ``corrected_area_mm2`` (y; NaN kept)."""
    return {
        PLOT_X: np.array([r.position_mm for r in table.rows], dtype=float),
        "area_mm2": np.array([r.area_mm2 for r in table.rows], dtype=float),
        "corrected_area_mm2": np.array([r.corrected_area_mm2 for r in table.rows], dtype=float),
    }


def summary_text(table) -> str:
    """One line for the status label, e.g. ``"40 slices, 31 with dural sac; smallest graded 84.2 mm² at slice 12
    (relative stenosis); 2 slices NOT graded (QC)"``. The smallest area quoted is that of a *graded* slice (no blocking
    QC flag): a flagged slice's area is never presented as a stenosis."""
    n = len(table.rows)
    nonempty = table.nonempty_rows()
    if not nonempty:
        return f"{n} slices, no dural sac found; check the input (axial T1/T2 lumbar MRI) or edit the segment and recompute"
    not_graded = len(table.not_graded_rows())
    qc = f"; {not_graded} slices NOT graded (QC: mask implausible as a dural sac, see stenosis_note)" if not_graded else ""
    graded = table.smallest_graded(1)
    if not graded:
        return f"{n} slices, {len(nonempty)} with a mask, none graded for stenosis{qc}"
    smallest = graded[0]
    category = f" ({smallest.stenosis})" if smallest.stenosis else ""
    return (
        f"{n} slices, {len(nonempty)} with dural sac; smallest graded {smallest.area_mm2:.1f} mm² at slice "
        f"{smallest.slice_index}{category}{qc}"
    )


def qc_rows(table) -> list[int]:
    """Row indices the Slicer table should highlight: slices with a mask but no stenosis category (blocking QC flag)."""
    return [i for i, r in enumerate(table.rows) if r.area_mm2 > 0 and not r.graded]


def qc_lines(table) -> list[str]:
    """The QC lines (plain language) for the panel, the same as the console prints."""
    return table.qc_summary_lines()


def export_csv(table, path: str | os.PathLike) -> Path:
    """Write the slice table CSV atomically to ``path`` (same columns as the Slicer table)."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_suffix(".csv")
    table.to_csv(path)
    return path
