"""Channel geometry for display: the channel cylinder as a triangle mesh (:func:`channel_mesh`, written as STL / VTP
by :func:`write_mesh`) and the reformat planes along a trajectory (:func:`reformat_planes`). Part of
:mod:`FORAMEN3DLib.planning`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from FORAMEN3DLib.planning_frame import AnatomicalFrame
from FORAMEN3DLib.planning_geometry import _perpendicular_basis, _r, _unit
from spinemorph.errors import InputError
from spinemorph.polydata import polydata_from_triangles


# ====================================================================== geometry for the GUI
def channel_mesh(entry_lps, target_lps, diameter_mm: float, n_sides: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Closed triangle mesh of the channel cylinder (outward-facing triangles).

    Returns
    -------
    points_lps : (2 n_sides + 2, 3) array
        Ring at the entry, ring at the target, then the two cap centres.
    triangles : (4 n_sides, 3) int array
    """
    a = np.asarray(entry_lps, dtype=float)
    b = np.asarray(target_lps, dtype=float)
    if np.linalg.norm(b - a) <= 0:
        raise InputError("entry and target coincide; cannot build a channel mesh")
    u = _unit(b - a)
    e1, e2 = _perpendicular_basis(u)
    th = 2 * np.pi * np.arange(n_sides) / n_sides
    ring = (diameter_mm / 2.0) * (np.cos(th)[:, None] * e1 + np.sin(th)[:, None] * e2)
    pts = np.vstack([a + ring, b + ring, a[None], b[None]])
    i = np.arange(n_sides)
    j = (i + 1) % n_sides
    ca, cb = 2 * n_sides, 2 * n_sides + 1
    # e1 × e2 = u, so counter-clockwise rings seen from +u; side quads (a_i, a_j, b_j, b_i) face outwards
    side1 = np.stack([i, j, n_sides + j], axis=1)
    side2 = np.stack([i, n_sides + j, n_sides + i], axis=1)
    cap_a = np.stack([np.full(n_sides, ca), j, i], axis=1)  # faces -u
    cap_b = np.stack([np.full(n_sides, cb), n_sides + i, n_sides + j], axis=1)  # faces +u
    return pts, np.vstack([side1, side2, cap_a, cap_b]).astype(np.int64)


def write_mesh(points_lps, triangles, path) -> Path:
    """Write the triangle mesh ``points_lps`` ``(N, 3)`` (LPS mm) + ``triangles`` ``(M, 3)`` atomically as ``.stl``
    (binary), ``.vtp`` or ``.obj`` (:func:`FORAMEN3DLib.meshes.write_mesh`: the STL header and the VTP field data
    ``coordinate_system`` state ``LPS``; recent 3D Slicer versions read model files without a coordinate-system
    marker as LPS, check this in Slicer before relying on it)."""
    from FORAMEN3DLib.meshes import write_mesh as write_polydata

    return write_polydata(polydata_from_triangles(points_lps, triangles), path, "LPS")


def reformat_planes(frame: AnatomicalFrame, entry_lps, target_lps) -> dict:
    """Reformat planes along a trajectory (origin at the target, unit LPS vectors).

    Returns
    -------
    dict
        ``axial_oblique`` (contains the channel; closest to the axial plane, shows the medial angle),
        ``sagittal_oblique`` (contains the channel and the cranial direction, shows the craniocaudal angle),
        ``en_face`` (perpendicular to the channel, looking down it). Each: ``origin_lps``, ``normal``,
        ``axis_u`` and ``axis_v`` (in-plane, right-handed: ``axis_u × axis_v = normal``).
    """
    t = np.asarray(target_lps, dtype=float)
    u = _unit(np.asarray(entry_lps, dtype=float) - t)
    zc = frame.z_axis - (frame.z_axis @ u) * u
    if np.linalg.norm(zc) < 1e-6:
        zc = frame.y_axis - (frame.y_axis @ u) * u
    v = _unit(zc)
    w = np.cross(u, v)

    def plane(a1, a2):
        return {"origin_lps": _r(t), "normal": _r(np.cross(a1, a2), 6), "axis_u": _r(a1, 6), "axis_v": _r(a2, 6)}

    return {"axial_oblique": plane(u, w), "sagittal_oblique": plane(u, v), "en_face": plane(w, v)}
