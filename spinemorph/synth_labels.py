"""Label maps prepared for the synthesis: :class:`LabelSource`, tissue classes and :func:`prepare_labels`.

:func:`prepare_labels` (once per label map) crops to the labelled region, upsamples coarse axes by shape-based
interpolation of per-label signed distance maps, splits discs into annulus / nucleus and vertebrae into cortex /
marrow, and assigns each label a tissue class (:data:`TISSUES`). Re-exported by :mod:`spinemorph.synth`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from spinemorph.errors import InputError
from spinemorph.volume import Volume

#: tissue classes known to the intensity priors
TISSUES = ("csf", "disc", "nucleus", "bone", "cortex", "muscle", "fat", "air", "nerve", "other")

@dataclasses.dataclass(frozen=True, eq=False)
class LabelSource:
    """A label map prepared for synthesis (see :func:`prepare_labels`).

    Attributes
    ----------
    codes : Volume
        uint16 intensity codes (0 = background) on the prepared (cropped, upsampled) grid.
    code_label : numpy.ndarray
        Output label value of each code.
    code_tissue : tuple of str
        Tissue class of each code (index 0 = background).
    label_dtype : numpy.dtype
        dtype of the output label arrays: uint8 (labels < 256), int16 (< 32768) or int32.
    """

    codes: Volume
    code_label: np.ndarray
    code_tissue: tuple[str, ...]
    label_dtype: np.dtype

    @property
    def volume(self) -> Volume:
        """The prepared codes (alias of :attr:`codes`)."""
        return self.codes

    def labels(self) -> Volume:
        """The prepared (upsampled) label map with the original label values."""
        return self.codes.with_array(self.code_label[self.codes.array].astype(self.label_dtype))


def default_tissue_classes(labels) -> dict[int, str]:
    """Tissue class of each label of a SPIDER "generic" map: 1-99 bone, 100 csf, 201-299 disc, others "other"."""
    out = {}
    for lab in labels:
        lab = int(lab)
        if lab == 0:
            continue
        if 0 < lab < 100:
            out[lab] = "bone"
        elif lab == 100:
            out[lab] = "csf"
        elif 200 < lab < 300:
            out[lab] = "disc"
        else:
            out[lab] = "other"
    return out


#: tissue classes of the foramen map (1 L4, 2 L4-5 disc, 3 L5)
FORAMEN_TISSUES = {1: "bone", 2: "disc", 3: "bone"}


def _as_label_array(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(np.mod(a, 1) == 0):
            a = a.astype(np.int32)
        else:
            raise InputError(f"{name} has non-integer values; pass a label map (segmentation), not an image")
    if a.min(initial=0) < 0:
        raise InputError(f"{name} has negative labels; labels must be 0 (background) or positive integers")
    return a


def _linear_matrix(n_fine: int, n_coarse: int, ratio: float) -> np.ndarray:
    """``(n_fine, n_coarse)`` linear interpolation weights for corner-aligned grids (fine spacing = ratio × coarse)."""
    u = np.clip((np.arange(n_fine) + 0.5) * ratio - 0.5, 0, n_coarse - 1)
    i0 = np.floor(u).astype(int)
    i1 = np.minimum(i0 + 1, n_coarse - 1)
    w = (u - i0).astype(np.float32)
    m = np.zeros((n_fine, n_coarse), np.float32)
    m[np.arange(n_fine), i0] += 1 - w
    m[np.arange(n_fine), i1] += w
    return m


def _signed_distance(mask: np.ndarray, sp_kji, outside_value: bool) -> np.ndarray:
    """Signed distance (mm, positive inside) between voxel centres; the array is padded with ``outside_value``."""
    padded = np.pad(mask, 1, constant_values=outside_value)
    d = ndimage.distance_transform_edt(padded, sampling=sp_kji) - ndimage.distance_transform_edt(~padded, sampling=sp_kji)
    return d[1:-1, 1:-1, 1:-1].astype(np.float32)


def _shape_upsample(codes: np.ndarray, sp_kji, new_sp_kji, new_shape, n_codes: int) -> np.ndarray:
    """Upsample a code map by shape-based interpolation: every code's signed distance map (and the background's) is
    interpolated linearly onto the fine grid (corner-aligned) and each fine voxel takes the code with the largest
    value. Outlines between thick slices become smooth instead of a staircase."""
    ratios = np.asarray(new_sp_kji, float) / np.asarray(sp_kji, float)
    mats = [_linear_matrix(int(nf), int(nc), r) for nf, nc, r in zip(new_shape, codes.shape, ratios)]

    def interp(sdf, lo, hi, flo, fhi):
        out = sdf
        for ax in (2, 1, 0):
            w = mats[ax][flo[ax] : fhi[ax], lo[ax] : hi[ax]]
            out = np.tensordot(w, out, axes=(1, ax))
            if ax:
                out = np.moveaxis(out, 0, ax)
        return out

    zero = (0, 0, 0)
    best = interp(_signed_distance(codes == 0, sp_kji, True), zero, codes.shape, zero, tuple(new_shape))
    fine = np.zeros(tuple(new_shape), np.uint16)
    for c, sl in enumerate(ndimage.find_objects(codes), start=1):
        if sl is None or c >= n_codes:
            continue
        lo = [max(s.start - 2, 0) for s in sl]
        hi = [min(s.stop + 2, n) for s, n in zip(sl, codes.shape)]
        # fine voxels whose coarse position lies inside [lo, hi - 1]
        flo = [max(0, int(np.ceil((a + 0.5) / r - 0.5))) for a, r in zip(lo, ratios)]
        fhi = [min(int(nf), int(np.floor((b - 1 + 0.5) / r - 0.5)) + 1) for b, r, nf in zip(hi, ratios, new_shape)]
        if any(f1 <= f0 for f0, f1 in zip(flo, fhi)):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        sdf = interp(_signed_distance(codes[box] == c, sp_kji, False), lo, hi, flo, fhi)
        fbox = tuple(slice(a, b) for a, b in zip(flo, fhi))
        better = sdf > best[fbox]
        best[fbox][better] = sdf[better]
        fine[fbox][better] = c
    return fine


def _edt_inside(mask: np.ndarray, spacing_kji) -> np.ndarray:
    return ndimage.distance_transform_edt(mask, sampling=spacing_kji)


def prepare_labels(
    labels: Volume,
    tissue_classes: dict[int, str] | None = None,
    fine_spacing_mm: float | None = 0.8,
    margin_mm: float = 20.0,
    nucleus: bool = True,
    cortex_mm: float = 1.0,
    target: Volume | None = None,
) -> LabelSource:
    """Prepare a label map for :func:`synthesize`.

    Parameters
    ----------
    labels : Volume
        Integer label map (0 = background).
    tissue_classes : dict, optional
        Label -> tissue class (one of :data:`TISSUES`); labels not listed are "other" (own random intensity).
        Default: :func:`default_tissue_classes` (SPIDER "generic" scheme). Label 0 is "blobs" (random background
        tissue blobs) unless listed (e.g. ``{0: "air"}`` for the phantom's tissue map, whose body is fully labelled).
        Tissue "blobs" may be given to any label (its voxels are filled with random blobs).
    fine_spacing_mm : float or None
        Axes with a coarser spacing are upsampled to this spacing by shape-based interpolation (signed distance
        maps, see :func:`_shape_upsample`; smooth outlines between thick slices). ``None`` keeps the grid.
    margin_mm : float
        Background margin kept around the labelled region when cropping.
    nucleus : bool
        Split each "disc" label into annulus and nucleus (central part: distance to the disc border > 40 % of its
        maximum and distance to the disc centroid < 60 % of its radius) with its own intensity.
    cortex_mm : float
        Split each "bone" label into a cortical rim of this thickness (dark) and marrow; 0 disables.
    target : Volume, optional
        Label map on the same grid whose values become the output labels of :func:`synthesize` (e.g. the phantom's
        foramen map while ``labels`` is its tissue map). Default: ``labels`` itself. Every distinct
        (label, target) pair gets its own intensity code.

    Raises
    ------
    InputError
        Non-integer or negative labels, or no label at all.
    """
    arr = _as_label_array(labels.array, "label map")
    present = np.unique(arr)
    if not (present > 0).any():
        raise InputError("label map is empty (only background); nothing to synthesise from")
    if present.size > 60000:
        raise InputError(f"label map has {present.size} labels; expected a segmentation with a few labels")
    tissues = default_tissue_classes(present) if tissue_classes is None else dict(tissue_classes)
    tissues.setdefault(0, "blobs")
    for lab, t in tissues.items():
        if t not in TISSUES and t != "blobs":
            raise ValueError(f"unknown tissue {t!r} for label {lab}; use one of {TISSUES} or 'blobs'")

    if target is None:
        # compact codes 0..L (0 = background)
        nonzero = present[present > 0]
        lut = np.zeros(int(present.max()) + 1, dtype=np.uint16)
        lut[nonzero] = np.arange(1, nonzero.size + 1, dtype=np.uint16)
        codes = lut[arr]
        key_label = np.concatenate([[0], nonzero]).astype(np.int64)
        key_target = key_label
    else:
        if tuple(target.array.shape) != tuple(arr.shape):
            raise InputError(f"target label map shape {target.array.shape} differs from the label map {arr.shape}")
        tgt = _as_label_array(target.array, "target label map").astype(np.int64)
        tmax = int(tgt.max()) + 1
        key = arr.astype(np.int64) * tmax + tgt
        if int(key.max()) < 4_000_000:  # small key space: counting instead of sorting
            keys = np.flatnonzero(np.bincount(key.ravel()))
            lut_k = np.zeros(int(keys[-1]) + 1, dtype=np.int64)
            lut_k[keys] = np.arange(keys.size)
            inv = lut_k[key]
        else:
            keys, inv = np.unique(key, return_inverse=True)
        shift = 0 if keys[0] == 0 else 1  # code 0 stays (background, background)
        codes = (inv.reshape(arr.shape) + shift).astype(np.uint16)
        key_label = np.concatenate([[0] * shift, keys // tmax]).astype(np.int64)
        key_target = np.concatenate([[0] * shift, keys % tmax]).astype(np.int64)
        if len(key_label) > 65535:
            raise InputError("too many (label, target) combinations; pass label maps with a few labels")
    code_label = [int(v) for v in key_target]
    code_tissue = [tissues.get(int(v), "other") for v in key_label]
    code_tissue[0] = tissues[0] if key_label[0] == 0 else code_tissue[0]
    # smallest dtype that holds every output label (int16 up to 32767, as before; int32 above, int16 would wrap)
    top = max(code_label)
    label_dtype = np.dtype(np.uint8) if top < 256 else np.dtype(np.int16) if top <= 32767 else np.dtype(np.int32)

    # crop to the labelled region + margin
    vol = labels.with_array(codes)
    sp_kji = np.asarray(vol.spacing_mm)[::-1]
    fg = codes > 0
    nz_lo, nz_hi = [], []
    for ax in range(3):
        hit = np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != ax)))
        nz_lo.append(hit[0])
        nz_hi.append(hit[-1])
    marg = np.ceil(margin_mm / sp_kji).astype(int)
    lo = np.maximum(np.asarray(nz_lo) - marg, 0)
    hi = np.minimum(np.asarray(nz_hi) + marg + 1, codes.shape)
    sub = codes[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    origin = vol.index_to_lps(lo[::-1].astype(float))
    img = sitk.GetImageFromArray(np.ascontiguousarray(sub))
    img.SetSpacing(vol.spacing_mm)
    img.SetOrigin(tuple(origin))
    img.SetDirection(tuple(vol.direction.ravel()))

    # upsample coarse axes with shape-based (signed-distance) interpolation
    sp = np.asarray(vol.spacing_mm)
    if fine_spacing_mm is not None and np.any(sp > fine_spacing_mm * 1.25):
        new_sp = np.minimum(sp, fine_spacing_mm)
        size = np.asarray(img.GetSize())
        new_size = np.maximum(1, np.round(size * sp / new_sp)).astype(int)
        corner = origin - vol.direction @ (sp / 2)
        new_origin = corner + vol.direction @ (new_sp / 2)
        fine = _shape_upsample(sub, sp[::-1], new_sp[::-1], new_size[::-1], len(code_label))
        img = sitk.GetImageFromArray(fine)
        img.SetSpacing(tuple(float(v) for v in new_sp))
        img.SetOrigin(tuple(float(v) for v in new_origin))
        img.SetDirection(tuple(vol.direction.ravel()))
    codes = sitk.GetArrayFromImage(img)
    sp_kji = np.asarray(img.GetSpacing())[::-1]

    # sub-structures: nucleus of discs, cortex of bones
    n_labels = len(code_label)
    objs = ndimage.find_objects(codes)
    for c in range(1, n_labels):
        sl = objs[c - 1] if c - 1 < len(objs) else None
        if sl is None:
            continue
        tissue = code_tissue[c]
        if tissue == "disc" and nucleus:
            sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
            m = codes[sl] == c
            d = _edt_inside(m, sp_kji)
            pts = np.argwhere(m) * sp_kji
            cen = pts.mean(0)
            r = np.sqrt(((np.indices(m.shape).reshape(3, -1).T * sp_kji - cen) ** 2).sum(1)).reshape(m.shape)
            radius = np.sqrt(((pts - cen) ** 2).sum(1)).max()
            # heuristic shape of the nucleus (not from the literature): deeper than 40 % of the disc's largest
            # inside distance and within 60 % of its radius from the centroid
            core = m & (d > 0.4 * d.max()) & (r < 0.6 * radius)
            if core.any():
                view = codes[sl]
                view[core] = len(code_label)
                code_label.append(code_label[c])
                code_tissue.append("nucleus")
        elif tissue == "bone" and cortex_mm > 0:
            sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
            m = codes[sl] == c
            d = _edt_inside(m, sp_kji)
            rim = m & (d <= cortex_mm)
            if rim.any() and (m & ~rim).any():
                view = codes[sl]
                view[rim] = len(code_label)
                code_label.append(code_label[c])
                code_tissue.append("cortex")
    out = Volume(codes, img.GetSpacing(), img.GetOrigin(), np.array(img.GetDirection()).reshape(3, 3))
    return LabelSource(out, np.asarray(code_label, dtype=np.int64), tuple(code_tissue), label_dtype)
