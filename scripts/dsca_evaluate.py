#!/usr/bin/env python
"""Evaluate DuralSacSeg models on data never trained on: held-out real slabs (inside the imaged strip), held-out
synthetic planes and the phantom study (DSCA bias of the whole ``dsca segment`` pipeline).

    scripts/dsca_evaluate.py --model dsca-multiresunet --out runs/dsca_eval_baseline/multiresunet
    scripts/dsca_evaluate.py --model runs/dsca_real_unet/best.pt --parts real,synthetic,phantom --out DIR

Parts (``--parts``, default all three):

- ``real``: every axial plane with canal of the held-out real T2 SPACE slabs (patients
  ``spinemorph.spider.HELD_OUT_SLAB_PATIENTS``, every ``--row-step``-th PNG row, 0.6 mm pixels on a 320 × 320 grid),
  scored inside the imaged strip (:mod:`DuralSacSegLib.calibration`): mean per-plane Dice, per-plane area MAE,
  Pearson r, per patient too. The network runs on the whole 320 × 320 plane.
- ``synthetic``: the documented held-out synthetic split (``DuralSacSegLib.train.EVAL_SPECS["synthetic"]``: planes
  synthesised from the held-out SPIDER label maps, seed 1001, 60 planes), whole-plane pixel metrics and areas.
- ``phantom``: the phantom study as a user runs it: ``spinemorph.acquisition.acquire_axial_t1`` (4 mm axial T1,
  0.6875 mm pixels) of the ``normal`` and ``central-stenosis`` presets (seeds 0 and 1) segmented by
  ``DuralSacSegLib.segment.segment_volume`` (canal-centred windows, the model's threshold and post-processing),
  against the exact analytic area of every axial plane (``PhantomTruth.slice_table``). Reported: DSCA bias (mean
  predicted − exact), MAE, and the same for the exact rasterised label map measured by the same table code — the
  partial-volume floor of the pixel grid (a perfect segmentation on 0.6875 mm pixels).

Writes ``evaluation.json`` (all numbers, with the model's SHA-256, threshold, post-processing and the command line).
Threshold and post-processing default to the model's (catalogue ``decision`` or the loss prior); ``--threshold`` /
``--postprocess`` override them (report which). One torch thread by default (shared machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _real(net, info, args, thr, post):
    from DuralSacSegLib import calibration as cal

    from spinemorph import spider

    t0 = time.perf_counter()
    planes = cal.real_slab_planes(spider.held_out_slab_patients(), row_step=args.row_step)
    saved = Path(args.out) / "real_probs.npz"
    probs = None
    if args.reuse_probs and saved.is_file():
        with np.load(saved) as z:
            probs = z["probs"] if z["probs"].shape == planes.images.shape else None
    if probs is None:
        probs = cal.predict_planes(net, planes.images)
    out = cal.score_strip(probs, planes, thr, post)
    out["patients"] = sorted(set(planes.patients), key=int)
    out["row_step"] = args.row_step
    out["seconds"] = time.perf_counter() - t0
    if args.save_probs:
        np.savez_compressed(saved, probs=probs)
    return out


def _synthetic(net, info, args, thr, post):
    from DuralSacSegLib import calibration as cal
    from DuralSacSegLib.evaluate import evaluate_masks, load_dataset, preprocess_samples
    from DuralSacSegLib.postprocess import postprocess_masks
    from DuralSacSegLib.train import EVAL_SPECS

    t0 = time.perf_counter()
    spec = dict(EVAL_SPECS["synthetic"])
    if args.cache_dir:
        spec["cache_dir"] = args.cache_dir
    samples = load_dataset(spec)
    images, truth, pix = preprocess_samples(samples)
    probs = cal.predict_planes(net, images)
    pred = np.stack([postprocess_masks(p >= thr, post) for p in probs])
    summary, _rows = evaluate_masks(pred, truth, pix, [s.mask_area_mm2 for s in samples])
    keep = ("n_slices", "precision", "recall", "f1", "mean_slice_dice", "area_mae_mm2", "pearson_r", "ba_mean_diff_mm2",
            "ba_loa_low_mm2", "ba_loa_high_mm2", "false_positive_empty_slices")
    out = {k: summary.get(k) for k in keep}
    out["seconds"] = time.perf_counter() - t0
    return out


def _phantom(args, thr, post, model):
    from DuralSacSegLib.dsca import compute_dsca_table
    from DuralSacSegLib.segment import segment_volume
    from skimage.measure import perimeter

    from spinemorph.acquisition import acquire_axial_t1
    from spinemorph.phantom import make_phantom

    t0 = time.perf_counter()
    rows = []
    for preset in ("normal", "central-stenosis"):
        for seed in (0, 1):
            ph = make_phantom(preset=preset, seed=seed)
            acq = acquire_axial_t1(ph)
            exact = np.array([r["dsca_axial_mm2"] for r in acq.slice_table])
            res = segment_volume(acq.image, model=model, device="cpu", threshold=thr, postprocess=post)
            pred = res.table.areas_mm2()
            ideal = compute_dsca_table(acq.labels["dural_sac"]).areas_mm2()
            px = acq.image.spacing_mm[0]
            perims = [perimeter(acq.labels["dural_sac"].array[k] > 0) * px for k in range(len(exact))]
            graded = np.array([bool(r.stenosis) for r in res.table.rows])
            for k in range(len(exact)):
                if exact[k] > 0:
                    rows.append({"preset": preset, "seed": seed, "slice": k, "exact_mm2": float(exact[k]),
                             "perimeter_mm": float(perims[k]), "pixel_mm": float(px),
                                 "pred_mm2": float(pred[k]), "ideal_mask_mm2": float(ideal[k]), "graded": bool(graded[k]),
                                 "qc_flags": ";".join(res.table.rows[k].qc_flags)})
    d = np.array([r["pred_mm2"] - r["exact_mm2"] for r in rows])
    di = np.array([r["ideal_mask_mm2"] - r["exact_mm2"] for r in rows])
    from DuralSacSegLib.evaluate import area_agreement

    a = area_agreement([r["pred_mm2"] for r in rows], [r["exact_mm2"] for r in rows])
    return {
        "n_slices": len(rows),
        "series": "acquire_axial_t1 (4 mm axial T1, 0.6875 mm pixels), presets normal + central-stenosis, seeds 0, 1",
        "dsca_bias_mm2": float(d.mean()),
        "dsca_bias_percent": float(100 * d.mean() / np.mean([r["exact_mm2"] for r in rows])),
        "area_mae_mm2": float(np.abs(d).mean()),
        "pearson_r": a["pearson_r"],
        "ba_loa_low_mm2": a["ba_loa_low_mm2"],
        "ba_loa_high_mm2": a["ba_loa_high_mm2"],
        "ideal_mask_bias_mm2": float(di.mean()),
        "ideal_mask_mae_mm2": float(np.abs(di).mean()),
        "ideal_mask_max_abs_mm2": float(np.abs(di).max()),
        "slices_graded": int(sum(r["graded"] for r in rows)),
        # partial-volume limit: a systematic shift of the outline by a fraction f of a pixel changes the area by about
        # perimeter x f x pixel; 0.1 px on these slices is the figure below (the +-5 mm2 target ~ 0.1-0.15 px)
        "mean_perimeter_mm": float(np.mean([r["perimeter_mm"] for r in rows])),
        "area_change_per_0p1px_outline_shift_mm2": float(np.mean([r["perimeter_mm"] * 0.1 * r["pixel_mm"] for r in rows])),
        "slices": rows,
        "seconds": time.perf_counter() - t0,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="catalogue name or .pt weights file")
    ap.add_argument("--out", required=True, help="output folder (evaluation.json)")
    ap.add_argument("--parts", default="real,synthetic,phantom", help="comma list of real, synthetic, phantom")
    ap.add_argument("--row-step", type=int, default=16, help="every n-th PNG row of the real slabs (default 16 = 7.5 mm)")
    ap.add_argument("--threshold", type=float, default=None, help="override the model's decision threshold")
    ap.add_argument("--postprocess", default=None, help="override the model's post-processing (none, track+fill, ...)")
    ap.add_argument("--cache-dir", default="runs/dsca_cache", help="cache of the generated synthetic planes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save-probs", action="store_true", help="also keep the real-slab probabilities (npz)")
    ap.add_argument("--update", action="store_true",
                    help="keep the parts of an existing evaluation.json (same weights) that this run does not redo")
    ap.add_argument("--reuse-probs", action="store_true",
                    help="score the real part from a saved real_probs.npz of the same weights instead of predicting")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from DuralSacSegLib.models import load_model
    from DuralSacSegLib.postprocess import parse_spec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net, info = load_model(args.model, torch.device("cpu"))
    thr = info.threshold if args.threshold is None else float(args.threshold)
    post = info.postprocess if args.postprocess is None else args.postprocess
    parse_spec(post)
    doc = {
        "command": " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "model": info.name, "architecture": info.architecture, "weights_sha256": info.sha256,
        "threshold": thr, "threshold_source": "--threshold" if args.threshold is not None else info.threshold_source,
        "postprocess": post, "postprocess_source": "--postprocess" if args.postprocess is not None else "model",
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "torch_threads": args.threads,
    }
    old_path = out / "evaluation.json"
    if (args.update or args.reuse_probs) and old_path.is_file():
        old = json.loads(old_path.read_text())
        if old.get("weights_sha256") != info.sha256:
            ap.error(f"{old_path} was made with other weights; drop --update / --reuse-probs")
        if args.update:
            doc = {**old, **doc}
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    from spinemorph.atomic import atomic_write_text

    for part in parts:
        if part == "real":
            doc["real_slabs_strip"] = _real(net, info, args, thr, post)
        elif part == "synthetic":
            doc["synthetic"] = _synthetic(net, info, args, thr, post)
        elif part == "phantom":
            doc["phantom_study"] = _phantom(args, thr, post, args.model)
        else:
            ap.error(f"unknown part {part!r}")
        atomic_write_text(out / "evaluation.json", json.dumps(doc, indent=2, default=float) + "\n")
        print(f"{info.name} {part}: done", flush=True)
    r, s, p = doc.get("real_slabs_strip", {}), doc.get("synthetic", {}), doc.get("phantom_study", {})
    print(f"{info.name} (threshold {thr:.4f}, postprocess {post}): real strip Dice {r.get('mean_dice', float('nan')):.3f} "
          f"MAE {r.get('area_mae_mm2', float('nan')):.1f} mm² r {r.get('pearson_r', float('nan')):.3f} | synthetic Dice "
          f"{s.get('mean_slice_dice', float('nan')):.3f} MAE {s.get('area_mae_mm2', float('nan')):.1f} | phantom bias "
          f"{p.get('dsca_bias_mm2', float('nan')):+.1f} mm² (ideal mask {p.get('ideal_mask_bias_mm2', float('nan')):+.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
