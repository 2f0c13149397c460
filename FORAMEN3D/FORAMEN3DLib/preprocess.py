"""Preprocessing of a lumbar MR volume for the 3D foramen U-Net, and its exact inverse.

Source method (3D T2 SPACE, 0.8 mm isotropic, 320×320 sagittal slices): crop rows H/4−10 … 3H/4+10 and columns
W/4−20 … 3W/4, z-score, zero-pad to 128×180×180. We pad to 128×192×192 (four 2× poolings divide it evenly).

Orientation used here ("canonical grid")
---------------------------------------
The canonical grid is the standard sagittal DICOM layout, orientation code ``PIR``:

* index ``i`` (array axis 2, image **column**) runs anterior → posterior (+y in LPS),
* index ``j`` (array axis 1, image **row**) runs superior → inferior (−z),
* index ``k`` (array axis 0, **sagittal slice**) runs left → right (−x).

So in the array ``[k, j, i]`` the source method's *rows* are axis 1 (``j``, H = 320) and its *columns* axis 2
(``i``, W = 320): rows 70 … 249 and columns 60 … 239 (end exclusive: 180 each) of the 320×320 in-plane grid.

Generalisation to other inputs
------------------------------
1. The volume is re-oriented to ``PIR`` by an exact axis permutation / flip (no interpolation; an oblique
   acquisition keeps its obliquity — the canonical direction is the input direction, permuted).
2. The canonical in-plane grid is 320×320 voxels of 0.8 mm (a 256×256 mm field of view) **centred on the centre
   of the input's field of view**; the slice axis keeps the input's extent (K = extent / 0.8 slices). The crop
   window is therefore a fixed physical window: 144 mm (S-I) centred on the field-of-view centre × 144 mm (A-P)
   whose centre lies 8.0 mm anterior of it (columns 60-239 centre on 149.5, the grid on 159.5: 10 voxels) ×
   102.4 mm (128 slices, L-R) centred on the field-of-view centre.
   Inputs larger than the window are cropped, smaller ones padded with zeros.
3. If the input already has 0.8 mm isotropic spacing, the window is an integer sub-block of the (re-oriented)
   input (for odd sizes the centre is rounded down to a voxel): pure indexing, forward and inverse exact.
   Otherwise the input is resampled once, directly onto the 128×180×180 crop grid (SimpleITK, linear for images,
   nearest for label maps).
4. Z-score over the voxels that lie inside the input's field of view (outside stays 0, like the zero padding).
5. Symmetric zero padding of rows and columns 180 → 192 (6 + 6): array ``(128, 192, 192)``.

The inverse (:meth:`Preprocessed.labels_to_input`, :meth:`Preprocessed.probabilities_to_input`) removes the
padding and maps the crop back onto the input grid: by indexing when aligned, otherwise by nearest-neighbour
resampling of a label map or label-aware resampling of class probabilities (each channel linearly, then argmax).
Voxels of the input outside the crop window are background (0).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from spinemorph.errors import InputError
from spinemorph.intensity import zscore
from spinemorph.volume import Volume, check_3d_resolution, check_geometry, check_intensities, resample_to_grid

#: canonical isotropic spacing (mm)
CANONICAL_SPACING_MM = 0.8
#: canonical in-plane matrix of the source method (H = W = 320)
CANONICAL_INPLANE = 320
#: rows (array axis 1, index j, superior→inferior): H/4−10 … 3H/4+10, end exclusive
CROP_ROWS = (CANONICAL_INPLANE // 4 - 10, 3 * CANONICAL_INPLANE // 4 + 10)
#: columns (array axis 2, index i, anterior→posterior): W/4−20 … 3W/4, end exclusive
CROP_COLS = (CANONICAL_INPLANE // 4 - 20, 3 * CANONICAL_INPLANE // 4)
#: sagittal slices kept (array axis 0, index k, left→right), centred
N_SLICES = 128
#: crop shape, array order (k, j, i)
CROP_SHAPE = (N_SLICES, CROP_ROWS[1] - CROP_ROWS[0], CROP_COLS[1] - CROP_COLS[0])
#: network input shape after zero padding, array order (k, j, i)
PADDED_SHAPE = (128, 192, 192)
#: zero padding before each array axis (k, j, i); the same amount (or one more) follows
PAD_BEFORE = tuple((p - c) // 2 for p, c in zip(PADDED_SHAPE, CROP_SHAPE))
#: canonical orientation code and its axis directions (LPS), columns i, j, k
CANONICAL_CODE = "PIR"
CANONICAL_AXES = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

_ALIGN_TOL = 1e-4


# ---------------------------------------------------------------------- re-orientation (exact)
@dataclasses.dataclass(frozen=True)
class Reorientation:
    """Exact axis permutation / flip taking an input volume to the canonical ``PIR`` layout.

    ``source[n]`` is the input index axis (0 = i, 1 = j, 2 = k) that becomes canonical index axis ``n``;
    ``flip[n]`` says whether it is reversed.
    """

    source: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @classmethod
    def for_direction(cls, direction: np.ndarray) -> Reorientation:
        d = np.asarray(direction, dtype=float)
        best, best_score = None, -1.0
        for perm in itertools.permutations(range(3)):
            score = sum(abs(float(CANONICAL_AXES[:, n] @ d[:, perm[n]])) for n in range(3))
            if score > best_score + 1e-9:
                best, best_score = perm, score
        flips = tuple(bool(CANONICAL_AXES[:, n] @ d[:, best[n]] < 0) for n in range(3))
        return cls(tuple(int(p) for p in best), flips)

    def apply(self, vol: Volume) -> Volume:
        """Re-oriented copy of ``vol`` (a view of its array; no interpolation)."""
        src, flip = self.source, self.flip
        arr = np.transpose(vol.array, [2 - src[2], 2 - src[1], 2 - src[0]])
        for n in range(3):
            if flip[n]:
                arr = np.flip(arr, axis=2 - n)
        sp = np.asarray(vol.spacing_mm)
        size = np.asarray(vol.size_ijk)
        origin = np.asarray(vol.origin_mm, dtype=float).copy()
        direction = np.zeros((3, 3))
        for n in range(3):
            col = vol.direction[:, src[n]]
            if flip[n]:
                origin += col * sp[src[n]] * (size[src[n]] - 1)
                col = -col
            direction[:, n] = col
        return Volume(arr, tuple(sp[list(src)]), tuple(origin), direction)

    def invert_array(self, arr: np.ndarray) -> np.ndarray:
        """Map an array on the re-oriented grid back to the input's array layout (exact)."""
        src, flip = self.source, self.flip
        for n in range(3):
            if flip[n]:
                arr = np.flip(arr, axis=2 - n)
        # arr axes are (src[2], src[1], src[0]) in input-index terms; input array axis a holds index 2 - a
        order = [2 - src[2], 2 - src[1], 2 - src[0]]  # input array axis held by each current axis
        inverse = [order.index(a) for a in range(3)]
        return np.transpose(arr, inverse)


# ---------------------------------------------------------------------- geometry of the crop
@dataclasses.dataclass(frozen=True, eq=False)
class CropGeometry:
    """Where the 128×180×180 crop lies, in LPS and relative to the (re-oriented) input.

    Attributes
    ----------
    origin_mm, direction :
        LPS geometry of the crop grid (spacing 0.8 mm isotropic, size ``CROP_SHAPE``).
    aligned : bool
        True when the crop grid coincides with input voxels (0.8 mm input): then ``start_index`` (i, j, k,
        integers, may be negative) is the input voxel (re-oriented) of crop voxel (0, 0, 0).
    """

    origin_mm: tuple[float, float, float]
    direction: np.ndarray
    aligned: bool
    start_index: tuple[int, int, int] | None

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return (CANONICAL_SPACING_MM,) * 3

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        return (CROP_SHAPE[2], CROP_SHAPE[1], CROP_SHAPE[0])

    def volume(self, array: np.ndarray) -> Volume:
        """A :class:`Volume` on the crop grid holding ``array`` (shape ``CROP_SHAPE``)."""
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction)


def crop_geometry(reoriented: Volume) -> CropGeometry:
    """Crop grid of a volume already in the canonical ``PIR`` layout (see the module docstring)."""
    sp = np.asarray(reoriented.spacing_mm, dtype=float)
    n_in = np.asarray(reoriented.size_ijk, dtype=float)
    d = reoriented.direction
    c = CANONICAL_SPACING_MM
    n_slices = max(1, int(round(n_in[2] * sp[2] / c)))
    full = np.array([CANONICAL_INPLANE, CANONICAL_INPLANE, n_slices], dtype=float)
    start = np.array([CROP_COLS[0], CROP_ROWS[0], (n_slices - N_SLICES) // 2], dtype=float)
    origin = np.asarray(reoriented.origin_mm, dtype=float)
    if np.all(np.abs(sp - c) < _ALIGN_TOL):
        offset = np.floor((n_in - full) / 2.0)
        start_index = offset + start
        crop_origin = origin + d @ (sp * start_index)
        return CropGeometry(tuple(crop_origin), d.copy(), True, tuple(int(v) for v in start_index))
    centre = origin + d @ (sp * (n_in - 1) / 2.0)
    full_origin = centre - d @ (c * (full - 1) / 2.0)
    crop_origin = full_origin + d @ (c * start)
    return CropGeometry(tuple(crop_origin), d.copy(), False, None)


def _paste_window(src: np.ndarray, start_kji, shape_kji, fill=0) -> np.ndarray:
    """``src[start : start + shape]`` with out-of-range parts filled with ``fill``."""
    out = np.full(shape_kji, fill, dtype=src.dtype)
    s_sl, d_sl = [], []
    for a in range(3):
        lo, hi = start_kji[a], start_kji[a] + shape_kji[a]
        clo, chi = max(lo, 0), min(hi, src.shape[a])
        if chi <= clo:
            return out
        s_sl.append(slice(clo, chi))
        d_sl.append(slice(clo - lo, chi - lo))
    out[tuple(d_sl)] = src[tuple(s_sl)]
    return out


# ---------------------------------------------------------------------- result
@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessed:
    """Network input and everything needed to map results back to the input grid.

    Attributes
    ----------
    array : numpy.ndarray
        float32 ``PADDED_SHAPE`` (128, 192, 192), z-scored inside the field of view, zero elsewhere.
    fov_mask : numpy.ndarray
        bool ``CROP_SHAPE``: crop voxels inside the input's field of view.
    crop : CropGeometry
    reorientation : Reorientation
    input_volume : Volume
        The input (geometry reference of the inverse; its array is not copied).
    """

    array: np.ndarray
    fov_mask: np.ndarray
    crop: CropGeometry
    reorientation: Reorientation
    input_volume: Volume

    # -------------------------------------------------------------- forward for label maps
    def labels_to_crop(self, labels: Volume) -> np.ndarray:
        """Map a label map on the input grid (same geometry) onto the padded network grid (nearest), uint8."""
        if labels.shape != self.input_volume.shape:
            raise InputError(f"label map shape {labels.shape} differs from the image shape {self.input_volume.shape}")
        crop = to_crop_grid(labels, self.crop, self.reorientation, interpolator="nearest")
        return pad_crop(crop.astype(np.uint8))

    # -------------------------------------------------------------- inverse
    def labels_to_input(self, labels_padded: np.ndarray) -> np.ndarray:
        """Labels on the padded network grid ``(128, 192, 192)`` → labels on the input's array grid (uint8).

        Exact (indexing) for aligned 0.8 mm inputs; nearest-neighbour resampling otherwise. Outside the crop: 0.
        """
        crop = unpad(np.asarray(labels_padded)).astype(np.uint8)
        inp = self.input_volume
        if self.crop.aligned:
            re = self.reorientation.apply(Volume(np.zeros(inp.shape, np.uint8), inp.spacing_mm, inp.origin_mm, inp.direction))
            out = np.zeros(re.shape, np.uint8)
            _paste_back(out, crop, self.crop.start_index)
            return np.ascontiguousarray(self.reorientation.invert_array(out))
        sub, (lo, hi) = _input_subgrid(inp, self.crop)
        out = np.zeros(inp.shape, np.uint8)
        if sub is None:
            return out
        res = resample_to_grid(self.crop.volume(crop), sub.spacing_mm, sub.size_ijk, sub.origin_mm, sub.direction, "nearest")
        out[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = res.array
        return out

    def probabilities_to_input(self, probs_padded: np.ndarray) -> np.ndarray:
        """Class probabilities ``(C, 128, 192, 192)`` → labels on the input's array grid (label-aware, uint8).

        Aligned inputs: argmax, then exact indexing. Otherwise every channel is resampled linearly onto the part
        of the input grid covered by the crop and the argmax taken there (smoother than nearest-neighbour labels
        when the input is finer than 0.8 mm). Outside the crop: 0.
        """
        probs = np.asarray(probs_padded)
        if probs.ndim != 4 or probs.shape[1:] != PADDED_SHAPE:
            raise ValueError(f"expected (C, {PADDED_SHAPE}) probabilities, got {probs.shape}")
        if self.crop.aligned:
            return self.labels_to_input(np.argmax(probs, axis=0).astype(np.uint8))
        inp = self.input_volume
        sub, (lo, hi) = _input_subgrid(inp, self.crop)
        out = np.zeros(inp.shape, np.uint8)
        if sub is None:
            return out
        best = None
        arg = None
        for c in range(probs.shape[0]):
            chan = self.crop.volume(unpad(probs[c]).astype(np.float32))
            res = resample_to_grid(chan, sub.spacing_mm, sub.size_ijk, sub.origin_mm, sub.direction, "linear").array
            if best is None:
                best, arg = res, np.zeros(res.shape, np.uint8)
            else:
                better = res > best
                best = np.where(better, res, best)
                arg[better] = c
        out[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = arg
        return out


def _paste_back(out: np.ndarray, crop: np.ndarray, start_ijk) -> None:
    start_kji = (start_ijk[2], start_ijk[1], start_ijk[0])
    s_sl, d_sl = [], []
    for a in range(3):
        lo, hi = start_kji[a], start_kji[a] + crop.shape[a]
        clo, chi = max(lo, 0), min(hi, out.shape[a])
        if chi <= clo:
            return
        d_sl.append(slice(clo, chi))
        s_sl.append(slice(clo - lo, chi - lo))
    out[tuple(d_sl)] = crop[tuple(s_sl)]


def _input_subgrid(inp: Volume, crop: CropGeometry):
    """Bounding box (index lo inclusive, hi exclusive, i j k) of the crop region on the input grid, as a Volume."""
    size = np.asarray(crop.size_ijk, dtype=float)
    corners = np.array(list(itertools.product(*[(-0.5, s - 0.5) for s in size])))
    xyz = corners @ (crop.direction * CANONICAL_SPACING_MM).T + np.asarray(crop.origin_mm)
    ijk = inp.lps_to_index(xyz)
    n = np.asarray(inp.size_ijk)
    lo = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, n)
    hi = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, n)
    if np.any(hi <= lo):
        return None, (lo, hi)
    return _Grid(inp.spacing_mm, tuple(int(v) for v in hi - lo), tuple(inp.index_to_lps(lo)), inp.direction), (lo, hi)


@dataclasses.dataclass(frozen=True, eq=False)
class _Grid:
    spacing_mm: tuple
    size_ijk: tuple
    origin_mm: tuple
    direction: np.ndarray


# ---------------------------------------------------------------------- forward
def to_crop_grid(vol: Volume, crop: CropGeometry, reorientation: Reorientation, interpolator: str = "linear") -> np.ndarray:
    """Values of ``vol`` on the crop grid, array ``CROP_SHAPE`` (indexing when aligned, else SimpleITK resampling).

    Outside the input's field of view: 0. ``interpolator``: ``"linear"`` (images) or ``"nearest"`` (label maps).
    """
    if crop.aligned:
        re = reorientation.apply(vol)
        si = crop.start_index
        return _paste_window(re.array, (si[2], si[1], si[0]), CROP_SHAPE)
    return resample_to_grid(vol, crop.spacing_mm, crop.size_ijk, crop.origin_mm, crop.direction, interpolator).array


def pad_crop(crop: np.ndarray, value=0) -> np.ndarray:
    """Zero-pad a ``CROP_SHAPE`` array to ``PADDED_SHAPE`` (``PAD_BEFORE`` before each axis)."""
    if crop.shape != CROP_SHAPE:
        raise ValueError(f"expected {CROP_SHAPE}, got {crop.shape}")
    pads = [(b, p - c - b) for b, p, c in zip(PAD_BEFORE, PADDED_SHAPE, CROP_SHAPE)]
    return np.pad(crop, pads, constant_values=value)


def unpad(padded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pad_crop` (a view)."""
    if padded.shape[-3:] != PADDED_SHAPE:
        raise ValueError(f"expected {PADDED_SHAPE}, got {padded.shape}")
    sl = tuple(slice(b, b + c) for b, c in zip(PAD_BEFORE, CROP_SHAPE))
    return padded[(..., *sl)]


def preprocess_volume(vol: Volume) -> Preprocessed:
    """Resample / crop / z-score / pad ``vol`` for the network (see the module docstring).

    Raises
    ------
    InputError
        Unusable geometry, NaN / constant intensities, or a field of view that misses the crop window.
    """
    if vol.array.ndim != 3:
        raise InputError(f"expected a 3D image, got an array of shape {vol.array.shape}")
    check_geometry(vol)
    check_intensities(vol)
    check_3d_resolution(vol, task="FORAMEN3D segmentation")
    reo = Reorientation.for_direction(vol.direction)
    re = reo.apply(Volume(np.empty(vol.shape, np.uint8), vol.spacing_mm, vol.origin_mm, vol.direction))
    crop = crop_geometry(re)
    image = to_crop_grid(vol if np.issubdtype(vol.array.dtype, np.floating) else vol.with_array(vol.array.astype(np.float32)), crop, reo)
    fov = to_crop_grid(vol.with_array(np.ones(vol.shape, np.uint8)), crop, reo, interpolator="nearest").astype(bool)
    if fov.sum() < 0.05 * fov.size:
        raise InputError(
            "the image covers less than 5 % of the L4-5 crop window; give a sagittal or 3D lumbar MRI covering L3-S1"
        )
    z = zscore(image, fov)
    z[~fov] = 0.0
    return Preprocessed(pad_crop(z.astype(np.float32)), fov, crop, reo, vol)
