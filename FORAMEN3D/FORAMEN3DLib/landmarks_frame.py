"""The one L4-5 segment frame of FORAMEN3D (:class:`SegmentFrame`, :func:`segment_frame`), used by the morphometry
(:mod:`FORAMEN3DLib.landmarks`) and the planner (:mod:`FORAMEN3DLib.planning_frame`).

Axes, all unit LPS vectors: ``x`` towards patient left, ``y`` anterior → posterior, ``z`` inferior → superior
(cranial, towards L4); right-handed (``x × y = z``). Two axis rules, chosen by the caller and **recorded in the
frame** (``SegmentFrame.axis_rule``, with the fallback taken, if any):

- ``"posterior-elements"`` (morphometry, canal-aligned; :func:`posterior_elements_frame`): origin = the L4-5 disc
  centroid; ``z`` = the disc normal (smallest principal axis of the disc voxels, oriented towards L4), averaged with
  the L5 → L4 vertebral-body centroid axis when the two agree (cosine > 0.7, about 45°); ``y`` = from the disc
  centroid towards the centroid of the posterior elements (vertebra voxels outside the disc footprint), made
  perpendicular to ``z``; ``x = y × z``. The lateral views of the foramen are parasagittal planes of this frame.
- ``"mirror-symmetry"`` (planner; :func:`mirror_symmetry_frame`): ``z`` = the disc normal, or the L5 → L4 centroid
  axis when the disc is not clearly flat or its normal is more than 30° off that axis; ``x`` = the normal of the
  mid-sagittal plane, found as the rotation about ``z`` whose mirror reflection best reproduces the labels;
  ``z`` made perpendicular to ``x``, ``y = z × x``; origin = the disc centroid projected on that plane.

Only physical (LPS) coordinates are used: any grid orientation gives the same frame.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from FORAMEN3DLib.planning_geometry import _centroid, _check_labels, _lookup_nearest, _r, _unit
from FORAMEN3DLib.planning_geometry import _label_points as _sampled_points
from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5
from spinemorph.masks import bounding_box
from spinemorph.volume import Volume

#: the two axis rules (see the module docstring)
AXIS_RULES = ("posterior-elements", "mirror-symmetry")
#: minimum plausible structure volumes (mm³) below which the label map is rejected
MIN_VERTEBRA_MM3 = 2000.0
MIN_DISC_MM3 = 300.0
#: at most this many voxel positions per structure are used for centroids and principal axes
MAX_POINTS = 40000


class SegmentFrame:
    """Frame of the L4-5 segment: origin and axes in LPS, and the rule that set them.

    Construct with ``SegmentFrame(origin, x, y, z, symmetry_score)`` or ``SegmentFrame(origin, axes_lps=A)``
    (columns of ``A``: ``x``, ``y``, ``z``). ``SpineFrame`` (morphometry) and ``AnatomicalFrame`` (planner) are this
    class under their former names.

    Attributes
    ----------
    origin_lps : (3,) array
    axes_lps : (3, 3) array
        Columns: the unit LPS directions of ``x`` (left), ``y`` (posterior), ``z`` (cranial).
    axis_rule : str
        Which rule set the axes, with any fallback taken (e.g. ``"posterior-elements: z = disc normal averaged
        with the L5->L4 body axis; y = towards the posterior elements"``); empty for a hand-made frame.
    symmetry_score : float
        Mirror-symmetry rule: fraction of labelled voxels whose mirror image carries the same label (else NaN).
    """

    __slots__ = ("origin_lps", "axes_lps", "axis_rule", "symmetry_score")

    def __init__(self, origin_lps, x_axis=None, y_axis=None, z_axis=None, symmetry_score: float = float("nan"), *,
                 axes_lps=None, axis_rule: str = ""):
        if axes_lps is None:
            if x_axis is None or y_axis is None or z_axis is None:
                raise ValueError("give x_axis, y_axis and z_axis, or axes_lps")
            axes_lps = np.stack([np.asarray(v, dtype=float) for v in (x_axis, y_axis, z_axis)], axis=1)
        object.__setattr__(self, "origin_lps", np.asarray(origin_lps, dtype=float))
        object.__setattr__(self, "axes_lps", np.asarray(axes_lps, dtype=float))
        object.__setattr__(self, "axis_rule", str(axis_rule))
        object.__setattr__(self, "symmetry_score", float(symmetry_score))

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        return (f"SegmentFrame(origin_lps={np.round(self.origin_lps, 3).tolist()}, "
                f"axes_lps={np.round(self.axes_lps, 4).tolist()}, axis_rule={self.axis_rule!r})")

    @property
    def x_axis(self) -> np.ndarray:
        return self.axes_lps[:, 0].copy()

    @property
    def y_axis(self) -> np.ndarray:
        return self.axes_lps[:, 1].copy()

    @property
    def z_axis(self) -> np.ndarray:
        return self.axes_lps[:, 2].copy()

    @property
    def rotation(self) -> np.ndarray:
        """3×3 matrix whose rows are the frame axes (LPS → frame components)."""
        return self.axes_lps.T.copy()

    @property
    def lateral_axis_lps(self) -> np.ndarray:
        """Unit LPS direction of ``x`` (the viewing direction of the lateral view)."""
        return self.x_axis

    def to_frame(self, points_lps) -> np.ndarray:
        """LPS points ``(..., 3)`` → frame coordinates ``(x, y, z)`` in mm."""
        return (np.asarray(points_lps, dtype=float) - self.origin_lps) @ self.axes_lps

    def to_lps(self, points_frame) -> np.ndarray:
        """Frame coordinates ``(..., 3)`` → LPS points in mm."""
        return np.asarray(points_frame, dtype=float) @ self.axes_lps.T + self.origin_lps

    def midline_distance_mm(self, points_lps) -> np.ndarray:
        """Unsigned distance (mm) of LPS points from the frame's mid-sagittal plane (``x = 0``)."""
        return np.abs(self.to_frame(points_lps)[..., 0])

    def as_dict(self) -> dict:
        return {
            "origin_lps": _r(self.origin_lps),
            "x_axis_left": _r(self.x_axis, 6),
            "y_axis_posterior": _r(self.y_axis, 6),
            "z_axis_cranial": _r(self.z_axis, 6),
            "symmetry_score": round(float(self.symmetry_score), 4),
            "axis_rule": self.axis_rule,
        }


def segment_frame(labels: Volume, rule: str = "posterior-elements", **options) -> SegmentFrame:
    """The L4-5 segment frame of a label map (1 L4, 2 L4-5 disc, 3 L5) by the axis ``rule`` (:data:`AXIS_RULES`).

    ``options`` go to the rule (``midline``, ``max_points`` for ``"mirror-symmetry"``). The frame records the rule
    and any fallback in ``axis_rule``.
    """
    if rule == "posterior-elements":
        pts, _, _ = _label_points(labels)
        return posterior_elements_frame(pts)
    if rule == "mirror-symmetry":
        return mirror_symmetry_frame(labels, **options)
    raise InputError(f"unknown frame axis rule {rule!r}; choose one of {', '.join(AXIS_RULES)}")


# ------------------------------------------------------------------------------------------ posterior elements
def _label_points(labels: Volume) -> tuple[dict, Volume, dict]:
    """LPS points of every voxel of labels 1-3 (array cropped to their bounding box first)."""
    arr = np.asarray(labels.array)
    if arr.ndim != 3:
        raise InputError(f"label map must be 3D, got {arr.ndim}D")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.allclose(arr, np.round(arr)):
            raise InputError("label map holds non-integer values; give a label map with 1 = L4, 2 = L4-5 disc, 3 = L5")
        arr = np.round(arr).astype(np.int32)
    fg = (arr >= 1) & (arr <= 3)
    if not fg.any():
        raise InputError("label map holds none of the labels 1 (L4), 2 (L4-5 disc), 3 (L5)")
    lo, hi = bounding_box(fg)
    crop = arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    cvol = Volume(crop, labels.spacing_mm, labels.index_to_lps(lo[::-1]), labels.direction)
    pts, counts = {}, {}
    vv = labels.voxel_volume_mm3
    names = {L4: "L4", DISC_L45: "L4-5 disc", L5: "L5"}
    st = 2 if crop.size > 4_000_000 else 1  # every 2nd voxel along each axis is plenty for centroids and axes
    sub = crop[::st, ::st, ::st]
    for lab in (L4, DISC_L45, L5):
        n_lab = int(np.count_nonzero(crop == lab))
        vol_mm3 = n_lab * vv
        need = MIN_DISC_MM3 if lab == DISC_L45 else MIN_VERTEBRA_MM3
        if vol_mm3 < need:
            raise InputError(
                f"label {lab} ({names[lab]}) covers only {vol_mm3:.0f} mm³ (< {need:.0f} mm³); "
                "the label map must hold L4 = 1, L4-5 disc = 2 and L5 = 3"
            )
        idx = np.argwhere(sub == lab) * st
        step = max(1, len(idx) // MAX_POINTS)
        pts[lab] = cvol.index_to_lps(idx[::step, ::-1].astype(float))
        counts[lab] = n_lab
    return pts, cvol, counts


def _footprint_mask_2d(uv: np.ndarray, step: float, half: float) -> tuple[np.ndarray, int]:
    n = int(np.ceil(2 * half / step)) + 1
    g = np.zeros((n, n), bool)
    ij = np.clip(np.round((uv + half) / step).astype(int), 0, n - 1)
    g[ij[:, 1], ij[:, 0]] = True
    g = ndi.binary_fill_holes(ndi.binary_closing(g, iterations=2))
    return g, n


def _plane_basis(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.eye(3)[int(np.argmin(np.abs(n)))]
    a = np.cross(n, ref)
    a /= np.linalg.norm(a)
    return a, np.cross(n, a)


def posterior_elements_frame(pts: dict) -> SegmentFrame:
    """Canal-aligned frame (rule ``"posterior-elements"``) from LPS voxel points per label ``{L4, DISC_L45, L5}``.

    Raises
    ------
    InputError
        L4 and L5 not on opposite sides of the disc, L4 below L5, no posterior elements.
    """
    disc = pts[DISC_L45]
    c = disc.mean(0)
    w, vecs = np.linalg.eigh(np.cov((disc - c).T))
    n = vecs[:, 0]
    c4, c5 = pts[L4].mean(0), pts[L5].mean(0)
    if n @ (c4 - c5) < 0:
        n = -n
    if (c4 - c) @ n <= 0 or (c5 - c) @ n >= 0:
        raise InputError("L4 (label 1) and L5 (label 3) are not on opposite sides of the L4-5 disc (label 2); check the labels")
    if n[2] < -0.2:
        raise InputError(
            "L4 (label 1) lies below L5 (label 3) in patient coordinates; the labels are swapped or the image header's "
            "orientation is wrong"
        )
    # disc footprint in the disc plane (1 mm raster)
    a, b = _plane_basis(n)

    def uv(p):
        q = p - c
        return np.stack([q @ a, q @ b], axis=1)

    half = float(np.abs(uv(disc)).max() + 8.0)
    fp, nfp = _footprint_mask_2d(uv(disc), 1.0, half)
    fp = ndi.binary_dilation(fp, iterations=2)

    def inside(p):
        ij = np.round((uv(p) + half) / 1.0).astype(int)
        ok = np.all((ij >= 0) & (ij < nfp), axis=1)
        res = np.zeros(len(p), bool)
        res[ok] = fp[ij[ok, 1], ij[ok, 0]]
        return res

    body4 = pts[L4][inside(pts[L4])]
    body5 = pts[L5][inside(pts[L5])]
    z_rule = "z = disc normal (the L5->L4 body axis is more than 45 deg off it, or no body inside the disc footprint)"
    if len(body4) and len(body5):
        axis = body4.mean(0) - body5.mean(0)
        axis /= np.linalg.norm(axis)
        if axis @ n > 0.7:  # bodies roughly aligned with the disc normal: average both estimates
            n = n + axis
            n /= np.linalg.norm(n)
            z_rule = "z = disc normal averaged with the L5->L4 body axis"
    vert = np.concatenate([pts[L4], pts[L5]])
    post = vert[~inside(vert)]
    if len(post) < 10:
        raise InputError("no posterior elements found behind the vertebral bodies; the vertebra labels must include pedicles and arches")
    y = post.mean(0) - c
    y -= (y @ n) * n
    if np.linalg.norm(y) < 1e-6:
        raise InputError("cannot tell anterior from posterior: the posterior elements are centred on the disc")
    y /= np.linalg.norm(y)
    x = np.cross(y, n)
    return SegmentFrame(c, axes_lps=np.stack([x, y, n], axis=1),
                        axis_rule=f"posterior-elements: {z_rule}; y = towards the posterior elements; origin = disc centroid")


# ------------------------------------------------------------------------------------------ mirror symmetry
def _disc_normal(labels: Volume, l5_to_l4) -> tuple[np.ndarray, str]:
    """Cranial axis: the normal of the L4-5 disc (its least-variance principal axis), oriented towards L4.

    Falls back to the L5 → L4 centroid direction when the disc is not clearly flat (smallest / middle principal
    variance > 0.5) or its normal deviates more than 30° from that direction.
    """
    fallback = _unit(l5_to_l4)
    pts = _sampled_points(labels, [DISC_L45], None)  # every disc voxel
    if len(pts) < 20:
        return fallback, "z = L5->L4 centroid axis (fewer than 20 disc voxels)"
    w, v = np.linalg.eigh(np.cov((pts - pts.mean(axis=0)).T))
    n = v[:, 0] if v[:, 0] @ fallback >= 0 else -v[:, 0]
    if w[0] > 0.5 * w[1]:
        return fallback, "z = L5->L4 centroid axis (the disc is not clearly flat)"
    if n @ fallback < math.cos(math.radians(30.0)):
        return fallback, "z = L5->L4 centroid axis (the disc normal is more than 30 deg off it)"
    return n, "z = disc normal"


def mirror_symmetry_frame(labels: Volume, midline: str = "symmetry", max_points: int = 12000) -> SegmentFrame:
    """Anatomical frame (rule ``"mirror-symmetry"``) from a label map (1 L4, 2 disc, 3 L5).

    Parameters
    ----------
    labels : Volume
        Foramen-task label map, any orientation and spacing.
    midline : str
        ``"symmetry"``: the mid-sagittal plane contains the cranial axis (disc normal) and the centroid of the
        labelled voxels; its rotation about the cranial axis is the one whose mirror reflection best reproduces
        the labels (±20° in 2° steps, then ±2° in 0.25° steps, on ``max_points`` labelled voxels chosen at random
        with seed 0; among scores within 0.1 % of the best, the smallest rotation). ``"axis"``: plane through the
        centroid normal to LPS x.
    """
    _check_labels(labels)
    c4 = _centroid(labels, [L4])
    c5 = _centroid(labels, [L5])
    cd = _centroid(labels, [DISC_L45])
    centre = _centroid(labels, [L4, DISC_L45, L5])
    pts = _sampled_points(labels, [L4, DISC_L45, L5], max_points)
    lab = _lookup_nearest(labels, pts)
    if np.linalg.norm(c4 - c5) < 1e-6:
        raise InputError("L4 and L5 share one centroid; the label map cannot define the spine axis")
    spine, z_rule = _disc_normal(labels, c4 - c5)
    n0 = np.array([1.0, 0.0, 0.0]) - spine[0] * spine
    if np.linalg.norm(n0) < 0.3:
        raise InputError("the L5→L4 axis runs left-right; the label map's orientation header is probably wrong")
    n0 = _unit(n0)
    y0 = _unit(np.cross(spine, n0))

    def score(normal):
        d = (pts - centre) @ normal
        refl = pts - 2.0 * d[:, None] * normal[None, :]
        return float(np.mean(_lookup_nearest(labels, refl) == lab))

    best_n, best_s = n0, score(n0)
    x_rule = "x = LPS x made perpendicular to z (midline 'axis')"
    if midline == "symmetry":
        # the mid-sagittal plane contains the cranial axis: search its rotation (yaw) about that axis;
        # among near-best candidates (within 0.1 % of the points) take the smallest rotation
        psi0 = 0.0
        for half, step in ((20.0, 2.0), (2.0, 0.25)):
            psis = psi0 + np.arange(-half, half + 1e-9, step)
            cands = [math.cos(math.radians(p)) * n0 + math.sin(math.radians(p)) * y0 for p in psis]
            scores = np.array([score(n) for n in cands])
            near = np.flatnonzero(scores >= scores.max() - 1e-3)
            i = int(near[np.argmin(np.abs(psis[near]))])
            psi0 = float(psis[i])
            best_n, best_s = _unit(cands[i]), float(scores[i])
        x_rule = f"x = mirror-symmetry plane normal (yaw {psi0:+.2f} deg)"
    x = best_n if best_n[0] >= 0 else -best_n
    z = _unit(spine - (spine @ x) * x)
    y = np.cross(z, x)
    origin = cd - ((cd - centre) @ x) * x
    return SegmentFrame(origin, x, y, z, best_s,
                        axis_rule=f"mirror-symmetry: {z_rule}; {x_rule}; y = z x x; origin = disc centroid on the plane")
