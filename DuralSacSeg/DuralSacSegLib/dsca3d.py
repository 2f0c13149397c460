"""Dural sac cross-sectional area (DSCA) perpendicular to the canal centreline, from a 3D canal mask.

:func:`compute_dsca3d_table` takes any 3D mask :class:`~spinemorph.volume.Volume` of the spinal canal / dural sac (the
canal class of a 3D network, SPIDER label 100, the canal class 150 of the real T2 SPACE slab masks, the phantom's
``dural_sac`` label map) and measures the sac on planes **perpendicular to the canal centreline**, so a 3D T2 SPACE
volume gives DSCA without an axial series. The table is DuralSacSeg's own :class:`~DuralSacSegLib.dsca.DscaTable`
(same columns, QC flags and stenosis categories, computed by :func:`DuralSacSegLib.dsca.compute_dsca_table`), with
extra per-plane columns (normal, axial area for comparison).

Method (all in LPS millimetres; see ``docs/dsca3d.md``):

1. **Canal voxels**: ``array == label`` (or ``> 0``); the largest 26-connected component is kept.
2. **Centreline**: the canal voxels are cut into bands ``band_mm`` thick along their principal axis (PCA, pointing
   superior); the centroid of each band is one point. Each LPS coordinate is fitted against the band position with a
   cubic smoothing spline (:func:`scipy.interpolate.make_smoothing_spline`) whose penalty puts the half-gain
   wavelength at ``smoothing_mm`` (default 30 mm): ``lam = band_mm * (smoothing_mm / 2π)**4`` (for unit-weight points
   ``band_mm`` apart, the spline's transfer function is ``1 / (1 + lam/band_mm · ω⁴)``). Disc-bulge indentations
   (10–15 mm long) are damped; the lordotic curve (radius ≥ 100 mm) is kept.
3. **Planes**: every ``step_mm`` of arc length, a plane through the centreline point with the unit tangent as normal.
   In-plane axes: ``u`` = LPS x (patient left) projected into the plane, ``v = n × u`` (≈ posterior).
4. **Area on a plane**: the binary mask (0/1, float) is resampled with SimpleITK onto a ``window_mm`` square grid of
   ``pixel_mm`` (default 0.25 mm) pixels on the plane with **linear interpolation**; the area is the **fraction sum**
   (sum of the interpolated values × pixel area), the outline used for QC (components, solidity, border) and the
   diameters is the section **thresholded at 0.5**. Why the fraction sum for the area: it is the integral of the
   linear interpolant over the plane, which on a plane through voxel centres equals the voxel count × pixel area
   exactly (the axial DSCA of the 2D table) and varies smoothly with the plane; a 0.5 threshold is ambiguous where
   the interpolant is exactly 0.5 (on planes aligned with the voxel grid, every boundary point between an inside and
   an outside voxel), which biased a 6 mm cylinder on 0.5 mm voxels by +3.6 % in testing, while the fraction sum stays
   within 1 % of πr² at any tilt. Both are listed (``section_binary_area_mm2`` = thresholded area).
5. **Table**: the sections are stacked into a "straightened" canal volume (identity direction, k = arc length) and
   measured by :func:`~DuralSacSegLib.dsca.compute_dsca_table`: ``area_mm2`` is then the area **perpendicular to
   the centreline** (``corrected_area_mm2`` is the same number, ``tilt_deg`` = 0 by construction), ``ap/lr`` calipers
   along ``v`` / ``u``, solidity, components, jumps, area floor, off-track, stenosis category — all with the 2D table's
   own rules and thresholds. Added per plane (:class:`PlaneMeasurement`): ``normal_lps``, ``axial_area_mm2`` (area on
   the patient-axial plane LPS z = const through the same centre point, sampled the same way; ≈ area / cos θ for a
   straight canal), ``axial_tilt_deg`` (θ = angle between the centreline and LPS z) and the extra QC flag
   ``cut_by_field_of_view`` (the section reaches the edge of the imaged volume: the area may be cut; blocking, no
   stenosis category).
6. **Levels** (optional ``level_map``): each plane gets the majority label of the level map in a column in front of
   the canal (anterior 0–25 mm, ±8 mm left-right: the vertebral body or the disc); names ``L3``, ``L3-4``, ... With
   levels, the planes are limited to L3–S1 (from the first to the last plane labelled L3, L3-4, L4, L4-5, L5 or
   L5-S1); without, the whole canal is measured. Disc levels get per-level summaries (the plane nearest the mean arc
   length of the disc's planes).

Slicer-free: numpy, scipy, SimpleITK, scikit-image (through the 2D table) only.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.interpolate import make_smoothing_spline

from DuralSacSegLib import dsca as dsca2d
from spinemorph.atomic import atomic_write_text
from spinemorph.errors import InputError
from spinemorph.masks import largest_component  # 26-connected ("full") in 3D; also this module's public name
from spinemorph.volume import Volume

#: spacing of the perpendicular planes along the centreline (mm)
DEFAULT_STEP_MM = 1.0
#: pixel size of the resampled cross-sections (mm); 0.25 mm: sub-mm² rasterisation error for a 100-200 mm² sac
DEFAULT_PIXEL_MM = 0.25
#: side of the square cross-section window (mm): wider than any lumbar dural sac (LR ≤ ~30 mm) with margin
DEFAULT_WINDOW_MM = 60.0
#: thickness of the bands whose centroids define the centreline (mm)
DEFAULT_BAND_MM = 2.0
#: half-gain wavelength of the centreline smoothing spline (mm); design choice (see module docstring)
DEFAULT_SMOOTHING_MM = 30.0

FLAG_FOV = "cut_by_field_of_view"
FLAG_TEXT_3D = dict(dsca2d.FLAG_TEXT) | {FLAG_FOV: "reaches the edge of the imaged volume (may be cut off)"}
#: flags that forbid a stenosis category on a plane: the 2D table's blocking flags plus the field-of-view cut
BLOCKING_FLAGS_3D = tuple(dsca2d.BLOCKING_FLAGS) + (FLAG_FOV,)

#: level names of the L3-S1 span
L3_S1_LEVELS = ("L3", "L3-4", "L4", "L4-5", "L5", "L5-S1")
#: level names of the foramen label map (spinemorph.labels.FORAMEN_LABELS)
FORAMEN_LEVEL_NAMES = {1: "L4", 2: "L4-5", 3: "L5"}

#: extra CSV columns of the 3D table (after dsca.SLICE_COLUMNS)
EXTRA_COLUMNS = (
    ("normal_x", ""),
    ("normal_y", ""),
    ("normal_z", ""),
    ("axial_area_mm2", "mm2"),
    ("axial_tilt_deg", "deg"),
    ("section_binary_area_mm2", "mm2"),
)


# ---------------------------------------------------------------------------------------------- centreline
@dataclasses.dataclass
class Centreline:
    """Smoothed canal centreline, parametrised by arc length (mm, 0 at the inferior end).

    Attributes
    ----------
    s_mm : ndarray (m,)
        Arc length of the dense samples.
    points_lps : ndarray (m, 3)
        LPS points of the dense samples.
    tangents_lps : ndarray (m, 3)
        Unit tangents (pointing superior along the canal).
    band_points_lps : ndarray (b, 3)
        The band centroids the spline was fitted to.
    axis_lps : ndarray (3,)
        Principal axis of the canal voxels (band direction).
    """

    s_mm: np.ndarray
    points_lps: np.ndarray
    tangents_lps: np.ndarray
    band_points_lps: np.ndarray
    axis_lps: np.ndarray
    band_mm: float
    smoothing_mm: float

    @property
    def length_mm(self) -> float:
        return float(self.s_mm[-1])

    def point(self, s_mm) -> np.ndarray:
        """LPS point(s) at arc length(s) ``s_mm`` (linear between the dense samples)."""
        s = np.atleast_1d(np.asarray(s_mm, float))
        out = np.stack([np.interp(s, self.s_mm, self.points_lps[:, c]) for c in range(3)], axis=-1)
        return out if np.ndim(s_mm) else out[0]

    def tangent(self, s_mm) -> np.ndarray:
        """Unit tangent(s) at arc length(s) ``s_mm``."""
        s = np.atleast_1d(np.asarray(s_mm, float))
        t = np.stack([np.interp(s, self.s_mm, self.tangents_lps[:, c]) for c in range(3)], axis=-1)
        t /= np.linalg.norm(t, axis=-1, keepdims=True)
        return t if np.ndim(s_mm) else t[0]

    def to_dict(self) -> dict:
        return {
            "method": "band centroids along the principal axis + cubic smoothing spline per LPS coordinate",
            "band_mm": self.band_mm,
            "smoothing_mm": self.smoothing_mm,
            "length_mm": self.length_mm,
            "axis_lps": [float(x) for x in self.axis_lps],
            "n_bands": int(len(self.band_points_lps)),
        }


def _foreground(mask: Volume, label: int | None) -> np.ndarray:
    a = np.asarray(mask.array)
    if a.ndim != 3 or min(a.shape) < 1:
        raise InputError(f"canal mask must be a 3D volume, got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise InputError("canal mask contains NaN or infinite values; give a label map")
    fg = (a == label) if label is not None else (a > 0)
    if not fg.any():
        what = f"label {label}" if label is not None else "foreground"
        raise InputError(f"canal mask has no {what} voxels; give the canal/dural sac label of the label map")
    return fg


def fit_centreline(mask: Volume, *, label: int | None = None, band_mm: float = DEFAULT_BAND_MM,
                   smoothing_mm: float = DEFAULT_SMOOTHING_MM, dense_mm: float = 0.25) -> Centreline:
    """Smoothed centreline of the canal in ``mask`` (see the module docstring, step 2).

    Raises :class:`InputError` when the mask is empty or shorter than 5 bands along its axis.
    """
    if not (band_mm > 0 and smoothing_mm > 0):
        raise InputError(f"band_mm and smoothing_mm must be > 0, got {band_mm}, {smoothing_mm}")
    fg = largest_component(_foreground(mask, label))
    kji = np.argwhere(fg)
    pts = mask.index_to_lps(kji[:, ::-1].astype(float))
    mean = pts.mean(axis=0)
    cov = np.cov((pts - mean).T) if len(pts) > 1 else np.eye(3)
    w, vecs = np.linalg.eigh(cov)
    axis = vecs[:, int(np.argmax(w))]
    if axis[2] < 0 or (axis[2] == 0 and axis[1] < 0):
        axis = -axis
    t = (pts - mean) @ axis
    t0 = float(t.min())
    b = np.floor((t - t0) / band_mm).astype(np.int64)
    nb = int(b.max()) + 1
    counts = np.bincount(b, minlength=nb).astype(float)
    sums = np.stack([np.bincount(b, weights=pts[:, c], minlength=nb) for c in range(3)], axis=1)
    tsum = np.bincount(b, weights=t, minlength=nb)
    # bands with a tiny share of voxels (the tip of the sac, a stray corner) would pull the ends: need 10 % of median
    ok = counts >= max(1.0, 0.1 * float(np.median(counts[counts > 0])))
    # bands cut by a face of the volume where the canal leaves the field of view: the cut section's centroid is
    # displaced towards the inside, which would bend the ends of the centreline. A face touched by most bands (the
    # lateral faces of a sagittal slab narrower than the sac) cuts every section alike and is not a reason to drop one.
    size = np.asarray(mask.size_ijk)
    n_ok = max(1, int(np.count_nonzero(ok)))
    for c in range(3):
        for face in (0, size[c] - 1):
            touched = np.unique(b[kji[:, 2 - c] == face])
            if touched.size and np.count_nonzero(ok[touched]) < 0.5 * n_ok:
                ok[touched] = False
    if np.count_nonzero(ok) < 5:
        raise InputError(
            f"canal mask is too short along its axis ({np.ptp(t):.1f} mm): need at least 5 bands of {band_mm} mm "
            "to fit a centreline"
        )
    tb = tsum[ok] / counts[ok]
    cb = sums[ok] / counts[ok, None]
    lam = band_mm * (smoothing_mm / (2 * math.pi)) ** 4
    splines = [make_smoothing_spline(tb, cb[:, c], lam=lam) for c in range(3)]
    n_dense = max(2, int(math.ceil((tb[-1] - tb[0]) / dense_mm)) + 1)
    td = np.linspace(tb[0], tb[-1], n_dense)
    pd = np.stack([sp(td) for sp in splines], axis=1)
    dd = np.stack([sp.derivative()(td) for sp in splines], axis=1)
    dd /= np.linalg.norm(dd, axis=1, keepdims=True)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pd, axis=0), axis=1))])
    return Centreline(s, pd, dd, cb, axis, float(band_mm), float(smoothing_mm))


# ---------------------------------------------------------------------------------------------- planes
def plane_axes(normal_lps) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-plane axes ``u`` (≈ patient left), ``v = n × u`` (≈ posterior) and the unit normal ``n``."""
    n = np.asarray(normal_lps, float)
    n = n / np.linalg.norm(n)
    ref = np.array([1.0, 0.0, 0.0])
    if abs(n @ ref) > 0.95:  # normal along left-right: use LPS y as the reference instead
        ref = np.array([0.0, 1.0, 0.0])
    u = ref - (ref @ n) * n
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    return u, v, n


class _PlaneSampler:
    """Resample a 3D mask (crop around the foreground) onto oblique square planes with SimpleITK."""

    def __init__(self, vol: Volume, values: np.ndarray, crop_fg: np.ndarray, margin_mm: float,
                 interpolator=sitk.sitkLinear):
        sl = _crop_slices(crop_fg, vol, margin_mm)
        lo = np.array([s.start for s in sl])
        self.image = sitk.GetImageFromArray(np.ascontiguousarray(values[sl].astype(np.float32)))
        self.image.SetSpacing(tuple(float(x) for x in vol.spacing_mm))
        self.image.SetOrigin(tuple(float(x) for x in vol.index_to_lps(lo[::-1].astype(float))))
        self.image.SetDirection(tuple(vol.direction.ravel()))
        self.interpolator = interpolator
        self._vol = vol  # field of view: the whole (uncropped) volume

    def sample(self, centre, u, v, n, n_px: int, px: float) -> np.ndarray:
        D = np.column_stack([u, v, n])
        half = (n_px - 1) / 2 * px
        origin = np.asarray(centre, float) - half * u - half * v
        out = sitk.Resample(self.image, [n_px, n_px, 1], sitk.Transform(), self.interpolator, tuple(map(float, origin)),
                            (px, px, px), tuple(D.ravel()), 0.0, sitk.sitkFloat32)
        return sitk.GetArrayViewFromImage(out)[0].copy()  # [row (v), column (u)]

    def inside_fov(self, centre, u, v, n_px: int, px: float) -> np.ndarray:
        """Boolean [row, col]: plane pixels inside the imaged volume (continuous index within ±0.5 voxel)."""
        half = (n_px - 1) / 2 * px
        a = np.arange(n_px) * px - half
        P = np.asarray(centre, float)[None, None, :] + a[None, :, None] * u[None, None, :] + a[:, None, None] * v[None, None, :]
        idx = self._vol.lps_to_index(P)
        size = np.asarray(self._vol.size_ijk, float)
        return np.all((idx >= -0.5) & (idx <= size - 0.5), axis=-1)


# ---------------------------------------------------------------------------------------------- table
@dataclasses.dataclass
class PlaneMeasurement(dsca2d.SliceMeasurement):
    """One perpendicular plane: the 2D table's slice row plus the plane's normal and the axial area for comparison.

    ``slice_index`` = plane number, ``position_mm`` = arc length along the centreline (mm from its inferior end),
    ``centre_lps`` = the centreline point (plane centre), ``area_mm2`` = ``corrected_area_mm2`` = area on the plane
    perpendicular to the centreline, ``tilt_deg`` = 0.
    """

    normal_lps: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    axial_area_mm2: float = math.nan
    axial_tilt_deg: float = math.nan
    section_binary_area_mm2: float = math.nan

    @property
    def blocking_flags(self) -> tuple[str, ...]:
        return tuple(f for f in self.qc_flags if f in BLOCKING_FLAGS_3D)


def _cell(v):
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(round(v, 6))
    return v


@dataclasses.dataclass
class Dsca3dTable(dsca2d.DscaTable):
    """:class:`~DuralSacSegLib.dsca.DscaTable` of perpendicular planes (rows are :class:`PlaneMeasurement`).

    ``centreline`` holds the centreline fit and the plane settings; ``span`` says which part of the canal was
    measured (``"L3-S1"`` or ``"whole canal"``).
    """

    span: str = "whole canal"

    QC_WORDS: ClassVar[dict[str, str]] = {
        "row": "plane", "rows": "planes", "content": "section",
        "implausible": "section implausible as a dural sac or cut by the field of view"}
    QC_FLAG_TEXT: ClassVar[dict[str, str]] = FLAG_TEXT_3D

    def _extra(self, r: PlaneMeasurement) -> dict:
        return {"normal_x": r.normal_lps[0], "normal_y": r.normal_lps[1], "normal_z": r.normal_lps[2],
                "axial_area_mm2": r.axial_area_mm2, "axial_tilt_deg": r.axial_tilt_deg,
                "section_binary_area_mm2": r.section_binary_area_mm2}

    def axial_areas_mm2(self) -> np.ndarray:
        """Areas on the patient-axial planes through the plane centres (for comparison)."""
        return np.array([r.axial_area_mm2 for r in self.rows], dtype=float)

    def as_columns(self) -> dict[str, list]:
        cols = super().as_columns()
        for name, _ in EXTRA_COLUMNS:
            cols[name] = [self._extra(r)[name] for r in self.rows]
        return cols

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        cols = self.as_columns()
        names = list(cols)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(names)
        for i in range(len(self.rows)):
            w.writerow([_cell(cols[c][i]) for c in names])
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["definitions"] = d["definitions"] | {
            "area_mm2": "area of the canal mask on the plane perpendicular to the canal centreline (mm2)",
            "corrected_area_mm2": "same as area_mm2 (the plane is perpendicular to the centreline by construction)",
            "position_mm": "arc length of the plane centre along the canal centreline, from its inferior end",
            "normal_x/y/z": "unit LPS normal of the plane (centreline tangent, pointing superior)",
            "axial_area_mm2": "area on the patient-axial plane (LPS z = const) through the same centre, for comparison",
            "axial_tilt_deg": "angle between the centreline tangent and LPS z",
            "section_binary_area_mm2": "pixels of the section thresholded at 0.5 x pixel area (outline used for QC "
                                       "and diameters)",
            "ap_diameter_mm/lr_diameter_mm": "caliper width of the largest component along v (~posterior) / u (~left) "
                                             "in the plane",
        }
        d["span"] = self.span
        d["method"] = "dsca3d: planes perpendicular to the smoothed canal centreline of a 3D canal mask"
        for row, r in zip(d["slices"], self.rows):
            row.update({k: dsca2d._json_value(v) for k, v in self._extra(r).items()})
        d["qc"]["summary"] = self.qc_summary_lines()
        return d


def _level_names_for(level_map: Volume) -> dict[int, str]:
    vals = set(np.unique(np.asarray(level_map.array)).tolist()) - {0}
    if vals and vals <= {1, 2, 3, 4}:
        return dict(FORAMEN_LEVEL_NAMES)
    from spinemorph.spider import generic_level_name

    out = {}
    for v in vals:
        v = int(v)
        if v == 100:
            continue
        name = generic_level_name(v)
        out[v] = name[:-5] if name.endswith(" disc") else name
    return out


def compute_dsca3d_table(
    mask: Volume,
    *,
    label: int | None = None,
    level_map: Volume | None = None,
    level_names: Mapping[int, str] | None = None,
    span: str = "auto",
    step_mm: float = DEFAULT_STEP_MM,
    pixel_mm: float = DEFAULT_PIXEL_MM,
    window_mm: float = DEFAULT_WINDOW_MM,
    band_mm: float = DEFAULT_BAND_MM,
    smoothing_mm: float = DEFAULT_SMOOTHING_MM,
    scheme=None,
    centreline: Centreline | None = None,
    **qc,
) -> Dsca3dTable:
    """DSCA on planes perpendicular to the canal centreline of a 3D canal mask (module docstring).

    Parameters
    ----------
    mask : Volume
        3D label map of the canal; foreground ``array == label`` (default: ``> 0``). Any grid and orientation.
    level_map : Volume, optional
        Label map with vertebrae / discs (any grid): SPIDER "generic" labels (1 = L5, 2 = L4, ..., 201 = L5-S1,
        202 = L4-5) or the foramen labels (1 L4, 2 L4-5, 3 L5; 4 = canal is ignored). Names can be given with
        ``level_names``.
    span : {"auto", "L3-S1", "whole"}
        ``auto``: L3–S1 when the level map names any of those levels, else the whole canal.
    step_mm, pixel_mm, window_mm : float
        Plane spacing along the centreline, cross-section pixel size, cross-section window side.
    band_mm, smoothing_mm : float
        Centreline settings (module docstring); ignored when ``centreline`` is given.
    scheme : str or StenosisScheme, optional
        Stenosis scheme (default Bolender/Schönström 1985).
    centreline : Centreline, optional
        Use this centreline (e.g. the reference's, to compare two masks on the same planes).
    **qc
        QC settings of :func:`DuralSacSegLib.dsca.compute_dsca_table` (``min_area_mm2``, ``off_track_mm``, ...).
    """
    if span not in ("auto", "L3-S1", "whole"):
        raise InputError(f"span must be 'auto', 'L3-S1' or 'whole', got {span!r}")
    for name, val in (("step_mm", step_mm), ("pixel_mm", pixel_mm), ("window_mm", window_mm)):
        if not (math.isfinite(float(val)) and float(val) > 0):
            raise InputError(f"{name} must be a positive number, got {val}")
    if window_mm / pixel_mm > 2000:
        raise InputError(f"window_mm / pixel_mm = {window_mm / pixel_mm:.0f} pixels per side is too many (max 2000)")
    fg = _foreground(mask, label)
    cl = centreline if centreline is not None else fit_centreline(mask, label=label, band_mm=band_mm,
                                                                  smoothing_mm=smoothing_mm)
    n_px = int(round(window_mm / pixel_mm)) | 1  # odd: the centreline point is a pixel centre
    px = float(pixel_mm)
    sampler = _PlaneSampler(mask, fg, fg, margin_mm=window_mm / 2 + 2.0)
    n_planes = int(math.floor(cl.length_mm / step_mm)) + 1
    s_all = np.arange(n_planes) * step_mm + 0.5 * (cl.length_mm - (n_planes - 1) * step_mm)

    # levels of every plane (majority label in front of the canal)
    plane_levels = [""] * n_planes
    lv_sampler = None
    names: dict[int, str] = {}
    if level_map is not None:
        names = dict(level_names) if level_names is not None else _level_names_for(level_map)
        la = np.asarray(level_map.array)
        keep = np.isin(la, list(names)) if names else np.zeros(la.shape, bool)
        if keep.any():
            lv_sampler = _PlaneSampler(level_map, np.where(keep, la, 0), keep, margin_mm=window_mm / 2 + 2.0,
                                       interpolator=sitk.sitkNearestNeighbor)
    a = np.arange(n_px) * px - (n_px - 1) / 2 * px
    ant = (a[:, None] >= -25.0) & (a[:, None] <= 0.0) & (np.abs(a[None, :]) <= 8.0)  # rows v (anterior < 0), cols u

    sections = np.zeros((n_planes, n_px, n_px), np.uint8)
    frac_area = np.zeros(n_planes)
    fov_cut = np.zeros(n_planes, bool)
    axial_area = np.zeros(n_planes)
    centres = cl.point(s_all)
    normals = cl.tangent(s_all)
    axes = []
    ez = np.array([0.0, 0.0, 1.0])
    for k in range(n_planes):
        u, v, n = plane_axes(normals[k])
        axes.append((u, v, n))
        sec = sampler.sample(centres[k], u, v, n, n_px, px)
        binary = sec >= 0.5
        sections[k] = binary
        frac_area[k] = float(sec.sum()) * px * px
        inside = sampler.inside_fov(centres[k], u, v, n_px, px)
        if binary.any() and not inside.all():
            fov_cut[k] = bool((binary & ndimage.binary_dilation(~inside, iterations=2)).any())
        ua, va, na = plane_axes(ez)
        axial_area[k] = float(sampler.sample(centres[k], ua, va, na, n_px, px).sum()) * px * px
        if lv_sampler is not None:
            lv = lv_sampler.sample(centres[k], u, v, n, n_px, px)[ant]
            lv = lv[lv > 0].astype(np.int64)
            if lv.size:
                plane_levels[k] = names.get(int(np.bincount(lv).argmax()), "")

    # span
    in_l3s1 = [i for i, name in enumerate(plane_levels) if name in L3_S1_LEVELS]
    if span == "L3-S1" and not in_l3s1:
        raise InputError("span L3-S1 asked for, but the level map names none of L3, L3-4, L4, L4-5, L5, L5-S1")
    if span != "whole" and in_l3s1:
        first, last = min(in_l3s1), max(in_l3s1)
        span_name = "L3-S1"
        first, last, estimated = _extend_span(plane_levels, first, last, n_planes)
        if estimated:
            span_name += " (" + "; ".join(estimated) + ")"
    else:
        first, last = 0, n_planes - 1
        span_name = "whole canal"
    sel = np.arange(first, last + 1)

    # the 2D table on the straightened canal: identity direction, k = arc length
    straight = Volume(sections[sel], (px, px, float(step_mm)),
                      (-(n_px - 1) / 2 * px, -(n_px - 1) / 2 * px, float(s_all[sel[0]])), np.eye(3))
    disc_pos: dict[str, float] = {}
    for name in dict.fromkeys(plane_levels[i] for i in sel):
        if "-" in name:
            idx = [i for i in sel if plane_levels[i] == name]
            disc_pos[name] = float(np.mean(s_all[idx]))
    t2 = dsca2d.compute_dsca_table(straight, label=1, levels=disc_pos or None, scheme=scheme, stenosis_area="axial", **qc)

    rows: list[PlaneMeasurement] = []
    for r, k in zip(t2.rows, sel):
        u, v, n = axes[k]
        c = centres[k]
        cen = r.centroid_lps
        if all(math.isfinite(x) for x in cen):
            cen = tuple(map(float, c + cen[0] * u + cen[1] * v))
        flags = tuple(r.qc_flags) + ((FLAG_FOV,) if fov_cut[k] else ())
        area = float(frac_area[k]) if r.area_mm2 > 0 else 0.0
        tilt_ax = float(np.degrees(np.arccos(min(1.0, abs(float(n[2]))))))
        pm = PlaneMeasurement(
            slice_index=int(r.slice_index), position_mm=float(s_all[k]), centre_lps=tuple(map(float, c)),
            area_mm2=area, corrected_area_mm2=area if area > 0 else math.nan, tilt_deg=0.0 if area > 0 else math.nan,
            ap_diameter_mm=r.ap_diameter_mm, lr_diameter_mm=r.lr_diameter_mm, solidity=r.solidity,
            n_components=r.n_components, centroid_lps=cen, mean_intensity=r.mean_intensity, stenosis=r.stenosis,
            qc_flags=flags, level=plane_levels[k], stenosis_note=r.stenosis_note, track_distance_mm=r.track_distance_mm,
            normal_lps=tuple(map(float, n)), axial_area_mm2=float(axial_area[k]), axial_tilt_deg=tilt_ax,
            section_binary_area_mm2=float(r.area_mm2),
        )
        if pm.blocking_flags:
            pm.stenosis = ""
            pm.stenosis_note = "not graded: " + "; ".join(FLAG_TEXT_3D.get(f, f) for f in pm.blocking_flags)
        else:
            pm.stenosis = t2.scheme.classify(area)
        rows.append(pm)
    levels = []
    for lv in t2.levels:
        if 0 <= lv.slice_index < len(rows):
            r = rows[lv.slice_index]
            lv = dataclasses.replace(lv, area_mm2=r.area_mm2, corrected_area_mm2=r.corrected_area_mm2, stenosis=r.stenosis,
                                     qc_flags=r.qc_flags,
                                     stenosis_note=(f"not graded: plane {r.slice_index} flagged "
                                                    f"({r.stenosis_note[len('not graded: '):]})" if r.blocking_flags else ""))
        levels.append(lv)
    info = cl.to_dict() | {
        "degree": t2.centreline.get("degree"),
        "residual_max_tilt_deg": t2.centreline.get("max_tilt_deg"),
        "step_mm": float(step_mm), "pixel_mm": px, "window_mm": float(window_mm),
        "sampling": "SimpleITK linear interpolation of the 0/1 mask; area = sum of the interpolated values x pixel "
                    "area; outline (QC, diameters) = interpolated values >= 0.5",
        "n_planes_whole_canal": int(n_planes), "span": span_name,
    }
    return Dsca3dTable(
        rows=rows, levels=levels, slice_normal_lps=(math.nan, math.nan, math.nan), pixel_spacing_mm=(px, px),
        slice_spacing_mm=float(step_mm), scheme=t2.scheme, stenosis_area="corrected", centreline=info,
        qc=t2.qc | {"blocking_flags": list(BLOCKING_FLAGS_3D), "extra_flags": {FLAG_FOV: FLAG_TEXT_3D[FLAG_FOV]}},
        span=span_name,
    )


def _extend_span(levels: list[str], first: int, last: int, n_planes: int) -> tuple[int, int, list[str]]:
    """Extend the plane range to L3-S1 when the level map stops short of it (e.g. the foramen labels L4, L4-5, L5).

    Planes run inferior → superior. Missing top (no ``L3`` plane): extend upwards by the length of the ``L4`` planes
    plus one disc (``L3-4`` if present, else ``L4-5``): about one vertebra and its disc, i.e. up to the top of L3.
    Missing bottom (no ``L5-S1`` plane): extend downwards by one disc (the ``L4-5`` planes), i.e. to S1's endplate.
    The added planes keep an empty level name; the estimate is stated in the table's span.
    """
    count = {name: levels.count(name) for name in L3_S1_LEVELS}
    notes = []
    if count["L3"] == 0 and count["L4"] > 0:
        ext = count["L4"] + (count["L3-4"] or count["L4-5"])
        top = min(n_planes - 1, max(i for i, n in enumerate(levels) if n in ("L4", "L3-4")) + ext)
        if top > last:
            notes.append(f"top {top - last} planes above L4 estimated as L3-4 + L3 from the L4 and disc heights")
            last = top
    if count["L5-S1"] == 0 and count["L5"] > 0 and count["L4-5"] > 0:
        bottom = max(0, min(i for i, n in enumerate(levels) if n == "L5") - count["L4-5"])
        if bottom < first:
            notes.append(f"bottom {first - bottom} planes below L5 estimated as the L5-S1 disc from the L4-5 disc height")
            first = bottom
    return first, last, notes


def _crop_slices(fg: np.ndarray, vol: Volume, margin_mm: float):
    kji = np.argwhere(fg)
    marg = np.ceil(margin_mm / np.asarray(vol.spacing_mm)[::-1]).astype(int)
    lo = np.maximum(kji.min(0) - marg, 0)
    hi = np.minimum(kji.max(0) + marg + 1, fg.shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


# ---------------------------------------------------------------------------------------------- wiring helpers
def choose_dsca_path(image: Volume, model_has_canal: bool) -> tuple[str, str]:
    """Which DSCA path ``dsca segment`` should run on ``image``: ``("3d" | "2d", reason)``.

    ``3d`` (this module on the canal class of the 3D model) when a 3D model with a canal class is available, the image
    is a 3D volume (every spacing ≤ :data:`spinemorph.volume.MAX_RESLICE_SPACING_MM`, 2 mm) and it is not an axial
    stack (a sagittal or coronal 3D acquisition such as T2 SPACE). Otherwise ``2d`` (the 2D network on axial slices,
    resliced when needed), with the reason.
    """
    from DuralSacSegLib.segment import is_axial
    from spinemorph.volume import MAX_RESLICE_SPACING_MM

    sp = max(image.spacing_mm)
    if not model_has_canal:
        return "2d", "no 3D model with a dural sac / canal class is available"
    if sp > MAX_RESLICE_SPACING_MM:
        return "2d", f"not a 3D volume (spacing up to {sp:.2f} mm > {MAX_RESLICE_SPACING_MM} mm): 2D network on axial slices"
    if is_axial(image):
        return "2d", "axial series: the 2D network measures its slices directly"
    return "3d", (f"3D {image.axis_codes()} volume ({' x '.join(f'{s:.2f}' for s in image.spacing_mm)} mm): DSCA on planes "
                  "perpendicular to the canal centreline of the 3D model's canal class")


def dsca3d_from_labels(labels: Volume, *, canal_label: int | None = None, **kwargs) -> Dsca3dTable:
    """DSCA table from a 3D label map with the canal class: the fine FORAMEN3D model's output (0 background, 1 L4,
    2 L4-5 disc, 3 L5, 4 canal = :data:`spinemorph.labels.CANAL`). L4, L4-5 and L5 name the planes; the span is
    L3-S1 (the L3 and L5-S1 ends estimated from the L4 and disc heights, see :func:`_extend_span`)."""
    from spinemorph.labels import CANAL

    lab = CANAL if canal_label is None else int(canal_label)
    kwargs.setdefault("level_names", FORAMEN_LEVEL_NAMES)
    return compute_dsca3d_table(labels, label=lab, level_map=labels, **kwargs)


def section(mask: Volume, row: PlaneMeasurement, *, label: int | None = None, window_mm: float = 40.0,
            pixel_mm: float = DEFAULT_PIXEL_MM) -> np.ndarray:
    """The interpolated cross-section (values 0..1, [v row, u column]) of ``mask`` on the plane of ``row``."""
    fg = _foreground(mask, label)
    n_px = int(round(window_mm / pixel_mm)) | 1
    u, v, n = plane_axes(row.normal_lps)
    return _PlaneSampler(mask, fg, fg, margin_mm=window_mm / 2 + 2.0).sample(np.asarray(row.centre_lps), u, v, n, n_px,
                                                                            float(pixel_mm))


def write_plane_overlay(mask: Volume, row: PlaneMeasurement, path: str | os.PathLike, *, label: int | None = None,
                        image: Volume | None = None, window_mm: float = 40.0) -> None:
    """PNG of one plane: the image resampled on the plane (if given) with the section outline, area and category."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from spinemorph.atomic import atomic_path

    sec = section(mask, row, label=label, window_mm=window_mm)
    h = window_mm / 2
    fig = Figure(figsize=(4, 4.3), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    if image is not None:
        u, v, n = plane_axes(row.normal_lps)
        img = np.asarray(image.array, dtype=np.float32)
        samp = _PlaneSampler(image, img, np.ones(img.shape, bool), margin_mm=0.0)
        back = samp.sample(np.asarray(row.centre_lps), u, v, n, sec.shape[0], window_mm / (sec.shape[0] - 1))
        ax.imshow(back, cmap="gray", extent=(-h, h, h, -h))
    else:
        ax.imshow(sec, cmap="gray", vmin=0, vmax=1, extent=(-h, h, h, -h))
    grid = np.linspace(-h, h, sec.shape[0])
    if sec.max() >= 0.5:
        ax.contour(grid, grid, sec, levels=[0.5], colors="yellow", linewidths=1.0)
    ax.set_title(f"plane {row.slice_index} {row.level}: {row.area_mm2:.1f} mm² (perpendicular)\n"
                 f"{row.stenosis or 'not graded'}; axial {row.axial_area_mm2:.1f} mm²", fontsize=8)
    ax.set_xlabel("u (mm, → patient left)", fontsize=7)
    ax.set_ylabel("v (mm, → posterior)", fontsize=7)
    ax.tick_params(labelsize=6)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
