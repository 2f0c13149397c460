#!/usr/bin/env python
"""Choose a DSCA model's decision threshold and mask post-processing on the validation split of *training* patients.

    scripts/dsca_calibrate.py --model dsca-unet --out runs/dsca_calib/unet.json [--write-catalog]

Validation split: the real T2 SPACE slab patients set apart from training
(:func:`spinemorph.samples.dsca_validation_slab_patients`: every 5th training slab patient — never a held-out
patient), every canal plane every ``--row-step`` PNG rows, scored inside the imaged strip
(:mod:`DuralSacSegLib.calibration`). Candidates: thresholds ``DuralSacSegLib.calibration.CANDIDATE_THRESHOLDS`` ×
post-processing specs ``DuralSacSegLib.postprocess.SPECS``; the choice is the highest accuracy score
``mean Dice − area MAE / mean true area`` inside the strip (``DuralSacSegLib.calibration.accuracy_score``). The report gives the choice, the model's current setting and their difference
on the validation planes (the effect), and every candidate.

``--write-catalog`` stores the choice as the catalogue entry's ``decision`` (``threshold``, ``postprocess``,
``chosen_on``, the validation numbers). A guard keeps the choice honest on full axial images: candidates that move
the mean DSCA bias on ``--phantom-n`` full T1 phantom planes (seed 3003) beyond
``max(calibration.PHANTOM_BIAS_TOL_MM2, |current bias|)`` are not eligible (a threshold fitted to the narrow strips
alone raised the phantom-study bias of the shipped U-Net from +9 to +115 mm²): ``load_model`` / ``dsca segment`` then use it. Held-out patients are never
touched here; their numbers come from ``scripts/dsca_evaluate.py`` afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="catalogue name or .pt weights file")
    ap.add_argument("--out", required=True, help="JSON report")
    ap.add_argument("--row-step", type=int, default=16, help="every n-th PNG row of the validation slabs (16 = 7.5 mm)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--phantom-n", type=int, default=24,
                    help="phantom planes of the bias guard (seed 3003; 0 = no guard; see calibration.PHANTOM_BIAS_TOL_MM2)")
    ap.add_argument("--reuse-probs", action="store_true",
                    help="reuse the validation probabilities saved next to --out (<out>.probs.npz) by an earlier run")
    ap.add_argument("--write-catalog", action="store_true", help="store the choice in catalog.json (catalogue models only)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from DuralSacSegLib import calibration as cal
    from DuralSacSegLib import models

    from spinemorph import samples as sm
    from spinemorph.atomic import atomic_write_text
    from spinemorph.spider import HELD_OUT_PATIENTS

    t0 = time.perf_counter()
    patients = sm.dsca_validation_slab_patients()
    assert not set(patients) & set(HELD_OUT_PATIENTS), "validation split must not contain held-out patients"
    net, info = models.load_model(args.model, torch.device("cpu"))
    planes = cal.real_slab_planes(patients, row_step=args.row_step)
    saved = Path(args.out).with_suffix(".probs.npz")
    probs = None
    if args.reuse_probs and saved.is_file():
        with np.load(saved) as z:
            if z["probs"].shape == planes.images.shape and str(z["sha256"]) == info.sha256:
                probs = z["probs"]
    if probs is None:
        probs = cal.predict_planes(net, planes.images)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(saved, probs=probs, sha256=np.array(info.sha256))
    phantom = None
    if args.phantom_n > 0:
        ph = cal.phantom_planes(args.phantom_n)
        phantom = (cal.predict_planes(net, ph.images), ph)
    best, rows = cal.choose_decision(probs, planes, phantom=phantom, current=(info.threshold, info.postprocess))
    current = cal.score_strip(probs, planes, info.threshold, info.postprocess)
    current.pop("per_patient")
    if phantom is not None:
        current["phantom_bias_mm2"] = cal.phantom_bias(phantom[0], phantom[1], info.threshold, info.postprocess)
    report = {
        "command": " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "model": info.name, "weights_sha256": info.sha256,
        "validation_patients": patients, "row_step": args.row_step, "n_planes": len(planes.patients),
        "rule": "highest mean Dice - area MAE / mean true area inside the imaged strip (calibration.accuracy_score), "
                "among candidates whose phantom DSCA bias stays within max(PHANTOM_BIAS_TOL_MM2, current bias)",
        "current": current, "chosen": best,
        "effect": {k: best[k] - current[k] for k in ("score", "mean_dice", "area_mae_mm2", "pearson_r", "ba_mean_diff_mm2")},
        "candidates": rows, "seconds": time.perf_counter() - t0,
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2, default=float) + "\n")
    print(f"{info.name}: current threshold {info.threshold:.4f} / {info.postprocess}: Dice {current['mean_dice']:.3f}, "
          f"MAE {current['area_mae_mm2']:.1f} mm² -> chosen threshold {best['threshold']:.4f} / {best['postprocess']}: "
          f"Dice {best['mean_dice']:.3f}, MAE {best['area_mae_mm2']:.1f} mm² (validation patients {', '.join(patients)}, "
          f"{len(planes.patients)} planes)")
    if args.write_catalog:
        cat = models.read_catalog()
        entry = next((e for e in cat["models"] if e["name"] == info.name), None)
        if entry is None:
            print(f"error: {info.name} is not a catalogue model; --write-catalog needs a catalogue name", file=sys.stderr)
            return 1
        entry["decision"] = {
            "threshold": round(float(best["threshold"]), 6), "postprocess": best["postprocess"],
            "chosen_on": f"validation split of training slab patients {', '.join(patients)} (scripts/dsca_calibrate.py)",
            "validation_mean_dice": best["mean_dice"], "validation_area_mae_mm2": best["area_mae_mm2"],
            "previous_threshold": info.threshold, "previous_postprocess": info.postprocess,
        }
        atomic_write_text(models.CATALOG_PATH, json.dumps(cat, indent=2) + "\n")
        print(f"wrote the decision into {models.CATALOG_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
