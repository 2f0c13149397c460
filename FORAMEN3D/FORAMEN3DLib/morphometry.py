"""Foraminal morphometry at L4-5 from a label map: height, width, area (left and right), posterior disc height, flags.

Definitions (``DEVELOPERS.md``), all on the *lateral view* — the parasagittal slab through the pedicles of a
canal-aligned frame (:mod:`FORAMEN3DLib.landmarks`) projected along left-right:

- **foraminal height**: longest distance between the inferior aspect of the L4 pedicle (foramen roof) and the
  superior aspect of the L5 pedicle (floor), measured craniocaudally: from every roof point straight down (along
  ``-z'``) to the floor; the longest chord (after a running median over ±1.5 mm along ``y'``, which removes the
  voxel-staircase wiggle) is reported (if no roof point has floor below it, the longest roof-to-nearest-floor
  distance). The roof is the up-facing L4 part of the outline above the disc centre,
  the floor the down-facing L5 part below it (the tip of the SAP, above the disc centre, is not floor);
- **foraminal width**: shortest distance from the posteroinferior corner of the L4 body to the superior
  articular process (SAP) of L5, the posterior wall of the foramen;
- **foraminal area**: area of the region enclosed by L4 pedicle, L4 body / disc / L5 body, L5 pedicle and the
  facet (SAP / IAP), i.e. the hole that the projected L4, disc and L5 surround (a gap at the facet joint is
  bridged by a morphological closing of the smallest radius that encloses the hole);
- **posterior disc height**: distance between the posteroinferior corner of the L4 body and the posterosuperior
  corner of the L5 body on the midline slab.

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
from scipy import ndimage as ndi
from skimage import measure as skmeasure
from skimage.graph import MCP_Geometric
from skimage.morphology import convex_hull_image

from FORAMEN3DLib.landmarks import (
    SIDES,
    Landmarks,
    LateralView,
    bounding_box,
    find_landmarks,
    lateral_view,
    slab_candidates,
    slab_stack,
    stack_view,
)
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
#   inline: running median ±1.5 mm (height chords, ``_vertical_chords``); ±1 mm tangent window (outline
#   normals); body-corner fits from the wall 0.75-4 mm and the endplate 0.75-6 mm away (``_body_corner``); normal
#   component > 0.5 (roof / floor) and > 0.3 (walls) to attribute an outline vertex.
# ---------------------------------------------------------------------------------------------------------------
#: holes smaller than this on the lateral view are not taken for the foramen (gaps inside a facet joint, label noise)
MIN_FORAMEN_AREA_MM2 = 25.0
#: a candidate hole's centre must lie within this distance of the seed (heuristic, not from the literature)
HOLE_SEARCH_RADIUS_MM = 15.0
#: closing radii tried in turn to bridge a facet-joint gap (heuristic, not from the literature). The closing only
#: decides *where* the gap is cut: the notch corners it fills are given back to the foramen (:func:`_restore_hole`)
CLOSING_RADII_MM = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
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
#: longest straight facet closure from the SAP tip to the L4 articular process (design choice; the manual reference
#: drew closures of 4.4-8.3 mm)
FACET_CUT_MAX_MM = 10.0
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
#: the SAP's anterior face is the L5 contour behind the notch that rises out of it and faces into the foramen
#: (outward normal with a posterior component > this, i.e. not a surface facing straight up or backwards). No slope cut:
#: the L5 notch is the junction of the pedicle's upper border (in front of it) and the SAP (behind it), so the contour
#: posterior to the notch's lowest point is the SAP, including the lower part of its face that curves into the notch
#: (inclined 20-45° on real masks, where the manual reader places the SAP point). A 45° cut (issue 14 review) removed
#: that part: end points moved 3-8 mm up or to the fallback, which on 50 L ended on the L5 body in front of the notch.
SAP_FACE_MIN_POSTERIOR = 0.0
#: label maps whose largest voxel spacing exceeds this (mm) are measured with QC status "review" (thick slices)
THICK_SLICE_MM = 1.5
#: background pixels within this distance of two different structures count as closed (heuristic)
THIN_GAP_MM = 1.25
#: the hole-search seed lies this far behind the posterior body wall (heuristic, not from the literature)
SEED_BEHIND_WALL_MM = 5.0
#: convex-hull last resort: y' window relative to the posterior body wall, and half-height about the seed (heuristic)
HULL_WINDOW_Y_MM = (-3.0, 25.0)
HULL_WINDOW_HALF_Z_MM = 22.0

#: label of the pixels added by the closing that bridges a facet-joint gap
FACET_BRIDGE = 4
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
            },
            "measurements": [m.to_dict() for m in self.measurements],
            "sides": {
                s: {
                    "flagged": self.sides[s].flagged,
                    "flag": FLAG_TEXT if self.sides[s].flagged else "",
                    "slab_center_x_mm": round(self.sides[s].view.x_mm, 3),
                    "slab_half_width_mm": round(self.sides[s].view.half_width_mm, 3),
                    "slab_projection": self.sides[s].view.projection,
                    "facet_closing_radius_mm": None if not np.isfinite(self.sides[s].closing_radius_mm) else self.sides[s].closing_radius_mm,
                    "method": self.sides[s].method,
                    "view_kind": self.sides[s].view_kind,
                    "offset_from_midline_mm": round(self.sides[s].offset_mm, 2),
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
def occupancy(view: LateralView) -> np.ndarray:
    """Fraction of the lateral-view pixel occupied by any structure: the sum of the label fractions (so that the
    L4 / disc / L5 interfaces stay closed), and at least the body fraction seen anywhere in the slab."""
    fr = view.fractions
    u = np.minimum(fr[L4] + fr[DISC_L45] + fr[L5], 1.0)
    return np.maximum(u, np.maximum(view.body_max[L4], view.body_max[L5]))


def _structure_fractions(view: LateralView) -> np.ndarray:
    fr = view.fractions
    return np.stack([np.maximum(fr[L4], view.body_max[L4]), fr[DISC_L45], np.maximum(fr[L5], view.body_max[L5])])


def _thin_gaps(view: LateralView, solid: np.ndarray, gap_mm: float) -> np.ndarray:
    """Background pixels within ``gap_mm`` of two different structures lying on opposite sides of them."""
    s = view.spacing_mm
    rr, cc = np.indices(solid.shape)
    near, vec = [], []
    for f in _structure_fractions(view):
        d, (ir, ic) = ndi.distance_transform_edt(~(f > 0.5), return_indices=True)
        near.append(d * s <= gap_mm)
        vec.append(np.stack([ir - rr, ic - cc]).astype(float))
    gap = np.zeros_like(solid)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        both = near[a] & near[b] & ~solid
        if not both.any():
            continue
        va, vb = vec[a][:, both], vec[b][:, both]
        cos = (va * vb).sum(0) / np.maximum(np.linalg.norm(va, axis=0) * np.linalg.norm(vb, axis=0), 1e-9)
        g = np.zeros_like(solid)
        g[both] = cos < -0.5
        gap |= g
    return gap


def _background_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-connected components of the background of a 2D ``mask`` and the ids of those touching the border."""
    lab, _ = ndi.label(~mask)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return lab, border[border > 0]


def _outside(mask: np.ndarray) -> np.ndarray:
    """Background connected to the border (``~ndi.binary_fill_holes(mask)``, by one labelling)."""
    lab, border = _background_components(mask)
    return np.isin(lab, border)


def _holes(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Holes of ``mask`` (``binary_fill_holes(mask) & ~mask``) labelled 1..n (4-connected), by one labelling."""
    lab, border = _background_components(mask)
    keep = np.ones(lab.max() + 1, bool)
    keep[0] = False
    keep[border] = False
    ids = np.flatnonzero(keep)
    lut = np.zeros(lab.max() + 1, np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[lab], len(ids)


def _geodesic(free: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Geodesic distance (pixels) within ``free`` from the ``seeds`` (inf where unreachable)."""
    if not seeds.any():
        return np.full(free.shape, np.inf)
    edge = seeds & ~ndi.binary_erosion(seeds)
    cost = np.where(free, 1.0, np.inf)
    d, _ = MCP_Geometric(cost, fully_connected=True).find_costs(np.argwhere(edge))
    d = np.asarray(d, dtype=float)
    d[seeds] = 0.0
    return d


def _restore_hole(solid: np.ndarray, closed: np.ndarray, comp: np.ndarray) -> np.ndarray:
    """Give back to the hole ``comp`` what the closing filled but is not the facet gap.

    A closing of radius r also fills the narrow corners of the foramen (the notch apices under the L4 pedicle and
    above the L5 pedicle), which would shorten the height and shrink the area. The pixels it added are split by
    geodesic distance (through the unlabelled pixels): those nearer to the hole than to the outside stay foramen; so
    the cut lies across the middle of the facet channel and the notch corners are kept.
    """
    added = closed & ~solid
    if not added.any():
        return comp
    outside = _outside(closed)
    # work in the box around the hole and the added pixels next to it (a few mm of margin)
    near = ndi.binary_dilation(comp, iterations=12) & added
    lo, hi = bounding_box(comp | near)
    lo = np.maximum(lo - 12, 0)
    hi = np.minimum(hi + 12, comp.shape)
    w = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
    free = ~solid[w]
    d_h = _geodesic(free, comp[w])
    d_o = _geodesic(free, outside[w] & free)
    keep = np.zeros_like(comp)
    keep[w] = added[w] & np.isfinite(d_h) & (d_h < d_o)
    region = comp | keep
    lab, _ = ndi.label(region)
    ids = np.unique(lab[comp])
    return np.isin(lab, ids[ids > 0])


def _find_hole(
    view: LateralView, seed_yz, radii_mm=CLOSING_RADII_MM, gap_mm: float = THIN_GAP_MM, hull_window=None
):
    """Foramen = background component enclosed by the projected structures (closing bridges the facet gap).

    A candidate hole must border L4, L5 and the anterior wall (disc or a vertebral body) and lie within
    ``HOLE_SEARCH_RADIUS_MM`` (15 mm) of
    the seed (behind the posterior body wall, between the pedicles). Background pixels within ``gap_mm`` of two
    different structures (a thin unlabelled gap between them) are closed first. The smallest closing radius that
    encloses such a hole wins; the corners the closing filled are given back (:func:`_restore_hole`). With
    ``hull_window`` (``((y0, y1), (z0, z1))`` mm) the hole is instead closed by the convex hull of the structures
    inside that window (a straight posterior wall where the slab holds no facet). Returns None when there is none,
    else ``((comp, bridge, radius), occupancy)``.
    """
    s = view.spacing_mm
    fr = view.fractions
    u = occupancy(view)
    solid = u > 0.5
    # a thin background gap between two different structures (e.g. an unlabelled endplate between L4 and the disc)
    # is not foramen: pixels within gap_mm of two different structures count as closed
    solid = solid | _thin_gaps(view, solid, gap_mm)
    seed_rc = np.array([(seed_yz[1] - view.z_mm[0]) / s, (seed_yz[0] - view.y_mm[0]) / s])
    best = None
    if hull_window is not None:  # last resort: close the foramen posteriorly by the convex hull of the structures
        (y0, y1), (z0, z1) = hull_window
        yy, zz = np.meshgrid(view.y_mm, view.z_mm)
        win = (yy >= y0) & (yy <= y1) & (zz >= z0) & (zz <= z1)
        hull = convex_hull_image(solid & win) if (solid & win).any() else np.zeros_like(solid)
        radii_mm = ("hull",)
    front = (fr[DISC_L45] > 0.5) | (view.body[L4] > 0.5) | (view.body[L5] > 0.5)
    pad = int(np.ceil(max([r for r in radii_mm if r != "hull"], default=0.0) / s)) + 2
    sp_solid = np.pad(solid, pad)
    d_out = None
    for rmm in radii_mm:
        if rmm == "hull":
            closed = solid | ~(hull & win)
        else:
            r = rmm / s
            if r > 0:  # closing by a disk via Euclidean distance maps (exact, and independent of the radius in cost)
                if d_out is None:
                    d_out = ndi.distance_transform_edt(~sp_solid)
                closed = (ndi.distance_transform_edt(d_out <= r + 1e-6) > r + 1e-6)[pad:-pad, pad:-pad] | solid
            else:
                closed = solid
        lab, n = _holes(closed)
        holes = lab > 0
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        sizes = ndi.sum(holes, lab, idx) * s * s
        com = np.array(ndi.center_of_mass(holes, lab, idx)).reshape(-1, 2)
        cand = []
        for i, (a, c) in enumerate(zip(sizes, com)):
            if a < MIN_FORAMEN_AREA_MM2:
                continue
            d = np.hypot(*(c - seed_rc)) * s
            if d > HOLE_SEARCH_RADIUS_MM:
                continue
            comp = lab == i + 1
            ring = ndi.binary_dilation(comp, iterations=2) & ~comp
            touches = [bool((ring & (fr[lab_] > 0.5)).any()) for lab_ in (L4, L5)]
            if not all(touches) or not (ring & front).any():
                continue
            cand.append((d, -a, i + 1))
        if cand:
            cand.sort()
            comp = lab == cand[0][2]
            if rmm != "hull" and rmm > 0:
                comp = _restore_hole(solid, closed, comp)
            bridge = closed & ~(u > 0.5) & ~comp
            best = (comp, bridge, rmm)
            break
    if best is None:
        return None
    return best, u


def _outline(view: LateralView, comp: np.ndarray, bridge: np.ndarray, u: np.ndarray):
    """Sub-pixel closed outline (rows, cols) of the hole ``comp``."""
    win = ndi.binary_dilation(comp, iterations=2)
    h = np.where(win, 1.0 - u, 0.0)
    h[~comp & (u <= 0.5)] = 0.0  # other background (facet bridge, slivers) counts as closed
    h[comp] = np.maximum(h[comp], 0.5 + 1e-3)
    h = np.pad(h, 1)
    contours = skmeasure.find_contours(h, 0.5)
    best, best_a = None, 0.0
    for c in contours:
        if len(c) < 4:
            continue
        a = abs(_shoelace(c))
        if a > best_a:
            best, best_a = c, a
    if best is None:
        raise InputError(f"the {view.side} foramen outline could not be traced")
    rc = best - 1.0
    if np.allclose(rc[0], rc[-1]):
        rc = rc[:-1]
    return rc


def _shoelace(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _vertex_labels(view: LateralView, yz: np.ndarray, bridge: np.ndarray, comp: np.ndarray):
    """Outward unit normals (into the structures) and structure label of every outline vertex."""
    n = len(yz)
    k = max(1, int(round(1.0 / view.spacing_mm)))  # ±1 mm tangent window
    t = np.roll(yz, -k, axis=0) - np.roll(yz, k, axis=0)
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
    normal = np.stack([t[:, 1], -t[:, 0]], axis=1)
    # orient: the normal must point out of the hole
    if _shoelace(yz) < 0:
        normal = -normal
    s = view.spacing_mm
    stack = _structure_fractions(view)
    # any structure present decides (argmax of fractions, not thresholded: exact at L4 / disc / L5 interfaces)
    lab2d = np.where(stack.max(0) > 0.05, stack.argmax(0) + 1, 0)
    lab2d[bridge & ~comp & (stack.max(0) <= 0.5)] = FACET_BRIDGE
    _, (ir, ic) = ndi.distance_transform_edt(lab2d == 0, return_indices=True)
    probe = yz + normal * s
    rr = np.clip(np.round((probe[:, 1] - view.z_mm[0]) / s).astype(int), 0, lab2d.shape[0] - 1)
    cc = np.clip(np.round((probe[:, 0] - view.y_mm[0]) / s).astype(int), 0, lab2d.shape[1] - 1)
    labels = lab2d[ir[rr, cc], ic[rr, cc]]
    return normal, labels.astype(int), n


def _corner(points: np.ndarray, direction, tol_mm: float = 0.15) -> np.ndarray:
    """Extreme point of ``points`` along ``direction``; near-ties (a cut corner) are averaged."""
    d = np.asarray(direction, dtype=float)
    d = d / np.linalg.norm(d)
    score = points @ d
    near = score >= score.max() - tol_mm
    return points[near].mean(axis=0)


def _body_corner(view: LateralView, label: int, direction, on_bone: bool = False) -> np.ndarray | None:
    """Posterior corner of a vertebral body on a view: ``direction`` (1, -1) inferior, (1, 1) superior.

    ``on_bone=True`` (posterior disc height): the **45° point of the corner on the bone surface**, i.e. the outline
    point farthest along the bisector ``direction`` of the posterior wall (facing ``+y'``) and the endplate (facing
    ``∓z'``) — where an anatomist puts the corner of a rounded vertebral body (the manual reference's rule too).
    Otherwise a first guess (extreme point along ``direction``) is refined with the two faces meeting there: the
    posterior wall (median ``y'`` of the outline 0.75–4 mm away along the wall) and the endplate (median ``z'``
    0.75–6 mm anteriorly); the corner is where these two lines meet (a point of the disc space 1-2 mm off a
    rounded corner on real masks; used only as the L4 corner of the width when L4 does not border the foramen).
    """
    f = view.body[label]
    if f.max() <= 0.5:
        return None
    polys = [view.pixel_to_yz(c - 1.0) for c in skmeasure.find_contours(np.pad(f, 1), 0.5)]
    pts = np.concatenate(polys)
    p0 = _corner(pts, direction)
    sz = 1.0 if direction[1] > 0 else -1.0
    u = sz * (pts[:, 1] - p0[1])
    wall = (u > -4.0) & (u < -0.75) & (pts[:, 0] > p0[0] - 3.0)
    plate = (pts[:, 0] > p0[0] - 6.0) & (pts[:, 0] < p0[0] - 0.75) & (u > -3.0)
    if wall.sum() < 3 or plate.sum() < 3:
        return p0
    ideal = np.array([np.median(pts[wall, 0]), np.median(pts[plate, 1])])
    if on_bone:  # the bone point nearest the intersection of the two faces: the 45° point of a rounded corner
        return pts[int(np.argmin(np.linalg.norm(pts - ideal, axis=1)))]
    return ideal


def _nearest_on_polyline(p: np.ndarray, poly: np.ndarray) -> tuple[float, np.ndarray]:
    """Nearest point to ``p`` on the segments joining consecutive rows of ``poly`` (and its vertices)."""
    if len(poly) == 1:
        return float(np.linalg.norm(poly[0] - p)), poly[0]
    a, b = poly[:-1], poly[1:]
    ab = b - a
    L2 = np.maximum((ab * ab).sum(1), 1e-12)
    t = np.clip(((p - a) * ab).sum(1) / L2, 0, 1)
    q = a + t[:, None] * ab
    d = np.linalg.norm(q - p, axis=1)
    i = int(np.argmin(d))
    return float(d[i]), q[i]


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    """Index runs (cyclic) where ``mask`` is True, as arrays of consecutive vertex indices."""
    n = len(mask)
    if not mask.any():
        return []
    if mask.all():
        return [np.arange(n)]
    start = int(np.argmin(mask))  # a False position
    order = (np.arange(n) + start) % n
    runs, cur = [], []
    for i in order:
        if mask[i]:
            cur.append(i)
        elif cur:
            runs.append(np.array(cur))
            cur = []
    if cur:
        runs.append(np.array(cur))
    return runs


def _sample(img: np.ndarray, view: LateralView, yz: np.ndarray) -> np.ndarray:
    s = view.spacing_mm
    rc = np.stack([(yz[:, 1] - view.z_mm[0]) / s, (yz[:, 0] - view.y_mm[0]) / s])
    return ndi.map_coordinates(img, rc, order=1, mode="nearest")


def _wall_end(view: LateralView, yz: np.ndarray, normal: np.ndarray, labs: np.ndarray, i: int) -> np.ndarray:
    """Sub-vertex position where the L4 wall ends at vertex ``i`` (interface with the disc / L5 below it)."""
    n = len(yz)
    j = min(((i - 1) % n, (i + 1) % n), key=lambda k: yz[k, 1])
    if labs[j] in (L4, FACET_BRIDGE) or yz[j, 1] >= yz[i, 1]:
        return yz[i]
    s = view.spacing_mm
    probe = np.stack([yz[i] + normal[i] * s, yz[j] + normal[j] * s])
    g = _sample(view.fractions[L4], view, probe) - _sample(view.fractions[int(labs[j])], view, probe)
    if g[0] > 0 >= g[1]:
        t = g[0] / (g[0] - g[1])
        return yz[i] + t * (yz[j] - yz[i])
    return yz[i]


def _vertical_chords(yz: np.ndarray, roof: np.ndarray, floor: np.ndarray, window_mm: float = 1.5):
    """Longest craniocaudal chord from a roof vertex straight down (along -z') to the first floor segment it meets
    (after a running median of the chord lengths over ±``window_mm`` along ``y'``).

    Returns ``(length, roof_point, floor_point)`` or None when no roof vertex has floor below it.
    """
    n = len(yz)
    i = np.flatnonzero(floor & np.roll(floor, -1))  # segments i -> i+1 with both ends on the floor
    if len(i) == 0 or not roof.any():
        return None
    a, b = yz[i], yz[(i + 1) % n]
    r = yz[roof]
    ya, yb = a[None, :, 0], b[None, :, 0]
    py = r[:, None, 0]
    dy = yb - ya
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(np.abs(dy) > 1e-12, (py - ya) / dy, np.nan)
    hit = (t >= 0) & (t <= 1)
    zhit = a[None, :, 1] + t * (b[None, :, 1] - a[None, :, 1])
    below = hit & (zhit < r[:, None, 1])
    if not below.any():
        return None
    zfirst = np.where(below, zhit, -np.inf).max(axis=1)  # the first floor met going down
    ok = np.isfinite(zfirst)
    r, zfirst = r[ok], zfirst[ok]
    length = r[:, 1] - zfirst
    # the voxel staircase makes roof and floor wiggle by a fraction of a voxel: take the longest chord of the
    # running median over +-window_mm along y' (a rounded roof apex loses far less than the wiggle would add)
    smooth = np.array([np.median(length[np.abs(r[:, 0] - y) <= window_mm]) for y in r[:, 0]])
    k = int(np.argmax(smooth))
    near = np.flatnonzero(np.abs(r[:, 0] - r[k, 0]) <= window_mm)
    j = int(near[np.argmin(np.abs(length[near] - smooth[k]))])
    return float(length[j]), r[j], np.array([r[j, 0], zfirst[j]])


def _run_with(mask: np.ndarray, index: int) -> np.ndarray:
    """Mask of the cyclic run of ``mask`` that contains vertex ``index``."""
    out = np.zeros_like(mask)
    for run in _runs(mask):
        if index in run:
            out[run] = True
    return out


def _nearest_on_runs(p, yz, mask):
    best = (np.inf, None)
    for run in _runs(mask):
        d, q = _nearest_on_polyline(p, yz[run])
        if d < best[0]:
            best = (d, q)
    return best


def _extreme_points(yz: np.ndarray, mask: np.ndarray, sign: float, tol_mm: float = 0.3) -> np.ndarray:
    """Vertices of ``mask`` within ``tol_mm`` of the extreme ``z'`` (sign +1: highest, -1: lowest)."""
    z = sign * yz[:, 1]
    zmax = z[mask].max()
    return np.flatnonzero(mask & (z >= zmax - tol_mm))


def _notch_height(yz: np.ndarray, labs: np.ndarray):
    """L4 notch (highest L4 point of the outline: the inferior aspect of the L4 pedicle) and L5 notch (lowest L5
    point: the superior aspect of the L5 pedicle). Where roof or floor is a plateau (within 0.3 mm), the pair of
    plateau points closest to each other is taken (a flat roof over a flat floor gives the vertical distance).

    Returns ``(height, roof_point, floor_point)`` or None when the outline has no L4 or no L5 part.
    """
    on4, on5 = labs == L4, labs == L5
    if not on4.any() or not on5.any():
        return None
    top = _extreme_points(yz, on4, 1.0)
    bot = _extreme_points(yz, on5, -1.0)
    d = np.linalg.norm(yz[top][:, None, :] - yz[bot][None, :, :], axis=2)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    p, q = yz[top[i]], yz[bot[j]]
    if p[1] <= q[1]:
        return None
    return float(d[i, j]), p, q


def _sap_face(yz, normal, labs, corner, floor_point):
    """Outline vertices on the anterior face of the L5 superior articular process.

    SAP face = L5 outline posterior to the L4 posteroinferior corner and to the L5 notch (the lowest L5 point, where
    the pedicle's upper border meets the SAP), more than 0.5 mm above the notch, whose outward normal has a posterior
    component (``SAP_FACE_MIN_POSTERIOR``: the surface faces anteriorly, into the foramen) and towards which the corner
    lies in front (the surface faces the corner). No slope threshold: the lower face curving into the notch is SAP.
    The L5 floor (the pedicle's upper border, in front of and at the notch) and any other structure are excluded.
    """
    to_corner = corner[None, :] - yz
    facing = (to_corner * normal).sum(1) < 0  # normal points away from the corner: the surface faces it
    return (
        (labs == L5)
        & (normal[:, 0] > SAP_FACE_MIN_POSTERIOR)
        & (yz[:, 0] > corner[0] + 0.5)
        & (yz[:, 0] > floor_point[0])
        & (yz[:, 1] > floor_point[1] + 0.5)
        & facing
    )


def _l4_corner(view, yz, normal, labs):
    ant4 = (labs == L4) & (normal[:, 0] < -0.3)
    if ant4.any():
        corner = _wall_end(view, yz, normal, labs, int(np.flatnonzero(ant4)[np.argmin(yz[ant4, 1])]))
        # the corner lies on the L4 posterior wall line: its y' = median of the wall 0.75-4 mm above (a disc bulge
        # right under the corner must not pull it backwards)
        wall = ant4 & (yz[:, 1] > corner[1] + 0.75) & (yz[:, 1] < corner[1] + 4.0)
        if wall.sum() >= 3:
            corner = np.array([np.median(yz[wall, 0]), corner[1]])
        return corner, ""
    corner = _body_corner(view, L4, (1.0, -1.0))
    if corner is None:
        return None, ""
    return corner, "L4 body does not border the foramen on this view; corner taken from the body outline"


def _sap_tip(view: LateralView, comp: np.ndarray, corner_y: float):
    """Tip of the L5 superior articular process bordering the hole: the highest L5 pixel next to the hole that lies
    more than 2 mm behind the L4 posteroinferior corner (frame ``(y', z')`` mm), or None."""
    fr5 = view.fractions[L5] > 0.5
    ring = ndi.binary_dilation(comp, iterations=2) & fr5
    rr, cc = np.nonzero(ring)
    if len(rr) == 0:
        return None
    yz = np.stack([view.y_mm[cc], view.z_mm[rr]], axis=1)
    ok = yz[:, 0] > corner_y + 2.0
    if not ok.any():
        return None
    yz = yz[ok]
    return yz[int(np.argmax(yz[:, 1]))]


def _facet_cut(view: LateralView, found, corner_y: float, seed_yz):
    """Close the foramen at the facet joint as an anatomist does: a straight segment from the SAP tip to the nearest
    L4 bone behind and above it (inferior articular process / pars). Where the hole reaches behind the SAP (around
    its tip into the facet-joint cleft) that part is cut off. Returns ``(found, segment_yz, length_mm)``; ``found``
    is unchanged when the cut does not change the hole."""
    (comp, bridge, rmm), u = found
    tip = _sap_tip(view, comp, corner_y)
    if tip is None:
        return found, None, 0.0
    s = view.spacing_mm
    fr4 = view.fractions[L4] > 0.5
    rr, cc = np.nonzero(fr4)
    y4, z4 = view.y_mm[cc], view.z_mm[rr]
    ok = (y4 >= tip[0] - 0.5) & (z4 >= tip[1] - 1.0)
    if not ok.any():
        return found, None, 0.0
    d = np.hypot(y4[ok] - tip[0], z4[ok] - tip[1])
    k = int(np.argmin(d))
    if d[k] > FACET_CUT_MAX_MM:
        return found, None, 0.0
    end = np.array([y4[ok][k], z4[ok][k]])
    n = max(2, int(np.ceil(d[k] / (0.25 * s))) + 1)
    t = np.linspace(0, 1, n)[:, None]
    seg = tip[None, :] * (1 - t) + end[None, :] * t
    r = np.clip(np.round((seg[:, 1] - view.z_mm[0]) / s).astype(int), 0, comp.shape[0] - 1)
    c = np.clip(np.round((seg[:, 0] - view.y_mm[0]) / s).astype(int), 0, comp.shape[1] - 1)
    wall = np.zeros_like(comp)
    wall[r, c] = True
    wall = ndi.binary_dilation(wall)  # 4-connected barrier
    cut = comp & ~wall
    lab, nlab = ndi.label(cut)
    if nlab <= 1:
        return found, np.stack([tip, end]), float(d[k])
    # keep the part in front of the segment (the side of the L4 corner)
    sizes = ndi.sum(cut, lab, np.arange(1, nlab + 1))
    com = np.array(ndi.center_of_mass(cut, lab, np.arange(1, nlab + 1))).reshape(-1, 2)
    # in front = centre of mass anterior to the segment's mid y'
    front = [i for i in range(nlab) if view.y_mm[0] + s * com[i, 1] < 0.5 * (tip[0] + end[0]) and sizes[i] * s * s >= MIN_FORAMEN_AREA_MM2]
    if not front:
        return found, np.stack([tip, end]), float(d[k])
    keep = lab == (1 + max(front, key=lambda i: sizes[i]))
    keep = keep | (wall & ndi.binary_dilation(keep) & comp)
    removed = comp & ~keep
    # only a part reaching down behind the SAP (the facet-joint cleft) is cut off; where the SAP meets the L4
    # articular process without a gap, the recess above the SAP is foramen
    rr_rm, cc_rm = np.nonzero(removed)
    behind = (view.y_mm[cc_rm] > tip[0] + 0.5) & (view.z_mm[rr_rm] < tip[1] - 0.5)
    if not behind.any():
        return found, None, 0.0
    return ((keep, bridge | removed, rmm), u), np.stack([tip, end]), float(d[k])


def _open_length(yz: np.ndarray, labs: np.ndarray) -> float:
    """Length (mm) of the outline not formed by a structure (closed facet gap / bridge)."""
    seg = np.linalg.norm(np.roll(yz, -1, axis=0) - yz, axis=1)
    both = (labs == FACET_BRIDGE) & (np.roll(labs, -1) == FACET_BRIDGE)
    return float(seg[both].sum())


def _measure_view(view: LateralView, found, side: str) -> dict:
    """Height, width, area and their points on one lateral view whose foramen ``found`` (:func:`_find_hole`)."""
    (comp, bridge, rmm), u = found
    rc = _outline(view, comp, bridge, u)
    yz = view.pixel_to_yz(rc)
    normal, labs, _ = _vertex_labels(view, yz, bridge, comp)
    corner0, _ = _l4_corner(view, yz, normal, labs)
    facet_seg, facet_len = None, 0.0
    if corner0 is not None:
        found2, facet_seg, facet_len = _facet_cut(view, found, float(corner0[0]), None)
        if found2 is not found:
            found = found2
            (comp, bridge, rmm), u = found
            rc = _outline(view, comp, bridge, u)
            yz = view.pixel_to_yz(rc)
            normal, labs, _ = _vertex_labels(view, yz, bridge, comp)
    fallbacks = []
    hn = _notch_height(yz, labs)
    if hn is None:
        raise InputError(f"the {side} foramen has no L4 roof over an L5 floor on the lateral view; check the pedicle labels")
    h_mm, p_top, p_bot = hn
    corner, cnote = _l4_corner(view, yz, normal, labs)
    if corner is None:
        raise InputError(f"the L4 vertebral body is not seen on the {side} lateral view; check the L4 label")
    if cnote:
        fallbacks.append(cnote)
    sap = _sap_face(yz, normal, labs, corner, p_bot)
    if not sap.any():
        # no SAP face: the L5 margin behind the corner, at or behind the notch and above it (the base of a low SAP,
        # the surrogate a reader uses); never the L5 body in front of the notch unless nothing else is there
        sap = (labs == L5) & (yz[:, 0] > corner[0] + 0.5) & (yz[:, 1] > p_bot[1]) & (yz[:, 0] >= p_bot[0])
        if not sap.any():
            sap = (labs == L5) & (yz[:, 0] > corner[0] + 0.5) & (yz[:, 1] > p_bot[1])
        fallbacks.append("no anterior face of the L5 superior articular process: width measured to the L5 margin behind the corner")
    if not sap.any():
        raise InputError(f"the {side} foramen has no L5 posterior wall behind the L4 corner on the lateral view; check the articular processes")
    dw, q = _nearest_on_runs(corner, yz, sap)
    return {
        "yz": yz,
        "labels": labs,
        "height": h_mm,
        "height_yz": np.stack([p_top, p_bot]),
        "width": float(dw),
        "width_yz": np.stack([corner, q]),
        "area": abs(_shoelace(yz)),
        "radius": rmm,
        "fallbacks": fallbacks,
        "facet_segment_yz": facet_seg,
        "open_mm": _open_length(yz, labs),
        "facet_closure_mm": facet_len,
    }


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

    Raises
    ------
    InputError
        Labels missing / in the wrong order, no pedicle, no enclosed foramen.
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
    sides = {s: _measure_side(lm, s, thresholds, input_reasons, zone) for s in SIDES}
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
