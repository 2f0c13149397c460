"""The closed foramen on one lateral view (part of :mod:`FORAMEN3DLib.morphometry`).

:func:`_find_hole` finds the foramen as the background component that L4, the disc and L5 enclose on a lateral
view (closings of increasing radius bridge a facet-joint gap; the corners a closing fills are given back to the
hole), :func:`_outline` traces its sub-pixel 0.5 iso-line and :func:`_vertex_labels` attributes every outline vertex
to the structure its outward normal points into (L4, disc, L5 or the bridged gap). Rules and figures:
``docs/foramen_method.md`` §3. The thresholds are project design choices (heuristic, not from the literature),
checked on the phantoms and the SPIDER label maps.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import measure as skmeasure
from skimage.graph import MCP_Geometric
from skimage.morphology import convex_hull_image

from FORAMEN3DLib.landmarks import LateralView
from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5
from spinemorph.masks import bounding_box

#: holes smaller than this on the lateral view are not taken for the foramen (gaps inside a facet joint, label noise)
MIN_FORAMEN_AREA_MM2 = 25.0
#: a candidate hole's centre must lie within this distance of the seed (heuristic, not from the literature)
HOLE_SEARCH_RADIUS_MM = 15.0
#: closing radii tried in turn to bridge a facet-joint gap (heuristic, not from the literature). The closing only
#: decides *where* the gap is cut: the notch corners it fills are given back to the foramen (:func:`_restore_hole`)
CLOSING_RADII_MM = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0)
#: background pixels within this distance of two different structures count as closed (heuristic)
THIN_GAP_MM = 1.25
#: label of the pixels added by the closing that bridges a facet-joint gap
FACET_BRIDGE = 4
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


