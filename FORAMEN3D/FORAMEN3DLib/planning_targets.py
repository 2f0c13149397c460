"""Planning targets: the posterior third of the L4-5 disc and the centre of the intervertebral foramen (with the
geometric thresholds of the foramen search). Part of :mod:`FORAMEN3DLib.planning`.
"""

from __future__ import annotations

import numpy as np

from FORAMEN3DLib.planning_config import _side_sign
from FORAMEN3DLib.planning_frame import AnatomicalFrame
from FORAMEN3DLib.planning_geometry import _label_points, _lookup_nearest
from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5
from spinemorph.masks import largest_component
from spinemorph.volume import Volume

# ---------------------------------------------------------------------------------------------------------------
# Geometric thresholds of the foramen-centre target (:func:`foramen_centre_target`). Project design choices
# (heuristic, NOT from the literature), checked on the lumbar phantoms of Testing/test_planning.py
# (``test_phantom_foramen_centre_lies_in_the_true_foramen``); the cited planning values are in REFERENCE_VALUES.
#   search grid: laterally from 1/4 of the disc half-width to FORAMEN_SEARCH_LATERAL_MM beyond the disc;
#   FORAMEN_SEARCH_POSTERIOR_MM behind the disc
#   enclosure: L4 within ENCLOSE_L4_ABOVE_MM above, L5 within ENCLOSE_L5_BELOW_MM below, any structure within
#   ENCLOSE_FRONT_MM in front, bone within ENCLOSE_BEHIND_MM behind; at least MIN_ENCLOSED_MM3 enclosed
#   fallback: FALLBACK_BEHIND_DISC_MM behind the posterior disc margin at FALLBACK_LATERAL_FRACTION of the disc
#   half-width
# Other inline values: mid-sagittal symmetry search ±20° in 2° then ±2° in 0.25° steps (``anatomical_frame``);
# default crop margin 20 mm (PlanningConfig.crop_margin_mm).
# ---------------------------------------------------------------------------------------------------------------
FORAMEN_SEARCH_LATERAL_MM = 15.0
FORAMEN_SEARCH_POSTERIOR_MM = 45.0
ENCLOSE_L4_ABOVE_MM = 25.0
ENCLOSE_L5_BELOW_MM = 25.0
ENCLOSE_FRONT_MM = 15.0
ENCLOSE_BEHIND_MM = 20.0
MIN_ENCLOSED_MM3 = 5.0
FALLBACK_BEHIND_DISC_MM = 4.0
FALLBACK_LATERAL_FRACTION = 0.6


# ====================================================================== targets
def disc_posterior_third_target(labels: Volume, frame: AnatomicalFrame, side: str) -> np.ndarray:
    """Target in the posterior third of the L4-5 disc, ipsilateral half (LPS mm).

    The disc's antero-posterior extent is taken within 5 mm of the mid-sagittal plane (1st-99th percentile of
    the frame y coordinate); the target is the centroid of the disc voxels in the posterior third of that
    extent on the side's half (``s·x >= 0``), moved to the nearest such voxel if the centroid is not disc.
    """
    s = _side_sign(side)
    pts = _label_points(labels, [DISC_L45])
    f = frame.to_frame(pts)
    band = np.abs(f[:, 0]) <= 5.0
    yy = f[band, 1] if band.sum() >= 10 else f[:, 1]
    y_ant, y_post = np.percentile(yy, [1, 99])
    sel = (f[:, 1] >= y_ant + (2.0 / 3.0) * (y_post - y_ant)) & (s * f[:, 0] >= 0)
    if not sel.any():
        raise InputError("the L4-5 disc has no voxels in its posterior third on that side; check the label map")
    target = pts[sel].mean(axis=0)
    if _lookup_nearest(labels, target[None])[0] != DISC_L45:
        target = pts[sel][int(np.argmin(np.linalg.norm(pts[sel] - target, axis=1)))]
    return target


def _within(mask: np.ndarray, axis: int, n: int, forward: bool) -> np.ndarray:
    """True where ``mask`` has a True voxel within ``n`` steps along ``axis`` (excluding the voxel itself)."""
    m = np.moveaxis(mask, axis, -1).astype(np.int32)
    if not forward:
        m = m[..., ::-1]
    c = np.concatenate([np.zeros(m.shape[:-1] + (1,), np.int32), np.cumsum(m, axis=-1)], axis=-1)
    L = m.shape[-1]
    idx = np.arange(L)
    hi = np.minimum(idx + n, L)
    res = (c[..., hi] - c[..., idx + 1]) > 0
    if not forward:
        res = res[..., ::-1]
    return np.moveaxis(res, -1, axis)


def foramen_centre_target(labels: Volume, frame: AnatomicalFrame, side: str, step_mm: float = 0.5) -> tuple[np.ndarray, str]:
    """Centre of the L4-5 intervertebral foramen on one side (LPS mm) and the method used.

    The labels are resampled (nearest) on a frame-aligned grid spanning, laterally, from a quarter of the disc
    half-width to 15 mm beyond the disc; antero-posteriorly from the disc centre to 45 mm behind the disc;
    craniocaudally from the L5 centroid to the top of L4. A free (unlabelled) grid point belongs to the foramen
    as seen on the lateral view when it is enclosed on four sides within the frame's sagittal directions: L4
    within 25 mm above it (pedicle: roof), L5 within 25 mm below (pedicle: floor), disc or vertebra within 15 mm in
    front (anterior wall) and vertebra within 20 mm behind (articular processes: posterior wall). The target is
    the centroid of the largest connected set of such points (method ``"enclosed region"``); this tolerates gaps
    in the labelled walls (e.g. the facet joint line). If there is none, the fallback is the point 4 mm behind
    the posterior disc margin at 60 % of the disc half-width laterally, at the disc's mid-height (``"fallback"``).
    """
    s = _side_sign(side)
    dpts = frame.to_frame(_label_points(labels, [DISC_L45]))
    f4 = frame.to_frame(_label_points(labels, [L4]))
    f5 = frame.to_frame(_label_points(labels, [L5]))
    half_w = float(np.percentile(np.abs(dpts[:, 0]), 99))
    y_c = float(np.median(dpts[:, 1]))
    y_post = float(np.percentile(dpts[:, 1], 99))
    xs = s * np.arange(0.25 * half_w, half_w + FORAMEN_SEARCH_LATERAL_MM, step_mm)
    ys = np.arange(y_c, y_post + FORAMEN_SEARCH_POSTERIOR_MM, step_mm)
    zs = np.arange(float(np.mean(f5[:, 2])), float(np.percentile(f4[:, 2], 99.5)), step_mm)
    if len(xs) < 2 or len(ys) < 2 or len(zs) < 2:
        raise InputError("L4, disc and L5 are too small or mis-ordered to locate the foramen; check the label map")
    g = np.stack(np.meshgrid(xs, ys, zs, indexing="ij"), axis=-1)  # axes: x (lateral), y (posterior), z (cranial)
    lab = _lookup_nearest(labels, frame.to_lps(g))
    n = lambda mm: max(1, int(round(mm / step_mm)))  # noqa: E731
    bone = (lab == L4) | (lab == L5)
    enclosed = (
        (lab == 0)
        & _within(lab == L4, 2, n(ENCLOSE_L4_ABOVE_MM), True)
        & _within(lab == L5, 2, n(ENCLOSE_L5_BELOW_MM), False)
        & _within(lab > 0, 1, n(ENCLOSE_FRONT_MM), False)
        & _within(bone, 1, n(ENCLOSE_BEHIND_MM), True)
    )
    if enclosed.any() and enclosed.sum() * step_mm**3 >= MIN_ENCLOSED_MM3:
        region = largest_component(enclosed, "face")
        return frame.to_lps(g[region].mean(axis=0)), "enclosed region"
    zc = float(np.median(dpts[:, 2]))
    return frame.to_lps(np.array([s * FALLBACK_LATERAL_FRACTION * half_w, y_post + FALLBACK_BEHIND_DISC_MM, zc])), "fallback"
