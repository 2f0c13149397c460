"""Geometry engine of the planner: :class:`PlanningScene` (labels cropped around L4-L5 with a signed distance to
bone; channel volumes by sunflower sampling of the cylinder, clearance along the axis) and
:func:`cylinder_intersection_mm3`. Part of :mod:`FORAMEN3DLib.planning` (accuracy notes in its docstring).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from FORAMEN3DLib.planning_geometry import _perpendicular_basis
from spinemorph.errors import InputError
from spinemorph.labels import CANAL, DISC_L45, L4, L5
from spinemorph.volume import Volume

# ====================================================================== geometry engine
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
N_COUNTED = CANAL + 1  # channel volumes are counted for labels 0..4 (4: dural sac, when the label map has it)


def _sunflower(radius_mm: float, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Equal-area points filling a disc of radius ``radius_mm`` about ``spacing_mm`` apart: polar ``(rho, theta)``."""
    n = max(7, int(math.ceil(math.pi * radius_mm**2 / spacing_mm**2)))
    k = np.arange(n) + 0.5
    return radius_mm * np.sqrt(k / n), k * _GOLDEN_ANGLE



class PlanningScene:
    """Labels cropped around L4-L5 with a signed distance to bone, for fast channel evaluation.

    Parameters
    ----------
    labels : Volume
        Foramen-task labels (1 L4, 2 disc, 3 L5, optionally 4 dural sac); bone = 1 and 3.
    crop_margin_mm : float
        Margin kept around the labelled voxels.
    """

    def __init__(self, labels: Volume, crop_margin_mm: float = 20.0):
        a = np.asarray(labels.array)
        nz = np.argwhere(a > 0)
        if nz.size == 0:
            raise InputError("label map is empty; nothing to plan against")
        sp_kji = np.asarray(labels.spacing_mm, dtype=float)[::-1]
        pad = np.ceil(crop_margin_mm / sp_kji).astype(int)
        lo = np.maximum(nz.min(axis=0) - pad, 0)
        hi = np.minimum(nz.max(axis=0) + pad + 1, a.shape)
        crop = np.ascontiguousarray(a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
        if crop.min() < 0 or crop.max() > 255:
            raise InputError(f"label map holds values outside 0-255 ({crop.min()}..{crop.max()}); expected 0 background, 1 L4, 2 L4-5 disc, 3 L5, 4 dural sac")
        crop = crop.astype(np.uint8)
        origin = labels.index_to_lps(lo[::-1].astype(float))
        self.labels = Volume(crop, labels.spacing_mm, tuple(origin), labels.direction)
        self.margin_mm = float(crop_margin_mm)
        self._distance_fields(crop, sp_kji)
        m = self.labels.direction * np.asarray(self.labels.spacing_mm)[None, :]
        self._inv = np.linalg.inv(m)
        self._origin = np.asarray(self.labels.origin_mm)
        self._flat = crop.ravel()
        self._shape = np.asarray(crop.shape)
        self._strides = np.array([crop.shape[1] * crop.shape[2], crop.shape[2], 1], dtype=np.int64)
        nz_c = nz - lo
        self._label_lo_ijk = nz_c.min(axis=0)[::-1].astype(float)
        self._label_hi_ijk = nz_c.max(axis=0)[::-1].astype(float)

    def _distance_fields(self, crop: np.ndarray, sp_kji: np.ndarray) -> None:
        """Nearest-bone-voxel map (outside bone) and signed distance (mm, + outside) to the bone voxel surfaces.

        Distances are to the nearest bone voxel's *box* (centre ± half a voxel), so faces lie where the voxel
        boundaries are, not at voxel centres.
        """
        bone = (crop == L4) | (crop == L5)
        self.signed_distance_mm = np.full(crop.shape, self.margin_mm, dtype=np.float32)
        self._nearest_bone = None
        if not bone.any():
            return
        grid = np.indices(crop.shape, dtype=np.int32)
        half = (sp_kji / 2).astype(np.float32)[:, None]
        spf = sp_kji.astype(np.float32)[:, None]
        _, ind = ndimage.distance_transform_edt(~bone, sampling=sp_kji, return_indices=True)
        out = ~bone
        gap = np.maximum(np.abs(ind[:, out] - grid[:, out]).astype(np.float32) * spf - half, 0.0)
        self.signed_distance_mm[out] = np.sqrt((gap**2).sum(axis=0))
        self._nearest_bone = ind.astype(np.int32, copy=False)
        if out.any():
            _, ind_in = ndimage.distance_transform_edt(bone, sampling=sp_kji, return_indices=True)
            gap = np.maximum(np.abs(ind_in[:, bone] - grid[:, bone]).astype(np.float32) * spf - half, 0.0)
            self.signed_distance_mm[bone] = -np.sqrt((gap**2).sum(axis=0))
            del ind_in
        else:
            self.signed_distance_mm[bone] = -self.margin_mm

    # ------------------------------------------------------------------ lookups
    def to_index(self, points_lps) -> np.ndarray:
        """Continuous (i, j, k) indices in the crop of LPS points."""
        return (np.asarray(points_lps, dtype=float) - self._origin) @ self._inv.T

    def labels_at(self, points_lps) -> np.ndarray:
        """Nearest-voxel labels (0 outside the crop)."""
        return self._labels_at_index(self.to_index(points_lps))

    def _labels_at_index(self, ijk) -> np.ndarray:
        kji = np.rint(ijk[..., ::-1]).astype(np.int64)
        ok = np.all((kji >= 0) & (kji < self._shape), axis=-1)
        out = np.zeros(kji.shape[:-1], dtype=np.uint8)
        out[ok] = self._flat[kji[ok] @ self._strides]
        return out

    def distance_at(self, points_lps) -> np.ndarray:
        """Signed distance (mm) from LPS points to the bone voxel surfaces; the crop margin outside the crop.

        Outside bone the distance is exact to the voxelised bone: the minimum distance from the point to the
        boxes of the nearest bone voxels of the 8 surrounding voxel centres. Inside bone it is the trilinear
        interpolation of the signed distance map (negative).
        """
        ijk = self.to_index(points_lps)
        shp = ijk.shape[:-1]
        ijk = ijk.reshape(-1, 3)
        kji = ijk[:, ::-1]
        interp = ndimage.map_coordinates(self.signed_distance_mm, kji.T, order=1, mode="constant", cval=self.margin_mm)
        if self._nearest_bone is None:
            return interp.reshape(shp)
        sp = np.asarray(self.labels.spacing_mm)[::-1]
        base = np.floor(kji).astype(np.int64)
        best = np.full(len(kji), np.inf)
        any_in = np.zeros(len(kji), dtype=bool)
        for corner in np.ndindex(2, 2, 2):
            nb = base + np.asarray(corner)
            ok = np.all((nb >= 0) & (nb < self._shape), axis=1)
            if not ok.any():
                continue
            any_in |= ok
            c = self._nearest_bone[:, nb[ok, 0], nb[ok, 1], nb[ok, 2]].T  # nearest bone voxel (k, j, i)
            gap = np.maximum(np.abs(kji[ok] - c) - 0.5, 0.0) * sp
            best[ok] = np.minimum(best[ok], np.sqrt((gap**2).sum(axis=1)))
        in_bone = self._labels_at_index(ijk)
        in_bone = (in_bone == L4) | (in_bone == L5)
        out = np.where(any_in, best, self.margin_mm)
        out = np.where(in_bone, np.minimum(interp, 0.0), out)
        return out.reshape(shp)

    # ------------------------------------------------------------------ channels
    def _segment_in_labels(self, start, u, t_lo, t_hi, radius):
        """Sub-range of [t_lo, t_hi] where the axis start + t u lies within the labels' box grown by ``radius``."""
        s_idx = self.to_index(start)
        d_idx = u @ self._inv.T
        grow = radius / np.asarray(self.labels.spacing_mm) + 1.0
        lo = self._label_lo_ijk - 0.5 - grow
        hi = self._label_hi_ijk + 0.5 + grow
        t0, t1 = float(t_lo), float(t_hi)
        for ax in range(3):
            if abs(d_idx[ax]) < 1e-12:
                if s_idx[ax] < lo[ax] or s_idx[ax] > hi[ax]:
                    return None
                continue
            ta = (lo[ax] - s_idx[ax]) / d_idx[ax]
            tb = (hi[ax] - s_idx[ax]) / d_idx[ax]
            t0 = max(t0, min(ta, tb))
            t1 = min(t1, max(ta, tb))
        return (t0, t1) if t1 > t0 else None

    def _cylinder_counts(self, start, u, t_lo, t_hi, radius_mm, axial_step_mm, section_spacing_mm) -> np.ndarray:
        """Volume (mm³) per label 0..4 (4: dural sac) of the cylinder part start + t u, t in [t_lo, t_hi]."""
        out = np.zeros(N_COUNTED)
        seg = self._segment_in_labels(start, u, t_lo, t_hi, radius_mm)
        if seg is None:
            return out
        t0, t1 = seg
        n_t = max(1, int(math.ceil((t1 - t0) / axial_step_mm)))
        dt = (t1 - t0) / n_t
        t = t0 + (np.arange(n_t) + 0.5) * dt
        rho, theta = _sunflower(radius_mm, section_spacing_mm)
        e1, e2 = _perpendicular_basis(u)
        # the pattern turns by the golden angle from one cross-section to the next (no axial aliasing)
        ang = theta[None, :] + (np.arange(n_t) * _GOLDEN_ANGLE)[:, None]
        s_idx = self.to_index(start)
        d_idx = u @ self._inv.T
        e1_idx, e2_idx = e1 @ self._inv.T, e2 @ self._inv.T
        rc, rs = rho * np.cos(ang), rho * np.sin(ang)  # (n_t, P)
        ijk = s_idx + t[:, None, None] * d_idx + rc[..., None] * e1_idx + rs[..., None] * e2_idx
        labs = self._labels_at_index(ijk).ravel()
        w = math.pi * radius_mm**2 / len(rho) * dt
        return np.bincount(labs, minlength=N_COUNTED)[:N_COUNTED] * w

    def channel_volumes_mm3(
        self,
        start_lps,
        end_lps,
        radius_mm: float,
        axial_step_mm: float = 0.5,
        section_spacing_mm: float = 0.4,
        split_mm: float | None = None,
    ) -> np.ndarray:
        """Volume (mm³) of each label 0..4 inside the cylinder of ``radius_mm`` from ``start_lps`` to ``end_lps``.

        With ``split_mm`` (distance from the start along the axis), returns a (2, 5) array: the part before the
        split (row 0) and after it (row 1), each sampled on its own so that the split is exact. Index 0
        (background) only counts sample points near the labels; use indices 1-3 (bone, disc) and 4 (dural sac).
        """
        start = np.asarray(start_lps, dtype=float)
        vec = np.asarray(end_lps, dtype=float) - start
        length = float(np.linalg.norm(vec))
        if length <= 0:
            return np.zeros(N_COUNTED) if split_mm is None else np.zeros((2, N_COUNTED))
        u = vec / length
        args = (radius_mm, axial_step_mm, section_spacing_mm)
        if split_mm is None:
            return self._cylinder_counts(start, u, 0.0, length, *args)
        sp = float(np.clip(split_mm, 0.0, length))
        return np.stack([self._cylinder_counts(start, u, 0.0, sp, *args), self._cylinder_counts(start, u, sp, length, *args)])

    def axis_clearance_mm(self, start_lps, end_lps, radius_mm: float, axis_step_mm: float = 0.25) -> tuple[float, np.ndarray]:
        """Minimum distance from the channel wall to bone along the axis, and where it occurs (LPS).

        Negative values mean the channel cuts into bone (by that depth at the axis's closest point).
        """
        start = np.asarray(start_lps, dtype=float)
        end = np.asarray(end_lps, dtype=float)
        length = float(np.linalg.norm(end - start))
        n = max(2, int(math.ceil(length / axis_step_mm)) + 1)
        pts = start + np.linspace(0.0, 1.0, n)[:, None] * (end - start)
        d = self.distance_at(pts)
        i = int(np.argmin(d))
        return float(d[i] - radius_mm), pts[i]


def cylinder_intersection_mm3(
    labels: Volume,
    start_lps,
    end_lps,
    diameter_mm: float,
    axial_step_mm: float = 0.5,
    section_spacing_mm: float = 0.4,
) -> dict:
    """Volume (mm³) of each non-zero label of ``labels`` inside a cylinder (sampling in physical space).

    Parameters
    ----------
    labels : Volume
        Any integer label map (values 1-3 are reported; others are ignored).
    start_lps, end_lps : (3,) array
        Axis end points (LPS mm).
    diameter_mm : float
        Cylinder diameter.

    Returns
    -------
    dict
        ``{1: mm3, 2: mm3, 3: mm3}``.
    """
    a = np.asarray(labels.array)
    kept = np.where(np.isin(a, (L4, DISC_L45, L5)), a, 0).astype(np.uint8)  # other labels are ignored, not folded into L5
    scene = PlanningScene(labels.with_array(kept), crop_margin_mm=diameter_mm)
    v = scene.channel_volumes_mm3(start_lps, end_lps, diameter_mm / 2.0, axial_step_mm, section_spacing_mm)
    return {1: float(v[1]), 2: float(v[2]), 3: float(v[3])}
