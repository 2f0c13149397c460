"""Body (skin) surface from an MR image, and casting rays from inside the body out to the skin.

The body mask is the part of the field of view occupied by the patient: an intensity threshold (Otsu by
default) on a lightly smoothed image, its largest connected component, a morphological closing and hole
filling (3D, then per axial slice so that dark internal structures such as bowel gas or cortical bone are
kept inside). Its boundary is the skin. The planner (:mod:`FORAMEN3DLib.planning`) casts each trajectory from
its target outwards and takes the first exit from the mask as the skin entry point.

All geometry is in LPS millimetres; masks are :class:`spinemorph.volume.Volume` objects on the image grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import filters, measure

from spinemorph.errors import InputError
from spinemorph.masks import largest_component
from spinemorph.volume import Volume

__all__ = ["body_mask", "skin_surface", "cast_to_skin", "ball_structure"]


def ball_structure(radius_mm: float, spacing_mm) -> np.ndarray:
    """Boolean ellipsoidal structuring element ``[k, j, i]`` of physical radius ``radius_mm``.

    Parameters
    ----------
    radius_mm : float
        Radius in mm.
    spacing_mm : sequence of float
        Voxel spacing (x, y, z) = along (i, j, k).
    """
    sx, sy, sz = (float(s) for s in spacing_mm)
    ri, rj, rk = (max(0, int(np.floor(radius_mm / s))) for s in (sx, sy, sz))
    k, j, i = np.mgrid[-rk : rk + 1, -rj : rj + 1, -ri : ri + 1]
    return (i * sx) ** 2 + (j * sy) ** 2 + (k * sz) ** 2 <= radius_mm**2 + 1e-9


def _axial_axis(vol: Volume) -> int:
    """Array axis (0 = k, 1 = j, 2 = i) whose index direction is closest to LPS z (superior)."""
    col = int(np.argmax(np.abs(vol.direction[2, :])))  # index axis i/j/k with the largest z component
    return 2 - col


def body_mask(
    image: Volume,
    threshold: float | None = None,
    smoothing_mm: float = 1.0,
    closing_mm: float = 3.0,
) -> Volume:
    """Binary mask (uint8, 1 = inside the body) of the patient in ``image``.

    Parameters
    ----------
    image : Volume
        MR image (any orientation and spacing).
    threshold : float, optional
        Intensity separating air from tissue; default: Otsu's threshold of the smoothed image.
    smoothing_mm : float
        Gaussian sigma (mm) applied before thresholding (noise suppression).
    closing_mm : float
        Radius (mm) of the morphological closing that seals thin dark gaps in the body outline.

    Returns
    -------
    Volume
        uint8 mask on the grid of ``image``.

    Raises
    ------
    InputError
        Constant image, or nothing above the threshold.
    """
    a = np.asarray(image.array, dtype=np.float32)
    if a.ndim != 3:
        raise InputError(f"image must be 3D to find the skin, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise InputError("image contains NaN or infinite values; repair it before planning")
    if float(np.ptp(a)) == 0.0:
        raise InputError("image is constant; it holds no body to find the skin in")
    sp = np.asarray(image.spacing_mm, dtype=float)
    if smoothing_mm > 0:
        a = ndimage.gaussian_filter(a, sigma=tuple(smoothing_mm / sp[::-1]))
    t = float(filters.threshold_otsu(a)) if threshold is None else float(threshold)
    mask = a > t
    if not mask.any():
        raise InputError(f"no voxel of the image lies above the body threshold {t:.4g}; pass a lower threshold")
    mask = largest_component(mask, "face")
    if closing_mm > 0:
        st = ball_structure(closing_mm, image.spacing_mm)
        pad = [(s // 2 + 1,) * 2 for s in st.shape]
        mask = ndimage.binary_closing(np.pad(mask, pad), structure=st)[
            tuple(slice(p[0], -p[0]) for p in pad)
        ]
    mask = ndimage.binary_fill_holes(mask)
    ax = _axial_axis(image)
    moved = np.moveaxis(mask, ax, 0)
    for s in range(moved.shape[0]):
        moved[s] = ndimage.binary_fill_holes(moved[s])
    return image.with_array(mask.astype(np.uint8))


def skin_surface(mask: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh of the boundary of a body mask (marching cubes at 0.5).

    Returns
    -------
    points_lps : (N, 3) float array
        Vertices in LPS mm.
    triangles : (M, 3) int array
        Vertex indices of each triangle.
    """
    m = np.pad(np.asarray(mask.array) > 0, 1).astype(np.float32)
    if not m.any():
        raise InputError("body mask is empty; no skin surface to extract")
    verts_kji, faces, _, _ = measure.marching_cubes(m, level=0.5)
    ijk = verts_kji[:, ::-1] - 1.0  # undo padding, reorder to (i, j, k)
    return mask.index_to_lps(ijk), faces.astype(np.int64)


def cast_to_skin(
    mask: Volume,
    starts_lps,
    directions,
    max_length_mm: float = 400.0,
    step_mm: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """March rays from points inside the body outwards and return where they leave the body mask.

    Parameters
    ----------
    mask : Volume
        Body mask (1 inside).
    starts_lps : (N, 3) or (3,) array
        Ray origins in LPS mm (the trajectory targets).
    directions : (N, 3) array
        Ray directions (normalised here).
    max_length_mm : float
        Longest ray.
    step_mm : float
        Marching step; the exit is refined by linear interpolation of the (trilinearly interpolated) mask
        between the last inside and first outside sample, so the exit point is accurate to well under a step.

    Returns
    -------
    exit_lps : (N, 3) array
        Skin point; where the ray left the field of view (or reached ``max_length_mm``) still inside the
        body, the last sample inside the image; where it never entered the body, the start point.
    length_mm : (N,) array
        Distance from start to ``exit_lps``.
    on_skin : (N,) bool array
        True where ``exit_lps`` is a real skin crossing inside the field of view.
    """
    d = np.atleast_2d(np.asarray(directions, dtype=float))
    s = np.asarray(starts_lps, dtype=float)
    s = np.broadcast_to(s, d.shape) if s.ndim == 1 else s
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    n_steps = int(np.ceil(max_length_mm / step_mm)) + 1
    t = np.arange(n_steps) * step_mm
    m = (np.asarray(mask.array) > 0).astype(np.float32)
    shape = np.asarray(m.shape)  # k, j, i
    s_idx = mask.lps_to_index(s)  # (N, 3) i, j, k
    inv = np.linalg.inv(mask.direction * np.asarray(mask.spacing_mm)[None, :])
    d_idx = d @ inv.T
    exit_pts = s.copy()
    lengths = np.zeros(len(d))
    on_skin = np.zeros(len(d), dtype=bool)
    chunk = max(1, 2_000_000 // n_steps)
    for c0 in range(0, len(d), chunk):
        sl = slice(c0, c0 + chunk)
        idx = s_idx[sl, None, :] + t[None, :, None] * d_idx[sl, None, :]  # (n, T, 3) i, j, k
        kji = idx[..., ::-1]
        inb = np.all((kji >= -0.5) & (kji <= shape - 0.5), axis=-1)
        val = ndimage.map_coordinates(m, kji.reshape(-1, 3).T, order=1, mode="nearest").reshape(inb.shape)
        inside = (val >= 0.5) & inb
        for r in range(inside.shape[0]):
            row = inside[r]
            first_in = np.flatnonzero(row)
            if first_in.size == 0:
                continue
            after = np.flatnonzero(~row[first_in[0] :])
            n = c0 + r
            if after.size == 0:  # still inside at the end of the ray
                exit_pts[n] = s[n] + t[-1] * d[n]
                lengths[n] = t[-1]
                continue
            kout = first_in[0] + after[0]
            if not inb[r, kout]:
                # left the image while still inside the body: report the last in-image sample
                exit_pts[n] = s[n] + t[kout - 1] * d[n]
                lengths[n] = t[kout - 1]
                continue
            v0, v1 = val[r, kout - 1], val[r, kout]
            frac = float(np.clip((v0 - 0.5) / (v0 - v1), 0.0, 1.0)) if v0 != v1 else 0.5
            tt = t[kout - 1] + frac * step_mm
            exit_pts[n] = s[n] + tt * d[n]
            lengths[n] = tt
            on_skin[n] = True
    return exit_pts, lengths, on_skin
