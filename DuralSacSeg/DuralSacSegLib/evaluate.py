"""Evaluation of the 2D dural sac networks: pixel metrics, area agreement, plots, CSV / JSON reports.

Metrics (as in the source method): accuracy, precision, recall, F1 (= Dice) — pooled over every pixel of every slice
on the 320×320 network grid —, mean per-slice Dice, dural sac area mean absolute error (MAE) and mean squared error
(MSE) in mm², Pearson r of predicted vs true area (``scipy.stats.pearsonr``) and the Bland–Altman mean difference
(predicted − true) with its 95 % limits of agreement (mean ± 1.96 SD of the differences, SD with ``ddof=1``).

Areas: predicted area = foreground pixels on the 320×320 grid × the pixel area on that grid (the input's pixel size
scaled by the resize, :func:`DuralSacSegLib.models.prepare_slice`); the true area is the sample's exact area when it
has one (phantoms), otherwise its mask's foreground pixels × pixel area on the mask's own grid.

Data sets (``--data``): ``synthetic`` (images synthesised from SPIDER label maps, held-out seed and held-out patients),
``real-slabs`` (axial planes of the held-out real T2 SPACE slabs, never trained on), ``phantom`` (procedural phantom
slices, a seed never used in training; the phantom family itself is part of the training data). They come from
:mod:`spinemorph.samples`; the documented splits are :data:`DuralSacSegLib.train.EVAL_SPECS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_path, atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError

#: evaluation data sets (see :func:`load_dataset`)
DATASETS = ("synthetic", "real-slabs", "phantom")


# ----------------------------------------------------------------------------- samples
@dataclasses.dataclass
class SliceSample:
    """One 2D training / evaluation slice.

    Attributes
    ----------
    image : numpy.ndarray
        2D slice ``[row, column]``, raw intensities (normalised later by :func:`~DuralSacSegLib.models.prepare_slice`).
    mask : numpy.ndarray
        2D dural sac mask (0/1) on the same grid.
    pixel_mm : (float, float)
        Pixel size ``(sx, sy)`` along columns and rows in mm.
    group : str
        Patient / phantom id: cross-validation folds never split a group.
    source : str
        Where it comes from (for reports).
    true_area_mm2 : float or None
        Exact dural sac area when known (phantoms); else the mask's area.
    valid : numpy.ndarray or None
        Where the image holds data (0 = padding, e.g. outside a real slab strip); ``None`` = everywhere.
    """

    image: np.ndarray
    mask: np.ndarray
    pixel_mm: tuple[float, float] = (1.0, 1.0)
    group: str = ""
    source: str = ""
    true_area_mm2: float | None = None
    valid: np.ndarray | None = None

    @property
    def mask_area_mm2(self) -> float:
        if self.true_area_mm2 is not None:
            return float(self.true_area_mm2)
        return float(np.count_nonzero(self.mask)) * float(self.pixel_mm[0]) * float(self.pixel_mm[1])


def _patient_of(case: str) -> str:
    """Group of a sample: the SPIDER patient id (``"104_t2"`` → ``"104"``) or the phantom name."""
    case = str(case or "")
    return case.split("_")[0] if case[:1].isdigit() else case


def as_slice_sample(obj, source: str = "") -> SliceSample:
    """Convert a sample of :mod:`spinemorph.samples` to a :class:`SliceSample`.

    ``DscaSample``: isotropic ``pixel_mm`` (float), group = SPIDER patient (or phantom) of ``case``.
    ``RealSlabPlane``: ``pixel_mm`` is (row, column) spacing there and becomes (sx, sy) = (column, row) here;
    group = patient.
    """
    if isinstance(obj, SliceSample):
        return obj
    image = np.asarray(obj.image)
    mask = np.asarray(obj.mask)
    if image.ndim != 2 or image.shape != mask.shape:
        raise InputError(f"sample from {source or 'the data source'} is not a 2D image with a mask of the same shape")
    pixel = obj.pixel_mm
    if np.ndim(pixel) == 0:
        sx = sy = float(pixel)
    else:
        sy, sx = (float(p) for p in pixel)  # RealSlabPlane: (row spacing, column spacing)
    group = getattr(obj, "patient", None) or _patient_of(getattr(obj, "case", ""))
    return SliceSample(
        image=image.astype(np.float32, copy=False),
        mask=(mask > 0).astype(np.uint8),
        pixel_mm=(sx, sy),
        group=str(group),
        source=str(getattr(obj, "source", source) or source),
    )


def tiny_phantom_samples(n: int = 8, size: int = 64, seed: int = 0, pixel_mm: float = 1.0) -> list[SliceSample]:
    """Small ellipse phantoms with exact areas, for unit tests only (never used for the embedded weights).

    A bright ellipse (the "sac", area ``π a b`` mm²) inside a darker disc on a noisy background; half of the groups
    have no sac (negative slices).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    out = []
    for i in range(n):
        cx, cy = rng.uniform(0.35, 0.65, 2) * size
        a, b = rng.uniform(0.08, 0.16, 2) * size
        body = ((xx - size / 2) / (0.45 * size)) ** 2 + ((yy - size / 2) / (0.4 * size)) ** 2 <= 1
        sac = (((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1) if i % 4 != 3 else np.zeros_like(body)
        img = 0.1 + 0.3 * body + 0.5 * sac + rng.normal(0, 0.03, (size, size))
        out.append(
            SliceSample(
                image=img.astype(np.float32),
                mask=sac.astype(np.uint8),
                pixel_mm=(pixel_mm, pixel_mm),
                group=f"tiny{i % 4}",
                source="tiny-phantom",
            )
        )
    return out


def _square_fov(sample: SliceSample, size: int) -> SliceSample:
    """Place a plane (e.g. a narrow real slab strip) on a ``size`` × ``size`` grid at its own pixel size.

    Rows are cropped around the sac (its centroid at 63 % of the height, like the canal in a full axial field of
    view) or padded; columns are centred and padded with the image minimum (no data outside the slab).
    """
    img, msk = sample.image, sample.mask
    fill = float(img.min())
    out_i = np.full((size, size), fill, np.float32)
    out_m = np.zeros((size, size), np.uint8)
    rows, cols = img.shape
    cy = float(np.argwhere(msk)[:, 0].mean()) if msk.any() else rows / 2
    r0 = int(round(cy - 0.63 * size))  # source row shown at output row 0
    c0 = (cols - size) // 2
    src_r = slice(max(r0, 0), min(r0 + size, rows))
    src_c = slice(max(c0, 0), min(c0 + size, cols))
    dst_r = slice(src_r.start - r0, src_r.stop - r0)
    dst_c = slice(src_c.start - c0, src_c.stop - c0)
    out_i[dst_r, dst_c] = img[src_r, src_c]
    out_m[dst_r, dst_c] = msk[src_r, src_c]
    valid = np.zeros((size, size), np.uint8)
    valid[dst_r, dst_c] = 1
    lost = int(msk.sum()) - int(out_m.sum())
    area = sample.mask_area_mm2 if lost == 0 else float(out_m.sum()) * sample.pixel_mm[0] * sample.pixel_mm[1]
    return dataclasses.replace(sample, image=out_i, mask=out_m, true_area_mm2=area, valid=valid)


def _held_out_synthetic(n: int, seed: int, size: int = 320, contrast: str = "mixed"):
    """Synthetic axial planes from the *held-out* SPIDER label maps (never trained on).

    :func:`spinemorph.samples.dsca_samples` refuses held-out cases by design (training), so this draws planes with
    its per-case plane sampler, in the same way (random level, tilt, field of view, slice thickness, contrast).
    """
    from spinemorph import samples as sm
    from spinemorph import spider

    cases = spider.held_out_mask_cases()
    if not cases:
        raise InputError("no held-out SPIDER label maps found; set SPINEMORPH_SPIDER to the SPIDER folder")
    out = []
    for idx in range(int(n)):
        rng = np.random.default_rng([int(seed), idx])
        con = sm._pick_contrast(rng, contrast, sm.MIXED_2D)
        pixel = float(rng.uniform(*sm.FOV_MM)) / size
        thick = float(rng.uniform(*sm.AXIAL_THICKNESS_MM))
        case = cases[int(rng.integers(len(cases)))]
        for _attempt in range(8):
            sample = sm._dsca_spider(rng, case, con, pixel, size, False, size, thick, None)
            if sample.area_mm2 >= sm.MIN_SAC_AREA_MM2:
                break
        out.append(sample)
    return out


#: image file endings a data folder may hold
FOLDER_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha", ".mhd")


def _folder_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """``(case, image, mask)`` of a data folder: ``<case>_image.<ext>`` next to ``<case>_mask.<ext>``."""
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist or is not a folder")
    pairs, orphans = [], []
    for img in sorted(folder.iterdir()):
        name = img.name
        suffix = next((x for x in FOLDER_SUFFIXES if name.endswith(x)), None)
        if suffix is None or not name[: -len(suffix)].endswith("_image"):
            continue
        case = name[: -len(suffix) - len("_image")]
        mask = next((folder / f"{case}_mask{x}" for x in FOLDER_SUFFIXES if (folder / f"{case}_mask{x}").is_file()), None)
        if mask is None:
            orphans.append(name)
        else:
            pairs.append((case, img, mask))
    if orphans:
        raise InputError(f"data folder {folder}: no <case>_mask file for {', '.join(orphans[:5])}"
                         + (" ..." if len(orphans) > 5 else ""))
    if not pairs:
        raise InputError(f"data folder {folder} holds no <case>_image.<ext> + <case>_mask.<ext> pairs "
                         f"(ext one of {', '.join(FOLDER_SUFFIXES)})")
    return pairs


def folder_samples(path: str | os.PathLike, group_sep: str = "_") -> list[SliceSample]:
    """Axial slices of your own data: every ``<case>_image.<ext>`` with its ``<case>_mask.<ext>`` (dural sac > 0).

    Each volume pair must share its grid. Axial stacks are used as acquired; other volumes are resliced to axial
    planes (image linear, mask nearest; :func:`DuralSacSegLib.segment.reslice_to_axial`). Every slice becomes a sample
    (slices without dural sac included, as the source method trains on whole series); the cross-validation group is
    the case name up to the first ``group_sep`` (name cases ``<patient>_<series>`` to keep a patient in one fold).
    """
    from DuralSacSegLib.segment import is_axial, reslice_to_axial
    from spinemorph.volume import read_volume

    out: list[SliceSample] = []
    for case, img_path, mask_path in _folder_pairs(Path(path)):
        image, mask = read_volume(img_path), read_volume(mask_path)
        if image.shape != mask.shape or not np.allclose(image.affine_lps, mask.affine_lps, atol=1e-3):
            raise InputError(f"{mask_path.name} is not on the grid of {img_path.name} (size or geometry differs)")
        if image.array.ndim != 3:
            raise InputError(f"{img_path.name} is not a 3D volume")
        if not is_axial(image):
            image, mask = reslice_to_axial(image), reslice_to_axial(mask, interpolator="nearest")
        sx, sy, _ = image.spacing_mm
        group = case.split(group_sep)[0] if group_sep else case
        for k in range(image.shape[0]):
            out.append(SliceSample(image=np.asarray(image.array[k], np.float32),
                                   mask=(np.asarray(mask.array[k]) > 0).astype(np.uint8),
                                   pixel_mm=(float(sx), float(sy)), group=group, source=f"folder:{case}"))
    return out


def load_dataset(spec: dict | str, purpose: str = "evaluation") -> list[SliceSample]:
    """Load slices described by ``spec``.

    Parameters
    ----------
    spec : dict or str
        ``{"source": ..., ...}``:

        - ``"synthetic"``: :func:`spinemorph.samples.dsca_samples` (keys ``n``, ``seed`` and its other keyword
          arguments; training label maps only); with ``"held_out": true`` planes of the held-out SPIDER label maps
          instead (evaluation);
        - ``"phantom"``: ``dsca_samples(sources=("phantom",))`` (keys ``n``, ``seed``);
        - ``"real-slabs"``: :func:`spinemorph.samples.dsca_real_slab_samples` (key ``split``: ``"held_out"``
          (default, evaluation), ``"train"`` (training patients minus the validation split, every plane with canal,
          :func:`spinemorph.samples.dsca_real_slab_training_samples`) or ``"validation"``
          (:func:`spinemorph.samples.dsca_validation_slab_patients`); the held-out split takes the keys
          ``isotropic_mm``, ``patients``; ``row_step`` keeps every n-th PNG row), each plane placed on a ``square`` × ``square`` grid (key ``square``,
          default 320) at its own pixel size — the slab is a narrow left-right strip, resizing it to 320×320 would
          distort it;
        - ``"folder"``: your own data, :func:`folder_samples` (key ``path``: a folder of ``<case>_image.<ext>`` +
          ``<case>_mask.<ext>`` volumes);
        - ``"tiny"``: :func:`tiny_phantom_samples` (unit tests only).

        ``cache_dir``: keep the generated slices in an ``.npz`` there (keyed by the rest of the spec).
    purpose : str
        Used in error messages.
    """
    if isinstance(spec, str):
        spec = {"source": spec}
    spec = dict(spec)
    cache_dir = spec.pop("cache_dir", None)
    if cache_dir:
        cached = _read_cache(Path(cache_dir), spec)
        if cached is not None:
            return cached
    key_spec = dict(spec)
    source = spec.pop("source", "synthetic")
    if source == "tiny":
        raw = tiny_phantom_samples(**spec)
    elif source == "folder":
        if "path" not in spec:
            raise InputError(f"{purpose} data source 'folder' needs a 'path'")
        raw = folder_samples(spec.pop("path"), **spec)
    elif source in ("synthetic", "phantom", "real-slabs"):
        from spinemorph import samples as sm

        if source == "real-slabs":
            square = int(spec.pop("square", 320))
            every = int(spec.pop("row_step", 1))
            split = spec.pop("split", "held_out")
            if split == "held_out":
                planes = [p for p in sm.dsca_real_slab_samples(**spec) if p.row % every == 0]
            elif split in ("train", "validation"):
                # training patients only; every plane with canal (cut ones included): train / validate inside the strip
                pats = spec.pop("patients", None)
                if split == "validation":
                    pats = sm.dsca_validation_slab_patients() if pats is None else pats
                    held = [p for p in pats if p in sm.spider.HELD_OUT_PATIENTS]
                    if held:
                        raise InputError(f"validation slab patients {held} are held out; never tune on them")
                    planes = sm.dsca_real_slab_samples(pats, row_step=every, whole_sac_only=False, **spec)
                else:
                    planes = sm.dsca_real_slab_training_samples(pats, row_step=every, **spec)
            else:
                raise InputError(f"real-slabs split must be held_out, train or validation, got {split!r}")
            raw = [_square_fov(as_slice_sample(p, source), square) for p in planes]
        elif source == "phantom":
            raw = list(sm.dsca_samples(sources=("phantom",), **spec))
        elif spec.pop("held_out", False):
            raw = _held_out_synthetic(**spec)
        else:
            raw = list(sm.dsca_samples(**spec))
    else:
        raise InputError(f"unknown {purpose} data source {source!r}; choose one of {', '.join(DATASETS)}")
    samples = [as_slice_sample(s, source) for s in raw]
    if not samples:
        raise InputError(f"{purpose} data source {source!r} gave no slices; check the data (SPIDER folder?)")
    if cache_dir:
        _write_cache(Path(cache_dir), key_spec, samples)
    return samples


def _cache_path(cache_dir: Path, spec: dict) -> Path:
    import hashlib

    keyed = {**spec, "_format": 2} if spec.get("source") == "real-slabs" else spec  # format 2: with the valid region
    key = hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"dsca_samples_{spec.get('source', 'synthetic')}_{key}.npz"


def _read_cache(cache_dir: Path, spec: dict) -> list[SliceSample] | None:
    """Samples cached by :func:`_write_cache` for exactly this ``spec`` (``None`` if absent or unreadable)."""
    path = _cache_path(cache_dir, spec)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return [
                SliceSample(
                    z[f"image_{i}"], z[f"mask_{i}"], tuple(m["pixel_mm"]), m["group"], m["source"], m["true_area_mm2"],
                    z[f"valid_{i}"] if f"valid_{i}" in z.files else None,
                )
                for i, m in enumerate(meta)
            ]
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(cache_dir: Path, spec: dict, samples: Sequence[SliceSample]) -> None:
    """Cache generated samples (synthesis is slow) as one ``.npz``, keyed by the spec's hash."""
    arrays = {}
    meta = []
    for i, s in enumerate(samples):
        arrays[f"image_{i}"] = s.image
        arrays[f"mask_{i}"] = s.mask
        if s.valid is not None:
            arrays[f"valid_{i}"] = s.valid
        meta.append({"pixel_mm": list(s.pixel_mm), "group": s.group, "source": s.source, "true_area_mm2": s.true_area_mm2})
    arrays["meta"] = np.array(json.dumps(meta))
    path = _cache_path(cache_dir, spec)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


# ----------------------------------------------------------------------------- prediction
def preprocess_samples(samples: Sequence[SliceSample], size=(320, 320)):
    """Resize + normalise every sample to the network grid.

    Returns
    -------
    images : float32 array (N, rows, cols)
    masks : uint8 array (N, rows, cols)
    pixel_area_mm2 : float64 array (N,) pixel area on the network grid
    """
    from DuralSacSegLib.models import prepare_slice, resize_mask

    n = len(samples)
    images = np.zeros((n, *size), dtype=np.float32)
    masks = np.zeros((n, *size), dtype=np.uint8)
    pix = np.zeros(n, dtype=np.float64)
    for idx, s in enumerate(samples):
        images[idx], (sx, sy) = prepare_slice(s.image, s.pixel_mm, size)
        masks[idx] = resize_mask(s.mask, s.pixel_mm, size)
        pix[idx] = sx * sy
    return images, masks, pix


def predict_probabilities(net, images: np.ndarray, device=None, batch_size: int = 4, progress: bool = False) -> np.ndarray:
    """Sigmoid probabilities of ``net`` for normalised slices ``images`` (N, rows, cols), float32, eval mode."""
    import torch

    device = torch.device(device or "cpu")
    was_training = net.training
    net.eval()
    out = np.zeros(images.shape, dtype=np.float32)
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="predict", unit="batch", leave=False)
    with torch.inference_mode():
        for s in starts:
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size, None])).to(device)
            out[s : s + batch_size] = torch.sigmoid(net(x))[:, 0].float().cpu().numpy()
    if was_training:
        net.train()
    return out


# ----------------------------------------------------------------------------- metrics
def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) pixel counts of two binary masks of the same shape."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return tp, fp, fn, int(p.size - tp - fp - fn)


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else math.nan


def pixel_metrics(tp: int, fp: int, fn: int, tn: int) -> dict:
    """Accuracy, precision, recall, F1 (= Dice) from pixel counts (NaN where undefined)."""
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def area_agreement(pred_mm2: Sequence[float], true_mm2: Sequence[float]) -> dict:
    """MAE, MSE, RMSE, Pearson r (and p) and Bland–Altman statistics of predicted vs true areas (mm²)."""
    from scipy import stats

    p = np.asarray(pred_mm2, dtype=float)
    t = np.asarray(true_mm2, dtype=float)
    d = p - t
    n = int(d.size)
    out = {
        "n_slices": n,
        "area_mae_mm2": float(np.mean(np.abs(d))) if n else math.nan,
        "area_mse_mm2": float(np.mean(d**2)) if n else math.nan,
        "area_rmse_mm2": float(np.sqrt(np.mean(d**2))) if n else math.nan,
        "pearson_r": math.nan,
        "pearson_p": math.nan,
        "ba_mean_diff_mm2": float(np.mean(d)) if n else math.nan,
        "ba_sd_mm2": float(np.std(d, ddof=1)) if n > 1 else math.nan,
    }
    out["ba_loa_low_mm2"] = out["ba_mean_diff_mm2"] - 1.96 * out["ba_sd_mm2"]
    out["ba_loa_high_mm2"] = out["ba_mean_diff_mm2"] + 1.96 * out["ba_sd_mm2"]
    if n >= 2 and np.ptp(p) > 0 and np.ptp(t) > 0:
        res = stats.pearsonr(p, t)
        out["pearson_r"], out["pearson_p"] = float(res[0]), float(res[1])
    return out


def evaluate_masks(
    pred_masks: np.ndarray,
    truth_masks: np.ndarray,
    pixel_area_mm2: Sequence[float],
    true_area_mm2: Sequence[float] | None = None,
) -> tuple[dict, list[dict]]:
    """Metrics of predicted vs true masks (N, rows, cols) on the same grid.

    Parameters
    ----------
    pred_masks, truth_masks : array (N, rows, cols)
        Binary masks.
    pixel_area_mm2 : sequence of float
        Pixel area of each slice on that grid.
    true_area_mm2 : sequence of float, optional
        Reference areas (default: truth pixels × pixel area).

    Returns
    -------
    (dict, list of dict)
        Summary (pooled pixel metrics, mean per-slice Dice, area agreement) and one row per slice.
    """
    pred_masks = np.asarray(pred_masks, dtype=bool)
    truth_masks = np.asarray(truth_masks, dtype=bool)
    if pred_masks.shape != truth_masks.shape:
        raise ValueError(f"prediction {pred_masks.shape} and truth {truth_masks.shape} differ in shape")
    pix = np.asarray(pixel_area_mm2, dtype=float).reshape(-1)
    rows, totals = [], np.zeros(4, dtype=np.int64)
    for i in range(len(pred_masks)):
        tp, fp, fn, tn = confusion_counts(pred_masks[i], truth_masks[i])
        totals += (tp, fp, fn, tn)
        pred_area = float(pred_masks[i].sum()) * pix[i]
        truth_area = float(true_area_mm2[i]) if true_area_mm2 is not None else float(truth_masks[i].sum()) * pix[i]
        m = pixel_metrics(tp, fp, fn, tn)
        rows.append(
            {
                "index": i,
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "tn": tn,
                "dice": m["f1"] if (tp + fp + fn) else 1.0,
                "precision": m["precision"],
                "recall": m["recall"],
                "pixel_area_mm2": float(pix[i]),
                "true_area_mm2": truth_area,
                "pred_area_mm2": pred_area,
                "area_diff_mm2": pred_area - truth_area,
            }
        )
    summary = pixel_metrics(*(int(v) for v in totals))
    summary["dice"] = summary["f1"]
    positive = [r["dice"] for r in rows if r["tp"] + r["fn"] > 0]
    summary["mean_slice_dice"] = float(np.mean(positive)) if positive else math.nan
    summary["n_positive_slices"] = len(positive)
    summary["n_empty_truth_slices"] = len(rows) - len(positive)
    summary["false_positive_empty_slices"] = int(sum(1 for r in rows if r["tp"] + r["fn"] == 0 and r["fp"] > 0))
    summary.update(area_agreement([r["pred_area_mm2"] for r in rows], [r["true_area_mm2"] for r in rows]))
    summary.update({k: int(v) for k, v in zip(("tp", "fp", "fn", "tn"), totals)})
    return summary, rows


def evaluate_network(
    net, samples: Sequence[SliceSample], device=None, threshold: float = 0.5, batch_size: int = 4, progress=False, size=(320, 320)
):
    """Run ``net`` on ``samples`` (resized to ``size``) and compute :func:`evaluate_masks`.

    Returns ``(summary, rows, images, truth, probabilities)`` (arrays on the network grid).
    """
    images, truth, pix = preprocess_samples(samples, size)
    probs = predict_probabilities(net, images, device=device, batch_size=batch_size, progress=progress)
    true_areas = [s.mask_area_mm2 for s in samples]
    pred = probs >= threshold
    summary, rows = evaluate_masks(pred, truth, pix, true_areas)
    for r, s in zip(rows, samples):
        r["group"] = s.group
        r["source"] = s.source
    if any(s.valid is not None for s in samples):
        # also within the image data only (the truth lies inside it; prediction in the padding is ignored)
        from DuralSacSegLib.models import resize_mask

        valid = np.stack([resize_mask(s.valid if s.valid is not None else np.ones_like(s.mask), s.pixel_mm, size) for s in samples])
        v_summary, v_rows = evaluate_masks(pred & (valid > 0), truth, pix, true_areas)
        for key in WITHIN_VALID_KEYS:
            summary[f"within_valid_{key}"] = v_summary[key]
        for r, vr in zip(rows, v_rows):
            r["pred_area_within_valid_mm2"] = vr["pred_area_mm2"]
            r["dice_within_valid"] = vr["dice"]
    return summary, rows, images, truth, probs


#: metrics also reported within the valid image region (``within_valid_<key>``) when samples have one
WITHIN_VALID_KEYS = ("precision", "recall", "f1", "mean_slice_dice", "area_mae_mm2", "area_mse_mm2", "pearson_r",
                     "ba_mean_diff_mm2", "ba_loa_low_mm2", "ba_loa_high_mm2")


# ----------------------------------------------------------------------------- reports
def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented JSON (NaN → null) atomically."""
    return atomic_write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")


def write_csv(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Write a list of dicts as CSV atomically (columns of the first row, then any others)."""
    import csv
    import io

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return atomic_write_text(path, buf.getvalue())


def _savefig(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_area_scatter(rows: Sequence[dict], path: Path, title: str = "") -> Path:
    """Scatter of predicted vs true area with the identity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r["true_area_mm2"] for r in rows])
    p = np.array([r["pred_area_mm2"] for r in rows])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(t, p, s=10, alpha=0.7)
    hi = float(max(t.max(initial=0), p.max(initial=0))) * 1.05 + 1
    ax.plot([0, hi], [0, hi], "k--", lw=1, label="identity")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("true area (mm²)")
    ax.set_ylabel("predicted area (mm²)")
    ax.set_title(title or "dural sac area")
    ax.legend(loc="upper left")
    return _savefig(fig, path)


def plot_bland_altman(rows: Sequence[dict], summary: dict, path: Path, title: str = "") -> Path:
    """Bland–Altman plot: difference (predicted − true) against the mean of the two, with mean and 95 % limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r["true_area_mm2"] for r in rows])
    p = np.array([r["pred_area_mm2"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter((t + p) / 2, p - t, s=10, alpha=0.7)
    for key, style in (("ba_mean_diff_mm2", "-"), ("ba_loa_low_mm2", "--"), ("ba_loa_high_mm2", "--")):
        v = summary.get(key)
        if v is not None and math.isfinite(v):
            ax.axhline(v, color="r", ls=style, lw=1)
            ax.annotate(f"{v:.1f}", (ax.get_xlim()[1], v), fontsize=8, ha="right", va="bottom")
    ax.set_xlabel("mean of predicted and true area (mm²)")
    ax.set_ylabel("predicted − true (mm²)")
    ax.set_title(title or "Bland–Altman")
    return _savefig(fig, path)


def plot_examples(images, truth, probs, rows, path: Path, threshold: float = 0.5, n: int = 4, seed: int = 0) -> Path:
    """Triptychs (input / truth / prediction) of ``n`` slices with areas in the titles.

    The slices shown are the worst, median and best by absolute area error among slices with a sac, plus a
    deterministic random one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    err = np.array([abs(r["area_diff_mm2"]) for r in rows])
    pos = [i for i, r in enumerate(rows) if r["true_area_mm2"] > 0] or list(range(len(rows)))
    order = sorted(pos, key=lambda i: err[i])
    picks = []
    for i in (order[-1], order[len(order) // 2], order[0], int(np.random.default_rng(seed).integers(len(rows)))):
        if i not in picks:
            picks.append(i)
    picks = picks[:n]
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 3 * len(picks)), squeeze=False)
    for ax_row, i in zip(axes, picks):
        r = rows[i]
        ax_row[0].imshow(images[i], cmap="gray", vmin=0, vmax=1)
        ax_row[0].set_title(f"slice {i} {r.get('group', '')}", fontsize=9)
        ax_row[1].imshow(truth[i], cmap="gray", vmin=0, vmax=1)
        ax_row[1].set_title(f"truth {r['true_area_mm2']:.1f} mm²", fontsize=9)
        ax_row[2].imshow(probs[i] >= threshold, cmap="gray", vmin=0, vmax=1)
        ax_row[2].set_title(f"prediction {r['pred_area_mm2']:.1f} mm² (Dice {r['dice']:.3f})", fontsize=9)
        for a in ax_row:
            a.axis("off")
    fig.tight_layout()
    return _savefig(fig, path)


def write_report(out_dir: Path, summary: dict, rows: Sequence[dict], images, truth, probs, title: str, threshold: float = 0.5):
    """Write metrics.json, slices.csv, metrics.csv and the three plots into ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    paths = {
        "metrics_json": write_json(out_dir / "metrics.json", summary),
        "metrics_csv": write_csv(out_dir / "metrics.csv", [{k: v for k, v in summary.items() if not isinstance(v, dict)}]),
        "slices_csv": write_csv(out_dir / "slices.csv", rows),
    }
    if rows:
        paths["scatter_png"] = plot_area_scatter(rows, out_dir / "area_scatter.png", f"{title}: area")
        paths["bland_altman_png"] = plot_bland_altman(rows, summary, out_dir / "bland_altman.png", f"{title}: Bland–Altman")
        paths["examples_png"] = plot_examples(images, truth, probs, rows, out_dir / "examples.png", threshold)
    return paths


#: files written by :func:`run_evaluation`
REPORT_FILES = ("metrics.json", "metrics.csv", "slices.csv", "area_scatter.png", "bland_altman.png", "examples.png")


def default_eval_spec(data: str) -> dict:
    """The documented evaluation split of each data set (the one the model cards report)."""
    from DuralSacSegLib.train import EVAL_SPECS

    if data not in EVAL_SPECS:
        raise InputError(f"unknown evaluation data {data!r}; choose one of {', '.join(DATASETS)}")
    return dict(EVAL_SPECS[data])


def run_evaluation(
    model: str,
    data: str | dict,
    out_dir: str | os.PathLike,
    device: str = "cpu",
    overwrite: bool = False,
    batch_size: int = 4,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Evaluate a model (catalogue name or weights file) on a data set and write the report.

    ``data`` is a name of :data:`DATASETS` (its documented split, :data:`DuralSacSegLib.train.EVAL_SPECS`) or a spec
    dict for :func:`load_dataset`. ``cache_dir`` keeps generated slices for reuse (same slices either way: the
    generation is seeded). Returns the summary dict (also in ``metrics.json``), with ``model``, ``data`` and
    ``n_slices``.
    """
    import torch

    from DuralSacSegLib.models import load_model

    out = prepare_output_dir(out_dir, overwrite, list(REPORT_FILES))
    spec = default_eval_spec(data) if isinstance(data, str) else dict(data)
    name = data if isinstance(data, str) else spec.get("source", "custom")
    net, info = load_model(model, torch.device(device))
    samples = load_dataset({**spec, "cache_dir": str(cache_dir)} if cache_dir else spec, purpose="evaluation")
    with torch.inference_mode():
        summary, rows, images, truth, probs = evaluate_network(
            net, samples, device=device, threshold=info.threshold, batch_size=batch_size, progress=progress
        )
    summary = {
        "model": info.name,
        "architecture": info.architecture,
        "weights_sha256": info.sha256,
        "data": name,
        "data_spec": spec,
        "threshold": info.threshold,
        **summary,
    }
    write_report(out, summary, rows, images, truth, probs, f"{info.name} on {name}", info.threshold)
    return summary
