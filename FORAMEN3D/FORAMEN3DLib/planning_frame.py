"""Anatomical frame at L4-5 (:class:`AnatomicalFrame`, :func:`anatomical_frame`: mid-sagittal mirror plane, disc
normal) and the medial / craniocaudal angle conventions (:func:`direction_from_angles`, :func:`trajectory_angles`).
Part of :mod:`FORAMEN3DLib.planning` (conventions in its docstring).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from FORAMEN3DLib.planning_config import _side_sign
from FORAMEN3DLib.planning_geometry import _centroid, _check_labels, _label_points, _lookup_nearest, _r, _unit
from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5
from spinemorph.volume import Volume


# ====================================================================== anatomical frame
@dataclasses.dataclass(frozen=True, eq=False)
class AnatomicalFrame:
    """Patient frame at L4-5 (LPS vectors): origin on the mid-sagittal plane at the disc centre.

    Attributes
    ----------
    origin_lps : (3,) array
    x_axis, y_axis, z_axis : (3,) arrays
        Unit vectors: left (mid-sagittal plane normal), posterior, cranial. Right-handed (x × y = z).
    symmetry_score : float
        Fraction of labelled voxels whose mirror image across the mid-sagittal plane carries the same label.
    """

    origin_lps: np.ndarray
    x_axis: np.ndarray
    y_axis: np.ndarray
    z_axis: np.ndarray
    symmetry_score: float = float("nan")

    @property
    def rotation(self) -> np.ndarray:
        """3×3 matrix whose rows are the frame axes (LPS → frame components)."""
        return np.stack([self.x_axis, self.y_axis, self.z_axis])

    def to_frame(self, points_lps) -> np.ndarray:
        """LPS points ``(..., 3)`` → frame coordinates (mm)."""
        return (np.asarray(points_lps, dtype=float) - self.origin_lps) @ self.rotation.T

    def to_lps(self, points_frame) -> np.ndarray:
        """Frame coordinates ``(..., 3)`` → LPS points (mm)."""
        return np.asarray(points_frame, dtype=float) @ self.rotation + self.origin_lps

    def midline_distance_mm(self, points_lps) -> np.ndarray:
        """Unsigned distance (mm) of LPS points from the mid-sagittal plane."""
        return np.abs(self.to_frame(points_lps)[..., 0])

    def as_dict(self) -> dict:
        return {
            "origin_lps": _r(self.origin_lps),
            "x_axis_left": _r(self.x_axis, 6),
            "y_axis_posterior": _r(self.y_axis, 6),
            "z_axis_cranial": _r(self.z_axis, 6),
            "symmetry_score": round(float(self.symmetry_score), 4),
        }


def _disc_normal(labels: Volume, l5_to_l4, max_points: int) -> np.ndarray:
    """Cranial axis: the normal of the L4-5 disc (its least-variance principal axis), oriented towards L4.

    Falls back to the L5 → L4 centroid direction when the disc is not clearly flat (smallest / middle principal
    variance > 0.5) or its normal deviates more than 30° from that direction.
    """
    fallback = _unit(l5_to_l4)
    pts = _label_points(labels, [DISC_L45], max_points)  # max_points None: every disc voxel
    if len(pts) < 20:
        return fallback
    w, v = np.linalg.eigh(np.cov((pts - pts.mean(axis=0)).T))
    n = v[:, 0] if v[:, 0] @ fallback >= 0 else -v[:, 0]
    if w[0] > 0.5 * w[1] or n @ fallback < math.cos(math.radians(30.0)):
        return fallback
    return n


def anatomical_frame(labels: Volume, midline: str = "symmetry", max_points: int = 12000) -> AnatomicalFrame:
    """Anatomical frame at L4-5 from a label map (1 L4, 2 disc, 3 L5).

    Parameters
    ----------
    labels : Volume
        Foramen-task label map, any orientation and spacing.
    midline : str
        ``"symmetry"``: the mid-sagittal plane contains the cranial axis (disc normal) and the centroid of the
        labelled voxels; its rotation about the cranial axis is the one whose mirror reflection best reproduces
        the labels (±20° in 2° steps, then ±2° in 0.25° steps, on ``max_points`` labelled voxels chosen at random
        with seed 0; among scores within 0.1 % of the best, the smallest rotation). ``"axis"``: plane through the centroid normal to LPS x.

    Returns
    -------
    AnatomicalFrame
    """
    _check_labels(labels)
    c4 = _centroid(labels, [L4])
    c5 = _centroid(labels, [L5])
    cd = _centroid(labels, [DISC_L45])
    centre = _centroid(labels, [L4, DISC_L45, L5])
    pts = _label_points(labels, [L4, DISC_L45, L5], max_points)
    lab = _lookup_nearest(labels, pts)
    if np.linalg.norm(c4 - c5) < 1e-6:
        raise InputError("L4 and L5 share one centroid; the label map cannot define the spine axis")
    spine = _disc_normal(labels, c4 - c5, None)
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
    x = best_n if best_n[0] >= 0 else -best_n
    z = _unit(spine - (spine @ x) * x)
    y = np.cross(z, x)
    origin = cd - ((cd - centre) @ x) * x
    return AnatomicalFrame(origin_lps=origin, x_axis=x, y_axis=y, z_axis=z, symmetry_score=best_s)


# ====================================================================== angles
def direction_from_angles(frame: AnatomicalFrame, side: str, medial_deg, craniocaudal_deg) -> np.ndarray:
    """Unit LPS vectors from the target towards the entry for given angles (broadcast).

    ``u = cos(cc) (s sin(m) x + cos(m) y) + sin(cc) z`` with ``s = +1`` for left, ``-1`` for right,
    ``m`` the medial angle from the sagittal plane and ``cc`` the craniocaudal angle (positive: entry cranial).
    """
    s = _side_sign(side)
    m = np.radians(np.asarray(medial_deg, dtype=float))[..., None]
    c = np.radians(np.asarray(craniocaudal_deg, dtype=float))[..., None]
    return np.cos(c) * (s * np.sin(m) * frame.x_axis + np.cos(m) * frame.y_axis) + np.sin(c) * frame.z_axis


def trajectory_angles(frame: AnatomicalFrame, entry_lps, target_lps) -> dict:
    """Angles (degrees) of the channel from ``target_lps`` to ``entry_lps`` in the anatomical frame.

    Returns
    -------
    dict
        ``medial_angle_deg`` (axial, from the sagittal plane), ``medial_angle_from_coronal_deg``,
        ``craniocaudal_angle_deg`` (elevation from the axial plane; + = entry cranial, channel directed caudally),
        ``lateral_view_angle_deg`` (projection on the sagittal plane, from the y axis), ``side`` of the entry.
    """
    u = _unit(np.asarray(entry_lps, dtype=float) - np.asarray(target_lps, dtype=float))
    a, b, c = frame.rotation @ u
    a, b, c = (0.0 if abs(v) < 1e-12 else float(v) for v in (a, b, c))  # no "-0°" from rounding noise
    medial = math.degrees(math.atan2(abs(a), b))
    return {
        "medial_angle_deg": medial,
        "medial_angle_from_coronal_deg": 90.0 - medial,
        "craniocaudal_angle_deg": math.degrees(math.asin(float(np.clip(c, -1.0, 1.0)))),
        "lateral_view_angle_deg": math.degrees(math.atan2(c, b)),
        "side": "left" if a >= 0 else "right",
    }
