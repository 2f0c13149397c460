"""Per-slice dural sac cross-sectional area (DSCA) table from a binary mask.

:func:`compute_dsca_table` measures every slice (index ``k``) of a mask :class:`~spinemorph.volume.Volume` — normally an
axial stack, as acquired (gantry tilt allowed) or resliced by :mod:`DuralSacSegLib.segment` — and returns a
:class:`DscaTable` (one :class:`SliceMeasurement` per slice, optional per-level summaries, CSV / JSON writers and
:meth:`DscaTable.as_columns` for a Slicer table). It works on the mask alone, so the Slicer widget calls it again to
"Recompute table" after manual edits.

Definitions (see also ``DEVELOPERS.md``, "Measurement definitions"):

- **slice plane** of slice ``k``: the plane through the voxel centres of that slice, normal ``n = i × j`` (unit,
  from the direction matrix); ``position_mm`` = signed distance of the slice centre along ``n`` from the LPS origin
  (``centre · n``), ``centre_lps`` = LPS point of the slice's central pixel (continuous index ``((ni-1)/2, (nj-1)/2, k)``).
- **area_mm2** (axial DSCA): number of foreground pixels in the slice × pixel area ``sx·sy`` (mm², from the mask's
  spacing, which the segmentation pipeline keeps on the input's own grid).
- **corrected_area_mm2** (angle-corrected DSCA): area on the plane perpendicular to the canal centreline,
  ``area × cos θ``, θ = angle between the slice normal and the centreline tangent (``tilt_deg``). The centreline is a
  robust polynomial fit of the centroids of the largest component of each non-empty slice (in-plane coordinates
  against ``position_mm``): degree ``centreline_degree`` (default 2 = constant curvature, fewer end wiggles than 3;
  lowered to the number of measured slices − 1), Tukey bisquare reweighting so that slices whose centroid is displaced
  by a local indentation or a false-positive blob do not bend it. Its derivative gives the tangent. For a cylinder of
  perpendicular cross-section A, a plane at angle θ cuts an area A / cos θ, so ``area × cos θ`` recovers A — the same
  correction the Spinal Cord Toolbox applies to its cross-sectional areas (``sct_process_segmentation``, angle
  correction on by default; De Leener et al., NeuroImage 2017;145:24–43).
  Needs ≥ 2 non-empty slices; otherwise NaN.
- **ap_diameter_mm / lr_diameter_mm**: caliper (Feret) width of the largest component along the anatomical
  antero-posterior (LPS ``y``) and left-right (LPS ``x``) directions projected into the slice plane; pixel footprints
  included (extent of pixel centres + the pixel's own width along that direction), so a disc of diameter D rasterised
  on pixels of size p gives D within ± p.
- **solidity**: ``skimage.measure.regionprops`` solidity (area / convex area, pixel counts) of the largest component.
- **n_components**: 8-connected foreground components in the slice.
- **qc_flags**: ``empty`` (no foreground), ``multiple_components`` (> 1 component), ``touches_border`` (foreground on
  the outermost rows/columns — the sac may be cut by the field of view), ``low_solidity`` (< ``low_solidity``,
  default 0.8: ragged or crescent outline), ``large_jump_vs_neighbours`` (area differs from the mean of the non-empty
  immediate neighbours by more than ``jump_fraction``, default 50 %).
- more **qc_flags**: ``area_below_floor`` (area < ``min_area_mm2``, default :data:`DEFAULT_MIN_AREA_MM2` = 20 mm²:
  a fragment, not a plausible sac), ``off_canal_track`` (the centroid of the largest component lies more than
  ``off_track_mm``, default :data:`DEFAULT_OFF_TRACK_MM` = 10 mm, from the robust canal centreline fitted through the
  other slices; needs at least centreline degree + 2 non-empty slices), ``bridged_gap`` (the slice was empty at the
  model's decision threshold between two sac slices and was segmented again at the lower bridging threshold of
  :mod:`DuralSacSegLib.postprocess`, typically the tightest slice of a stenosis: ``low_confidence_slices``).
- **stenosis**: category of the axial area (or the corrected one with ``stenosis_area="corrected"``) under a
  :class:`~DuralSacSegLib.stenosis.StenosisScheme` (default: Bolender et al. / Schönström et al. 1985, < 75 mm²
  absolute, 75–100 mm² relative) — **only for slices without a blocking QC flag** (:data:`BLOCKING_FLAGS`: empty,
  area below the floor, off the canal track, several components, low solidity, touching the border, bridged gap: the mask is
  implausible as one dural sac cross-section, so its area says nothing about stenosis). A flagged slice gets ``""``
  and ``stenosis_note`` says why ("not graded: ..."); the area is still reported. ``large_jump_vs_neighbours`` alone
  does not block grading (a real stenosis makes the area drop between neighbouring slices).

Per-level summaries: pass ``levels={"L4-5": position}`` where the position is a number (mm along the slice normal, as
``position_mm``) or an LPS point (e.g. a disc centroid from :func:`label_centroids_lps` of a FORAMEN3D label map or the
phantom's truth); the nearest slice is summarised, and a level whose slice carries a blocking flag gets no stenosis
category (its ``stenosis_note`` names the slice and the flags). Levels more than half a slice beyond the stack are
reported with ``slice_index = -1`` and the flag ``outside_stack``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
from skimage.measure import regionprops

from DuralSacSegLib.stenosis import StenosisScheme, get_scheme
from spinemorph.atomic import atomic_write_text
from spinemorph.errors import InputError
from spinemorph.masks import label_components, largest_component
from spinemorph.volume import Volume

# QC flag names
FLAG_EMPTY = "empty"
FLAG_MULTIPLE = "multiple_components"
FLAG_BORDER = "touches_border"
FLAG_LOW_SOLIDITY = "low_solidity"
FLAG_JUMP = "large_jump_vs_neighbours"
FLAG_OUTSIDE = "outside_stack"
FLAG_SMALL = "area_below_floor"
FLAG_OFF_TRACK = "off_canal_track"
FLAG_BRIDGED = "bridged_gap"
QC_FLAGS = (FLAG_EMPTY, FLAG_MULTIPLE, FLAG_BORDER, FLAG_LOW_SOLIDITY, FLAG_JUMP, FLAG_SMALL, FLAG_OFF_TRACK, FLAG_BRIDGED)
#: flags that make a slice's mask implausible (or too uncertain) as one dural sac cross-section: no stenosis category
BLOCKING_FLAGS = (FLAG_EMPTY, FLAG_SMALL, FLAG_OFF_TRACK, FLAG_MULTIPLE, FLAG_LOW_SOLIDITY, FLAG_BORDER, FLAG_BRIDGED)
#: what each flag means, for tables, the console and reports
FLAG_TEXT = {
    FLAG_EMPTY: "no dural sac segmented",
    FLAG_SMALL: "area below the plausibility floor",
    FLAG_OFF_TRACK: "far from the canal track of the other slices",
    FLAG_MULTIPLE: "several separate pieces",
    FLAG_LOW_SOLIDITY: "ragged or crescent outline (low solidity)",
    FLAG_BORDER: "touches the image border (may be cut off)",
    FLAG_JUMP: "area jumps against the neighbouring slices",
    FLAG_OUTSIDE: "level outside the imaged slices",
    FLAG_BRIDGED: "low confidence: segmented at the lower threshold between two sac slices (check the outline)",
}

# QC settings: project design choices (not from the literature), meant to draw the reader's eye, not to decide anything.
#: degree of the polynomial canal centreline (x(z), y(z)) used for the angle correction
DEFAULT_CENTRELINE_DEGREE = 2
#: a mask with area / convex-hull area below this is flagged (a dural sac cross-section is nearly convex)
DEFAULT_LOW_SOLIDITY = 0.8
#: a slice whose area differs from the mean of its non-empty neighbours by more than this fraction of that mean is flagged
DEFAULT_JUMP_FRACTION = 0.5
#: plausibility floor of one dural sac cross-section (mm²). Design choice, not from the literature: a quarter of the
#: 75 mm² absolute-stenosis bound of Bolender/Schönström (the lowest category bound of the default scheme) and the
#: same value as the smallest training sac (``spinemorph.samples.MIN_SAC_AREA_MM2``). A mask below it is far more
#: often a fragment or a stray blob than a sac; the slice is flagged and not graded (the area is still listed), so a
#: genuine extreme stenosis is shown for a reader to confirm instead of being called automatically.
DEFAULT_MIN_AREA_MM2 = 20.0
#: largest distance (mm) of a slice's sac centroid from the robust canal centreline of the stack. Design choice: about
#: the half-width of a lumbar dural sac (AP ~10-18 mm, LR ~15-25 mm in adults), so a centroid farther away lies
#: outside the sac of the neighbouring slices; the robust (Tukey) fit gives such a slice no weight.
DEFAULT_OFF_TRACK_MM = 10.0

_NAN3 = (math.nan, math.nan, math.nan)


@dataclasses.dataclass
class SliceMeasurement:
    """Measurements of one slice (see the module docstring for the definitions)."""

    slice_index: int
    position_mm: float
    centre_lps: tuple[float, float, float]
    area_mm2: float
    corrected_area_mm2: float
    tilt_deg: float
    ap_diameter_mm: float
    lr_diameter_mm: float
    solidity: float
    n_components: int
    centroid_lps: tuple[float, float, float]
    mean_intensity: float
    stenosis: str
    qc_flags: tuple[str, ...]
    level: str = ""
    stenosis_note: str = ""
    track_distance_mm: float = math.nan

    @property
    def blocking_flags(self) -> tuple[str, ...]:
        """The flags of this slice that forbid a stenosis category (:data:`BLOCKING_FLAGS`)."""
        return tuple(f for f in self.qc_flags if f in BLOCKING_FLAGS)

    @property
    def graded(self) -> bool:
        """True when the slice has a stenosis category (a plausible sac, no blocking flag)."""
        return bool(self.stenosis)


@dataclasses.dataclass
class LevelSummary:
    """The slice nearest to a named level (e.g. the mid-disc slice of L4-5)."""

    level: str
    level_position_mm: float
    slice_index: int
    distance_mm: float
    area_mm2: float
    corrected_area_mm2: float
    ap_diameter_mm: float
    lr_diameter_mm: float
    stenosis: str
    qc_flags: tuple[str, ...]
    stenosis_note: str = ""


#: CSV / Slicer column order of the slice table: (column name, unit or "")
SLICE_COLUMNS = (
    ("slice_index", ""),
    ("position_mm", "mm"),
    ("centre_x_mm", "mm"),
    ("centre_y_mm", "mm"),
    ("centre_z_mm", "mm"),
    ("area_mm2", "mm2"),
    ("corrected_area_mm2", "mm2"),
    ("tilt_deg", "deg"),
    ("ap_diameter_mm", "mm"),
    ("lr_diameter_mm", "mm"),
    ("solidity", ""),
    ("n_components", ""),
    ("centroid_x_mm", "mm"),
    ("centroid_y_mm", "mm"),
    ("centroid_z_mm", "mm"),
    ("mean_intensity", ""),
    ("stenosis", ""),
    ("stenosis_note", ""),
    ("qc_flags", ""),
    ("track_distance_mm", "mm"),
    ("level", ""),
)
LEVEL_COLUMNS = (
    "level",
    "level_position_mm",
    "slice_index",
    "distance_mm",
    "area_mm2",
    "corrected_area_mm2",
    "ap_diameter_mm",
    "lr_diameter_mm",
    "stenosis",
    "stenosis_note",
    "qc_flags",
)


def _row_values(r: SliceMeasurement) -> dict:
    return {
        "slice_index": r.slice_index,
        "position_mm": r.position_mm,
        "centre_x_mm": r.centre_lps[0],
        "centre_y_mm": r.centre_lps[1],
        "centre_z_mm": r.centre_lps[2],
        "area_mm2": r.area_mm2,
        "corrected_area_mm2": r.corrected_area_mm2,
        "tilt_deg": r.tilt_deg,
        "ap_diameter_mm": r.ap_diameter_mm,
        "lr_diameter_mm": r.lr_diameter_mm,
        "solidity": r.solidity,
        "n_components": r.n_components,
        "centroid_x_mm": r.centroid_lps[0],
        "centroid_y_mm": r.centroid_lps[1],
        "centroid_z_mm": r.centroid_lps[2],
        "mean_intensity": r.mean_intensity,
        "stenosis": r.stenosis,
        "stenosis_note": r.stenosis_note,
        "qc_flags": ";".join(r.qc_flags),
        "track_distance_mm": r.track_distance_mm,
        "level": r.level,
    }


def _level_values(lv: LevelSummary) -> dict:
    d = dataclasses.asdict(lv)
    d["qc_flags"] = ";".join(lv.qc_flags)
    return d


def _csv_cell(v):
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(round(v, 6))
    return v


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (tuple, list)):
        return [_json_value(x) for x in v]
    if isinstance(v, np.generic):
        return _json_value(v.item())
    return v


@dataclasses.dataclass
class DscaTable:
    """Per-slice DSCA table with its geometry and stenosis scheme.

    Attributes
    ----------
    rows : list of SliceMeasurement
        One row per slice, in slice-index order.
    levels : list of LevelSummary
        Per-level summaries (empty if no levels were given).
    slice_normal_lps : tuple of float
        Unit normal of the slice planes (LPS).
    pixel_spacing_mm : tuple of float
        In-plane pixel size (along i, j) used for the areas.
    slice_spacing_mm : float
        Distance between slice planes.
    scheme : StenosisScheme
        Categories applied.
    stenosis_area : str
        ``"axial"`` or ``"corrected"``: which area the categories use.
    centreline : dict
        Centreline fit: ``degree``, ``n_slices`` used, ``max_tilt_deg``.
    """

    rows: list[SliceMeasurement]
    levels: list[LevelSummary]
    slice_normal_lps: tuple[float, float, float]
    pixel_spacing_mm: tuple[float, float]
    slice_spacing_mm: float
    scheme: StenosisScheme
    stenosis_area: str = "axial"
    centreline: dict = dataclasses.field(default_factory=dict)
    qc: dict = dataclasses.field(default_factory=dict)

    #: words of :meth:`qc_summary_lines` (a table of other rows, e.g. perpendicular planes, sets its own)
    QC_WORDS: ClassVar[dict[str, str]] = {
        "row": "slice", "rows": "slices", "content": "mask", "implausible": "mask implausible as a dural sac"}
    #: plain-language text of each QC flag in :meth:`qc_summary_lines`
    QC_FLAG_TEXT: ClassVar[dict[str, str]] = FLAG_TEXT

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.rows)

    def areas_mm2(self) -> np.ndarray:
        """Axial areas of all slices (0 for empty slices)."""
        return np.array([r.area_mm2 for r in self.rows], dtype=float)

    def corrected_areas_mm2(self) -> np.ndarray:
        """Angle-corrected areas (NaN where no centreline)."""
        return np.array([r.corrected_area_mm2 for r in self.rows], dtype=float)

    def nonempty_rows(self) -> list[SliceMeasurement]:
        return [r for r in self.rows if r.area_mm2 > 0]

    def smallest(self, n: int = 1) -> list[SliceMeasurement]:
        """The ``n`` non-empty slices with the smallest axial area (smallest first), flagged ones included."""
        return sorted(self.nonempty_rows(), key=lambda r: (r.area_mm2, r.slice_index))[: max(0, int(n))]

    def graded_rows(self) -> list[SliceMeasurement]:
        """Slices with a stenosis category (no blocking QC flag)."""
        return [r for r in self.rows if r.graded]

    def smallest_graded(self, n: int = 1) -> list[SliceMeasurement]:
        """The ``n`` graded slices (no blocking QC flag) with the smallest area (smallest first)."""
        return sorted(self.graded_rows(), key=lambda r: (r.area_mm2, r.slice_index))[: max(0, int(n))]

    def not_graded_rows(self) -> list[SliceMeasurement]:
        """Non-empty slices that carry a blocking QC flag (a mask, but no stenosis category)."""
        return [r for r in self.rows if r.area_mm2 > 0 and not r.graded]

    def qc_counts(self) -> dict[str, int]:
        """Number of slices carrying each QC flag (flags that occur only)."""
        out: dict[str, int] = {}
        for r in self.rows:
            for f in r.qc_flags:
                out[f] = out.get(f, 0) + 1
        return out

    def qc_summary_lines(self) -> list[str]:
        """Plain-language QC lines for the console and reports (empty when no mask was flagged)."""
        w, text = self.QC_WORDS, self.QC_FLAG_TEXT
        lines = []
        bad = self.not_graded_rows()
        if bad:
            lines.append(f"{len(bad)} of {len(self.nonempty_rows())} {w['rows']} with a {w['content']} were NOT graded for "
                         f"stenosis ({w['implausible']}; check them): "
                         + ", ".join(f"{w['row']} {r.slice_index} ({r.area_mm2:.1f} mm²: "
                                     f"{'; '.join(text.get(f, f) for f in r.blocking_flags)})" for r in bad[:6])
                         + (" ..." if len(bad) > 6 else ""))
        jumps = [r.slice_index for r in self.rows if FLAG_JUMP in r.qc_flags]
        if jumps:
            lines.append(f"area jumps against the neighbouring {w['rows']} at {w['rows']} {', '.join(map(str, jumps[:10]))}"
                         f"{' ...' if len(jumps) > 10 else ''} (graded, but check the outline)")
        return lines

    # ------------------------------------------------------------------ export
    def as_columns(self) -> dict[str, list]:
        """Column name → list of values (slice table), in :data:`SLICE_COLUMNS` order; for a Slicer ``vtkTable``."""
        cols: dict[str, list] = {name: [] for name, _ in SLICE_COLUMNS}
        for r in self.rows:
            for k, v in _row_values(r).items():
                cols[k].append(v)
        return cols

    def levels_as_columns(self) -> dict[str, list]:
        """Column name → list of values (per-level summary)."""
        cols: dict[str, list] = {name: [] for name in LEVEL_COLUMNS}
        for lv in self.levels:
            for k, v in _level_values(lv).items():
                cols[k].append(v)
        return cols

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """Slice table as CSV text (NaN → empty cell); written atomically to ``path`` if given."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([name for name, _ in SLICE_COLUMNS])
        for r in self.rows:
            vals = _row_values(r)
            w.writerow([_csv_cell(vals[name]) for name, _ in SLICE_COLUMNS])
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def levels_to_csv(self, path: str | os.PathLike | None = None) -> str:
        """Per-level summary as CSV text; written atomically to ``path`` if given."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(LEVEL_COLUMNS)
        for lv in self.levels:
            vals = _level_values(lv)
            w.writerow([_csv_cell(vals[name]) for name in LEVEL_COLUMNS])
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_dict(self) -> dict:
        """JSON-ready dict: geometry, definitions, stenosis scheme with citations, slices and levels (NaN → None)."""
        return {
            "definitions": {
                "area_mm2": "foreground pixels x pixel area on the slice plane (axial DSCA)",
                "corrected_area_mm2": "area_mm2 x cos(tilt), tilt = angle between slice normal and the fitted canal "
                "centreline tangent (area perpendicular to the canal, as the Spinal Cord Toolbox corrects it)",
                "ap_diameter_mm/lr_diameter_mm": "caliper width of the largest component along the anatomical AP / LR "
                "direction projected into the slice",
                "stenosis": f"category of the {self.stenosis_area} area",
            },
            "slice_normal_lps": _json_value(tuple(self.slice_normal_lps)),
            "pixel_spacing_mm": _json_value(tuple(self.pixel_spacing_mm)),
            "slice_spacing_mm": self.slice_spacing_mm,
            "centreline": _json_value_dict(self.centreline),
            "stenosis_scheme": self.scheme.to_dict(),
            "stenosis_area": self.stenosis_area,
            "qc": _json_value_dict(self.qc) | {"counts": self.qc_counts(), "n_not_graded": len(self.not_graded_rows()),
                                                 "summary": self.qc_summary_lines()},
            "slices": [{k: _json_value(v) for k, v in _row_values(r).items()} | {"qc_flags": list(r.qc_flags)} for r in self.rows],
            "levels": [
                {k: _json_value(v) for k, v in dataclasses.asdict(lv).items()} | {"qc_flags": list(lv.qc_flags)}
                for lv in self.levels
            ],
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """:meth:`to_dict` as JSON text; written atomically to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text


def _json_value_dict(d: dict) -> dict:
    return {k: _json_value(v) for k, v in d.items()}


# ---------------------------------------------------------------------- helpers
def _in_plane_axes(vol: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = vol.direction
    u = d[:, 0] / np.linalg.norm(d[:, 0])
    v = d[:, 1] / np.linalg.norm(d[:, 1])
    n = vol.slice_normal()
    return u, v, n


def _anatomical_in_plane(axis_lps: np.ndarray, n: np.ndarray) -> np.ndarray | None:
    """Unit projection of an LPS axis onto the plane with normal ``n`` (None if nearly parallel to ``n``)."""
    p = axis_lps - (axis_lps @ n) * n
    norm = np.linalg.norm(p)
    if norm < 0.2:  # the anatomical axis is within ~12° of the slice normal: no meaningful in-plane diameter
        return None
    return p / norm


def _caliper_mm(jj: np.ndarray, ii: np.ndarray, sx: float, sy: float, u: np.ndarray, v: np.ndarray, d: np.ndarray | None) -> float:
    if d is None or ii.size == 0:
        return math.nan
    cu, cv = float(u @ d) * sx, float(v @ d) * sy
    proj = ii * cu + jj * cv
    return float(proj.max() - proj.min() + abs(cu) + abs(cv))


def _foreground(mask: Volume, label: int | None) -> np.ndarray:
    a = np.asarray(mask.array)
    if a.ndim != 3:
        raise InputError(f"dural sac mask must be 3D (slices, rows, columns), got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise InputError("dural sac mask contains NaN or infinite values; use a label map (0 background, 1 dural sac)")
    return (a == label) if label is not None else (a > 0)


def _check_same_grid(a: Volume, b: Volume) -> None:
    if a.shape[:3] != b.shape[:3] or not np.allclose(a.spacing_mm, b.spacing_mm, rtol=1e-4, atol=1e-5) or not np.allclose(
        a.origin_mm, b.origin_mm, atol=1e-3
    ) or not np.allclose(a.direction, b.direction, atol=1e-4):
        raise InputError(
            "the image and the dural sac mask are on different grids (size, spacing, origin or direction differ); "
            "resample the mask onto the image first"
        )


def label_centroids_lps(labelmap: Volume, labels: Mapping[int, str]) -> dict[str, tuple[float, float, float]]:
    """LPS centroid (mm) of each label value present in ``labelmap``, keyed by name.

    Use it for per-level summaries, e.g. ``label_centroids_lps(foramen_labels, {2: "L4-5"})`` gives the L4-5 disc
    centroid; labels absent from the map are left out.
    """
    a = np.asarray(labelmap.array)
    out = {}
    for value, name in labels.items():
        kji = np.argwhere(a == value)
        if kji.size == 0:
            continue
        c_ijk = kji.mean(axis=0)[::-1]
        out[str(name)] = tuple(float(x) for x in labelmap.index_to_lps(c_ijk))
    return out


def level_position_mm(pos, normal, name: str = "level") -> float:
    """Position (mm along ``normal``) of a level given as a number (returned as is) or an LPS point (projected).

    Raises :class:`InputError` for anything else.
    """
    n = np.asarray(normal, dtype=float)
    arr = np.asarray(pos, dtype=float).ravel()
    if arr.size == 1 and np.isfinite(arr[0]):
        return float(arr[0])
    if arr.size == 3 and np.all(np.isfinite(arr)):
        return float(arr @ n)
    raise InputError(f"level {name!r}: give a position in mm along the slice normal or an LPS point [x, y, z], got {pos!r}")


def _robust_centreline(s: np.ndarray, uv: np.ndarray, deg: int, floor_mm: float, n_iter: int = 10):
    """Fit in-plane centroid coordinates ``uv`` (n, 2) as polynomials of ``s`` with Tukey bisquare reweighting.

    Slices whose centroid is displaced by a local indentation (disc bulge, thick flavum) or a false-positive blob
    get low weight, so they do not bend the centreline. Scale = 1.4826 × median residual distance (at least
    ``floor_mm``); cut-off 4.685 × scale. Returns the two polynomials and the number of slices with weight > 0.
    """
    w = np.ones(len(s))
    fit = np.polynomial.Polynomial.fit
    polys = [fit(s, uv[:, c], deg) for c in range(2)]
    for _ in range(n_iter):
        r = np.hypot(uv[:, 0] - polys[0](s), uv[:, 1] - polys[1](s))
        scale = max(1.4826 * float(np.median(r)), floor_mm)
        new_w = np.clip(1.0 - (r / (4.685 * scale)) ** 2, 0.0, None) ** 2
        if np.count_nonzero(new_w) <= deg or np.allclose(new_w, w, atol=1e-4):
            break
        w = new_w
        polys = [fit(s, uv[:, c], deg, w=np.sqrt(w)) for c in range(2)]
    return polys, int(np.count_nonzero(w))


# ---------------------------------------------------------------------- main entry
def compute_dsca_table(
    mask: Volume,
    image: Volume | None = None,
    *,
    label: int | None = None,
    levels: Mapping[str, float | Sequence[float]] | None = None,
    scheme: str | StenosisScheme | None = None,
    stenosis_area: str = "axial",
    centreline_degree: int = DEFAULT_CENTRELINE_DEGREE,
    low_solidity: float = DEFAULT_LOW_SOLIDITY,
    jump_fraction: float = DEFAULT_JUMP_FRACTION,
    min_area_mm2: float = DEFAULT_MIN_AREA_MM2,
    off_track_mm: float = DEFAULT_OFF_TRACK_MM,
    low_confidence_slices: Sequence[int] = (),
) -> DscaTable:
    """Measure every slice of a dural sac mask.

    Parameters
    ----------
    mask : Volume
        Label map; foreground = ``array > 0`` (or ``== label``). Slices are index ``k``.
    image : Volume, optional
        The image on the same grid; gives ``mean_intensity`` inside the mask (QC only).
    label : int, optional
        Foreground label value (default: any non-zero voxel).
    levels : mapping, optional
        ``{name: position}``; position in mm along the slice normal or an LPS point (3 numbers).
    scheme : str or StenosisScheme, optional
        Stenosis categories (default Bolender/Schönström 1985); names in :data:`DuralSacSegLib.stenosis.SCHEMES`.
    stenosis_area : {"axial", "corrected"}
        Which area the categories use.
    centreline_degree : int
        Degree of the centreline polynomial (lowered to the number of non-empty slices − 1).
    low_solidity, jump_fraction, min_area_mm2, off_track_mm : float
        QC thresholds (see the module docstring); slices with a blocking flag get no stenosis category.
    low_confidence_slices : sequence of int
        Slice indices the segmentation bridged at a lower threshold (flag ``bridged_gap``, blocking).

    Returns
    -------
    DscaTable
    """
    if stenosis_area not in ("axial", "corrected"):
        raise InputError(f"stenosis_area must be 'axial' or 'corrected', got {stenosis_area!r}")
    if int(centreline_degree) < 1:
        raise InputError(f"centreline degree must be >= 1, got {centreline_degree}")
    for name, val in (("min_area_mm2", min_area_mm2), ("off_track_mm", off_track_mm)):
        if not (math.isfinite(float(val)) and float(val) >= 0):
            raise InputError(f"QC setting {name} must be a finite number >= 0, got {val}")
    sch = get_scheme(scheme)
    fg = _foreground(mask, label)
    if image is not None:
        _check_same_grid(mask, image)
    nk, nj, ni = fg.shape
    sx, sy, sz = mask.spacing_mm
    u, v, n = _in_plane_axes(mask)
    d_lr = _anatomical_in_plane(np.array([1.0, 0.0, 0.0]), n)
    d_ap = _anatomical_in_plane(np.array([0.0, 1.0, 0.0]), n)
    pixel_area = sx * sy
    slice_spacing = abs(float(mask.direction[:, 2] @ n)) * sz

    centres = mask.index_to_lps(np.stack([np.full(nk, (ni - 1) / 2), np.full(nk, (nj - 1) / 2), np.arange(nk)], axis=1))
    positions = centres @ n

    rows: list[SliceMeasurement] = []
    centroid_uv = np.full((nk, 2), np.nan)
    for k in range(nk):
        sl = fg[k]
        count = int(np.count_nonzero(sl))
        flags: list[str] = []
        if count == 0:
            rows.append(
                SliceMeasurement(k, float(positions[k]), tuple(map(float, centres[k])), 0.0, math.nan, math.nan, math.nan,
                                 math.nan, math.nan, 0, _NAN3, math.nan, "", (FLAG_EMPTY,),
                                 stenosis_note="not graded: " + FLAG_TEXT[FLAG_EMPTY])
            )
            continue
        ncomp = label_components(sl, "full")[1]  # 8-connected
        if ncomp > 1:
            flags.append(FLAG_MULTIPLE)
        comp = largest_component(sl, "full")
        jj, ii = np.nonzero(comp)
        c_ijk = np.array([ii.mean(), jj.mean(), float(k)])
        c_lps = mask.index_to_lps(c_ijk)
        centroid_uv[k] = (c_lps @ u, c_lps @ v)
        if sl[0, :].any() or sl[-1, :].any() or sl[:, 0].any() or sl[:, -1].any():
            flags.append(FLAG_BORDER)
        solidity = float(regionprops(comp.astype(np.uint8))[0].solidity)
        if solidity < low_solidity:
            flags.append(FLAG_LOW_SOLIDITY)
        mean_int = float(np.asarray(image.array[k], dtype=float)[sl].mean()) if image is not None else math.nan
        rows.append(
            SliceMeasurement(
                slice_index=k,
                position_mm=float(positions[k]),
                centre_lps=tuple(map(float, centres[k])),
                area_mm2=count * pixel_area,
                corrected_area_mm2=math.nan,
                tilt_deg=math.nan,
                ap_diameter_mm=_caliper_mm(jj, ii, sx, sy, u, v, d_ap),
                lr_diameter_mm=_caliper_mm(jj, ii, sx, sy, u, v, d_lr),
                solidity=solidity,
                n_components=int(ncomp),
                centroid_lps=tuple(map(float, c_lps)),
                mean_intensity=mean_int,
                stenosis="",
                qc_flags=tuple(flags),
            )
        )

    # centreline: polynomial fit of largest-component centroids against the position along the normal
    valid = np.flatnonzero(np.isfinite(centroid_uv[:, 0]))
    centreline = {"degree": 0, "n_slices": int(valid.size), "n_inliers": 0, "max_tilt_deg": math.nan,
                  "method": "robust (Tukey bisquare) polynomial fit of largest-component centroids vs position"}
    if valid.size >= 2 and np.ptp(positions[valid]) > 0:
        deg = int(min(int(centreline_degree), valid.size - 1))
        s = positions[valid]
        tilts = []
        polys, n_inliers = _robust_centreline(s, centroid_uv[valid], deg, floor_mm=0.5 * min(sx, sy))
        if valid.size >= deg + 2:  # with fewer slices the fit passes through every centroid: no track to compare with
            resid = np.hypot(centroid_uv[valid, 0] - polys[0](s), centroid_uv[valid, 1] - polys[1](s))
            for idx, k in enumerate(valid):
                rows[k].track_distance_mm = float(resid[idx])
                if resid[idx] > float(off_track_mm):
                    rows[k].qc_flags = rows[k].qc_flags + (FLAG_OFF_TRACK,)
        grad = np.stack([p.deriv()(s) for p in polys], axis=1)
        cos_t = 1.0 / np.sqrt(1.0 + np.sum(grad**2, axis=1))
        for idx, k in enumerate(valid):
            r = rows[k]
            r.corrected_area_mm2 = r.area_mm2 * float(cos_t[idx])
            r.tilt_deg = float(np.degrees(np.arccos(np.clip(cos_t[idx], -1.0, 1.0))))
            tilts.append(r.tilt_deg)
        centreline.update(degree=deg, max_tilt_deg=float(max(tilts)), n_inliers=n_inliers)

    # jumps vs immediate non-empty neighbours, then stenosis categories
    areas = np.array([r.area_mm2 for r in rows])
    bridged = {int(k) for k in low_confidence_slices}
    for k, r in enumerate(rows):
        if r.area_mm2 <= 0:
            continue
        neigh = [areas[m] for m in (k - 1, k + 1) if 0 <= m < nk and areas[m] > 0]
        if neigh:
            ref = float(np.mean(neigh))
            if abs(r.area_mm2 - ref) > jump_fraction * ref:
                r.qc_flags = r.qc_flags + (FLAG_JUMP,)
        if r.area_mm2 < float(min_area_mm2):
            r.qc_flags = r.qc_flags + (FLAG_SMALL,)
        if k in bridged:
            r.qc_flags = r.qc_flags + (FLAG_BRIDGED,)
        blocking = r.blocking_flags
        if blocking:
            r.stenosis = ""
            r.stenosis_note = "not graded: " + "; ".join(FLAG_TEXT.get(f, f) for f in blocking)
            continue
        basis = r.area_mm2 if stenosis_area == "axial" else r.corrected_area_mm2
        r.stenosis = sch.classify(basis)

    level_rows: list[LevelSummary] = []
    if levels:
        lo, hi = float(positions.min()), float(positions.max())
        for name, pos in levels.items():
            s = level_position_mm(pos, n, str(name))
            k = int(np.argmin(np.abs(positions - s)))
            dist = float(abs(positions[k] - s))
            if s < lo - 0.5 * slice_spacing - 1e-6 or s > hi + 0.5 * slice_spacing + 1e-6:
                level_rows.append(LevelSummary(str(name), s, -1, dist, math.nan, math.nan, math.nan, math.nan, "", (FLAG_OUTSIDE,),
                                               "not graded: level outside the imaged slices"))
                continue
            r = rows[k]
            r.level = f"{r.level};{name}" if r.level else str(name)
            note = f"not graded: slice {k} flagged ({r.stenosis_note[len('not graded: '):]})" if r.blocking_flags else ""
            level_rows.append(
                LevelSummary(str(name), s, k, dist, r.area_mm2, r.corrected_area_mm2, r.ap_diameter_mm, r.lr_diameter_mm,
                             r.stenosis, r.qc_flags, note)
            )

    return DscaTable(
        rows=rows,
        levels=level_rows,
        slice_normal_lps=tuple(map(float, n)),
        pixel_spacing_mm=(float(sx), float(sy)),
        slice_spacing_mm=float(slice_spacing),
        scheme=sch,
        stenosis_area=stenosis_area,
        centreline=centreline,
        qc={"min_area_mm2": float(min_area_mm2), "off_track_mm": float(off_track_mm), "low_solidity": float(low_solidity),
            "jump_fraction": float(jump_fraction), "blocking_flags": list(BLOCKING_FLAGS),
            "rule": "a slice with a blocking flag gets no stenosis category (stenosis_note says why)",
            "sources": "project design choices (DuralSacSegLib.dsca: DEFAULT_MIN_AREA_MM2, DEFAULT_OFF_TRACK_MM, "
                       "DEFAULT_LOW_SOLIDITY, DEFAULT_JUMP_FRACTION), not literature thresholds"},
    )


def parse_levels(text_or_path: str | os.PathLike | None) -> dict[str, float | list[float]] | None:
    """Read ``--levels``: a JSON file or JSON text ``{"L4-5": 12.5, "L3-4": [x, y, z]}`` (mm / LPS mm)."""
    if text_or_path is None:
        return None
    raw = str(text_or_path)
    src = "--levels"
    if os.path.isfile(raw):
        src = raw
        try:
            with open(raw, encoding="utf-8") as fh:
                raw = fh.read()
        except OSError as exc:
            raise InputError(f"cannot read levels file {src}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"{src} is not valid JSON ({exc.msg} at line {exc.lineno}); expected {{\"L4-5\": 12.5}}") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"{src} must be a JSON object mapping level names to positions (mm) or LPS points")
    for name, pos in data.items():
        arr = np.asarray(pos, dtype=object).ravel()
        if arr.size not in (1, 3) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in arr):
            raise InputError(f"{src}: level {name!r} must be a number (mm) or [x, y, z] (LPS mm), got {pos!r}")
    return data
