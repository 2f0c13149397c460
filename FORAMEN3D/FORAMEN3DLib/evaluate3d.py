"""Evaluation of FORAMEN3D segmentation models: DSC, precision and recall per structure.

Metrics (per structure s ∈ {1 L4, 2 L4-5 disc, 3 L5}, from voxel counts TP, FP, FN of ``pred == s`` against
``truth == s``):

* DSC = 2 TP / (2 TP + FP + FN), precision = TP / (TP + FP), recall = TP / (TP + FN);
* undefined ratios (0 / 0, e.g. a structure absent from both maps) are NaN and left out of means.

:func:`evaluate_model` runs :func:`FORAMEN3DLib.segment3d.segment_volume` on every case of a data set and writes

* ``metrics.csv`` (one row per case, scope and structure), ``summary.json`` (mean / std / median per structure
  and overall, timings, model, data set definition). Scope ``input``: on the input's own grid (``metrics``);
  scope ``window``: inside the 0.8 mm crop window only (``metrics_window``), i.e. without the parts of L4 / L5
  that the source method's crop leaves out,
* ``dsc_boxplot.png`` (per-structure box plots of DSC, precision and recall),
* ``overlay_<case>.png`` (mid-sagittal slice through L4-5 of a few cases: image, truth and prediction outlines).

Data sets (``--data``):

* ``synthetic``: samples synthesised from the SPIDER *training* label maps with new seeds
  (:data:`EVAL_SEED_BASE` + i), i.e. new random deformations / intensities of anatomies that are mostly training
  cases (for the shipped model's fold 0: 7 of the first 10 are training cases, one a validation case) — not held-out
  anatomies;
* ``spider-heldout``: images synthesised from the held-out SPIDER label volumes
  (:data:`spinemorph.spider.HELD_OUT_MASK_CASES`, never trained on), one or more seeds per case;
* ``phantom``: exact-geometry lumbar phantoms (:mod:`spinemorph.phantom`; anatomy seeds ≥ 1 000 000, training draws
  0-999) imaged by the sagittal T2 SPACE simulation.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_path, atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError
from spinemorph.labels import FORAMEN_LABELS
from spinemorph.volume import Volume

METRICS = ("dsc", "precision", "recall")
DATASETS = ("synthetic", "spider-heldout", "phantom")
#: first seed of the synthetic evaluation samples. Training sample seeds (:func:`train3d.sample_seed`) are NOT all
#: below it (they reach 1 285 873 for the shipped model); a test checks that none equals one of
#: EVAL_SEED_BASE .. EVAL_SEED_BASE + 999
EVAL_SEED_BASE = 1_000_000


# ---------------------------------------------------------------------- metrics
def confusion_counts(truth: np.ndarray, pred: np.ndarray, n_classes: int = 4) -> np.ndarray:
    """``(n_classes, n_classes)`` voxel counts ``C[t, p]`` of truth label t predicted as p."""
    t = np.asarray(truth).astype(np.int64).ravel()
    p = np.asarray(pred).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"truth and prediction differ in size: {np.shape(truth)} vs {np.shape(pred)}")
    if t.size and (t.min() < 0 or t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"labels must be in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def structure_metrics(truth: np.ndarray, pred: np.ndarray, structures: dict = FORAMEN_LABELS) -> dict:
    """``{name: {"dsc", "precision", "recall", "tp", "fp", "fn"}}`` for each structure label."""
    n = max(max(structures) + 1, int(np.max(truth)) + 1 if np.size(truth) else 1, int(np.max(pred)) + 1 if np.size(pred) else 1)
    c = confusion_counts(truth, pred, n)
    out = {}
    for lab, name in structures.items():
        tp = int(c[lab, lab])
        fp = int(c[:, lab].sum() - tp)
        fn = int(c[lab, :].sum() - tp)
        out[name] = {
            "dsc": _ratio(2 * tp, 2 * tp + fp + fn),
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    return out


def summarize(rows: list[dict]) -> dict:
    """Mean / std / median / n of each metric per structure and over all structures (NaNs left out)."""
    out: dict = {}
    names = list(FORAMEN_LABELS.values()) + ["mean"]
    for name in names:
        sel = rows if name == "mean" else [r for r in rows if r["structure"] == name]
        out[name] = {}
        for m in METRICS:
            v = np.array([r[m] for r in sel], dtype=float)
            v = v[np.isfinite(v)]
            out[name][m] = {
                "mean": float(v.mean()) if v.size else math.nan,
                "std": float(v.std(ddof=1)) if v.size > 1 else math.nan,
                "median": float(np.median(v)) if v.size else math.nan,
                "n": int(v.size),
            }
    return out


# ---------------------------------------------------------------------- data sets
def iter_dataset(name: str, n: int | None = None, seed: int = 0) -> Iterator[tuple[str, Volume, Volume]]:
    """Yield ``(case_id, image, truth)`` for an evaluation data set (see the module docstring)."""
    from .samples3d import generate_cases

    if name not in DATASETS:
        raise InputError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "synthetic":
        yield from generate_cases("spider-train", n or 10, EVAL_SEED_BASE + seed)
    elif name == "spider-heldout":
        yield from generate_cases("spider-heldout", n or 8, EVAL_SEED_BASE + seed)
    else:
        yield from generate_cases("phantom", n or 4, EVAL_SEED_BASE + seed)


# ---------------------------------------------------------------------- plots
def _plot_boxes(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(FORAMEN_LABELS.values())
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6), sharey=True)
    for ax, m in zip(axes, METRICS):
        data = [[r[m] for r in rows if r["structure"] == s and np.isfinite(r[m])] for s in names]
        ax.boxplot([d if d else [np.nan] for d in data], tick_labels=names, showmeans=True)
        ax.set_title(m.upper() if m == "dsc" else m)
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"per-structure metrics ({len({r['case'] for r in rows})} cases)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _plot_overlay(case: str, image: Volume, truth: np.ndarray, pred: np.ndarray, path: Path) -> None:
    """Sagittal slice through the disc centroid: image with truth (solid) and prediction (dashed) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .preprocess import Reorientation

    reo = Reorientation.for_direction(image.direction)
    img = reo.apply(image).array
    tr = reo.apply(image.with_array(truth)).array
    pr = reo.apply(image.with_array(pred)).array
    disc = np.argwhere(tr == 2)
    k = int(np.round(disc[:, 0].mean())) if disc.size else img.shape[0] // 2
    sp = reo.apply(image).spacing_mm
    extent = (0, img.shape[2] * sp[0], img.shape[1] * sp[1], 0)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(img[k], cmap="gray", extent=extent)
    from spinemorph.labels import COLORS

    xs = (np.arange(img.shape[2]) + 0.5) * sp[0]
    ys = (np.arange(img.shape[1]) + 0.5) * sp[1]
    for lab, name in FORAMEN_LABELS.items():
        col = COLORS[name]
        for arr, style in ((tr[k], "-"), (pr[k], "--")):
            if (arr == lab).any():
                ax.contour(xs, ys, (arr == lab).astype(float), levels=[0.5], colors=[col], linestyles=style,
                           linewidths=1.2)
    ax.set_title(f"{case}: truth solid, prediction dashed", fontsize=9)
    ax.set_xlabel("anterior → posterior (mm)")
    ax.set_ylabel("superior → inferior (mm)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------- driver
def evaluate_cases(
    cases: Iterable[tuple[str, Volume, Volume]],
    model="default",
    device="auto",
    out_dir=None,
    n_overlays: int = 3,
    overwrite: bool = False,
    dataset: dict | None = None,
    progress: bool = True,
) -> dict:
    """Segment every case, compute metrics, and (with ``out_dir``) write CSV / JSON / PNG outputs.

    Returns the summary dict (also written as ``summary.json``).
    """
    from tqdm import tqdm

    from . import segment3d

    out = prepare_output_dir(out_dir, overwrite, ["metrics.csv", "summary.json"]) if out_dir is not None else None
    loaded = segment3d.get_model(model, device)
    from .preprocess import preprocess_volume, unpad

    rows: list[dict] = []
    window_rows: list[dict] = []
    timings = []
    n_done = 0
    for case, image, truth in tqdm(cases, desc="evaluate", unit="case", disable=not progress):
        if truth.shape != image.shape:
            raise InputError(f"case {case}: truth shape {truth.shape} differs from image shape {image.shape}")
        res = segment3d.segment_volume(image, loaded, device)
        pred = res.labels.array
        timings.append(res.timings_s)
        for name, m in structure_metrics(truth.array, pred).items():
            rows.append({"case": case, "scope": "input", "structure": name,
                         **{k: m[k] for k in ("dsc", "precision", "recall", "tp", "fp", "fn")}})
        # the same inside the 0.8 mm crop window only (what the network sees; parts of L4 / L5 outside the
        # window are missed by construction of the crop and count as false negatives in the "input" scope)
        truth_crop = unpad(preprocess_volume(image).labels_to_crop(truth))
        for name, m in structure_metrics(truth_crop, res.crop_labels.array).items():
            window_rows.append({"case": case, "scope": "window", "structure": name,
                                **{k: m[k] for k in ("dsc", "precision", "recall", "tp", "fp", "fn")}})
        if out is not None and n_done < n_overlays:
            _plot_overlay(case, image, np.asarray(truth.array), pred, out / f"overlay_{case}.png")
        n_done += 1
    if not rows:
        raise InputError("the evaluation data set is empty")
    summary = {
        "model": {"name": loaded.name, "sha256": loaded.sha256, "path": str(loaded.path)},
        "dataset": dataset or {},
        "n_cases": n_done,
        "metrics": summarize(rows),
        "metrics_window": summarize(window_rows),
        "timing_s": {
            k: float(np.mean([t[k] for t in timings])) for k in timings[0]
        },
        "device": str(loaded.device),
    }
    if out is not None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows + window_rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(out / "metrics.csv", buf.getvalue())
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=True))
        _plot_boxes(rows, out / "dsc_boxplot.png")
    return summary


def evaluate_model(model="default", data: str = "synthetic", out_dir=None, n: int | None = None, seed: int = 0,
                   device="auto", overwrite: bool = False, progress: bool = True) -> dict:
    """Evaluate ``model`` on a named data set (``synthetic``, ``spider-heldout``, ``phantom``)."""
    t0 = time.perf_counter()
    summary = evaluate_cases(
        iter_dataset(data, n, seed), model, device, out_dir, overwrite=overwrite,
        dataset={"name": data, "n": n, "seed": seed, "seed_base": EVAL_SEED_BASE}, progress=progress,
    )
    summary["wall_s"] = time.perf_counter() - t0
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / "summary.json", json.dumps(summary, indent=2, allow_nan=True))
    return summary
