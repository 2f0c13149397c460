"""Output grids of the synthesis: :class:`Grid` (geometry without an array) and its builders.

:func:`grid_like` (keep an input grid), :func:`iso_grid` (isotropic, fixed orientation such as "PIR" like T2 SPACE,
optionally cropped), :func:`axial_grid` (one or more axial planes, any normal), :func:`axial_stack_grid`;
:func:`world_bbox` (LPS bounding box of a volume or of a mask on it). Re-exported by :mod:`spinemorph.synth`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from spinemorph.volume import Volume


@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """An output sampling grid (geometry of a :class:`Volume` without voxel values).

    Attributes
    ----------
    size_ijk : tuple of int
        Voxels along i, j, k.
    spacing_mm, origin_mm : tuple of float
        As in :class:`Volume` (LPS).
    direction : numpy.ndarray
        3×3, column c = LPS direction of index axis c.
    """

    size_ijk: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]
    direction: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "size_ijk", tuple(int(s) for s in self.size_ijk))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "origin_mm", tuple(float(s) for s in self.origin_mm))
        object.__setattr__(self, "direction", np.asarray(self.direction, dtype=float).reshape(3, 3))
        if min(self.size_ijk) < 1 or min(self.spacing_mm) <= 0:
            raise ValueError(f"invalid grid size {self.size_ijk} / spacing {self.spacing_mm}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(k, j, i)``."""
        i, j, k = self.size_ijk
        return (k, j, i)

    @property
    def center_lps(self) -> np.ndarray:
        c = (np.asarray(self.size_ijk, dtype=float) - 1) / 2
        return np.asarray(self.origin_mm) + self.direction @ (np.asarray(self.spacing_mm) * c)

    def index_to_lps(self, ijk) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction * np.asarray(self.spacing_mm)[None, :]).T + np.asarray(self.origin_mm)

    def volume(self, array: np.ndarray) -> Volume:
        """A :class:`Volume` with this geometry and ``array`` (shape :attr:`shape`)."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} != grid shape {self.shape}")
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction)


def grid_like(vol: Volume) -> Grid:
    """The grid of ``vol``."""
    return Grid(vol.size_ijk, vol.spacing_mm, vol.origin_mm, vol.direction)


#: LPS direction matrices of common orientations (columns = i, j, k directions)
ORIENTATIONS = {
    "LPS": np.eye(3),
    "PIR": np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
}


def world_bbox(vol: Volume | Grid, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box (min, max) of voxel centres of ``vol`` (or of the voxels in ``mask``)."""
    if mask is not None and mask.any():
        idx = np.argwhere(mask)  # k, j, i
        lo, hi = idx.min(0)[::-1], idx.max(0)[::-1]
    else:
        lo = np.zeros(3)
        hi = np.asarray(vol.size_ijk, dtype=float) - 1
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])], float)
    pts = vol.index_to_lps(corners)
    return pts.min(0), pts.max(0)


def iso_grid(
    vol: Volume | Grid,
    spacing_mm: float = 0.8,
    orientation: str = "PIR",
    center_lps=None,
    crop_shape: tuple[int, int, int] | None = None,
) -> Grid:
    """An isotropic grid in a fixed orientation.

    Without ``crop_shape`` it covers the LPS bounding box of ``vol``; with ``crop_shape`` (array order ``(k, j, i)``)
    it is that many voxels centred on ``center_lps`` (default: centre of ``vol``).
    """
    direction = ORIENTATIONS[orientation]
    sp = float(spacing_mm)
    if crop_shape is None:
        lo, hi = world_bbox(vol)
        ext_local = np.abs(direction.T @ (hi - lo))
        size = np.maximum(1, np.round(ext_local / sp).astype(int) + 1)
        center = (lo + hi) / 2 if center_lps is None else np.asarray(center_lps, float)
    else:
        size = np.asarray(crop_shape[::-1], dtype=int)
        if center_lps is None:
            lo, hi = world_bbox(vol)
            center = (lo + hi) / 2
        else:
            center = np.asarray(center_lps, float)
    origin = center - direction @ (sp * (size - 1) / 2)
    return Grid(tuple(size), (sp, sp, sp), tuple(origin), direction)


def _axial_frame(normal) -> np.ndarray:
    """Direction matrix of an axial plane: k = ``normal`` (≈ superior), i ≈ patient left, j ≈ posterior."""
    n = np.asarray(normal, dtype=float)
    n = n / np.linalg.norm(n)
    if n[2] < 0:
        n = -n
    left = np.array([1.0, 0.0, 0.0])
    i_dir = left - n * (n @ left)
    if np.linalg.norm(i_dir) < 1e-6:
        raise ValueError("axial plane normal must not be the left-right axis")
    i_dir /= np.linalg.norm(i_dir)
    j_dir = np.cross(n, i_dir)
    return np.stack([i_dir, j_dir, n], axis=1)


def axial_grid(
    center_lps,
    size: tuple[int, int] = (320, 320),
    pixel_mm: float = 0.5,
    normal=(0.0, 0.0, 1.0),
    n_slices: int = 1,
    slice_spacing_mm: float = 4.0,
    in_plane_angle_deg: float = 0.0,
) -> Grid:
    """Axial plane(s) centred on ``center_lps``.

    Parameters
    ----------
    center_lps : array-like
        LPS point at the centre of the (middle) plane.
    size : (rows, cols)
        In-plane size; rows run anterior -> posterior (j), columns right -> left (i), as a DICOM axial image.
    pixel_mm : float
        In-plane pixel size.
    normal : array-like
        Plane normal: the patient S-I axis ``(0, 0, 1)`` or a tilted axis (e.g. the local canal tangent).
    n_slices, slice_spacing_mm : int, float
        Number of parallel planes and their distance.
    in_plane_angle_deg : float
        Rotation of the in-plane axes about the normal.
    """
    d = _axial_frame(normal)
    if in_plane_angle_deg:
        a = math.radians(in_plane_angle_deg)
        rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
        d = d @ rot
    rows, cols = int(size[0]), int(size[1])
    sp = np.array([pixel_mm, pixel_mm, slice_spacing_mm], dtype=float)
    n = np.array([cols, rows, int(n_slices)])
    origin = np.asarray(center_lps, float) - d @ (sp * (n - 1) / 2)
    return Grid(tuple(n), tuple(sp), tuple(origin), d)


def axial_stack_grid(vol: Volume | Grid, pixel_mm: float | None = None, slice_spacing_mm: float = 4.0) -> Grid:
    """Axial planes (LPS orientation) covering the LPS bounding box of ``vol``.

    ``pixel_mm`` defaults to the finest spacing of ``vol``.
    """
    lo, hi = world_bbox(vol)
    p = float(pixel_mm or min(vol.spacing_mm))
    size = [max(1, int(round((hi[0] - lo[0]) / p)) + 1), max(1, int(round((hi[1] - lo[1]) / p)) + 1)]
    nk = max(1, int(round((hi[2] - lo[2]) / slice_spacing_mm)) + 1)
    c = (lo + hi) / 2
    return axial_grid(c, (size[1], size[0]), p, (0, 0, 1), nk, slice_spacing_mm)
