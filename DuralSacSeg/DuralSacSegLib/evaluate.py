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
:mod:`spinemorph.samples` through :mod:`DuralSacSegLib.slice_data`; the documented splits are
:data:`DuralSacSegLib.slice_data.EVAL_SPECS`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from DuralSacSegLib.slice_data import (  # noqa: F401  (re-exported: the data names of the evaluation API)
    DATASETS,
    EVAL_SPECS,
    FOLDER_SUFFIXES,
    SliceSample,
    as_slice_sample,
    folder_samples,
    load_dataset,
    preprocess_samples,
    tiny_phantom_samples,
)
from spinemorph.atomic import atomic_path, atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError
from spinemorph.stats import bland_altman, pearson, ratio


# ----------------------------------------------------------------------------- prediction
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


def pixel_metrics(tp: int, fp: int, fn: int, tn: int) -> dict:
    """Accuracy, precision, recall, F1 (= Dice) from pixel counts (NaN where undefined)."""
    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    return {
        "accuracy": ratio(tp + tn, tp + fp + fn + tn),
        "precision": precision,
        "recall": recall,
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
    }


def area_agreement(pred_mm2: Sequence[float], true_mm2: Sequence[float]) -> dict:
    """MAE, MSE, RMSE, Pearson r (and p) and Bland–Altman statistics of predicted vs true areas (mm²)."""
    ba = bland_altman(pred_mm2, true_mm2)
    d, n = ba["diff"], ba["n"]
    r, p = pearson(pred_mm2, true_mm2)
    return {
        "n_slices": n,
        "area_mae_mm2": float(np.mean(np.abs(d))) if n else math.nan,
        "area_mse_mm2": float(np.mean(d**2)) if n else math.nan,
        "area_rmse_mm2": float(np.sqrt(np.mean(d**2))) if n else math.nan,
        "pearson_r": r,
        "pearson_p": p,
        "ba_mean_diff_mm2": ba["bias"],
        "ba_sd_mm2": ba["sd"],
        "ba_loa_low_mm2": ba["loa_low"],
        "ba_loa_high_mm2": ba["loa_high"],
    }


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

    ``data`` is a name of :data:`DATASETS` (its documented split, :data:`DuralSacSegLib.slice_data.EVAL_SPECS`) or a spec
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
