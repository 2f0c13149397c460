"""SynthSeg-style synthesis of MR-like images from label maps (own implementation of the idea of
Billot et al., "SynthSeg: Segmentation of brain MRI scans of any contrast and resolution without retraining",
Medical Image Analysis 86:102789, 2023).

A label map (SPIDER "generic" labels, the phantom's tissue map, or any integer map) is turned into training images:

1. :func:`prepare_labels` (once per label map): crop to the labelled region, upsample coarse axes (e.g. 4.8 mm
   sagittal slices) to ``fine_spacing_mm`` by shape-based interpolation (linear interpolation of each label's signed
   distance map, then the label with the largest value: smooth outlines, no blocky canal), split every disc into annulus and nucleus and every vertebra into cortex and marrow (distance maps),
   and assign each label a tissue class (:data:`TISSUES`).
2. :func:`synthesize` (per sample, deterministic for a ``seed``):

   - one nearest-neighbour lookup of the codes on the output grid through a random affine (rotation, scale,
     shear about the grid centre) composed with a smooth random elastic displacement field; the image
     is generated *from the deformed labels*, so image and labels are deformed identically;
   - background (label 0) split into random tissue blobs (3-6 classes: muscle, fat, other; each voxel takes the
     class whose smooth random field, plus a random class offset, is largest) and, for grids wider than the body, air outside a random elliptic body
     outline with a subcutaneous fat layer;
   - per-code Gaussian intensities: the mean is drawn from the contrast prior (:data:`INTENSITY_PRIORS`, "t1",
     "t2") or uniformly from [0, 1] ("random"), the standard deviation from ``options.std_range``;
   - slice-thickness simulation: either a stack of thin sub-slices averaged per output slice
     (``slice_thickness_mm``; box slice profile, used for the 2D axial samples) or, with probability
     ``p_lowres``, blur along a random axis (Gaussian, FWHM = simulated thickness) then down- and up-sampling;
   - smooth multiplicative bias field (exp of a smooth random log-field), Rician noise, random gamma.

   The result is a float32 image in [0, 1] and the deformed label map (original label values), both as
   :class:`spinemorph.volume.Volume` with the output grid's geometry.

Where it lives: grids in :mod:`spinemorph.synth_grids`, label preparation in :mod:`spinemorph.synth_labels`, the
synthesis here; this module re-exports their public names.

Grids: :func:`grid_like` (keep the input grid), :func:`iso_grid` (0.8 mm isotropic, sagittal "PIR" like T2
SPACE, optionally cropped), :func:`axial_grid` (one or more axial planes, normal = patient S-I axis or any
tilted axis, e.g. the local canal axis) and :func:`axial_stack_grid`.

Determinism: every random number comes from ``numpy.random.default_rng(seed)``; the lookup and the scipy filters
are deterministic, so the same seed gives byte-identical arrays.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from spinemorph.errors import InputError
from spinemorph.synth_grids import (  # noqa: F401  (re-exported)
    ORIENTATIONS,
    Grid,
    axial_grid,
    axial_stack_grid,
    grid_like,
    iso_grid,
    world_bbox,
)
from spinemorph.synth_labels import (  # noqa: F401  (re-exported)
    FORAMEN_TISSUES,
    TISSUES,
    LabelSource,
    default_tissue_classes,
    prepare_labels,
)
from spinemorph.volume import Volume

#: (low, high) range of the mean intensity (0..1 scale) of each tissue per contrast; every label draws its own mean
#: uniformly from its tissue's range. T1: CSF dark, fat bright, disc intermediate, fatty marrow bright-intermediate.
#: T2 (turbo/fast spin echo, SPACE): CSF brightest, disc nucleus bright, annulus dark, bone intermediate-dark,
#: fat intermediate-bright, muscle dark. Cortical bone and air are dark in both.
INTENSITY_PRIORS: dict[str, dict[str, tuple[float, float]]] = {
    "t1": {
        "csf": (0.04, 0.18),
        "disc": (0.26, 0.40),
        "nucleus": (0.28, 0.44),
        "bone": (0.45, 0.70),
        "cortex": (0.02, 0.12),
        "muscle": (0.20, 0.34),
        "fat": (0.76, 0.96),
        "air": (0.00, 0.04),
        "nerve": (0.22, 0.38),
        "other": (0.10, 0.60),
    },
    "t2": {
        "csf": (0.80, 0.98),
        "disc": (0.12, 0.28),
        "nucleus": (0.55, 0.85),
        "bone": (0.28, 0.46),
        "cortex": (0.02, 0.10),
        "muscle": (0.08, 0.22),
        "fat": (0.50, 0.75),
        "air": (0.00, 0.04),
        "nerve": (0.25, 0.50),
        "other": (0.10, 0.60),
    },
}
CONTRASTS = ("t1", "t2", "random")

#: intensity code offsets of the background classes added at synthesis time
_MAX_BG_CLASSES = 6


# ----------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class SynthOptions:
    """Ranges of the random augmentations (all drawn uniformly unless stated).

    Attributes
    ----------
    rotation_deg : float
        Maximum rotation about each LPS axis.
    scale : float
        Maximum relative scaling per axis (1 ± scale).
    shear : float
        Maximum shear coefficient.
    elastic_mm : float
        Maximum standard deviation of the B-spline control point displacements (mm).
    elastic_spacing_mm : float
        Distance between B-spline control points.
    std_range : (float, float)
        Range of the within-label intensity standard deviation.
    bg_classes : (int, int)
        Range of the number of background blob classes; ``2 <= low <= high <= 6`` (:data:`_MAX_BG_CLASSES`),
        checked on construction (:class:`~spinemorph.errors.InputError`).
    bg_scale_mm : (float, float)
        Range of the blob field's correlation length.
    p_body : float
        Probability of simulating air outside a body outline (only for grids wider than 120 mm).
    p_lowres : float
        Probability of a thick-slice simulation along a random axis (3D samples).
    lowres_mm : (float, float)
        Range of the simulated slice thickness (FWHM of the blur).
    blur_px : (float, float)
        Range of an extra in-plane Gaussian blur (sigma in pixels).
    bias_std : float
        Maximum standard deviation of the log bias field.
    noise_std : (float, float)
        Range of the Rician noise standard deviation (relative to the image maximum).
    gamma_std : float
        Standard deviation of log(gamma).
    p_degenerate : float
        Probability that a disc's nucleus has the annulus intensity range (degenerated disc).
    p_roots : float
        Probability of simulating cauda equina nerve roots inside the CSF: a smooth random field elongated along the
        patient S-I axis (correlation ``roots_mm`` across, 20 mm along), thresholded so that ``roots_fraction`` of
        the CSF voxels become "nerve" tissue. Labels are unchanged (the roots lie inside the dural sac).
    roots_mm : float
        Cross-sectional correlation length of the root field.
    roots_fraction : (float, float)
        Range of the share of CSF voxels turned into roots.
    p_epidural_fat : float
        Probability of an epidural fat layer: background voxels (label 0) within a random distance from
        ``epidural_fat_mm`` of the CSF become "fat" tissue (intensity only; labels unchanged). The SPIDER label maps
        leave the epidural space unlabelled, so the layer fills it where the sac does not touch bone or disc
        (posterolateral, the lateral recesses), as on real axial images. Default 0 (off; the shipped synthesis).
    epidural_fat_mm : (float, float)
        Range of the layer thickness (mm).
    """

    rotation_deg: float = 10.0
    scale: float = 0.1
    shear: float = 0.03
    elastic_mm: float = 2.0
    elastic_spacing_mm: float = 40.0
    std_range: tuple[float, float] = (0.01, 0.05)
    bg_classes: tuple[int, int] = (3, 6)
    bg_scale_mm: tuple[float, float] = (8.0, 30.0)
    p_body: float = 0.7
    p_lowres: float = 0.3
    lowres_mm: tuple[float, float] = (1.5, 4.0)
    blur_px: tuple[float, float] = (0.0, 0.6)
    bias_std: float = 0.3
    noise_std: tuple[float, float] = (0.005, 0.04)
    gamma_std: float = 0.2
    p_degenerate: float = 0.25
    p_roots: float = 0.5
    roots_mm: float = 2.5
    roots_fraction: tuple[float, float] = (0.05, 0.25)
    p_epidural_fat: float = 0.0
    epidural_fat_mm: tuple[float, float] = (1.0, 4.0)

    def __post_init__(self):
        lo, hi = self.bg_classes
        if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer)) and 2 <= lo <= hi <= _MAX_BG_CLASSES):
            # at least 2: muscle and fat are always drawn; at most _MAX_BG_CLASSES: the codes above are air, fat, nerve
            raise InputError(f"SynthOptions.bg_classes {self.bg_classes!r} must be two integers with "
                             f"2 <= low <= high <= {_MAX_BG_CLASSES}")

    @classmethod
    def intensity_only(cls) -> SynthOptions:
        """No spatial augmentation (identity transform, no blur); intensities, bias, noise, gamma still random."""
        return cls(rotation_deg=0.0, scale=0.0, shear=0.0, elastic_mm=0.0, p_lowres=0.0, blur_px=(0.0, 0.0))


@dataclasses.dataclass(frozen=True, eq=False)
class SynthResult:
    """One synthetic sample.

    Attributes
    ----------
    image : Volume
        float32 image in [0, 1].
    labels : Volume
        Deformed label map (original label values) on the same grid.
    params : dict
        The drawn parameters (``contrast``, ``affine`` matrix, ``affine_det``, ``elastic_mm``, ``noise_std``,
        ``gamma``, ``lowres`` ...), for logging and tests.
    """

    image: Volume
    labels: Volume
    params: dict


# ----------------------------------------------------------------------------- helpers
def _interp_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of corner-aligned spline interpolation weights (exact: ``zoom`` of the identity)."""
    if n_in == 1:
        return np.ones((n_out, 1), np.float32)
    if n_out == 1:
        w = np.zeros((1, n_in), np.float32)
        w[0, (n_in - 1) // 2] = 1.0
        return w
    eye = np.eye(n_in, dtype=np.float64)
    w = ndimage.zoom(eye, (n_out / n_in, 1.0), order=min(order, n_in - 1), mode="nearest", grid_mode=False)
    return w.astype(np.float32)


def _upsample(coarse: np.ndarray, shape, order: int = 3) -> np.ndarray:
    """Smoothly interpolate a small array to ``shape`` (corner-aligned cubic spline; separable, one axis at a time)."""
    out = np.asarray(coarse, dtype=np.float32)
    # last axis first, so that the final (largest) product is along axis 0 and needs no transposed copy
    for ax in range(out.ndim - 1, -1, -1):
        n_out = int(shape[ax])
        if out.shape[ax] == n_out:
            continue
        w = _interp_matrix(out.shape[ax], n_out, order)
        out = np.tensordot(w, out, axes=(1, ax))
        if ax:
            out = np.moveaxis(out, 0, ax)
    return np.ascontiguousarray(out, dtype=np.float32)


def _smooth_field(rng: np.random.Generator, grid_shape, spacing_kji, scale_mm, order: int = 3) -> np.ndarray:
    """Smooth random field (unit-variance Gaussian values on a coarse lattice of ``scale_mm``, interpolated).

    ``scale_mm``: one lattice spacing or one per array axis (k, j, i)."""
    extent = np.asarray(grid_shape) * np.asarray(spacing_kji)
    scales = np.broadcast_to(np.asarray(scale_mm, float), (3,))
    coarse_shape = [max(2, int(math.ceil(e / sc)) + 1) if n > 1 else 1 for e, sc, n in zip(extent, scales, grid_shape)]
    coarse = rng.standard_normal(coarse_shape).astype(np.float32)
    return _upsample(coarse, grid_shape, order)


def _random_affine(rng: np.random.Generator, opts: SynthOptions) -> np.ndarray:
    ang = np.radians(rng.uniform(-opts.rotation_deg, opts.rotation_deg, 3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    scale = np.diag(1.0 + rng.uniform(-opts.scale, opts.scale, 3))
    shear = np.eye(3)
    sh = rng.uniform(-opts.shear, opts.shear, 3)
    shear[0, 1], shear[0, 2], shear[1, 2] = sh
    return rz @ ry @ rx @ shear @ scale


def _index_grid_terms(grid: Grid, shape):
    """Broadcastable k, j, i index arrays (float32) for separable affine sums."""
    kk, jj, ii = (np.arange(n, dtype=np.float32) for n in shape)
    return kk[:, None, None], jj[None, :, None], ii[None, None, :]


def _resample_codes(
    source: LabelSource, grid: Grid, affine: np.ndarray, displacement: list[np.ndarray] | None
) -> np.ndarray:
    """Nearest-neighbour lookup of ``source.codes`` at ``A (p + d(p) - c) + c`` for every grid point ``p``.

    ``A`` = ``affine`` (about the grid centre ``c``), ``d`` = ``displacement`` (three LPS components in mm on the
    grid, or None). Points outside the source grid are background (0).
    """
    src = source.codes
    src_inv = np.linalg.inv(src.direction * np.asarray(src.spacing_mm)[None, :])
    m_out = grid.direction * np.asarray(grid.spacing_mm)[None, :]
    c = grid.center_lps
    lin = src_inv @ affine @ m_out  # (i, j, k) of the output -> source (i, j, k)
    off = src_inv @ (affine @ (np.asarray(grid.origin_mm) - c) + c - np.asarray(src.origin_mm))
    lin_d = src_inv @ affine
    kk, jj, ii = _index_grid_terms(grid, grid.shape)
    src_shape = src.array.shape  # k, j, i
    valid = np.ones(grid.shape, dtype=bool)
    flat = np.zeros(grid.shape, dtype=np.int64)
    stride = {0: 1, 1: src_shape[2], 2: src_shape[2] * src_shape[1]}
    for a in range(3):  # source axis i, j, k
        u = (off[a] + lin[a, 0] * ii + lin[a, 1] * jj + lin[a, 2] * kk).astype(np.float32)
        if displacement is not None:
            u = u + (lin_d[a, 0] * displacement[0] + lin_d[a, 1] * displacement[1] + lin_d[a, 2] * displacement[2])
        ui = np.rint(u).astype(np.int64)
        n = src_shape[2 - a]
        valid &= (ui >= 0) & (ui < n)
        flat += np.clip(ui, 0, n - 1) * stride[a]
    out = src.array.ravel()[flat]
    out[~valid] = 0
    return out


def _elastic_field(rng: np.random.Generator, grid: Grid, opts: SynthOptions) -> tuple[list[np.ndarray] | None, float]:
    """Smooth random displacement field (three LPS components, mm) on ``grid``: cubic-spline interpolation of
    Gaussian control-point displacements spaced ``opts.elastic_spacing_mm``; the control-point standard deviation
    is drawn from [0, ``opts.elastic_mm``]."""
    if opts.elastic_mm <= 0:
        return None, 0.0
    amp = float(rng.uniform(0, opts.elastic_mm))
    sp_kji = np.asarray(grid.spacing_mm)[::-1]
    return [amp * _smooth_field(rng, grid.shape, sp_kji, opts.elastic_spacing_mm) for _ in range(3)], amp


def thick_slice_grid(grid: Grid, slice_thickness_mm: float | None) -> tuple[Grid, int]:
    """The thin sub-slice grid :func:`synthesize` samples to simulate ``slice_thickness_mm`` along k.

    Returns ``(work_grid, n_sub)``: ``n_sub`` (odd, ≥ 3, sub-slices ≤ 0.6 mm apart) consecutive k-planes of
    ``work_grid`` are averaged into one plane of ``grid``; the middle one carries the labels. For a single-plane grid
    any thickness is allowed; for several planes the thickness is the k spacing (contiguous slices).
    ``(grid, 1)`` when ``slice_thickness_mm`` is None or 0.
    """
    if not slice_thickness_mm:
        return grid, 1
    nk = grid.size_ijk[2]
    thick = float(slice_thickness_mm) if nk == 1 else grid.spacing_mm[2]
    n_sub = max(3, int(math.ceil(thick / 0.6)) | 1)
    sub_sp = thick / n_sub
    kdir = grid.direction[:, 2]
    origin = np.asarray(grid.origin_mm) - kdir * sub_sp * (n_sub - 1) / 2
    work = Grid((grid.size_ijk[0], grid.size_ijk[1], nk * n_sub), (grid.spacing_mm[0], grid.spacing_mm[1], sub_sp),
                tuple(origin), grid.direction)
    return work, n_sub


def phantom_tissue_classes() -> dict[int, str]:
    """Tissue class of each label of :data:`spinemorph.phantom.TISSUE_LABELS` (0 = air outside the body).

    Skin is "other", the phantom's "other soft tissue" is filled with random blobs, ligamentum flavum and nerve roots
    take the muscle range (intermediate on T1, dark on T2).
    """
    from spinemorph import phantom

    by_name = {
        "air": "air", "skin": "other", "subcutaneous fat": "fat", "paraspinal muscle": "muscle",
        "psoas muscle": "muscle", "other soft tissue": "blobs", "cortical bone": "cortex", "bone marrow": "bone",
        "disc annulus": "disc", "disc nucleus": "nucleus", "CSF (dural sac)": "csf", "epidural fat": "fat",
        "ligamentum flavum": "muscle", "nerve root": "muscle",
    }
    return {lab: by_name.get(name, "other") for lab, name in phantom.TISSUE_LABELS.items()}


def synthesize(
    source: LabelSource | Volume,
    seed: int,
    grid: Grid | None = None,
    contrast: str = "random",
    options: SynthOptions | None = None,
    slice_thickness_mm: float | None = None,
) -> SynthResult:
    """Synthesise one MR-like image and its deformed label map.

    Parameters
    ----------
    source : LabelSource or Volume
        A prepared label map (:func:`prepare_labels`; prepare once and reuse it) or a label Volume (prepared with
        defaults on every call).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives byte-identical results.
    grid : Grid, optional
        Output grid (default: the prepared label grid).
    contrast : {"t1", "t2", "random"}
        Intensity priors (:data:`INTENSITY_PRIORS`) or uniform random intensities per label.
    options : SynthOptions, optional
        Augmentation ranges (default :class:`SynthOptions`).
    slice_thickness_mm : float, optional
        Simulate slices of this thickness along the grid's k axis by averaging thin sub-slices (box profile).
        For a single-plane grid any thickness; for several planes the thickness equals the k spacing (contiguous).

    Returns
    -------
    SynthResult
    """
    if contrast not in CONTRASTS:
        raise InputError(f"unknown contrast {contrast!r}; use one of {', '.join(CONTRASTS)}")
    opts = options or SynthOptions()
    if isinstance(source, Volume):
        source = prepare_labels(source)
    if grid is None:
        grid = grid_like(source.codes)
    rng = np.random.default_rng(seed)
    params: dict = {"contrast": contrast, "seed": int(seed)}

    # ---- sub-slice grid for slice-thickness simulation
    work, n_sub = thick_slice_grid(grid, slice_thickness_mm)
    if n_sub > 1:
        params["slice_thickness_mm"] = n_sub * work.spacing_mm[2]

    # ---- spatial: affine + elastic, one nearest-neighbour resampling
    affine = _random_affine(rng, opts)
    disp, amp = _elastic_field(rng, work, opts)
    params.update(affine=affine, affine_det=float(np.linalg.det(affine)), elastic_mm=amp)
    codes = _resample_codes(source, work, affine, disp)
    del disp
    shape = codes.shape
    sp_kji = np.asarray(work.spacing_mm)[::-1]

    # ---- tissue intensities
    n_codes = len(source.code_tissue)
    tissues = list(source.code_tissue)
    n_bg = int(rng.integers(opts.bg_classes[0], opts.bg_classes[1] + 1))
    bg_tissues = ["muscle", "fat"] + [str(t) for t in rng.choice(["muscle", "fat", "other"], n_bg - 2)]
    bg_codes = np.arange(n_codes, n_codes + n_bg)
    air_code, subq_code = n_codes + _MAX_BG_CLASSES, n_codes + _MAX_BG_CLASSES + 1
    nerve_code = subq_code + 1
    all_tissues = tissues + bg_tissues + ["muscle"] * (_MAX_BG_CLASSES - n_bg) + ["air", "fat", "nerve"]
    n_all = len(all_tissues)
    means = np.empty(n_all, np.float32)
    if contrast == "random":
        means[:] = rng.uniform(0.0, 1.0, n_all)
        means[air_code] = rng.uniform(0.0, 0.05)
    else:
        prior = INTENSITY_PRIORS[contrast]
        for c, t in enumerate(all_tissues):
            lo, hi = prior.get(t, prior["other"])
            if t == "nucleus" and rng.random() < opts.p_degenerate:
                lo, hi = prior["disc"]
            means[c] = rng.uniform(lo, hi)
    stds = rng.uniform(opts.std_range[0], opts.std_range[1], n_all).astype(np.float32)

    # ---- background: blobs (+ air / subcutaneous fat outside a body outline)
    blob_codes = [c for c, t in enumerate(tissues) if t == "blobs"]
    bg = codes == 0 if blob_codes == [0] else np.isin(codes, blob_codes)
    tcode = codes.astype(np.int32)
    scale_mm = float(rng.uniform(*opts.bg_scale_mm))
    weights = rng.uniform(0.0, 1.0, n_bg).astype(np.float32)  # class proportions vary from sample to sample
    best = np.full(shape, -np.inf, dtype=np.float32)
    cls = np.zeros(shape, dtype=np.int32)
    for c in range(n_bg):
        f = _smooth_field(rng, shape, sp_kji, scale_mm) + weights[c]
        better = f > best
        best[better] = f[better]
        cls[better] = c
    del best
    tcode[bg] = bg_codes[cls[bg]]
    width_mm = float(min(np.asarray(work.size_ijk[:2]) * np.asarray(work.spacing_mm[:2])))
    use_body = bool(rng.random() < opts.p_body)
    # body outline only on fields of view wider than 120 mm (heuristic: narrower crops lie inside the body)
    body = _body_outline(rng, work, codes, source, shape) if (use_body and width_mm > 120 and 0 in blob_codes) else None
    if body is not None:
        outside, subq = body
        free = codes == 0
        tcode[outside & free] = air_code
        tcode[subq & free] = subq_code
    params["background_classes"] = n_bg

    # ---- epidural fat around the sac (intensity only; only drawn when enabled, so the default stream is unchanged)
    csf_codes_all = [c for c, t in enumerate(tissues) if t == "csf"]
    if opts.p_epidural_fat > 0 and csf_codes_all and rng.random() < opts.p_epidural_fat:
        is_csf = np.isin(codes, csf_codes_all)
        if is_csf.any():
            thick = float(rng.uniform(*opts.epidural_fat_mm))
            dist = ndimage.distance_transform_edt(~is_csf, sampling=sp_kji)
            shell = (dist > 0) & (dist <= thick) & bg
            tcode[shell] = subq_code
            params["epidural_fat_mm"] = thick

    # ---- nerve roots inside the CSF (intensity only)
    csf_codes = [c for c, t in enumerate(tissues) if t == "csf"]
    if csf_codes and rng.random() < opts.p_roots:
        is_csf = np.isin(codes, csf_codes)
        if is_csf.sum() > 20:  # heuristic minimum of CSF voxels for a root pattern
            scales = np.full(3, opts.roots_mm)
            # 20 mm correlation along the index axis closest to S-I (heuristic: roots run cranio-caudally)
            scales[2 - int(np.argmax(np.abs(work.direction[2, :])))] = 20.0
            f = _smooth_field(rng, shape, sp_kji, scales)
            frac = float(rng.uniform(*opts.roots_fraction))
            roots = is_csf & (f > np.quantile(f[is_csf], 1.0 - frac))
            tcode[roots] = nerve_code
            params["roots_fraction"] = frac

    img = means[tcode]
    img += stds[tcode] * rng.standard_normal(shape, dtype=np.float32)

    # ---- slice thickness / resolution
    if n_sub > 1:
        img = img.reshape(grid.shape[0], n_sub, *shape[1:]).mean(axis=1)
        codes = codes[n_sub // 2 :: n_sub]
        sp_kji = np.asarray(grid.spacing_mm)[::-1]
    elif rng.random() < opts.p_lowres:
        axis = int(rng.integers(0, 3))
        if img.shape[axis] > 4:
            thick = float(rng.uniform(*opts.lowres_mm))
            sig = thick / 2.3548 / sp_kji[axis]
            img = ndimage.gaussian_filter1d(img, sig, axis=axis, mode="nearest")
            factor = sp_kji[axis] / thick
            n_low = max(2, int(round(img.shape[axis] * factor)))
            idx = np.linspace(0, img.shape[axis] - 1, n_low)
            low = np.take(img, np.round(idx).astype(int), axis=axis)
            coords = np.linspace(0, n_low - 1, img.shape[axis], dtype=np.float32)
            lo_i = np.floor(coords).astype(int)
            hi_i = np.minimum(lo_i + 1, n_low - 1)
            w = (coords - lo_i).reshape([-1 if a == axis else 1 for a in range(3)])
            img = (np.take(low, lo_i, axis=axis) * (1 - w) + np.take(low, hi_i, axis=axis) * w).astype(np.float32)
            params["lowres"] = {"axis_kji": axis, "thickness_mm": thick}
    blur = float(rng.uniform(*opts.blur_px))
    if blur > 0.05:
        sig = [0.0 if n == 1 else blur for n in img.shape]
        sig[0] = 0.0 if img.shape[0] < 8 else sig[0]
        img = ndimage.gaussian_filter(img, sig, mode="nearest")

    # ---- bias field, noise, gamma
    bstd = float(rng.uniform(0, opts.bias_std))
    img = img * np.exp(bstd * _smooth_field(rng, img.shape, sp_kji, 80.0))
    top = float(np.percentile(img, 99.9)) or 1.0
    img = np.clip(img / top, 0.0, None).astype(np.float32)
    nstd = float(rng.uniform(*opts.noise_std))
    n1 = rng.standard_normal(img.shape, dtype=np.float32) * nstd
    n2 = rng.standard_normal(img.shape, dtype=np.float32) * nstd
    img = np.sqrt((img + n1) ** 2 + n2**2)
    top = float(img.max()) or 1.0
    gamma = float(np.exp(rng.normal(0.0, opts.gamma_std)))
    img = np.clip(img / top, 0.0, 1.0) ** gamma
    params.update(bias_std=bstd, noise_std=nstd, gamma=gamma, blur_px=blur)

    labels = source.code_label[codes].astype(source.label_dtype)
    return SynthResult(grid.volume(img.astype(np.float32)), grid.volume(labels), params)


def _body_outline(rng, grid: Grid, codes: np.ndarray, source: LabelSource, shape):
    """Air outside a random elliptic body cross-section (axis = LPS z) and a subcutaneous fat layer inside it.

    The ellipse is placed relative to the CSF (canal) voxels: skin 35-90 mm posterior to the canal centre. Returns
    ``None`` when the grid holds no CSF.
    """
    csf_codes = [c for c, t in enumerate(source.code_tissue) if t == "csf"]
    if not csf_codes:
        return None
    is_csf = np.isin(codes, csf_codes)
    if not is_csf.any():
        return None
    # LPS x, y of every voxel via separable sums over k, j, i
    m = grid.direction * np.asarray(grid.spacing_mm)[None, :]
    o = np.asarray(grid.origin_mm)
    kk, jj, ii = (np.arange(n, dtype=np.float32) for n in shape)

    def coord(axis):
        return (o[axis] + m[axis, 2] * kk[:, None, None] + m[axis, 1] * jj[None, :, None] + m[axis, 0] * ii[None, None, :]).astype(np.float32)

    x, y = coord(0), coord(1)
    x, y = np.broadcast_to(x, shape), np.broadcast_to(y, shape)
    cx, cy = float(x[is_csf].mean()), float(y[is_csf].mean())
    # elliptical body outline; all ranges (mm) are heuristic plausible adult lumbar sizes, not from the literature
    a = rng.uniform(120.0, 190.0)  # LR half-width
    b = rng.uniform(100.0, 160.0)  # AP half-depth
    post = rng.uniform(35.0, 90.0)  # skin distance posterior to the canal
    fat_mm = rng.uniform(4.0, 25.0)  # subcutaneous fat thickness
    ey = cy + post - b
    r = np.sqrt(((x - cx) / a) ** 2 + ((y - ey) / b) ** 2)
    outside = np.broadcast_to(r > 1.0, shape)
    subq = np.broadcast_to((r <= 1.0) & (r > 1.0 - fat_mm / b), shape)
    return outside, subq


# ----------------------------------------------------------------------------- convenience
RESLICE_MODES = ("none", "axial", "iso0.8")


def synthesize_volume(
    labels: Volume,
    seed: int,
    contrast: str = "random",
    reslice: str = "none",
    tissue_classes: dict[int, str] | None = None,
    options: SynthOptions | None = None,
    source: LabelSource | None = None,
) -> SynthResult:
    """Synthesise a whole volume from a label map (what ``spinemorph synth`` does).

    ``reslice``: ``"none"`` keeps the label map's grid, ``"axial"`` makes 4 mm axial slices (in-plane = finest input
    spacing but at least 0.5 mm, slice thickness simulated), ``"iso0.8"`` a 0.8 mm isotropic sagittal (PIR) grid.
    The resliced grids cover the labelled region plus the 20 mm margin kept by :func:`prepare_labels`.
    """
    if reslice not in RESLICE_MODES:
        raise InputError(f"unknown reslice mode {reslice!r}; use one of {', '.join(RESLICE_MODES)}")
    if source is None:
        source = prepare_labels(labels, tissue_classes, fine_spacing_mm=None if reslice == "none" else 0.8)
    thickness = None
    if reslice == "none":
        grid = grid_like(labels)
    elif reslice == "axial":
        grid = axial_stack_grid(source.codes, max(0.5, min(labels.spacing_mm)), 4.0)
        thickness = 4.0
    else:
        grid = iso_grid(source.codes, 0.8, "PIR")
    return synthesize(source, seed, grid, contrast, options, slice_thickness_mm=thickness)
