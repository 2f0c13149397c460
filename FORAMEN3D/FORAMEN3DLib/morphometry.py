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
from skimage.morphology import convex_hull_image, disk

from FORAMEN3DLib.landmarks import SIDES, Landmarks, LateralView, find_landmarks, lateral_view, slab_candidates
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
#: closing radii tried in turn to bridge a facet-joint gap (heuristic, not from the literature)
CLOSING_RADII_MM = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)
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

    def to_dict(self) -> dict:
        return {
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


@dataclasses.dataclass
class MorphometryResult:
    """Output of :func:`measure_foramen`."""

    sides: dict
    posterior_disc_height: Measurement
    pdh_yz: np.ndarray
    landmarks: Landmarks
    thresholds: Thresholds
    elapsed_s: float

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
                }
                for s in SIDES
            },
            "thresholds": dataclasses.asdict(self.thresholds),
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


def _find_hole(
    view: LateralView, seed_yz, radii_mm=CLOSING_RADII_MM, gap_mm: float = THIN_GAP_MM, hull_window=None
):
    """Foramen = background component enclosed by the projected structures (closing bridges the facet gap).

    A candidate hole must border L4, L5 and the anterior wall (disc or a vertebral body) and lie within
    ``HOLE_SEARCH_RADIUS_MM`` (15 mm) of
    the seed (behind the posterior body wall, between the pedicles). Background pixels within ``gap_mm`` of two
    different structures (a thin unlabelled gap between them) are closed first. With ``hull_window``
    (``((y0, y1), (z0, z1))`` mm) the hole is instead closed by the convex hull of the structures inside that window
    (a straight posterior wall where the slab holds no facet). Returns None when there is none.
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
    for rmm in radii_mm:
        if rmm == "hull":
            closed = solid | ~(hull & win)
        else:
            r = int(round(rmm / s))
            pad = r + 2
            sp = np.pad(solid, pad)
            closed = ndi.binary_closing(sp, structure=disk(r, dtype=bool))[pad:-pad, pad:-pad] if r > 0 else solid
            closed |= solid
        holes = ndi.binary_fill_holes(closed) & ~closed
        lab, n = ndi.label(holes)
        if n == 0:
            continue
        idx = np.arange(1, n + 1)
        sizes = ndi.sum(holes, lab, idx) * s * s
        com = np.array(ndi.center_of_mass(holes, lab, idx)).reshape(-1, 2)
        cand = []
        for i, (a, c) in enumerate(zip(sizes, com)):
            if a < MIN_FORAMEN_AREA_MM2:
                continue
            comp = lab == i + 1
            ring = ndi.binary_dilation(comp, iterations=2) & ~comp
            touches = [bool((ring & (fr[lab_] > 0.5)).any()) for lab_ in (L4, L5)]
            front = (fr[DISC_L45] > 0.5) | (view.body[L4] > 0.5) | (view.body[L5] > 0.5)
            if not all(touches) or not (ring & front).any():
                continue
            d = np.hypot(*(c - seed_rc)) * s
            cand.append((d, -a, i + 1))
        if cand:
            cand.sort()
            d, _, k = cand[0]
            if d <= HOLE_SEARCH_RADIUS_MM:
                comp = lab == k
                bridge = closed & ~(u > 0.5)
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


def _body_corner(view: LateralView, label: int, direction) -> np.ndarray | None:
    """Posterior corner of a vertebral body on a view: ``direction`` (1, -1) inferior, (1, 1) superior.

    A first guess (extreme point along ``direction``) is refined with the two faces meeting there: the posterior
    wall (median ``y'`` of the outline 0.75–4 mm away along the wall) and the endplate (median ``z'``
    0.75–6 mm anteriorly); the corner is where these two lines meet (for a rounded corner this lies a fraction of a mm
    outside the bone, but it does not depend on how much the outline is rounded by the voxel grid).
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


def _measure_side(lm: Landmarks, side: str, thresholds: Thresholds) -> SideResult:
    p4, p5 = lm.pedicles[("L4", side)], lm.pedicles[("L5", side)]
    seed = (lm.posterior_wall_y_mm + SEED_BEHIND_WALL_MM, 0.5 * (p4.z_range_mm[0] + p5.z_range_mm[1]))
    found = None
    win = ((lm.posterior_wall_y_mm + HULL_WINDOW_Y_MM[0], lm.posterior_wall_y_mm + HULL_WINDOW_Y_MM[1]),
           (seed[1] - HULL_WINDOW_HALF_Z_MM, seed[1] + HULL_WINDOW_HALF_Z_MM))
    cands = slab_candidates(lm, side, lm.lateral_views[side].half_width_mm)
    thin = [c for c in cands if c[2] == "mean"]
    wide = [c for c in cands if c[2] != "mean"]
    # thin slabs with a facet bridge; then the wide maximum projections; last the default slab closed by a straight
    # posterior wall (convex hull: no articular process in any slab)
    attempts = [(c, None) for c in thin] + [(c, None) for c in wide] + [(thin[0], win)]
    for (xc, hw, proj), hull_win in attempts:
        same = abs(xc - lm.lateral_views[side].x_mm) < 1e-9 and proj == "mean"
        view = lm.lateral_views[side] if same else lateral_view(lm, side, xc, hw, proj)
        found = _find_hole(view, seed, hull_window=hull_win)
        if found is not None:
            method = "convex hull" if hull_win is not None else ("thin slab" if proj == "mean" else "wide slab")
            break
    if found is None:
        raise InputError(
            f"no enclosed {side} foramen found on the lateral view (the L4 and L5 posterior elements and the disc do not "
            "surround it even with a 6 mm facet bridge); check the segmentation of pedicles and articular processes"
        )
    (comp, bridge, rmm), u = found
    rc = _outline(view, comp, bridge, u)
    yz = view.pixel_to_yz(rc)
    normal, labs, _ = _vertex_labels(view, yz, bridge, comp)
    ny, nz = normal[:, 0], normal[:, 1]
    roof = (labs == L4) & (nz > 0.5)
    floor = (labs == L5) & (nz < -0.5)
    note_h = note_w = ""
    if not roof.any() or not floor.any():
        raise InputError(f"the {side} foramen has no L4 roof or no L5 floor on the lateral view; check the pedicle labels")
    # roof = up-facing L4 outline above the disc centre (z' = 0: the frame origin); floor = down-facing L5 outline
    # below it (the tip of the SAP, which also faces up into the foramen's L5 side, rises above the disc centre)
    if (roof & (yz[:, 1] > 0)).any():
        roof &= yz[:, 1] > 0
    if (floor & (yz[:, 1] < 0)).any():
        floor &= yz[:, 1] < 0
    # height: for each roof point the distance across to the floor; the longest
    best = _vertical_chords(yz, roof, floor)
    if best is None:  # no floor straight below any roof point: nearest-point distance instead
        note_h = "no floor straight below the roof; height = longest roof-to-nearest-floor distance"
        best = (-1.0, None, None)
        for p in yz[roof]:
            d, q = _nearest_on_runs(p, yz, floor)
            if d > best[0]:
                best = (d, p, q)
    height_yz = np.stack([best[1], best[2]])
    # width: posteroinferior corner of the L4 body -> SAP (L5 facing posteriorly)
    ant4 = (labs == L4) & (ny < -0.3)
    if ant4.any():
        corner = _wall_end(view, yz, normal, labs, int(np.flatnonzero(ant4)[np.argmin(yz[ant4, 1])]))
        # the corner lies on the L4 posterior wall line: its y' = median of the wall 0.75-4 mm above (a disc bulge
        # right under the corner must not pull it backwards)
        wall = ant4 & (yz[:, 1] > corner[1] + 0.75) & (yz[:, 1] < corner[1] + 4.0)
        if wall.sum() >= 3:
            corner = np.array([np.median(yz[wall, 0]), corner[1]])
    else:
        corner = _body_corner(view, L4, (1.0, -1.0))
        if corner is None:
            raise InputError(f"the L4 vertebral body is not seen on the {side} lateral view; check the L4 label")
        note_w = "L4 body does not border the foramen on this view; corner taken from the body outline. "
    sap = (labs == L5) & (ny > 0.3)
    if not sap.any():
        sap = ny > 0.3
        note_w += "no L5 superior articular process on the posterior wall; width measured to the posterior wall"
    if not sap.any():
        raise InputError(f"the {side} foramen has no posterior wall on the lateral view; check the articular processes")
    dw, q = _nearest_on_runs(corner, yz, sap)
    width_yz = np.stack([corner, q])
    area = abs(_shoelace(yz))
    h_mm, w_mm = float(best[0]), float(dw)
    fl = flags_for(h_mm, w_mm, thresholds)
    if rmm == "hull":
        note_a = "no articular process closes the foramen on the lateral view: posterior wall = convex hull (straight line)"
    elif rmm > 0:
        note_a = f"facet gap bridged by a {rmm:g} mm closing"
    else:
        note_a = ""
    if method != "thin slab":
        fallback = {
            "wide slab": "foramen not closed on the thin slab through the pedicles; measured on the maximum projection of "
            f"the {2 * view.half_width_mm:.0f} mm slab through both pedicles",
            "convex hull": "foramen closed by a straight posterior wall (less reliable)",
        }[method]
        note_h = f"{note_h}; {fallback}" if note_h else fallback
        note_w = f"{note_w}; {fallback}" if note_w else fallback
        note_a = f"{note_a}; {fallback}" if note_a else fallback
    height = Measurement("foraminal_height", side, h_mm, "mm", view.yz_to_lps(height_yz), fl["height"], note_h)
    width = Measurement("foraminal_width", side, w_mm, "mm", view.yz_to_lps(width_yz), fl["width"], note_w.strip())
    area_m = Measurement("foraminal_area", side, float(area), "mm2", view.yz_to_lps(yz), "", note_a)
    return SideResult(
        side=side,
        height=height,
        width=width,
        area=area_m,
        flagged=bool(fl["side"]),
        view=view,
        outline_yz=yz,
        vertex_labels=labs,
        height_yz=height_yz,
        width_yz=width_yz,
        closing_radius_mm=float("nan") if rmm == "hull" else float(rmm),
        method=method,
    )


def _posterior_disc_height(lm: Landmarks, thresholds: Thresholds):
    v = lm.midline_view
    c4 = _body_corner(v, L4, (1.0, -1.0))
    c5 = _body_corner(v, L5, (1.0, 1.0))
    if c4 is None or c5 is None:
        raise InputError("the L4 or L5 vertebral body is missing on the midline; check the labels")
    yz = np.stack([c4, c5])
    d = float(np.linalg.norm(c4 - c5))
    flag = f"posterior disc height <= {thresholds.posterior_disc_height_mm:g} mm" if d <= thresholds.posterior_disc_height_mm else ""
    m = Measurement("posterior_disc_height", "midline", d, "mm", v.yz_to_lps(yz), flag, "")
    return m, yz


def measure_foramen(
    labels: Volume,
    thresholds: Thresholds | None = None,
    spacing_mm: float = 0.5,
    slab_half_width_mm: float = 1.5,
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
        Half width of the parasagittal slab through each pedicle.

    Returns
    -------
    MorphometryResult

    Raises
    ------
    InputError
        Labels missing / in the wrong order, no pedicle, no enclosed foramen.
    """
    t0 = time.perf_counter()
    thresholds = thresholds or Thresholds()
    lm = find_landmarks(labels, spacing_mm=spacing_mm, slab_half_width_mm=slab_half_width_mm)
    sides = {s: _measure_side(lm, s, thresholds) for s in SIDES}
    pdh, pdh_yz = _posterior_disc_height(lm, thresholds)
    return MorphometryResult(
        sides=sides,
        posterior_disc_height=pdh,
        pdh_yz=pdh_yz,
        landmarks=lm,
        thresholds=thresholds,
        elapsed_s=time.perf_counter() - t0,
    )
