"""Inputs and per-level labels of the level-naming L4-5 locator (:mod:`FORAMEN3DLib.level_locator`).

The coarse locator sees a 144 mm window at 3.2 mm and has no notion of *which* level it looks at; on the real slabs
of the training / validation patients it was a level off in 7 of 21. The level locator instead sees **the whole
sagittal field of view** (every row and column of the image, 2 mm pixels) on a few mid-sagittal planes and names
each level: L5, L4, the L4-5 and L5-S1 discs, and "higher vertebra" / "higher disc". It learns where L5 is from the
anatomy a reader uses — the sacrum below it, the count of the levels above — on **real** T2 SPACE slabs.

Level grid (:func:`level_grid`): the canonical ``PIR`` layout of :mod:`FORAMEN3DLib.preprocess` (i anterior →
posterior, j superior → inferior, k left → right) at :data:`LEVEL_SPACING_MM`; rows and columns cover the input's
whole field of view; :data:`N_PLANES` sagittal planes centred on a given left-right position (the coarse locator's
L4-5: the spine's midline). :func:`level_input` smooths before it samples (no aliasing of 0.47 mm pixels), z-scores
inside the imaged voxels and pads rows and columns to a multiple of :data:`PAD_MULTIPLE`.

Labels of a real slab (:func:`slab_level_labels`): the slab masks merge all vertebrae and all discs; levels are
derived as :func:`FORAMEN3DLib.fine_data.slab_labels` derives them (the patient's own SPACE label volume, or
counting vertebral bodies up from the lowest labelled one — SPIDER labels no sacrum), only for patients where that
succeeds; vertebra fragments cut off by the narrow slab (no disc contact) are ignored by the loss.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from spinemorph.errors import InputError
from spinemorph.intensity import zscore
from spinemorph.volume import Volume, resample_to_grid

from . import fine_data as fd
from .preprocess import Reorientation

#: classes of the level locator
BG, L5, L4, DISC_L45, DISC_L5S1, UPPER_VERTEBRA, UPPER_DISC = range(7)
N_CLASSES = 7
CLASS_NAMES = ("background", "L5", "L4", "L4-5 disc", "L5-S1 disc", "higher vertebra", "higher disc")
#: label value the loss ignores (vertebra fragments of unknown level)
IGNORE = 255
#: in-plane pixel and plane spacing (mm)
LEVEL_SPACING_MM = 2.0
#: sagittal planes per input (left-right, centred on the spine): ± 6 mm
N_PLANES = 7
#: rows and columns are zero-padded to a multiple of this (5 poolings of the network)
PAD_MULTIPLE = 32
#: rows / columns kept at most (mm): larger fields of view are cut around their centre
MAX_EXTENT_MM = 480.0


@dataclasses.dataclass(frozen=True, eq=False)
class LevelGrid:
    """Sagittal planes on the canonical layout: ``spacing_mm`` (i, j, k), ``size_ijk``, ``origin_mm``, ``direction``
    (columns = LPS unit vectors of i, j, k)."""

    origin_mm: tuple[float, float, float]
    direction: np.ndarray
    size_ijk: tuple[int, int, int]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return (LEVEL_SPACING_MM,) * 3

    def volume(self, array: np.ndarray) -> Volume:
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction)


def level_grid(image: Volume, lr_centre_lps, n_planes: int = N_PLANES) -> LevelGrid:
    """The level grid of ``image`` (see the module docstring): rows / columns over the whole field of view (at most
    :data:`MAX_EXTENT_MM`), ``n_planes`` planes centred on the left-right position of ``lr_centre_lps``."""
    reo = Reorientation.for_direction(image.direction)
    re = reo.apply(Volume(np.empty(image.shape, np.uint8), image.spacing_mm, image.origin_mm, image.direction))
    d = np.asarray(re.direction, float)
    sp = np.asarray(re.spacing_mm, float)
    n_in = np.asarray(re.size_ijk, float)
    o = np.asarray(re.origin_mm, float)
    s = LEVEL_SPACING_MM
    extent = np.minimum(sp * n_in, MAX_EXTENT_MM)
    n = np.maximum(1, np.round(extent / s)).astype(int)
    centre = o + d @ (sp * (n_in - 1) / 2.0)  # centre of the field of view
    k_mm = float(d[:, 2] @ (np.asarray(lr_centre_lps, float) - centre))  # left-right offset of the spine
    centre = centre + d[:, 2] * k_mm
    size = (int(n[0]), int(n[1]), int(n_planes))
    origin = centre - d @ (s * (np.asarray(size, float) - 1) / 2.0)
    return LevelGrid(tuple(origin), d.copy(), size)


def _smoothed(image: Volume) -> Volume:
    """``image`` (float32) low-pass filtered for sampling at :data:`LEVEL_SPACING_MM` (σ = 0.4 × the downsampling
    factor, in voxels, on every axis finer than the target)."""
    sp = np.asarray(image.spacing_mm, float)  # i, j, k
    sigma_ijk = np.where(sp < LEVEL_SPACING_MM, 0.4 * LEVEL_SPACING_MM / sp, 0.0)
    arr = np.asarray(image.array, np.float32)
    if np.any(sigma_ijk > 0):
        arr = ndimage.gaussian_filter(arr, sigma=tuple(sigma_ijk[::-1]), mode="nearest")
    return image.with_array(arr)


def _around_grid(image: Volume, grid: LevelGrid, margin_mm: float = 6.0) -> Volume:
    """The part of ``image`` (index box) that holds ``grid`` plus ``margin_mm``: only the planes near the midline
    are smoothed (a whole 512 × 640 × 120 SPACE volume took 1.2 s to filter, its midline band a fraction)."""
    d = np.asarray(grid.direction, float)
    n = np.asarray(grid.size_ijk, float) - 1
    corners = np.array([np.asarray(grid.origin_mm) + d @ (LEVEL_SPACING_MM * n * np.array(c))
                        for c in np.ndindex(2, 2, 2)])
    sp = np.asarray(image.spacing_mm, float)
    idx = np.array([image.lps_to_index(c) for c in corners])  # (8, 3) i, j, k
    pad = margin_mm / sp
    lo = np.maximum(np.floor(idx.min(0) - pad), 0).astype(int)
    hi = np.minimum(np.ceil(idx.max(0) + pad) + 1, np.asarray(image.size_ijk)).astype(int)
    if np.any(hi <= lo):
        return image  # the grid lies outside the image: resampling gives the empty field of view
    arr = np.asarray(image.array)[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
    origin = image.index_to_lps(lo.astype(float))
    return Volume(arr, image.spacing_mm, tuple(origin), image.direction)


def level_input(image: Volume, grid: LevelGrid) -> tuple[np.ndarray, np.ndarray]:
    """The network input on ``grid``: (z-scored planes ``(k, H, W)`` float32, imaged-pixel mask ``(k, H, W)``),
    rows / columns zero-padded at their end to a multiple of :data:`PAD_MULTIPLE`. Raises :class:`InputError` when
    no plane of the grid is imaged."""
    img = resample_to_grid(_smoothed(_around_grid(image, grid)), grid.spacing_mm, grid.size_ijk, grid.origin_mm,
                           grid.direction, "linear").array
    fov = resample_to_grid(image.with_array(np.ones(image.shape, np.uint8)), grid.spacing_mm, grid.size_ijk,
                           grid.origin_mm, grid.direction, "nearest").array.astype(bool)
    if not fov.any():
        raise InputError("the image does not cover the spine's mid-sagittal planes; give a sagittal or 3D lumbar MRI")
    x = zscore(img, fov)
    x[~fov] = 0.0
    return pad_planes(x), pad_planes(fov)


def pad_planes(a: np.ndarray, value=0) -> np.ndarray:
    """Zero-pad axes 1 and 2 at their end to a multiple of :data:`PAD_MULTIPLE`."""
    pad = [(0, 0)] + [(0, (-s) % PAD_MULTIPLE) for s in a.shape[1:]]
    return np.pad(a, pad, constant_values=value)


def _by_height(mask: np.ndarray, min_voxels: int):
    return fd._components_by_height(mask, min_voxels)


def slab_level_labels(patient: str, image: Volume, mask: Volume) -> np.ndarray | None:
    """Per-level classes (``BG`` … ``UPPER_DISC``, :data:`IGNORE`) on the slab grid, or None when the slab's levels
    cannot be derived (:func:`FORAMEN3DLib.fine_data.slab_labels` identity ``"merged"``)."""
    from spinemorph import spider

    lab = fd.slab_labels(patient, image, mask)
    if lab.identity == "merged":
        return None
    m = np.asarray(mask.array)
    vert, disc = m == spider.SLAB_VERTEBRA, m == spider.SLAB_DISC
    out = np.zeros(m.shape, np.uint8)
    if lab.identity == "full-mask":
        gen = spider.remap_labels(spider.load_mask(f"{patient}_t2_SPACE"), f"{patient}_t2_SPACE", "generic")
        first = spider.slab_slice_numbers(patient)[0]
        g = np.asarray(gen.array)[first - 1 : first - 1 + m.shape[0]]
        out[vert] = IGNORE
        out[vert & (g == 1)] = L5
        out[vert & (g == 2)] = L4
        out[vert & (g > 2) & (g < 100)] = UPPER_VERTEBRA
        out[disc] = IGNORE
        out[disc & (g == 201)] = DISC_L5S1
        out[disc & (g == 202)] = DISC_L45
        out[disc & (g > 202) & (g < 300)] = UPPER_DISC
        return out
    vox_mm3 = float(np.prod(mask.spacing_mm))
    vlab, vids, vrows = _by_height(vert, int(2000 / vox_mm3))
    dlab, dids, drows = _by_height(disc, int(200 / vox_mm3))
    near_disc = ndimage.binary_dilation(disc, iterations=2)
    bodies = [c for c in vids if (near_disc & (vlab == c)).any()]
    out[vert] = IGNORE  # fragments (no disc contact) and small pieces: level unknown
    out[disc] = IGNORE
    for n, c in enumerate(bodies):
        out[vlab == c] = L5 if n == 0 else L4 if n == 1 else UPPER_VERTEBRA
    l5_row, l4_row = vrows[bodies[0]], vrows[bodies[1]]
    for c in dids:
        r = drows[c]
        out[dlab == c] = DISC_L5S1 if r > l5_row else DISC_L45 if r > l4_row else UPPER_DISC
    return out


def slab_planes(patient: str, allow_held_out: bool = False) -> dict | None:
    """A real slab on its level grid (centred on the slab): ``x`` ``(k, H, W)`` float32, ``y`` per-level classes
    (:data:`IGNORE` outside the imaged planes), ``disc_lps`` the reference L4-5 disc centre, ``grid``; only the
    imaged planes; None when the slab's levels cannot be derived."""
    from spinemorph import spider

    patient = str(patient)
    if not allow_held_out and patient not in spider.train_slab_patients():
        raise InputError(f"slab patient {patient} is held out (or has no slab); it must never be used for training")
    image, mask = spider.load_slab(patient)
    y = slab_level_labels(patient, image, mask)
    if y is None:
        return None
    ref = fd.slab_labels(patient, image, mask).disc_center_lps
    centre = image.index_to_lps((np.asarray(image.size_ijk, float) - 1) / 2.0)
    n_planes = max(1, int(np.floor(image.size_ijk[2] * image.spacing_mm[2] / LEVEL_SPACING_MM)))
    grid = level_grid(image, centre, n_planes)
    x, fov = level_input(image.with_array(np.asarray(image.array, np.float32)), grid)
    yy = resample_to_grid(image.with_array(y), grid.spacing_mm, grid.size_ijk, grid.origin_mm, grid.direction,
                          "nearest", default_value=0).array
    yy = pad_planes(yy.astype(np.uint8))
    yy[~fov] = BG
    keep = fov.reshape(fov.shape[0], -1).mean(1) > 0.2
    return {"x": x[keep], "y": yy[keep], "fov": fov[keep], "disc_lps": np.asarray(ref, float), "grid": grid,
            "case": patient}
