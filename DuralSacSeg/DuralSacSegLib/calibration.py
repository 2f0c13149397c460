"""Real-slab evaluation inside the imaged strip, and the choice of decision threshold + post-processing.

The real T2 SPACE slabs (:func:`spinemorph.samples.dsca_real_slab_samples`) are sagittal strips 12-23 mm wide: resliced
to axial planes the image (and the manual canal mask) exists only on that strip, and on most planes the sac
continues beyond it. Every plane with canal is therefore evaluated **inside the strip**: the prediction outside the
strip (the padding, where there is no image) is ignored and the true area is the mask's area inside the strip.
Metrics per plane: Dice, area (predicted inside the strip vs true) and over planes: mean Dice, area MAE, Pearson r;
also per patient.

The planes of one patient, ordered by PNG row, form a stack (neighbours ``row_step`` × 0.469 mm apart) so that the
``"track"`` post-processing (:mod:`DuralSacSegLib.postprocess`) can follow the canal across planes.

:func:`choose_decision` picks threshold + post-processing on a *validation* split (training patients set apart,
:func:`spinemorph.samples.dsca_validation_slab_patients`), never on held-out patients: the candidate with the highest
:func:`accuracy_score` (mean Dice − area MAE / mean true area, inside the strip).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from DuralSacSegLib.evaluate import area_agreement, predict_probabilities
from DuralSacSegLib.postprocess import SPECS, postprocess_masks
from DuralSacSegLib.slice_data import SliceSample, as_slice_sample, preprocess_samples, square_fov
from spinemorph.errors import InputError

#: thresholds tried by :func:`choose_decision` (20/21 is the prior correction of weighted BCE w = 20)
CANDIDATE_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 20 / 21, 0.97, 0.98, 0.99)


@dataclasses.dataclass
class PlaneSet:
    """Network-grid planes of real slabs with what is needed to score them inside the strip."""

    images: np.ndarray  # (N, 320, 320) float32, normalised
    truth: np.ndarray  # (N, 320, 320) uint8
    valid: np.ndarray  # (N, 320, 320) bool: inside the imaged strip
    pixel_area_mm2: np.ndarray  # (N,)
    patients: list[str]
    rows: list[int]
    cut_by_slab: np.ndarray  # (N,) bool

    def stacks(self) -> dict[str, np.ndarray]:
        """Indices of each patient's planes ordered by row (superior → inferior)."""
        out: dict[str, list[int]] = {}
        for i, p in enumerate(self.patients):
            out.setdefault(p, []).append(i)
        return {p: np.array(sorted(ix, key=lambda i: self.rows[i])) for p, ix in out.items()}


def real_slab_planes(patients: Sequence[str], row_step: int = 8, isotropic_mm: float = 0.6, square: int = 320,
                     min_area_mm2: float = 10.0) -> PlaneSet:
    """Every canal plane (cut ones included) of ``patients``' slabs, on a ``square`` grid at ``isotropic_mm``."""
    from spinemorph import samples as sm

    planes = sm.dsca_real_slab_samples(list(patients), isotropic_mm=isotropic_mm, min_area_mm2=min_area_mm2,
                                       row_step=row_step, whole_sac_only=False)
    if not planes:
        raise InputError(f"no real slab planes for patients {list(patients)}; check the SPIDER folder")
    slices: list[SliceSample] = [square_fov(as_slice_sample(p, "real-slabs"), square) for p in planes]
    images, truth, pix = preprocess_samples(slices, (square, square))
    valid = np.stack([s.valid > 0 for s in slices])
    return PlaneSet(images, truth, valid, pix, [p.patient for p in planes], [p.row for p in planes],
                    np.array([p.cut_by_slab for p in planes]))


def predict_planes(net, images: np.ndarray, device="cpu", batch_size: int = 4) -> np.ndarray:
    """Probabilities (float16 to save memory) of ``net`` on normalised planes ``(N, rows, cols)``.

    On the CPU the network is run as ``dsca segment`` runs it (BatchNorm folded, channels-last, one slice at a time:
    :func:`spinemorph.cpu_inference.optimize_for_inference`; same fp32 result up to rounding, about 2x faster).
    """
    import torch

    dev = torch.device(device)
    out = np.zeros(images.shape, np.float16)
    if dev.type != "cpu":
        for s in range(0, len(images), 64):
            out[s : s + 64] = predict_probabilities(net, images[s : s + 64], device=dev, batch_size=batch_size)
        return out
    from spinemorph.cpu_inference import optimize_for_inference

    fast, _ = optimize_for_inference(net.eval())
    with torch.inference_mode():
        for i in range(len(images)):
            x = torch.from_numpy(np.ascontiguousarray(images[i][None, None], np.float32))
            out[i] = torch.sigmoid(fast(x.contiguous(memory_format=torch.channels_last)))[0, 0].numpy()
    return out


def _dice(p: np.ndarray, t: np.ndarray) -> float:
    s = int(p.sum()) + int(t.sum())
    return 1.0 if s == 0 else 2.0 * int((p & t).sum()) / s


def score_strip(probs: np.ndarray, planes: PlaneSet, threshold: float, postprocess: str | None = None) -> dict:
    """Metrics inside the imaged strip for one threshold and post-processing spec (see the module docstring)."""
    pred = np.zeros(probs.shape, bool)
    for _p, ix in planes.stacks().items():
        pred[ix] = postprocess_masks(probs[ix] >= threshold, postprocess, prob=probs[ix])  # as segment_volume
    pred &= planes.valid
    truth = planes.truth.astype(bool)
    dice = np.array([_dice(pred[i], truth[i]) for i in range(len(pred))])
    pa = pred.reshape(len(pred), -1).sum(1) * planes.pixel_area_mm2
    ta = truth.reshape(len(truth), -1).sum(1) * planes.pixel_area_mm2
    out = {"threshold": float(threshold), "postprocess": postprocess or "none", "n_planes": int(len(pred)),
           "n_patients": len(set(planes.patients)), "mean_dice": float(dice.mean()),
           "median_dice": float(np.median(dice)), "mean_true_area_mm2": float(ta.mean()), **area_agreement(pa, ta)}
    out["score"] = accuracy_score(out)
    whole = ~planes.cut_by_slab
    if whole.sum() >= 2:
        w = area_agreement(pa[whole], ta[whole])
        out["whole_sac_planes"] = {"n_planes": int(whole.sum()), "mean_dice": float(dice[whole].mean()),
                                   "area_mae_mm2": w["area_mae_mm2"], "pearson_r": w["pearson_r"],
                                   "ba_mean_diff_mm2": w["ba_mean_diff_mm2"]}
    per = {}
    for p, ix in planes.stacks().items():
        a = area_agreement(pa[ix], ta[ix])
        per[p] = {"n_planes": int(len(ix)), "mean_dice": float(dice[ix].mean()), "area_mae_mm2": a["area_mae_mm2"],
                  "pearson_r": a["pearson_r"], "ba_mean_diff_mm2": a["ba_mean_diff_mm2"]}
    out["per_patient"] = per
    return out


def accuracy_score(m: dict) -> float:
    """One accuracy figure for choices: mean Dice − relative area MAE (MAE / mean true area), both inside the strip.

    Dice alone rewards masks that grow into bright neighbours (better overlap on under-segmented planes, worse
    areas); the area is what the table reports, so its relative error weighs as much as the overlap. 1 = perfect."""
    mae, area = m.get("area_mae_mm2"), m.get("mean_true_area_mm2")
    if mae is None or area is None or not (math.isfinite(mae) and area > 0):
        return -math.inf
    return float(m["mean_dice"]) - float(mae) / float(area)


#: phantom guard of :func:`choose_decision`: a candidate may not move the mean DSCA bias on full axial phantom planes
#: beyond this (mm²) or beyond the current setting's bias, whichever is larger. Design choice: twice the ±5 mm²
#: partial-volume target; it stops a threshold fitted to the narrow real strips from over-segmenting full images.
PHANTOM_BIAS_TOL_MM2 = 10.0


@dataclasses.dataclass
class PhantomPlanes:
    """Full axial phantom planes with their exact dural sac areas (a guard against strip-only choices)."""

    images: np.ndarray  # (N, 320, 320) normalised
    pixel_area_mm2: np.ndarray
    true_area_mm2: np.ndarray


def phantom_planes(n: int = 24, seed: int = 3003) -> PhantomPlanes:
    """``n`` T1 phantom planes (:func:`spinemorph.samples.dsca_phantom_samples`, a seed used nowhere else)."""
    from spinemorph import samples as sm

    raw = list(sm.dsca_phantom_samples(n, seed))
    images, _truth, pix = preprocess_samples([as_slice_sample(s, "phantom") for s in raw])
    return PhantomPlanes(images, pix, np.array([float(s.true_area_mm2) for s in raw]))


def phantom_bias(probs: np.ndarray, ph: PhantomPlanes, threshold: float, postprocess: str | None) -> float:
    """Mean (predicted − exact) area on the phantom planes (each plane post-processed on its own)."""
    pred = np.stack([postprocess_masks(p >= threshold, postprocess) for p in probs])
    return float(np.mean(pred.reshape(len(pred), -1).sum(1) * ph.pixel_area_mm2 - ph.true_area_mm2))


def choose_decision(probs: np.ndarray, planes: PlaneSet, thresholds: Sequence[float] = CANDIDATE_THRESHOLDS,
                    specs: Sequence[str] = SPECS, phantom: tuple[np.ndarray, PhantomPlanes] | None = None,
                    current: tuple[float, str] | None = None) -> tuple[dict, list[dict]]:
    """Try every (threshold, post-processing) pair on validation planes; return (best, all rows).

    Best = highest :func:`accuracy_score` (mean Dice − relative area MAE inside the strip); ties (within 0.001)
    broken by the higher mean Dice, then by the unrounded score (:func:`best_candidate`). With ``phantom = (probabilities, PhantomPlanes)`` only candidates whose phantom
    bias stays within ``max(PHANTOM_BIAS_TOL_MM2, |bias of current|)`` are eligible (``current`` = (threshold,
    post-processing) in use; the current setting is always eligible).
    """
    rows = []
    for t in thresholds:
        for spec in specs:
            r = score_strip(probs, planes, float(t), spec)
            r.pop("per_patient")
            if phantom is not None:
                r["phantom_bias_mm2"] = phantom_bias(phantom[0], phantom[1], float(t), spec)
            rows.append(r)
    eligible = rows
    if phantom is not None:
        limit = PHANTOM_BIAS_TOL_MM2
        if current is not None:
            limit = max(limit, abs(phantom_bias(phantom[0], phantom[1], float(current[0]), current[1])))
        eligible = [r for r in rows if abs(r["phantom_bias_mm2"]) <= limit + 1e-9]
        if current is not None and not eligible:
            cur = score_strip(probs, planes, float(current[0]), current[1])
            cur.pop("per_patient")
            eligible = [cur]
    return best_candidate(eligible), rows


def best_candidate(rows: Sequence[dict]) -> dict:
    """The row with the highest ``score`` rounded to 0.001, then the higher ``mean_dice``, then the higher unrounded
    ``score`` — never the list order: two post-processings can give the same masks on every plane (same Dice) and
    differ only in area (e.g. ``track`` bridging an empty slice), and the more accurate area must win."""
    return max(rows, key=lambda r: (round(r["score"], 3), r["mean_dice"], r["score"]))


#: phantom-bias tiers of :func:`choose_checkpoint` (mm²): the issue's ±5 mm² partial-volume target first, then the
#: calibration guard :data:`PHANTOM_BIAS_TOL_MM2`, then any bias (the choice then says so)
CHECKPOINT_PHANTOM_TIERS_MM2 = (5.0, PHANTOM_BIAS_TOL_MM2, math.inf)


def choose_checkpoint(rows: Sequence[dict], tiers: Sequence[float] = CHECKPOINT_PHANTOM_TIERS_MM2) -> tuple[dict, float]:
    """Choose a training checkpoint from per-epoch validation rows; return ``(row, tier used)``.

    Each row has ``epoch``, ``score`` (:func:`accuracy_score` on the real validation planes), ``mean_dice`` and
    ``phantom_bias_mm2`` (:func:`phantom_bias` on full axial T1 phantom planes, :func:`phantom_planes`). The choice:
    the highest score among the epochs whose |phantom bias| is within the first tier that holds any epoch; ties
    (within 0.001) broken by the higher mean Dice, then the later epoch. Checkpoints chosen on the real validation
    planes alone drift on full axial T1 images (the U-Net of 2026-12-07: epoch 11 phantom bias +2.8 mm², the chosen
    epoch 18 −10.3 mm² in the phantom study); both criteria come from validation data, never from held-out patients.
    """
    if not rows:
        raise InputError("no checkpoints to choose from")
    for tier in tiers:
        if math.isinf(tier):
            eligible = list(rows)  # any epoch, with or without a phantom figure
        else:
            eligible = [r for r in rows if math.isfinite(r["phantom_bias_mm2"]) and abs(r["phantom_bias_mm2"]) <= tier + 1e-9]
        if eligible:
            best = max(eligible, key=lambda r: (round(r["score"], 3), r["mean_dice"], r["epoch"]))
            return best, float(tier)
    raise AssertionError("unreachable: the last tier is infinite")
