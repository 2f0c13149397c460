"""Landmarks and measurements on a foramen outline (part of :mod:`FORAMEN3DLib.morphometry`).

On the outline found by :mod:`FORAMEN3DLib.morphometry_hole`: the L4 and L5 notches (height), the L4
posteroinferior corner and the anterior face of the L5 superior articular process (width), the facet closure from
the SAP tip to the L4 articular process (area), and the posterior body corners of the midline view (posterior disc
height). :func:`_measure_view` measures one lateral view. Rules and figures: ``docs/foramen_method.md`` §4.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import measure as skmeasure

from FORAMEN3DLib.landmarks import LateralView
from FORAMEN3DLib.morphometry_hole import (
    FACET_BRIDGE,
    MIN_FORAMEN_AREA_MM2,
    _outline,
    _shoelace,
    _vertex_labels,
)
from spinemorph.errors import InputError
from spinemorph.labels import L4, L5

#: longest straight facet closure from the SAP tip to the L4 articular process (design choice; the manual reference
#: drew closures of 4.4-8.3 mm)
FACET_CUT_MAX_MM = 10.0
#: the SAP's anterior face is the L5 contour behind the notch that rises out of it and faces into the foramen
#: (outward normal with a posterior component > this, i.e. not a surface facing straight up or backwards). No slope cut:
#: the L5 notch is the junction of the pedicle's upper border (in front of it) and the SAP (behind it), so the contour
#: posterior to the notch's lowest point is the SAP, including the lower part of its face that curves into the notch
#: (inclined 20-45° on real masks, where the manual reader places the SAP point). A 45° cut (issue 14 review) removed
#: that part: end points moved 3-8 mm up or to the fallback, which on 50 L ended on the L5 body in front of the notch.
SAP_FACE_MIN_POSTERIOR = 0.0
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


