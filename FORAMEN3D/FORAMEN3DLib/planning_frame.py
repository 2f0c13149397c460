"""Anatomical frame at L4-5 (:class:`AnatomicalFrame`, :func:`anatomical_frame`: mid-sagittal mirror plane, disc
normal; the ``"mirror-symmetry"`` rule of :mod:`FORAMEN3DLib.landmarks_frame`) and the medial / craniocaudal angle
conventions (:func:`direction_from_angles`, :func:`trajectory_angles`).
Part of :mod:`FORAMEN3DLib.planning` (conventions in its docstring).
"""

from __future__ import annotations

import math

import numpy as np

from FORAMEN3DLib.landmarks_frame import SegmentFrame, segment_frame
from FORAMEN3DLib.planning_config import _side_sign
from FORAMEN3DLib.planning_geometry import _unit
from spinemorph.volume import Volume

# ====================================================================== anatomical frame
#: the planner's frame: the one segment frame of FORAMEN3D (:mod:`FORAMEN3DLib.landmarks_frame`), built with the
#: ``"mirror-symmetry"`` axis rule (its former name; ``AnatomicalFrame(origin, x, y, z, symmetry_score)`` still works)
AnatomicalFrame = SegmentFrame


def anatomical_frame(labels: Volume, midline: str = "symmetry", max_points: int = 12000) -> AnatomicalFrame:
    """Anatomical frame at L4-5 from a label map (1 L4, 2 disc, 3 L5): the ``"mirror-symmetry"`` rule of the one
    segment-frame estimator (:func:`FORAMEN3DLib.landmarks_frame.segment_frame`; parameters as
    :func:`FORAMEN3DLib.landmarks_frame.mirror_symmetry_frame`); the frame records the rule and any fallback in
    ``axis_rule``.
    """
    return segment_frame(labels, "mirror-symmetry", midline=midline, max_points=max_points)


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
