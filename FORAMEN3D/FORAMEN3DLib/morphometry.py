"""Foraminal morphometry at L4-5 from a label map: height, width, area (left and right), posterior disc height, flags.

Definitions (``DEVELOPERS.md``), all on the *lateral view* — the parasagittal slab through the pedicles of a
canal-aligned frame (:mod:`FORAMEN3DLib.landmarks`) projected along left-right:

- **foraminal height**: longest distance between the inferior aspect of the L4 pedicle (foramen roof) and the
  superior aspect of the L5 pedicle (floor): from the L4 notch (highest L4 point of the outline) to the L5 notch
  (lowest L5 point), along the outline's true extent (a disc bulging under the apex does not cut it short);
- **foraminal width**: shortest distance from the posteroinferior corner of the L4 body to the superior
  articular process (SAP) of L5, the posterior wall of the foramen;
- **foraminal area**: area of the region enclosed by L4 pedicle, L4 body / disc / L5 body, L5 pedicle and the
  facet (SAP / IAP), i.e. the hole that the projected L4, disc and L5 surround (a gap at the facet joint is
  bridged by a morphological closing of the smallest radius that encloses the hole);
- **posterior disc height**: distance between the posteroinferior corner of the L4 body and the posterosuperior
  corner of the L5 body on the midline slab (each the 45° point of the corner on the bone).

Modules: this one holds the search for the lateral view (offsets), QC, flags, the result classes and the
recomputation from points; :mod:`FORAMEN3DLib.morphometry_hole` finds the closed foramen on one view and
:mod:`FORAMEN3DLib.morphometry_outline` places the landmarks on its outline and measures it.

The foramen outline is the sub-voxel 0.5 iso-line of the partial-volume fractions (marching squares,
``skimage.measure.find_contours``); each outline vertex is attributed to the structure its outward normal points
into (L4, disc, L5 or the facet bridge), which splits the outline into roof (L4, facing up), floor (L5, facing
down), anterior wall and posterior wall (L5 facing posteriorly = SAP).

Every measurement comes with the 3D LPS points that define it (height: 2, width: 2, area: the outline), and
:func:`measure_from_points` recomputes height, width, area and flags from (possibly user-edited) points alone —
the Slicer widget calls it live while a user drags markups.

Flags (:class:`Thresholds`):

- foraminal height ≤ 15 mm: Hasegawa T, An HS, Haughton VM, Nowicki BH. "Lumbar foraminal stenosis: critical heights
  of the intervertebral discs and foramina. A cryomicrotome study in cadavera." J Bone Joint Surg Am 1995;77(1):32–38
  — a foraminal height below 15 mm together with a posterior disc height of 4 mm or less was associated with
  nerve-root compression;
- foraminal width ≤ 8 mm: threshold taken from the source method that SpineMorph reproduces (its specification),
  not from a paper cited here;
- posterior disc height ≤ 4 mm: Hasegawa et al. 1995 (above), reported as information with the height flag.

Either the height or the width flag gives "foramen enlargement likely needed" for that side. The thresholds are
configurable; the flag is a screening hint, not a diagnosis.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from FORAMEN3DLib.landmarks import (
    SIDES,
    Landmarks,
    LateralView,
    find_landmarks,
    lateral_view,
    slab_candidates,
    slab_stack,
    stack_view,
)
from FORAMEN3DLib.morphometry_hole import FACET_BRIDGE, _find_hole
from FORAMEN3DLib.morphometry_outline import _body_corner, _measure_view
from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5
from spinemorph.volume import Volume

FLAG_TEXT = "foramen enlargement likely needed"
HASEGAWA_1995 = (
    "Hasegawa T, An HS, Haughton VM, Nowicki BH. Lumbar foraminal stenosis: critical heights of the intervertebral "
    "discs and foramina. J Bone Joint Surg Am 1995;77(1):32-38"
)
THRESHOLD_SOURCES = {
    "height_mm": f"{HASEGAWA_1995} (foraminal height < 15 mm with posterior disc height <= 4 mm: nerve compression)",
    "width_mm": "source method of SpineMorph (specification); no paper cited for this value",
    "posterior_disc_height_mm": HASEGAWA_1995,
}

# ---------------------------------------------------------------------------------------------------------------
# Geometric thresholds of the foramen search and of the measurements. All are project design choices (heuristic,
# NOT from the literature), chosen for 0.5-1 mm label maps and checked on the box / lumbar phantoms and the SPIDER
# label maps of Testing/test_morphometry.py; only the flag thresholds (:class:`Thresholds`) are cited.
#   MIN_FORAMEN_AREA_MM2 25 mm²          smallest hole taken for the foramen
#   HOLE_SEARCH_RADIUS_MM 15 mm          hole centre within this distance of the seed
#   CLOSING_RADII_MM 0-6 mm              facet-gap closing radii tried in turn (smallest that encloses the hole wins)
#   THIN_GAP_MM 1.25 mm                  background within this of two different structures counts as closed
#   SEED_BEHIND_WALL_MM 5 mm             seed: this far behind the posterior body wall, between the pedicles
#   HULL_WINDOW_Y_MM (-3, 25) mm, HULL_WINDOW_HALF_Z_MM 22 mm
#                                        window (y' from the posterior wall, z' about the seed) of the convex-hull
#                                        last resort
#   inline: ±1 mm tangent window (outline normals); body-corner fits from the wall 0.75-4 mm and the endplate 0.75-6 mm away (``_body_corner``); normal
#   component > 0.5 (roof / floor) and > 0.3 (walls) to attribute an outline vertex.
# ---------------------------------------------------------------------------------------------------------------
#: a closing radius above this (a facet gap wider than 2 × 4 mm) puts the side under review (design choice: the
#: manual reference closed facet clefts of up to 8.3 mm with straight segments)
MAX_TRUSTED_CLOSING_MM = 4.0
#: offsets of the searched parasagittal slabs from the midline (x' mm) and their step (design choice: from inside
#: the pedicle column to beyond its lateral border at L4-5 in adults)
SEARCH_OFFSETS_MM = (6.0, 28.0)
SEARCH_STEP_MM = 0.5
#: the searched slabs span the pedicle columns of L4 and L5 and this much medial of them (the entrance zone of the
#: foramen, where a reader places the lateral view; design choice)
ENTRANCE_ZONE_MM = 2.0
#: the searched slabs reach at most this far lateral of the L4 pedicle column (design choice: the L4 pedicle is the
#: foramen's roof; on the SPIDER masks every closed slab lies inside this bound)
LATERAL_MARGIN_MM = 2.0
#: half size of the lateral-view window around the seed used by the search (mm)
VIEW_WINDOW_MM = 30.0
#: lateral-view zones (tie-break among equally closed slabs): nearest the pedicle column, or most medial (entrance)
ZONES = ("pedicle", "entrance")
#: searched slabs whose invented boundary is within this of the least count as ties (the one nearest the pedicles wins)
OPEN_TIE_MM = 1.0
#: plausibility bands (lo, hi) per measurement; a value outside is reported with QC status "review" and never raises
#: the clinical flag. Design choice, wide around adult values reported in cadaver / CT / MRI studies (foraminal
#: height roughly 16-23 mm, width 6-11 mm, area 100-200 mm2, as summarised in the manual reference's notes), so that
#: stenotic and capacious foramina both stay inside; not a normal range.
PLAUSIBLE = {"foraminal_height": (8.0, 30.0), "foraminal_width": (2.0, 15.0), "foraminal_area": (30.0, 300.0)}
PLAUSIBLE_SOURCE = (
    "design choice of SpineMorph (wide band around adult foraminal height ~16-23 mm, width ~6-11 mm, area ~100-200 mm2); "
    "not a normal range"
)
#: a vertebra whose bone behind the body on one side is less than this share of the other side's (``Landmarks.
#: arch_balance``) puts every value under review: the frame's y' axis points at the mean of the posterior elements, so
#: an arch missing from one side's labels rotates the frame and the lateral views (on SPIDER 18 and 98 with the left
#: L5 arch deleted, the right side's height moved by 3.6 and 5.8 mm). Design choice between the 39 real SPIDER label
#: maps (smallest ratio 0.53, L4 of 50_t2_SPACE) and those two simulated misses (0.19, 0.36).
MIN_ARCH_BALANCE = 0.45
#: label maps whose largest voxel spacing exceeds this (mm) are measured with QC status "review" (thick slices)
THICK_SLICE_MM = 1.5
#: the hole-search seed lies this far behind the posterior body wall (heuristic, not from the literature)
SEED_BEHIND_WALL_MM = 5.0
#: convex-hull last resort: y' window relative to the posterior body wall, and half-height about the seed (heuristic)
HULL_WINDOW_Y_MM = (-3.0, 25.0)
HULL_WINDOW_HALF_Z_MM = 22.0

#: QC status of a side (and its values) that could not be measured — the other side still is (a surgeon wants the
#: side that can be read); its values are NaN / empty and it never carries a flag
NOT_MEASURED = "not measured"

STRUCTURE_NAMES = {L4: "L4", DISC_L45: "L4-5 disc", L5: "L5", FACET_BRIDGE: "facet (bridged gap)"}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Flag thresholds (mm); a side is flagged when height ≤ ``height_mm`` or width ≤ ``width_mm``."""

    height_mm: float = 15.0
    width_mm: float = 8.0
    posterior_disc_height_mm: float = 4.0


@dataclasses.dataclass
class Measurement:
    """One measured value with the LPS points that define it."""

    metric: str
    side: str
    value: float
    unit: str
    points_lps: np.ndarray
    flag: str = ""
    note: str = ""
    qc: str = "ok"
    qc_reasons: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "qc": self.qc,
            "qc_reasons": list(self.qc_reasons),
            "metric": self.metric,
            "side": self.side,
            "value": None if not np.isfinite(self.value) else round(float(self.value), 3),
            "unit": self.unit,
            "flag": self.flag,
            "note": self.note,
            "points_lps": np.round(np.asarray(self.points_lps, dtype=float), 3).tolist(),
        }


@dataclasses.dataclass
class SideResult:
    """Foramen of one side: measurements plus the 2D geometry used to draw the lateral view."""

    side: str
    height: Measurement
    width: Measurement
    area: Measurement
    flagged: bool
    view: LateralView
    outline_yz: np.ndarray
    vertex_labels: np.ndarray
    height_yz: np.ndarray
    width_yz: np.ndarray
    closing_radius_mm: float
    method: str = "thin slab"
    #: QC: "searched offset" (parasagittal slab found by the offset search), "wide" (maximum projection of the slab
    #: through both pedicles) or "hull" (straight posterior wall); the last two are fallbacks
    view_kind: str = "searched offset"
    offset_mm: float = float("nan")
    fallbacks: list = dataclasses.field(default_factory=list)
    qc_status: str = "ok"
    qc_reasons: list = dataclasses.field(default_factory=list)
    open_boundary_mm: float = 0.0
    facet_closure_mm: float = 0.0
    facet_segment_yz: np.ndarray | None = None

    @property
    def measured(self) -> bool:
        """False for a side that could not be measured (QC status ``not measured``, values NaN, no view)."""
        return self.qc_status != NOT_MEASURED


@dataclasses.dataclass
class MorphometryResult:
    """Output of :func:`measure_foramen`."""

    sides: dict
    posterior_disc_height: Measurement
    pdh_yz: np.ndarray
    landmarks: Landmarks
    thresholds: Thresholds
    elapsed_s: float
    input_reasons: list = dataclasses.field(default_factory=list)

    @property
    def measurements(self) -> list:
        out = []
        for side in SIDES:
            r = self.sides[side]
            out += [r.height, r.width, r.area]
        out.append(self.posterior_disc_height)
        return out

    def to_rows(self, case: str | None = None) -> list[dict]:
        """Rows ``Case, Metric, Side, Value, Unit, Flag`` for the CSV table."""
        rows = []
        for m in self.measurements:
            rows.append(
                {
                    "Case": case or "",
                    "Metric": m.metric,
                    "Side": m.side,
                    "Value": "" if not np.isfinite(m.value) else f"{m.value:.2f}",
                    "Unit": m.unit,
                    "Flag": m.flag,
                    "QC": m.qc,
                }
            )
        return rows

    def to_dict(self) -> dict:
        fr = self.landmarks.frame
        return {
            "coordinate_system": "LPS",
            "frame": {
                "origin_lps": np.round(fr.origin_lps, 3).tolist(),
                "x_left_lps": np.round(fr.axes_lps[:, 0], 4).tolist(),
                "y_posterior_lps": np.round(fr.axes_lps[:, 1], 4).tolist(),
                "z_superior_lps": np.round(fr.axes_lps[:, 2], 4).tolist(),
                "axis_rule": fr.axis_rule,
            },
            "measurements": [m.to_dict() for m in self.measurements],
            "sides": {
                s: {
                    "flagged": self.sides[s].flagged,
                    "flag": FLAG_TEXT if self.sides[s].flagged else "",
                    "slab_center_x_mm": None if self.sides[s].view is None else round(self.sides[s].view.x_mm, 3),
                    "slab_half_width_mm": None if self.sides[s].view is None else round(self.sides[s].view.half_width_mm, 3),
                    "slab_projection": None if self.sides[s].view is None else self.sides[s].view.projection,
                    "facet_closing_radius_mm": None if not np.isfinite(self.sides[s].closing_radius_mm) else self.sides[s].closing_radius_mm,
                    "method": self.sides[s].method,
                    "view_kind": self.sides[s].view_kind,
                    "offset_from_midline_mm": None if not np.isfinite(self.sides[s].offset_mm) else round(self.sides[s].offset_mm, 2),
                    "fallbacks": list(self.sides[s].fallbacks),
                    "open_boundary_mm": round(self.sides[s].open_boundary_mm, 2),
                    "facet_closure_mm": round(self.sides[s].facet_closure_mm, 2),
                    "qc_status": self.sides[s].qc_status,
                    "qc_reasons": list(self.sides[s].qc_reasons),
                }
                for s in SIDES
            },
            "thresholds": dataclasses.asdict(self.thresholds),
            "plausible_ranges": {k: list(v) for k, v in PLAUSIBLE.items()},
            "plausible_ranges_source": PLAUSIBLE_SOURCE,
            "input_qc": list(self.input_reasons),
            "threshold_sources": THRESHOLD_SOURCES,
            "structure_volumes_mm3": {
                STRUCTURE_NAMES[k]: round(v, 1) for k, v in self.landmarks.structure_volumes_mm3.items()
            },
            "elapsed_s": round(self.elapsed_s, 3),
        }


# ------------------------------------------------------------------------------------------ from points alone
def height_from_points(points_lps) -> float:
    """Foraminal height (mm) from its two end points ``(2, 3)``."""
    p = np.asarray(points_lps, dtype=float).reshape(2, 3)
    return float(np.linalg.norm(p[1] - p[0]))


def width_from_points(points_lps) -> float:
    """Foraminal width (mm) from its two end points ``(2, 3)`` (L4 corner, SAP point)."""
    return height_from_points(points_lps)


def area_from_outline(outline_lps, view_axis_lps=None) -> float:
    """Area (mm²) enclosed by a closed 3D outline ``(N, 3)``.

    With ``view_axis_lps`` the outline is projected along that direction (the lateral view); without it the
    vector (Newell) area is used, which equals the area of a planar polygon in its own plane.
    """
    p = np.asarray(outline_lps, dtype=float).reshape(-1, 3)
    if len(p) < 3:
        return 0.0
    p = p - p.mean(0)
    v = 0.5 * np.cross(p, np.roll(p, -1, axis=0)).sum(axis=0)
    if view_axis_lps is None:
        return float(np.linalg.norm(v))
    a = np.asarray(view_axis_lps, dtype=float)
    return float(abs(v @ (a / np.linalg.norm(a))))


def flags_for(height_mm: float, width_mm: float, thresholds: Thresholds | None = None) -> dict:
    """Flag strings for one side: ``{'height': ..., 'width': ..., 'side': ...}`` ('' when not flagged)."""
    t = thresholds or Thresholds()
    fh = bool(np.isfinite(height_mm) and height_mm <= t.height_mm)
    fw = bool(np.isfinite(width_mm) and width_mm <= t.width_mm)
    return {
        "height": f"height <= {t.height_mm:g} mm: {FLAG_TEXT}" if fh else "",
        "width": f"width <= {t.width_mm:g} mm: {FLAG_TEXT}" if fw else "",
        "side": FLAG_TEXT if (fh or fw) else "",
    }


def measure_from_points(height_points_lps, width_points_lps, outline_lps, view_axis_lps=None, thresholds=None) -> dict:
    """Recompute height, width, area and the flag of one side from (edited) points alone.

    Parameters
    ----------
    height_points_lps, width_points_lps : array (2, 3)
        End points (LPS mm).
    outline_lps : array (N, 3)
        Closed foramen outline (LPS mm).
    view_axis_lps : array (3,), optional
        Left-right axis of the lateral view (``MorphometryResult.landmarks.frame.lateral_axis_lps``).
    thresholds : Thresholds, optional

    Returns
    -------
    dict
        ``height_mm``, ``width_mm``, ``area_mm2``, ``flagged``, ``flag``.
    """
    h = height_from_points(height_points_lps)
    w = width_from_points(width_points_lps)
    a = area_from_outline(outline_lps, view_axis_lps)
    f = flags_for(h, w, thresholds)
    return {"height_mm": h, "width_mm": w, "area_mm2": a, "flagged": bool(f["side"]), "flag": f["side"]}


def posterior_disc_height_from_points(points_lps) -> float:
    """Posterior disc height (mm) from the L4 posteroinferior and L5 posterosuperior corners ``(2, 3)``."""
    return height_from_points(points_lps)


# ------------------------------------------------------------------------------------------ lateral view analysis


def _crop_view(view: LateralView, seed_yz, half_mm: float) -> LateralView:
    """The part of a lateral view within ``half_mm`` of the seed (faster morphology; the foramen lies well inside)."""
    cols = np.flatnonzero(np.abs(view.y_mm - seed_yz[0]) <= half_mm)
    rows = np.flatnonzero(np.abs(view.z_mm - seed_yz[1]) <= half_mm)
    if len(cols) < 8 or len(rows) < 8:
        return view
    w = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return dataclasses.replace(
        view,
        y_mm=view.y_mm[w[1]],
        z_mm=view.z_mm[w[0]],
        fractions={k: v[w] for k, v in view.fractions.items()},
        body={k: v[w] for k, v in view.body.items()},
        body_max={k: v[w] for k, v in view.body_max.items()},
    )


def _search_offsets(lm: Landmarks, side: str, seed, half_width_mm: float, projection: str = "max") -> list:
    """Closed foramina on parasagittal slabs (mean projection) at offsets from the midline (see module docstring)."""
    sgn = 1.0 if side == "left" else -1.0
    out = []
    # at the level of the pedicles: the L4 / L5 pedicle columns, widened medially by the entrance zone
    rel = [sgn * (x - lm.midline_x_mm) for v in ("L4", "L5") for x in lm.pedicles[(v, side)].x_range_mm]
    rel4 = [sgn * (x - lm.midline_x_mm) for x in lm.pedicles[("L4", side)].x_range_mm]
    lo = max(SEARCH_OFFSETS_MM[0], min(rel) - ENTRANCE_ZONE_MM)
    # laterally no further than just past the L4 pedicle column: the roof of the foramen is the L4 pedicle (the L5
    # column at its waist often takes in the transverse-process root and reaches 10 mm further out)
    hi = min(SEARCH_OFFSETS_MM[1], max(rel), max(rel4) + LATERAL_MARGIN_MM)
    if hi < lo:
        lo, hi = SEARCH_OFFSETS_MM
    offs = np.arange(np.floor(lo / SEARCH_STEP_MM) * SEARCH_STEP_MM, hi + 1e-9, SEARCH_STEP_MM)
    xs = lm.midline_x_mm + sgn * offs
    # the in-plane smoothing of all searched slabs at once (identical views, ~20x faster than one by one)
    stack = None
    if projection == "max" and len(xs):
        stack = slab_stack(lm, side, float(xs.min()) - half_width_mm, float(xs.max()) + half_width_mm, seed, VIEW_WINDOW_MM)
    for off, x in zip(offs, xs):
        if stack is not None:
            view = stack_view(stack, x, half_width_mm)
        else:
            view = _crop_view(lateral_view(lm, side, x, half_width_mm, projection), seed, VIEW_WINDOW_MM)
        found = _find_hole(view, seed)
        if found is not None:
            out.append((float(off), view, found))
    return out


def _pick_offset(cands: list, center_offset_mm: float, zone: str = "pedicle") -> int:
    """Index of the searched slab to measure: among the views measured without a fallback (else all), the least
    invented boundary (outline length closed by bridges / the facet segment); within ``OPEN_TIE_MM`` of that, the one
    nearest the pedicle column (``zone="pedicle"``: the lateral view "through the pedicles" of the definition) or the
    most medial one (``zone="entrance"``: the entrance zone, where a reader of the manual reference placed it)."""
    ok = [i for i, c in enumerate(cands) if not c[2]["fallbacks"]] or list(range(len(cands)))
    least = min(cands[i][2]["open_mm"] for i in ok)
    near = [i for i in ok if cands[i][2]["open_mm"] <= least + OPEN_TIE_MM]
    if zone == "entrance":
        return min(near, key=lambda i: cands[i][0])
    return min(near, key=lambda i: (abs(cands[i][0] - center_offset_mm), cands[i][0]))


def _qc_value(metric: str, value: float, side_reasons: list) -> tuple[str, list]:
    lo, hi = PLAUSIBLE[metric]
    reasons = list(side_reasons)
    if not (np.isfinite(value) and lo <= value <= hi):
        reasons.append(f"{value:.1f} outside the plausible {lo:g}-{hi:g} {'mm2' if metric == 'foraminal_area' else 'mm'}")
    return ("review" if reasons else "ok"), reasons


def _measure_side(lm: Landmarks, side: str, thresholds: Thresholds, input_reasons=(), zone: str = "pedicle") -> SideResult:
    p4, p5 = lm.pedicles[("L4", side)], lm.pedicles[("L5", side)]
    seed = (lm.posterior_wall_y_mm + SEED_BEHIND_WALL_MM, 0.5 * (p4.z_range_mm[0] + p5.z_range_mm[1]))
    hw = lm.lateral_views[side].half_width_mm
    cands = []
    for off, view, found in _search_offsets(lm, side, seed, hw):
        try:
            cands.append((off, view, _measure_view(view, found, side)))
        except InputError:
            continue
    fallbacks = []
    if cands:
        sgn = 1.0 if side == "left" else -1.0
        centre = sgn * (0.5 * (p4.center_x_mm + p5.center_x_mm) - lm.midline_x_mm)
        off, view, mv = cands[_pick_offset(cands, centre, zone)]
        view_kind = "searched offset"
    else:
        win = ((lm.posterior_wall_y_mm + HULL_WINDOW_Y_MM[0], lm.posterior_wall_y_mm + HULL_WINDOW_Y_MM[1]),
               (seed[1] - HULL_WINDOW_HALF_Z_MM, seed[1] + HULL_WINDOW_HALF_Z_MM))
        wide = [c for c in slab_candidates(lm, side, hw) if c[2] != "mean"]
        attempts = [(c, None, "wide") for c in wide] + [((lm.lateral_views[side].x_mm, hw, "max"), win, "hull")]
        mv = None
        for (xc, h, proj), hull_win, kind in attempts:
            view = lateral_view(lm, side, xc, h, proj)
            found = _find_hole(view, seed, hull_window=hull_win)
            if found is None:
                continue
            try:
                mv = _measure_view(view, found, side)
            except InputError:
                continue
            view_kind = kind
            break
        if mv is None:
            raise InputError(
                f"no enclosed {side} foramen found on any parasagittal slab (the L4 and L5 posterior elements and the disc "
                "do not surround it even with a 5 mm facet bridge); check the segmentation of pedicles and articular processes"
            )
        fallbacks.append(
            "foramen not closed on any searched parasagittal slab; measured on the maximum projection of the slab through "
            "both pedicles" if view_kind == "wide" else "foramen closed by a straight posterior wall (convex hull)"
        )
    fallbacks += mv["fallbacks"]
    rmm = mv["radius"]
    for ped in (p4, p5):
        if not getattr(ped, "waist", True):
            fallbacks.append(f"no pedicle waist with a posterior arch behind it on {ped.vertebra} (smallest section used)")
    side_reasons = list(input_reasons) + [f"fallback: {f}" for f in fallbacks]
    if rmm != "hull" and rmm > MAX_TRUSTED_CLOSING_MM:
        side_reasons.append(f"facet gap closed with a {rmm:g} mm closing (> {MAX_TRUSTED_CLOSING_MM:g} mm)")
    h_mm, w_mm, area = mv["height"], mv["width"], mv["area"]
    qh, rh = _qc_value("foraminal_height", h_mm, side_reasons)
    qw, rw = _qc_value("foraminal_width", w_mm, side_reasons)
    qa, ra = _qc_value("foraminal_area", area, side_reasons)
    # a value under review never raises the clinical flag
    fl = flags_for(h_mm if qh == "ok" else float("nan"), w_mm if qw == "ok" else float("nan"), thresholds)
    note_a = f"facet gap bridged by a {rmm:g} mm closing" if rmm not in ("hull", 0.0) else ""
    if mv["facet_closure_mm"] > 0:
        note_a = (note_a + "; " if note_a else "") + f"facet closure SAP tip -> L4: {mv['facet_closure_mm']:.1f} mm"
    fb = "; ".join(fallbacks)
    height = Measurement("foraminal_height", side, h_mm, "mm", view.yz_to_lps(mv["height_yz"]), fl["height"], fb, qh, rh)
    width = Measurement("foraminal_width", side, w_mm, "mm", view.yz_to_lps(mv["width_yz"]), fl["width"], fb, qw, rw)
    area_m = Measurement("foraminal_area", side, float(area), "mm2", view.yz_to_lps(mv["yz"]), "",
                         "; ".join(x for x in (note_a, fb) if x), qa, ra)
    status = "review" if "review" in (qh, qw, qa) else "ok"
    return SideResult(
        side=side,
        height=height,
        width=width,
        area=area_m,
        flagged=bool(fl["side"]),
        view=view,
        outline_yz=mv["yz"],
        vertex_labels=mv["labels"],
        height_yz=mv["height_yz"],
        width_yz=mv["width_yz"],
        closing_radius_mm=float("nan") if rmm == "hull" else float(rmm),
        method={"searched offset": "thin slab", "wide": "wide slab", "hull": "convex hull"}[view_kind],
        view_kind=view_kind,
        offset_mm=float(abs(view.x_mm - lm.midline_x_mm)),
        fallbacks=fallbacks,
        qc_status=status,
        qc_reasons=sorted(set(rh + rw + ra), key=(rh + rw + ra).index),
        open_boundary_mm=float(mv["open_mm"]),
        facet_closure_mm=float(mv["facet_closure_mm"]),
        facet_segment_yz=mv["facet_segment_yz"],
    )


def _unmeasured_side(side: str, reason: str, input_reasons=()) -> SideResult:
    """A side that could not be measured: NaN values without points, QC ``not measured`` with the reason."""
    reasons = [reason] + list(input_reasons)
    empty = np.zeros((0, 3))

    def m(metric, unit):
        return Measurement(metric, side, float("nan"), unit, empty, "", "not measured: " + reason, NOT_MEASURED, reasons)

    return SideResult(
        side=side, height=m("foraminal_height", "mm"), width=m("foraminal_width", "mm"), area=m("foraminal_area", "mm2"),
        flagged=False, view=None, outline_yz=np.zeros((0, 2)), vertex_labels=np.zeros(0, dtype=int),
        height_yz=np.zeros((0, 2)), width_yz=np.zeros((0, 2)), closing_radius_mm=float("nan"), method="",
        view_kind="", qc_status=NOT_MEASURED, qc_reasons=reasons,
    )


def _posterior_disc_height(lm: Landmarks, thresholds: Thresholds, input_reasons=()):
    v = lm.midline_view
    c4 = _body_corner(v, L4, (1.0, -1.0), on_bone=True)
    c5 = _body_corner(v, L5, (1.0, 1.0), on_bone=True)
    if c4 is None or c5 is None:
        raise InputError("the L4 or L5 vertebral body is missing on the midline; check the labels")
    yz = np.stack([c4, c5])
    d = float(np.linalg.norm(c4 - c5))
    # input-level QC (thick slices) applies to this value too; a value under review carries no flag
    reasons = list(input_reasons)
    qc = "review" if reasons else "ok"
    low = qc == "ok" and d <= thresholds.posterior_disc_height_mm
    flag = f"posterior disc height <= {thresholds.posterior_disc_height_mm:g} mm" if low else ""
    m = Measurement("posterior_disc_height", "midline", d, "mm", v.yz_to_lps(yz), flag, "", qc, reasons)
    return m, yz


def measure_foramen(
    labels: Volume,
    thresholds: Thresholds | None = None,
    spacing_mm: float = 0.5,
    slab_half_width_mm: float = 1.0,
    zone: str = "pedicle",
) -> MorphometryResult:
    """Measure both L4-5 foramina and the posterior disc height of a label map.

    Parameters
    ----------
    labels : Volume
        Label map: 1 = L4, 2 = L4-5 disc, 3 = L5, vertebrae including posterior elements; any orientation.
    thresholds : Thresholds, optional
        Flag thresholds (default height 15 mm, width 8 mm).
    spacing_mm : float
        Working grid spacing of the canal-aligned frame.
    slab_half_width_mm : float
        Half width of the parasagittal slab of the lateral view (default 1 mm: a 2 mm slab, union of the structures
        across it).
    zone : {"pedicle", "entrance"}
        Among the searched slabs that close the foramen equally well, measure the one nearest the pedicle column
        (default, the project's definition) or the most medial one (the foraminal entrance zone).

    Returns
    -------
    MorphometryResult

    A side whose pedicles or enclosed foramen cannot be found is returned unmeasured (:data:`NOT_MEASURED`, NaN
    values, the reason in ``qc_reasons``) and the other side is still measured.

    Raises
    ------
    InputError
        Labels missing / in the wrong order; neither side measurable (no pedicle, no enclosed foramen).
    """
    t0 = time.perf_counter()
    if zone not in ZONES:
        raise InputError(f"unknown lateral-view zone {zone!r}; choose one of {', '.join(ZONES)}")
    thresholds = thresholds or Thresholds()
    lm = find_landmarks(labels, spacing_mm=spacing_mm, slab_half_width_mm=slab_half_width_mm)
    input_reasons = []
    thick = float(max(labels.spacing_mm))
    if thick > THICK_SLICE_MM:
        input_reasons.append(
            f"thick-slice label map ({thick:.1f} mm > {THICK_SLICE_MM:g} mm voxel spacing): the parasagittal plane and "
            "the foramen outline are sampled coarsely; low confidence"
        )
    for name, ratio in sorted(getattr(lm, "arch_balance", {}).items()):
        if ratio < MIN_ARCH_BALANCE:
            input_reasons.append(
                f"asymmetric posterior elements: {name}'s bone behind the body on one side is {100 * ratio:.0f} % of the "
                f"other side's (< {100 * MIN_ARCH_BALANCE:.0f} %): an arch missing from the labels rotates the canal "
                "frame and the lateral views; check the segmentation"
            )
    sides = {}
    for s in SIDES:
        if s in lm.side_errors:
            sides[s] = _unmeasured_side(s, lm.side_errors[s], input_reasons)
            continue
        try:
            sides[s] = _measure_side(lm, s, thresholds, input_reasons, zone)
        except InputError as exc:  # this side only: the other may still be measured
            sides[s] = _unmeasured_side(s, str(exc), input_reasons)
    if not any(r.measured for r in sides.values()):
        raise InputError("; ".join(sides[s].qc_reasons[0] for s in SIDES))
    pdh, pdh_yz = _posterior_disc_height(lm, thresholds, input_reasons)
    return MorphometryResult(
        sides=sides,
        posterior_disc_height=pdh,
        pdh_yz=pdh_yz,
        landmarks=lm,
        thresholds=thresholds,
        elapsed_s=time.perf_counter() - t0,
        input_reasons=input_reasons,
    )
