"""Training and evaluation samples for the 2D (DSCA) and 3D (foramen) networks.

Synthetic samples (SynthSeg-style, :mod:`spinemorph.synth`) are made from two sources:

- ``"spider_masks"``: the real SPIDER label volumes of the *training* patients
  (:func:`spinemorph.spider.train_mask_cases`; held-out patients are never used). Each volume is mapped to the
  "generic" scheme (every vertebra and disc its own structure) and prepared once per process
  (:func:`spinemorph.synth.prepare_labels`: the 3.3-4.8 mm sagittal slices are upsampled to 0.8 mm with
  shape-based interpolation of per-label signed distance maps, so axial cuts through the canal are smooth, not
  blocky). Preparing takes a few
  seconds per volume; it happens lazily on first use and is cached (:func:`clear_cache`).
- ``"phantom"``: the procedural phantom (:mod:`spinemorph.phantom`) with randomly varied anatomy
  (``make_phantom(seed, vary=True)``), rasterised exactly on the (randomly rotated) sample grid; its tissue map
  drives the intensities and its exact dural-sac / foramen maps are the labels.

Every sample ``i`` uses its own generator ``numpy.random.default_rng([seed, i])``, so a sample does not depend on
the others: ``start`` lets data-loader workers draw disjoint, reproducible slices of the same stream.

``contrast="mixed"`` draws the contrast per sample: 2D (axial T1 is the DSCA source modality) 50 % "t1", 25 % "t2",
25 % "random"; 3D (T2 SPACE is the foramen source modality) 60 % "t2", 15 % "t1", 25 % "random".

Real evaluation planes: :func:`dsca_real_slab_samples` (axial planes of the real T2 SPACE slabs).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import ndimage

from spinemorph import spider, synth
from spinemorph.errors import InputError
from spinemorph.intensity import normalize_percentile, zscore
from spinemorph.volume import Volume

SOURCES = ("spider_masks", "phantom")
#: contrast probabilities of contrast="mixed" (t1, t2, random)
MIXED_2D = (0.50, 0.25, 0.25)
MIXED_3D = (0.15, 0.60, 0.25)
#: range of the axial field of view (mm) of the 2D samples; pixel size = FOV / 320
FOV_MM = (150.0, 220.0)
#: range of the simulated axial slice thickness (mm)
AXIAL_THICKNESS_MM = (3.0, 5.0)
#: number of distinct phantom anatomies drawn from (seeds 0 .. N-1 with ``vary=True``)
N_PHANTOMS = 1000
#: minimum dural-sac area (mm²) of a 2D sample; planes with less are redrawn (up to 8 times, see
#: :func:`dsca_samples`). Project design choice (heuristic, not from the literature): well below the smallest
#: lumbar dural sac areas of interest (absolute stenosis < 75 mm²); meant to reject planes that only graze the
#: end or the edge of the canal, where the "sac" is a sliver.
MIN_SAC_AREA_MM2 = 20.0

_GENERIC_TO_FORAMEN = {2: 1, 202: 2, 1: 3}  # generic: L4 = 2, L4-5 disc = 202, L5 = 1


# ----------------------------------------------------------------------------- sample types
@dataclasses.dataclass(frozen=True, eq=False)
class DscaSample:
    """One 2D axial training pair.

    Attributes
    ----------
    image : numpy.ndarray
        float32 (rows, cols), percentile-normalised to [0, 1] (:func:`spinemorph.intensity.normalize_percentile`).
        Rows run anterior -> posterior, columns patient right -> left (radiological axial view).
    mask : numpy.ndarray
        uint8 dural sac mask (0/1), same shape.
    pixel_mm : (float, float)
        True pixel size (row, column) in mm after resizing (isotropic: both equal); area =
        ``mask.sum() * pixel_mm[0] * pixel_mm[1]``.
    source, case, contrast : str
        ``"spider_masks"`` / ``"phantom"``, the SPIDER case or ``"phantom<seed>"``, the contrast used.
    center_lps, normal_lps : numpy.ndarray
        Plane centre and normal in the source's LPS space.
    slice_thickness_mm : float
        Simulated slice thickness.
    true_area_mm2 : float or None
        Phantom samples: the exact dural sac area on the plane (analytic, ``truth.dsca_plane_mm2``); None for SPIDER
        samples (there the mask is the truth).
    """

    image: np.ndarray
    mask: np.ndarray
    pixel_mm: tuple[float, float]
    source: str
    case: str
    contrast: str
    center_lps: np.ndarray
    normal_lps: np.ndarray
    slice_thickness_mm: float
    true_area_mm2: float | None = None

    @property
    def area_mm2(self) -> float:
        """Area of the mask (pixels × pixel area), mm²."""
        return float(self.mask.sum()) * self.pixel_mm[0] * self.pixel_mm[1]

    @property
    def below_min_area(self) -> bool:
        """True when the dural sac area is below :data:`MIN_SAC_AREA_MM2`: all 8 redraws of :func:`dsca_samples`
        gave too small a sac and the last draw was kept (rare; lets callers count or skip such samples)."""
        return self.area_mm2 < MIN_SAC_AREA_MM2


@dataclasses.dataclass(frozen=True, eq=False)
class ForamenSample:
    """One 3D training pair on a ``spacing_mm`` isotropic grid, orientation PIR (sagittal like T2 SPACE).

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``(k, j, i)`` = (left -> right, superior -> inferior, anterior -> posterior), z-scored
        (:func:`spinemorph.intensity.zscore`).
    labels : numpy.ndarray
        uint8 0 background, 1 L4, 2 L4-5 disc, 3 L5.
    grid : spinemorph.synth.Grid
        Geometry (LPS) of the arrays; ``grid.volume(array)`` makes a :class:`~spinemorph.volume.Volume`.
    source, case, contrast : str
        As in :class:`DscaSample`.
    """

    image: np.ndarray
    labels: np.ndarray
    grid: synth.Grid
    source: str
    case: str
    contrast: str

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return self.grid.spacing_mm


@dataclasses.dataclass(frozen=True, eq=False)
class RealSlabPlane:
    """One axial plane of a real T2 SPACE slab (for evaluation).

    Attributes
    ----------
    image : numpy.ndarray
        float32 grey values as stored (0..255), rows anterior -> posterior, columns right -> left.
    mask : numpy.ndarray
        uint8 dural sac (canal) mask, same shape.
    pixel_mm : tuple of float
        (row spacing, column spacing) in mm: (0.469, 0.9) natively, or isotropic after resampling.
    patient : str
    row : int
        PNG row (superior -> inferior index) of the plane.
    z_mm : float
        LPS z (superior) of the plane centre.
    area_mm2 : float
        Canal area on the plane (pixels × pixel area).
    cut_by_slab : bool
        True when the canal mask reaches the slab's first or last slice: the sac continues beyond the imaged strip,
        ``area_mm2`` is only its part inside the strip (kept only with ``whole_sac_only=False``).
    """

    image: np.ndarray
    mask: np.ndarray
    pixel_mm: tuple[float, float]
    patient: str
    row: int
    z_mm: float
    area_mm2: float
    cut_by_slab: bool = False


# ----------------------------------------------------------------------------- prepared SPIDER cases
@dataclasses.dataclass(frozen=True, eq=False)
class _Case:
    source: synth.LabelSource
    centre_z: np.ndarray  # (n,) ascending LPS z of the canal centreline samples
    centre_pts: np.ndarray  # (n, 3) LPS canal centreline
    tangents: np.ndarray  # (n, 3) unit tangents (z >= 0)
    l45_center: np.ndarray | None  # LPS centroid of the L4-5 disc


def _centreline(vol: Volume, canal: np.ndarray, zrange: tuple[float, float] | None, bin_mm: float = 2.0):
    idx = np.argwhere(canal)[:, ::-1]  # i, j, k
    if idx.shape[0] > 200000:
        idx = idx[:: idx.shape[0] // 200000 + 1]
    pts = vol.index_to_lps(idx.astype(float))
    z = pts[:, 2]
    edges = np.arange(z.min(), z.max() + bin_mm, bin_mm)
    which = np.digitize(z, edges)
    cents = []
    for b in np.unique(which):
        sel = which == b
        if sel.sum() >= 5:
            cents.append(pts[sel].mean(0))
    cents = np.array(cents)
    if cents.shape[0] < 3:
        raise InputError("the canal label covers too few levels to define a centreline")
    # smooth along the canal (moving average over 5 bins = 10 mm)
    sm = ndimage.uniform_filter1d(cents, 5, axis=0, mode="nearest")
    tan = np.gradient(sm, axis=0)
    tan /= np.linalg.norm(tan, axis=1, keepdims=True) + 1e-9
    tan[tan[:, 2] < 0] *= -1
    if zrange is not None:
        keep = (sm[:, 2] >= zrange[0]) & (sm[:, 2] <= zrange[1])
        if keep.sum() >= 3:
            sm, tan = sm[keep], tan[keep]
    order = np.argsort(sm[:, 2])
    return sm[order, 2], sm[order], tan[order]


@functools.lru_cache(maxsize=64)
def _spider_case(case: str) -> _Case:
    series = spider.get_series(case)
    generic = spider.remap_labels(spider.load_mask(series), series, "generic")
    src = synth.prepare_labels(generic, fine_spacing_mm=0.8)
    lab = src.labels()
    arr = lab.array
    canal = arr == spider.CANAL_LABEL
    lumbar = ((arr >= 1) & (arr <= 5)) | ((arr >= 201) & (arr <= 205))
    zr = None
    if lumbar.any():
        lo, hi = synth.world_bbox(lab, lumbar)
        zr = (float(lo[2]) + 5.0, float(hi[2]) - 5.0)
    z, pts, tan = _centreline(lab, canal, zr)
    disc = arr == 202
    l45 = lab.index_to_lps(np.argwhere(disc).mean(0)[::-1]) if disc.any() else None
    return _Case(src, z, pts, tan, l45)


def clear_cache() -> None:
    """Drop the prepared SPIDER label maps (frees memory)."""
    _spider_case.cache_clear()


def _check_sources(sources: Sequence[str]) -> tuple[str, ...]:
    sources = tuple(sources)
    bad = [s for s in sources if s not in SOURCES]
    if bad or not sources:
        raise InputError(f"unknown sample source(s) {bad or sources}; use {SOURCES}")
    if "spider_masks" in sources and spider.spider_root() is None:
        raise InputError("source 'spider_masks' needs the SPIDER data; set SPINEMORPH_SPIDER or use sources=('phantom',)")
    return sources


def _pick_contrast(rng: np.random.Generator, contrast: str, probs) -> str:
    if contrast == "mixed":
        return str(rng.choice(["t1", "t2", "random"], p=probs))
    if contrast not in synth.CONTRASTS:
        raise InputError(f"unknown contrast {contrast!r}; use t1, t2, random or mixed")
    return contrast


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    a = np.radians(rng.uniform(-max_deg, max_deg, 3))
    c, s = np.cos(a), np.sin(a)
    rx = np.array([[1, 0, 0], [0, c[0], -s[0]], [0, s[0], c[0]]])
    ry = np.array([[c[1], 0, s[1]], [0, 1, 0], [-s[1], 0, c[1]]])
    rz = np.array([[c[2], -s[2], 0], [s[2], c[2], 0], [0, 0, 1]])
    return rz @ ry @ rx


def _tilt(vec: np.ndarray, rng: np.random.Generator, max_deg: float) -> np.ndarray:
    v = _rotation(rng, max_deg) @ np.asarray(vec, float)
    return v / np.linalg.norm(v)


def _phantom_labels(ph, work: synth.Grid, target_kind: str) -> synth.LabelSource:
    ref = work.volume(np.zeros(work.shape, np.uint8))
    tissue = ph.rasterize_labels(ref, kind="tissue")
    target = ph.rasterize_labels(ref, kind=target_kind)
    return synth.prepare_labels(
        tissue, synth.phantom_tissue_classes(), fine_spacing_mm=None, margin_mm=1e6, nucleus=False, cortex_mm=0.0,
        target=target,
    )


#: synthesis options of the 2D samples with ``style="v2"`` (look of real axial T2 SPACE reslices, compared side by side
#: in ``scripts/dsca_synth_vs_real.py``): cauda equina roots on most planes, finer (1.2 mm) and more of them (real
#: planes show many 1-2 mm dark dots in the CSF); an epidural fat layer where the label map leaves the epidural space
#: empty; more within-tissue variation and finer background blobs (real surroundings are textured, v1 blobs were flat).
DSCA_V2_OPTIONS = synth.SynthOptions(
    p_roots=0.9, roots_mm=1.2, roots_fraction=(0.08, 0.35), std_range=(0.01, 0.08), bg_scale_mm=(4.0, 25.0),
    p_epidural_fat=0.7, epidural_fat_mm=(1.0, 4.0),
)
#: synthesis styles of :func:`dsca_samples`: "v1" = the shipped models' training images (default), "v2" = DSCA_V2_OPTIONS
DSCA_STYLES = ("v1", "v2")

#: no spatial augmentation (phantom samples get their variety from the anatomy and a rotated grid)
_NO_SPATIAL = dataclasses.replace(synth.SynthOptions(), rotation_deg=0.0, scale=0.0, shear=0.0, elastic_mm=0.0)


# ----------------------------------------------------------------------------- 2D DSCA samples
def dsca_samples(
    n: int,
    seed: int,
    sources: Sequence[str] = SOURCES,
    size: int = 320,
    contrast: str = "mixed",
    crop: int | None = None,
    start: int = 0,
    cases: Sequence[str] | None = None,
    phantom_fraction: float = 0.3,
    options: synth.SynthOptions | None = None,
    style: str = "v1",
) -> Iterator[DscaSample]:
    """Synthetic 2D axial training pairs through the dural sac (lazy iterator of :class:`DscaSample`).

    Each sample: a random source (SPIDER training label map, or a phantom with probability ``phantom_fraction``
    when both sources are enabled), a random level along the lumbar canal, a plane perpendicular either to the
    patient S-I axis (tilted by up to ±10°) or to the local canal axis (±5°), a field of view drawn from
    :data:`FOV_MM` resized to ``size`` × ``size`` pixels (``pixel_mm`` = FOV / size), the canal placed near the
    centre-posterior like an axial lumbar image, a slice thickness from :data:`AXIAL_THICKNESS_MM`, and a synthetic
    image (:func:`spinemorph.synth.synthesize`).

    Parameters
    ----------
    n : int
        Number of samples.
    seed : int
        Seed; sample ``i`` uses ``default_rng([seed, start + i])``.
    sources : sequence of {"spider_masks", "phantom"}
    size : int
        Full image size (square).
    contrast : {"mixed", "t1", "t2", "random"}
    crop : int, optional
        Instead of the full FOV, a ``crop`` × ``crop`` window around the canal (jittered ±8 mm) at the same pixel
        size distribution (CPU-budget training).
    start : int
        Index of the first sample (for data-loader workers / resuming).
    cases : sequence of str, optional
        SPIDER cases to use (default: :func:`spinemorph.spider.train_mask_cases`). Held-out cases are refused.
    phantom_fraction : float
        Share of phantom samples when both sources are used.
    options : SynthOptions, optional
        Augmentation ranges for the SPIDER samples.
    style : {"v1", "v2"}
        "v1" (default): the synthesis the shipped models were trained on; "v2": :data:`DSCA_V2_OPTIONS` (when
        ``options`` is None) — more realistic roots, epidural fat and texture.

    Yields
    ------
    DscaSample
        Its :attr:`DscaSample.below_min_area` is True in the rare case that 8 draws all gave a sac below
        :data:`MIN_SAC_AREA_MM2` (the last draw is kept, for a reproducible stream).
    """
    sources = _check_sources(sources)
    if style not in DSCA_STYLES:
        raise InputError(f"unknown synthesis style {style!r}; use one of {', '.join(DSCA_STYLES)}")
    if style == "v2" and options is None:
        options = DSCA_V2_OPTIONS
    case_list = _training_cases(cases) if "spider_masks" in sources else []
    return _dsca_stream(n, seed, sources, size, contrast, crop, start, case_list, phantom_fraction, options, True)


def dsca_held_out_samples(n: int, seed: int, size: int = 320, contrast: str = "mixed") -> Iterator[DscaSample]:
    """Synthetic 2D axial planes from the *held-out* SPIDER label maps (evaluation only, never training).

    The same draw as :func:`dsca_samples` with ``sources=("spider_masks",)`` (sample ``i`` uses
    ``default_rng([seed, i])``: contrast, field of view, slice thickness, case, level, tilt), but over
    :func:`spinemorph.spider.held_out_mask_cases`, which :func:`dsca_samples` refuses by design, and a plane whose
    sac is below :data:`MIN_SAC_AREA_MM2` is redrawn on the same case (the documented evaluation split
    ``DuralSacSegLib.evaluate.EVAL_SPECS["synthetic"]`` was drawn this way).
    """
    cases = spider.held_out_mask_cases()
    if not cases:
        raise InputError("no held-out SPIDER label maps found; set SPINEMORPH_SPIDER to the SPIDER folder")
    return _dsca_stream(n, seed, ("spider_masks",), size, contrast, None, 0, list(cases), 0.0, None, False)


def _dsca_stream(
    n, seed, sources, size, contrast, crop, start, case_list, phantom_fraction, options, redraw_case: bool
) -> Iterator[DscaSample]:
    """The sample loop of :func:`dsca_samples` (arguments already checked); ``redraw_case``: a redraw (sac below
    :data:`MIN_SAC_AREA_MM2`) also draws a new SPIDER case, else only a new plane of the same case."""
    out_px = int(crop) if crop else int(size)
    for idx in range(start, start + int(n)):
        rng = np.random.default_rng([int(seed), int(idx)])
        use_phantom = "phantom" in sources and ("spider_masks" not in sources or rng.random() < phantom_fraction)
        con = _pick_contrast(rng, contrast, MIXED_2D)
        fov = float(rng.uniform(*FOV_MM))
        pixel = fov / size
        thick = float(rng.uniform(*AXIAL_THICKNESS_MM))
        case = None
        for _attempt in range(8):
            if use_phantom:
                sample = _dsca_phantom(rng, con, pixel, out_px, crop is not None, size, thick)
            else:
                if case is None or redraw_case:
                    case = case_list[int(rng.integers(len(case_list)))]
                sample = _dsca_spider(rng, case, con, pixel, out_px, crop is not None, size, thick, options)
            if sample.area_mm2 >= MIN_SAC_AREA_MM2:
                break
        # After 8 draws below MIN_SAC_AREA_MM2 the last one is yielded as it is (not dropped, not redrawn further):
        # this keeps the sample stream, and so the training data of the shipped models, reproducible. Such a
        # sample is marked: ``sample.below_min_area`` is True.
        yield sample


def _plane_center(rng, point, frame, pixel, out_px, cropped, size):
    """Centre of the output plane so that the canal lands near the centre-posterior of a full FOV (or jittered
    around the canal in a crop)."""
    i_dir, j_dir = frame[:, 0], frame[:, 1]
    if cropped:
        return point + i_dir * rng.uniform(-8, 8) + j_dir * rng.uniform(-8, 8)
    col = rng.uniform(0.44, 0.56) * size
    row = rng.uniform(0.55, 0.72) * size
    return point + i_dir * (col - size / 2) * pixel * -1 + j_dir * (row - size / 2) * pixel * -1


def _dsca_spider(rng, case, con, pixel, out_px, cropped, size, thick, options) -> DscaSample:
    c = _spider_case(case)
    t = int(rng.integers(len(c.centre_z)))
    point = c.centre_pts[t]
    normal = _tilt((0.0, 0.0, 1.0), rng, 10.0) if rng.random() < 0.5 else _tilt(c.tangents[t], rng, 5.0)
    angle = float(rng.uniform(-8, 8))
    frame = synth.axial_grid(point, (1, 1), 1.0, normal, in_plane_angle_deg=angle).direction
    center = _plane_center(rng, point, frame, pixel, out_px, cropped, size)
    grid = synth.axial_grid(center, (out_px, out_px), pixel, normal, in_plane_angle_deg=angle)
    res = synth.synthesize(c.source, int(rng.integers(2**31)), grid, con, options, slice_thickness_mm=thick)
    mask = (res.labels.array[0] == spider.CANAL_LABEL).astype(np.uint8)
    img = normalize_percentile(res.image.array[0])
    return DscaSample(img, mask, (pixel, pixel), "spider_masks", case, con, center, grid.direction[:, 2], thick)


def _dsca_phantom(rng, con, pixel, out_px, cropped, size, thick) -> DscaSample:
    from spinemorph import phantom

    pseed = int(rng.integers(N_PHANTOMS))
    ph = phantom.make_phantom(seed=pseed, vary=True)
    lo, hi = ph.levels["L5"][0], ph.levels["L1"][1]
    s = float(rng.uniform(lo + 5, hi - 5))
    point = ph.truth.canal_point_lps(s)
    axis = np.asarray(ph.truth.canal_axis_lps, float)
    # tilt about the left-right axis only (gantry tilt), so the phantom's exact plane area applies
    base = np.array([0.0, 0.0, 1.0]) if rng.random() < 0.5 else axis
    a = math.radians(rng.uniform(-10.0, 10.0) if base[1] == 0 else rng.uniform(-5.0, 5.0))
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])
    normal = rx @ base
    normal[0] = 0.0
    normal /= np.linalg.norm(normal)
    angle = float(rng.uniform(-8, 8))
    frame = synth.axial_grid(point, (1, 1), 1.0, normal, in_plane_angle_deg=angle).direction
    center = _plane_center(rng, point, frame, pixel, out_px, cropped, size)
    grid = synth.axial_grid(center, (out_px, out_px), pixel, normal, in_plane_angle_deg=angle)
    work, _ = synth.thick_slice_grid(grid, thick)
    src = _phantom_labels(ph, work, "dural_sac")
    res = synth.synthesize(src, int(rng.integers(2**31)), grid, con, _NO_SPATIAL, slice_thickness_mm=thick)
    mask = (res.labels.array[0] > 0).astype(np.uint8)
    img = normalize_percentile(res.image.array[0])
    normal = grid.direction[:, 2]
    true_area = float(ph.truth.dsca_plane_mm2(center, normal))
    return DscaSample(img, mask, (pixel, pixel), "phantom", f"phantom{pseed}", con, center, normal, thick, true_area)


def dsca_phantom_samples(
    n: int = 64, seed: int = 0, size: int = 320, contrast: str = "t1", crop: int | None = None, start: int = 0
) -> list[DscaSample]:
    """Synthetic axial phantom planes with the exact dural sac area (``true_area_mm2``), for evaluation.

    Same as :func:`dsca_samples` with ``sources=("phantom",)`` (default contrast "t1", the DSCA source modality).
    """
    return list(dsca_samples(n, seed, ("phantom",), size, contrast, crop, start))


def _training_cases(cases: Sequence[str] | None) -> list[str]:
    allowed = spider.train_mask_cases()
    if cases is None:
        return allowed
    cases = [str(c) for c in cases]
    held = [c for c in cases if c in spider.HELD_OUT_MASK_CASES or c.split("_")[0] in spider.HELD_OUT_PATIENTS]
    if held:
        raise InputError(f"SPIDER case(s) {held} are held out (never train on them); pick from train_mask_cases()")
    unknown = [c for c in cases if c not in allowed]
    if unknown:
        raise InputError(f"SPIDER case(s) {unknown} are not in the manifest")
    if not cases:
        raise InputError("no SPIDER cases given")
    return cases


def stack_dsca(samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack :class:`DscaSample` objects into ``images (N, H, W)`` float32, ``masks (N, H, W)`` uint8 and
    ``pixel_mm (N, 2)`` float64 (row, column)."""
    samples = list(samples)
    return (
        np.stack([s.image for s in samples]).astype(np.float32),
        np.stack([s.mask for s in samples]).astype(np.uint8),
        np.array([s.pixel_mm for s in samples], dtype=np.float64),
    )


# ----------------------------------------------------------------------------- real slab planes
def dsca_real_slab_samples(
    patients: Sequence[str] | None = None,
    isotropic_mm: float | None = None,
    min_area_mm2: float = 10.0,
    row_step: int = 1,
    whole_sac_only: bool = True,
) -> list[RealSlabPlane]:
    """Axial planes of the real T2 SPACE slabs, for evaluation on real images.

    Each PNG row (a plane perpendicular to the image S-I axis) whose canal mask (class 150) is non-empty becomes
    one plane: rows = anterior -> posterior (the PNG columns), columns = patient right -> left (the slab slices,
    reversed). The slab covers only 13-26 slices (~12-23 mm left-right, 0.9 mm apart), about the width of the dural
    sac, so **only planes whose canal mask does not touch the slab's first or last slice are kept** (elsewhere the
    sac is cut off by the slab border and its area unknown). Measured on the 35 slab patients this keeps 1300
    planes (held-out patients: 11: 23, 41: 2, 57: 0, 98: 6, 136: 112, 166: 132, 220: 18; with ``min_area_mm2=1``).
    Neighbouring planes are 0.469 mm apart and strongly correlated; ``row_step`` thins them.

    Parameters
    ----------
    patients : sequence of str, optional
        Slab patients; default: the held-out ones (:data:`spinemorph.spider.HELD_OUT_SLAB_PATIENTS` present).
    isotropic_mm : float, optional
        Resample every plane to this isotropic pixel size (image: linear, mask: linear then > 0.5); default keeps
        the native (0.469 mm rows, 0.9 mm columns).
    min_area_mm2 : float
        Drop planes with a smaller canal area (slivers at the ends of the sac).
    row_step : int
        Keep every ``row_step``-th PNG row.
    whole_sac_only : bool
        True (default): only planes whose canal mask does not touch the slab's first or last slice. False: every
        plane with canal, marked ``cut_by_slab`` where the sac continues beyond the strip — usable for training and
        for evaluation *inside the imaged strip* (the image and the mask exist only there).
    """
    if patients is None:
        patients = spider.held_out_slab_patients()
    out: list[RealSlabPlane] = []
    for p in patients:
        image, mask = spider.load_slab(p)
        img = np.asarray(image.array, np.float32)  # (k = L->R, j = S->I, i = A->P)
        canal = np.asarray(mask.array) == spider.SLAB_CANAL
        sk, si = image.spacing_mm[2], image.spacing_mm[0]
        for row in range(0, img.shape[1], max(1, int(row_step))):
            m = canal[:, row, :]
            cut = bool(m[0].any() or m[-1].any())
            if not m.any() or (cut and whole_sac_only):
                continue
            plane = img[:, row, :].T[:, ::-1]  # rows A->P, cols R->L
            mplane = m.T[:, ::-1]
            px = (si, sk)
            if isotropic_mm:
                zoom = (si / isotropic_mm, sk / isotropic_mm)
                plane = ndimage.zoom(plane, zoom, order=1, grid_mode=True, mode="nearest")
                mplane = ndimage.zoom(mplane.astype(np.float32), zoom, order=1, grid_mode=True, mode="nearest") > 0.5
                px = (float(isotropic_mm), float(isotropic_mm))
            area = float(mplane.sum()) * px[0] * px[1]
            if area < min_area_mm2:
                continue
            centre_idx = np.array([img.shape[2] / 2, row, img.shape[0] / 2])
            z = float(image.index_to_lps(centre_idx)[2])
            out.append(RealSlabPlane(np.ascontiguousarray(plane, np.float32), np.ascontiguousarray(mplane, np.uint8),
                                     (float(px[0]), float(px[1])), str(p), int(row), z, area, cut))
    return out


#: share of the training slab patients kept apart as the DSCA validation split (threshold / post-processing choice,
#: checkpoint selection); project design choice
DSCA_VALIDATION_EVERY = 5


def dsca_validation_slab_patients() -> list[str]:
    """Training slab patients set apart for validation (every :data:`DSCA_VALIDATION_EVERY`-th of
    :func:`spinemorph.spider.train_slab_patients`, sorted numerically, starting with the first). Never held-out
    patients; the DSCA decision threshold and post-processing are chosen on these (``scripts/dsca_calibrate.py``)."""
    return sorted(spider.train_slab_patients(), key=int)[::DSCA_VALIDATION_EVERY]


def dsca_training_slab_patients() -> list[str]:
    """Training slab patients minus the validation split (:func:`dsca_validation_slab_patients`)."""
    val = set(dsca_validation_slab_patients())
    return [p for p in sorted(spider.train_slab_patients(), key=int) if p not in val]


def dsca_real_slab_training_samples(
    patients: Sequence[str] | None = None, isotropic_mm: float = 0.6, row_step: int = 2, min_area_mm2: float = 10.0,
) -> list[RealSlabPlane]:
    """Axial planes of the *training* patients' real T2 SPACE slabs (for training: cut planes included).

    Every plane with canal (``whole_sac_only=False``): the image exists only on the narrow left-right strip of the
    slab, so train with the loss limited to that strip (``DuralSacSegLib.evaluate.SliceSample.valid``). Default
    patients: :func:`dsca_training_slab_patients`. Held-out patients are refused.
    """
    if patients is None:
        patients = dsca_training_slab_patients()
    patients = [str(p) for p in patients]
    held = [p for p in patients if p in spider.HELD_OUT_PATIENTS or p in spider.HELD_OUT_SLAB_PATIENTS]
    if held:
        raise InputError(f"slab patient(s) {held} are held out (never train on them); pick from train_slab_patients()")
    return dsca_real_slab_samples(patients, isotropic_mm=isotropic_mm, min_area_mm2=min_area_mm2, row_step=row_step,
                                  whole_sac_only=False)


# ----------------------------------------------------------------------------- 3D foramen samples
def foramen_samples(
    n: int,
    seed: int,
    sources: Sequence[str] = SOURCES,
    spacing_mm: float = 0.8,
    crop_shape: tuple[int, int, int] | None = None,
    contrast: str = "mixed",
    start: int = 0,
    cases: Sequence[str] | None = None,
    phantom_fraction: float = 0.3,
    options: synth.SynthOptions | None = None,
) -> Iterator[ForamenSample]:
    """Synthetic 3D training pairs for the L4 / L4-5 disc / L5 network (lazy iterator of :class:`ForamenSample`).

    Grid: ``spacing_mm`` isotropic, orientation PIR like a sagittal 3D T2 SPACE (array ``(k, j, i)`` =
    (left -> right, superior -> inferior, anterior -> posterior)).

    Parameters
    ----------
    n, seed, start, sources, contrast, cases, phantom_fraction, options
        As in :func:`dsca_samples`.
    spacing_mm : float
        Isotropic voxel size.
    crop_shape : (k, j, i), optional
        Array shape of a crop centred on the L4-5 disc (jittered ±10 mm in every direction), e.g. (128, 192, 192).
        Default: SPIDER samples cover the whole prepared label volume; phantom samples a 64 × 256 × 256 grid around
        L4-5.

    Yields
    ------
    ForamenSample
        image z-scored float32, labels uint8 (0 bg, 1 L4, 2 L4-5 disc, 3 L5).
    """
    sources = _check_sources(sources)
    case_list = _training_cases(cases) if "spider_masks" in sources else []
    for idx in range(start, start + int(n)):
        rng = np.random.default_rng([int(seed), int(idx)])
        use_phantom = "phantom" in sources and ("spider_masks" not in sources or rng.random() < phantom_fraction)
        con = _pick_contrast(rng, contrast, MIXED_3D)
        if use_phantom:
            yield _foramen_phantom(rng, con, spacing_mm, crop_shape)
        else:
            case = case_list[int(rng.integers(len(case_list)))]
            yield _foramen_spider(rng, case, con, spacing_mm, crop_shape, options)


def _foramen_spider(rng, case, con, spacing_mm, crop_shape, options) -> ForamenSample:
    c = _spider_case(case)
    src = c.source
    if crop_shape is not None:
        center = (c.l45_center if c.l45_center is not None else src.codes.index_to_lps(
            (np.asarray(src.codes.size_ijk) - 1) / 2)) + rng.uniform(-10, 10, 3)
        grid = synth.iso_grid(src.codes, spacing_mm, "PIR", center, tuple(crop_shape))
    else:
        grid = synth.iso_grid(src.codes, spacing_mm, "PIR")
    res = synth.synthesize(src, int(rng.integers(2**31)), grid, con, options)
    lut = np.zeros(int(src.code_label.max()) + 1, np.uint8)
    for g, f in _GENERIC_TO_FORAMEN.items():
        if g < lut.size:
            lut[g] = f
    labels = lut[res.labels.array]
    return ForamenSample(zscore(res.image.array), labels, grid, "spider_masks", case, con)


def _foramen_phantom(rng, con, spacing_mm, crop_shape) -> ForamenSample:
    from spinemorph import phantom

    pseed = int(rng.integers(N_PHANTOMS))
    ph = phantom.make_phantom(seed=pseed, vary=True)
    shape = tuple(crop_shape) if crop_shape is not None else (64, 256, 256)
    disc_center = ph.canal_to_lps(np.array([0.0, -18.0, 0.0]))
    center = disc_center + rng.uniform(-10, 10, 3)
    direction = _rotation(rng, 10.0) @ synth.ORIENTATIONS["PIR"]
    size = np.asarray(shape[::-1])
    origin = center - direction @ (spacing_mm * (size - 1) / 2)
    grid = synth.Grid(tuple(size), (spacing_mm,) * 3, tuple(origin), direction)
    src = _phantom_labels(ph, grid, "foramen")
    res = synth.synthesize(src, int(rng.integers(2**31)), grid, con, _NO_SPATIAL)
    labels = res.labels.array.astype(np.uint8)
    return ForamenSample(zscore(res.image.array), labels, grid, "phantom", f"phantom{pseed}", con)

