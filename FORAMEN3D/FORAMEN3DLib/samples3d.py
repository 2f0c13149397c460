"""Synthetic 3D foramen cases for training and evaluation (SPIDER synthesis, block phantoms, lumbar phantoms).

- :func:`spider_sample`: a SynthSeg-style image (:mod:`spinemorph.synth`) of a SPIDER label map on the crop grid that
  :func:`FORAMEN3DLib.preprocess.preprocess_volume` picks for a 0.8 mm sagittal scan of its field of view (training:
  shifted by a random offset), or on a full field of view (evaluation);
- :func:`blocks_sample`: exact-geometry block phantoms (smoke tests, CI);
- :func:`phantom_sample`: a phantom sample of :func:`spinemorph.samples.foramen_samples`;
- :func:`generate_cases`: evaluation cases ``(case_id, image, truth)`` as full volumes.

Used by :mod:`FORAMEN3DLib.train3d` (which re-exports these names) and :mod:`FORAMEN3DLib.evaluate3d`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from spinemorph.errors import InputError, SpineMorphError
from spinemorph.volume import Volume

from .preprocess import CANONICAL_AXES, CROP_SHAPE, crop_geometry

#: sources of :func:`generate_cases`
DATA_SOURCES = ("spider-train", "spider-heldout", "blocks", "phantom")


def _foramen_from_generic(arr: np.ndarray) -> np.ndarray:
    out = np.zeros(arr.shape, np.uint8)
    out[arr == 2] = 1
    out[arr == 202] = 2
    out[arr == 1] = 3
    return out


def _canonical_crop_for_fov(center_lps, extent_mm) -> tuple:
    """Crop grid (origin, direction) that preprocessing picks for a 0.8 mm PIR scan of the given FOV."""
    n = np.maximum(1, np.round(np.asarray(extent_mm, float) / 0.8)).astype(int)
    d = CANONICAL_AXES
    origin = np.asarray(center_lps, float) - d @ (0.8 * (n - 1) / 2.0)
    ref = Volume(np.empty((n[2], n[1], n[0]), np.uint8), (0.8,) * 3, tuple(origin), d)
    return crop_geometry(ref)


def _spider_case_list(which: str) -> list[str]:
    from spinemorph import spider

    if spider.spider_root() is None:
        raise InputError(f"SPIDER data not found; set {spider.ENV_VAR} (needed for data source {which!r})")
    cases = spider.train_mask_cases() if which == "spider-train" else spider.held_out_mask_cases()
    if which == "spider-train":
        bad = set(cases) & set(spider.HELD_OUT_MASK_CASES)
        if bad:
            raise SpineMorphError(f"held-out cases {sorted(bad)} would be trained on; fix spinemorph.spider")
    return sorted(cases)


_PREPARED: dict = {}


def _prepared_spider(case: str):
    from spinemorph import spider, synth

    if case not in _PREPARED:
        generic = spider.remap_labels(spider.load_mask(case), case, "generic")
        if len(_PREPARED) > 6:  # prepared label maps are large: keep a few
            _PREPARED.clear()
        _PREPARED[case] = (synth.prepare_labels(generic, fine_spacing_mm=0.8), generic)
    return _PREPARED[case]


def _pick_contrast(rng: np.random.Generator, contrasts: dict) -> str:
    names = sorted(contrasts)
    p = np.array([float(contrasts[n]) for n in names])
    return str(names[int(rng.choice(len(names), p=p / p.sum()))])


def spider_sample(case: str, seed: int, jitter_mm=(10.0, 20.0, 20.0), contrasts=None, full_fov: bool = False):
    """One synthetic sample of a SPIDER label map on the crop grid.

    Returns ``(image_crop, labels_crop, fov_mask)`` arrays of shape ``CROP_SHAPE`` (``full_fov=False``), or
    ``(image, labels)`` Volumes on a 0.8 mm PIR grid centred on the scan's field of view that contains the crop
    window with a margin (``full_fov=True``, used for evaluation: it goes through the full preprocessing).
    """
    from spinemorph import synth

    rng = np.random.default_rng(seed)
    src, generic = _prepared_spider(case)
    contrast = _pick_contrast(rng, contrasts or {"t2": 1.0})
    lo, hi = synth.world_bbox(generic)
    centre = (lo + hi) / 2
    ext = np.abs(CANONICAL_AXES.T @ (hi - lo)) + 0.8
    if full_fov:
        crop = _canonical_crop_for_fov(centre, ext)
        # symmetric grid about the FOV centre holding the crop window + 8 mm margin
        c_lps = np.asarray(crop.origin_mm) + crop.direction @ (0.8 * (np.asarray(crop.size_ijk) - 1) / 2)
        half = np.abs(CANONICAL_AXES.T @ (c_lps - centre)) + 0.8 * (np.asarray(crop.size_ijk) - 1) / 2 + 8.0
        n = 2 * np.ceil(half / 0.8).astype(int)
        origin = centre - CANONICAL_AXES @ (0.8 * (n - 1) / 2.0)
        grid = synth.Grid(tuple(n), (0.8,) * 3, tuple(origin), CANONICAL_AXES)
        res = synth.synthesize(src, int(rng.integers(2**31)), grid, contrast)
        return res.image, res.labels.with_array(_foramen_from_generic(res.labels.array))
    shift = rng.uniform(-1, 1, 3) * np.asarray(jitter_mm, float)  # (L-R, S-I, A-P) in mm
    centre = centre + np.array([shift[0], shift[2], shift[1]])
    crop = _canonical_crop_for_fov(centre, ext)
    grid = synth.Grid(crop.size_ijk, crop.spacing_mm, crop.origin_mm, crop.direction)
    res = synth.synthesize(src, int(rng.integers(2**31)), grid, contrast)
    # field of view of the simulated scan: the label map's bounding box (outside: no signal, like padding)
    k, j, i = np.meshgrid(*[np.arange(s) for s in CROP_SHAPE], indexing="ij", sparse=True)
    lps = np.asarray(crop.origin_mm)[:, None] + crop.direction @ (0.8 * np.stack(np.broadcast_arrays(i, j, k)).reshape(3, -1))
    inside = np.all((lps >= (lo - 0.4)[:, None]) & (lps <= (hi + 0.4)[:, None]), axis=0).reshape(CROP_SHAPE)
    img = np.where(inside, res.image.array, 0).astype(np.float32)
    return img, _foramen_from_generic(res.labels.array) * inside, inside


def blocks_sample(case_seed: int, seed: int, full_fov: bool = False):
    """Exact-geometry block phantom on the crop grid: L4 / disc / L5 boxes with posterior-element bars.

    ``case_seed`` fixes the anatomy (sizes, position), ``seed`` the intensities and noise. Returns
    ``(image_crop, labels_crop, fov_mask)`` (or Volumes on a 0.8 mm PIR grid with ``full_fov=True``).
    """
    ra = np.random.default_rng(case_seed)
    rs = np.random.default_rng(seed)
    shape = CROP_SHAPE
    k, j, i = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij", sparse=True)
    ck = shape[0] / 2 + ra.uniform(-8, 8)
    cj = shape[1] / 2 + ra.uniform(-15, 15)  # disc centre row (superior->inferior)
    ci = shape[2] / 2 + ra.uniform(-15, 15)  # vertebral body centre column (anterior->posterior)
    body_w = ra.uniform(45, 55) / 0.8  # L-R
    body_d = ra.uniform(32, 40) / 0.8  # A-P
    body_h = ra.uniform(24, 30) / 0.8  # S-I
    disc_h = ra.uniform(8, 12) / 0.8
    lab = np.zeros(shape, np.uint8)
    in_lr = np.abs(k - ck) <= body_w / 2
    in_ap = np.abs(i - ci) <= body_d / 2
    disc = in_lr & in_ap & (np.abs(j - cj) <= disc_h / 2)
    l4 = in_lr & in_ap & (j < cj - disc_h / 2) & (j >= cj - disc_h / 2 - body_h)
    l5 = in_lr & in_ap & (j > cj + disc_h / 2) & (j <= cj + disc_h / 2 + body_h)
    # pedicles / laminae: one bar per vertebra behind its body, on both sides of the canal (12 mm off the midline)
    for is_l4, jc in ((True, cj - disc_h / 2 - body_h / 2), (False, cj + disc_h / 2 + body_h / 2)):
        bar = (np.abs(np.abs(k - ck) - 12 / 0.8) <= 4 / 0.8) & (i > ci + body_d / 2) & (i <= ci + body_d / 2 + 30 / 0.8)
        bar = bar & (np.abs(j - jc) <= 6 / 0.8)
        if is_l4:
            l4 = l4 | bar
        else:
            l5 = l5 | bar
    lab[l4] = 1
    lab[disc] = 2
    lab[l5] = 3
    means = np.array([rs.uniform(0.1, 0.3), rs.uniform(0.35, 0.6), rs.uniform(0.7, 1.0), rs.uniform(0.35, 0.6)], np.float32)
    img = means[lab] + rs.normal(0, rs.uniform(0.02, 0.06), shape).astype(np.float32)
    fov = np.ones(shape, bool)
    if full_fov:
        crop = _canonical_crop_for_fov((0.0, 0.0, 0.0), (256.0, 256.0, 102.4))
        vol = crop.volume(img.astype(np.float32))
        return vol, vol.with_array(lab)
    return img.astype(np.float32), lab, fov


def _phantom_case(seed: int):
    """(image, labels) of a lumbar phantom (random anatomy ``make_phantom(seed, vary=True)``) imaged by the
    sagittal 3D T2 SPACE simulation (:func:`spinemorph.acquisition.acquire_space_t2`), with its exact foramen map."""
    from spinemorph import acquisition, phantom

    ph = phantom.make_phantom(seed=int(seed), vary=True)
    acq = acquisition.acquire_space_t2(ph, seed=int(seed))
    image = acq.image
    return image.with_array(image.array.astype(np.float32)), acq.labels["foramen"]


def generate_cases(source: str, n: int, seed: int) -> Iterator[tuple[str, Volume, Volume]]:
    """Evaluation cases ``(case_id, image, truth)`` as full volumes that go through :func:`preprocess_volume`.

    ``spider-train`` / ``spider-heldout``: synthesised (contrast "t2") from the SPIDER training / held-out label
    maps, cycling through the cases, seed ``seed + index``, on a 0.8 mm PIR grid centred on the scan's field of
    view; ``blocks``: block phantoms; ``phantom``: lumbar phantoms (anatomy seeds ``seed + index``; training draws
    anatomies 0-999, so use seeds ≥ 1000 for unseen anatomies) with the T2 SPACE simulation.
    """
    if source in ("spider-train", "spider-heldout"):
        cases = _spider_case_list(source)
        for idx in range(n):
            case = cases[idx % len(cases)]
            image, labels = spider_sample(case, seed + idx, contrasts={"t2": 1.0}, full_fov=True)
            yield f"{case}_s{seed + idx}", image, labels
    elif source == "blocks":
        for idx in range(n):
            image, labels = blocks_sample(seed + idx, seed + 7919 * (idx + 1), full_fov=True)
            yield f"blocks_{seed + idx}", image, labels
    elif source == "phantom":
        for idx in range(n):
            image, labels = _phantom_case(seed + idx)
            yield f"phantom_{seed + idx}", image, labels
    else:
        raise InputError(f"unknown data source {source!r}; choose one of {', '.join(DATA_SOURCES)}")


def phantom_sample(seed: int, contrasts=None):
    """Phantom sample of :func:`spinemorph.samples.foramen_samples` (source "phantom") on a ``CROP_SHAPE`` grid
    centred on L4-5 (±10 mm, rotated ±10°), as ``(image, labels, fov_mask)`` arrays."""
    from spinemorph import samples

    rng = np.random.default_rng(seed)
    con = _pick_contrast(rng, contrasts or {"t2": 1.0})
    s = next(iter(samples.foramen_samples(1, int(rng.integers(2**31)), sources=("phantom",), spacing_mm=0.8,
                                          crop_shape=CROP_SHAPE, contrast=con)))
    if s.image.shape != CROP_SHAPE:
        raise SpineMorphError(f"spinemorph.samples returned {s.image.shape}, expected {CROP_SHAPE}")
    return np.asarray(s.image, np.float32), np.asarray(s.labels, np.uint8), np.ones(CROP_SHAPE, bool)
