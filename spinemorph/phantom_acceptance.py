"""Accuracy the embedded models must reach on the generated sample study (phantom seed 0, the Slicer sample data),
against its exact truth. Used by the Slicer self-tests (after a run inside Slicer) and by the Slicer-free pytest of
the separate-process worker (``Testing/test_inference_worker.py``), so both check the same numbers.

Measured outside Slicer with the worker on the CPU (``python -m spinemorph.inference_worker dsca|foramen --input
<study>/axial_t1.nrrd|sagittal_t2_space.nrrd --output-dir OUT --device cpu``, embedded models of commit 4773dcd):

- DSCA (``dsca-multiresunet``, 16 axial slices, exact area 156.1 mm² each): per-slice relative area error mean 0.215,
  max 0.332 (the model over-segments the phantom's sac by ~30 mm²); Dice of the mask vs the true mask 0.904.
- 3D (``foramen3d-budget-cpu``): Dice L4 0.863, L4-5 disc 0.920, L5 0.864; foramen measured on the predicted labels:
  height 18.6 mm vs exact 21.0 (-2.4 mm), width 10.1-10.2 mm vs 9.0 (+1.2 mm), area 151 mm² vs 201 (-25 %), both sides.
- 3D, the default ``foramen3d-fine-cpu`` (iteration 11750, embedded 2026-12-07; the same phantom through
  ``segment_volume``): Dice L4 0.919, L4-5 disc 0.940, L5 0.865. The weights of iteration 7750 (default for a few
  hours the same day) labelled part of the phantom's box-shaped S1 spinous process below L5's as L5 (L5 0.799; the
  floor was 0.78 then); iteration 5000: 0.922 / 0.924 / 0.817.

The tolerances below sit just outside those numbers: they catch a broken pipeline (wrong geometry, wrong model,
LPS/RAS flip, label swap), not a few percent of model drift. Tighten them when better models are embedded.
"""

from __future__ import annotations

import numpy as np

#: DSCA: mean / largest per-slice relative error of the area vs the exact analytic area (measured 0.215 / 0.332)
DSCA_MEAN_RELATIVE_ERROR = 0.30
DSCA_MAX_RELATIVE_ERROR = 0.45
#: Dice floor of the dural sac mask vs the true mask (measured 0.904)
DSCA_DICE_FLOOR = 0.85
#: Dice floors of the 3D model per structure (measured: coarse 0.863 / 0.920 / 0.864; fine default 0.919 / 0.940 / 0.865)
FORAMEN_DICE_FLOOR = {1: 0.80, 2: 0.85, 3: 0.80}
#: foramen values measured on the predicted labels vs exact truth (measured -2.4 mm, +1.2 mm, -25 %)
FORAMEN_HEIGHT_TOLERANCE_MM = 3.5
FORAMEN_WIDTH_TOLERANCE_MM = 2.0
FORAMEN_AREA_RELATIVE_TOLERANCE = 0.35
STRUCTURES = {1: "L4", 2: "L4-5 disc", 3: "L5"}


def dice(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def dsca_failures(areas_mm2, exact_mm2, mask=None, true_mask=None) -> list[str]:
    """Reasons the DSCA run misses the tolerances (empty when it passes)."""
    areas, exact = np.asarray(areas_mm2, float), np.asarray(exact_mm2, float)
    if areas.shape != exact.shape:
        return [f"{areas.size} table rows for {exact.size} slices"]
    relative = np.abs(areas / exact - 1.0)
    out = []
    if relative.mean() > DSCA_MEAN_RELATIVE_ERROR:
        out.append(f"mean relative DSCA error {relative.mean():.3f} > {DSCA_MEAN_RELATIVE_ERROR}")
    if relative.max() > DSCA_MAX_RELATIVE_ERROR:
        out.append(f"largest relative DSCA error {relative.max():.3f} > {DSCA_MAX_RELATIVE_ERROR}")
    if mask is not None and true_mask is not None:
        d = dice(np.asarray(mask) > 0, np.asarray(true_mask) > 0)
        if d < DSCA_DICE_FLOOR:
            out.append(f"dural sac Dice {d:.3f} < {DSCA_DICE_FLOOR}")
    return out


def foramen_dice(labels, true_labels) -> dict[int, float]:
    a, b = np.asarray(labels), np.asarray(true_labels)
    return {v: dice(a == v, b == v) for v in STRUCTURES}


def foramen_failures(labels, true_labels, values_by_side: dict, truth_foramen: dict) -> list[str]:
    """Reasons the 3D run misses the tolerances: Dice per structure, then height / width / area per side.

    :param values_by_side: ``{"left": {"height_mm", "width_mm", "area_mm2"}, "right": ...}`` (measured on ``labels``).
    :param truth_foramen: the phantom truth's ``truth.foramen`` (same keys per side).
    """
    out = []
    for value, d in foramen_dice(labels, true_labels).items():
        if d < FORAMEN_DICE_FLOOR[value]:
            out.append(f"{STRUCTURES[value]} Dice {d:.3f} < {FORAMEN_DICE_FLOOR[value]}")
    for side in ("left", "right"):
        got, exact = values_by_side[side], truth_foramen[side]
        for key, tol in (("height_mm", FORAMEN_HEIGHT_TOLERANCE_MM), ("width_mm", FORAMEN_WIDTH_TOLERANCE_MM)):
            if abs(got[key] - exact[key]) > tol:
                out.append(f"{side} {key} {got[key]:.2f} vs exact {exact[key]:.2f} (> {tol} mm)")
        if abs(got["area_mm2"] / exact["area_mm2"] - 1.0) > FORAMEN_AREA_RELATIVE_TOLERANCE:
            out.append(f"{side} area {got['area_mm2']:.1f} vs exact {exact['area_mm2']:.1f} mm2 "
                       f"(> {FORAMEN_AREA_RELATIVE_TOLERANCE:.0%})")
    return out
