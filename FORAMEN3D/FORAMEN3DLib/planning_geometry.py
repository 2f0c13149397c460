"""Small geometry helpers of the planner: rounding for JSON, unit vectors, a basis perpendicular to a direction,
voxel centres / centroids / nearest-voxel lookups of a label map, and the L4 / disc / L5 label-map check.
Part of :mod:`FORAMEN3DLib.planning`; imports no other ``planning_*`` module.
"""

from __future__ import annotations

import numpy as np

from spinemorph.errors import InputError
from spinemorph.labels import CANAL, DISC_L45, L4, L5
from spinemorph.volume import Volume


def _r(v, nd=3):
    return [round(float(x), nd) for x in np.asarray(v).ravel()]


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n == 0, 1.0, n)


def _label_points(labels: Volume, values, max_points: int | None = None, seed: int = 0) -> np.ndarray:
    """LPS centres of voxels whose label is in ``values`` (seeded random subsample to ``max_points``)."""
    a = np.asarray(labels.array)
    mask = np.isin(a, values)
    kji = np.argwhere(mask)
    if max_points is not None and len(kji) > max_points:
        keep = np.random.default_rng(seed).choice(len(kji), size=max_points, replace=False)
        kji = kji[np.sort(keep)]
    return labels.index_to_lps(kji[:, ::-1].astype(float))


def _centroid(labels: Volume, values) -> np.ndarray:
    """Exact LPS centroid of the voxels whose label is in ``values``."""
    kji = np.argwhere(np.isin(np.asarray(labels.array), values)).mean(axis=0)
    return labels.index_to_lps(kji[::-1])


def _lookup_nearest(labels: Volume, points_lps) -> np.ndarray:
    """Label at the nearest voxel of each LPS point (0 outside the image)."""
    a = np.asarray(labels.array)
    idx = np.rint(labels.lps_to_index(points_lps)).astype(np.int64)[..., ::-1]  # k, j, i
    shape = np.asarray(a.shape)
    ok = np.all((idx >= 0) & (idx < shape), axis=-1)
    out = np.zeros(idx.shape[:-1], dtype=a.dtype)
    out[ok] = a[tuple(idx[ok].T)]
    return out


def _check_labels(labels: Volume) -> None:
    a = np.asarray(labels.array)
    if a.ndim != 3:
        raise InputError(f"label map must be 3D, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise InputError("label map holds non-integer values; pass the L4 / L4-5 disc / L5 label map (1, 2, 3)")
    present = set(np.unique(a).tolist())
    missing = [name for v, name in ((L4, "L4"), (DISC_L45, "L4-5 disc"), (L5, "L5")) if v not in present]
    if missing:
        raise InputError(f"label map lacks {', '.join(missing)} (labels 1 L4, 2 L4-5 disc, 3 L5); segment the study first")
    extra = sorted(v for v in present - {0, L4, DISC_L45, L5, CANAL})
    if extra:
        raise InputError(f"label map holds unexpected labels {extra[:6]}; expected 0 background, 1 L4, 2 L4-5 disc, 3 L5"
                         ", optionally 4 dural sac")


def _perpendicular_basis(u) -> tuple[np.ndarray, np.ndarray]:
    u = _unit(u)
    helper = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = _unit(np.cross(u, helper))
    return e1, np.cross(u, e1)
