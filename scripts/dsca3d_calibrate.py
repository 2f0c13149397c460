#!/usr/bin/env python
"""Choose a fine FORAMEN3D model's dural-sac decision (``canal_threshold``) for 3D DSCA on *validation* patients.

    scripts/dsca3d_calibrate.py --model foramen3d-fine-cpu --out docs/dsca3d_calibration.json [--write-catalog]

Why: the fine model's canal class (label 4) gave 3D DSCA areas that were too large (held-out in-slab bias +9 mm²,
complete planes +29 mm², about what a one-voxel dilation of the reference costs, ``docs/dsca3d.md``): with five
classes the argmax gives the sac to rim voxels at a probability well below 0.5 (partial volume of sac, bone and
epidural fat). The candidate rule: the sac only where its softmax probability is ≥ t
(:func:`FORAMEN3DLib.segment3d.decide_fine_labels`), t in ``--thresholds``, against the plain argmax (``none``).

Patients: the fine training's **validation** patients (``val_patients`` of the model's training config, by default
``configs/foramen3d_fine.json``: 191, 241, 22, 146) — never a held-out test patient (refused). Each slab runs through
the production path once: coarse locator → fine crop → sliding-window logits (kept), then every candidate →
post-processing → labels on the slab grid. Score: per-plane dural sac area on planes perpendicular to the slab mask's
canal centreline, inside the imaged slab, only planes centred inside the fine crop (1 mm eroded) — exactly
``scripts/dsca3d_slabs.py --pred-dir D --region-dir D/region`` (the same functions). The choice is the lowest pooled
in-slab MAE (ties: smaller |bias|).

``--write-catalog`` stores the choice as the catalogue entry's ``canal_threshold`` (null = argmax; read by
``FORAMEN3DLib.segment3d`` for every segmentation with that model, hence by ``dsca segment``'s 3D path) and its
provenance as ``canal_decision``. Held-out patients are measured afterwards, once, with the stored setting::

    python -m FORAMEN3DLib.evaluate_fine --model foramen3d-fine-cpu --out D --slabs --pred-dir D/pred
    scripts/dsca3d_slabs.py --pred-dir D/pred --region-dir D/pred/region --out D/dsca
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FINE_CONFIG = ROOT / "FORAMEN3D" / "Resources" / "Models" / "configs" / "foramen3d_fine.json"


def _slabs_module():
    spec = importlib.util.spec_from_file_location("dsca3d_slabs", ROOT / "scripts" / "dsca3d_slabs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def candidate_label(t) -> str:
    return "argmax" if t is None else f"p>={t:g}"


def crop_logits(image, loaded, device="cpu"):
    """``(prep, grid, logits, fov, centre)`` of one image through the production locator and fine crop."""
    from FORAMEN3DLib import segment3d as s3
    from FORAMEN3DLib.preprocess import preprocess_volume

    prep = preprocess_volume(image)
    loc = loaded.meta.get("locator") or s3.DEFAULT_LOCATOR
    padded, _, _ = s3.segment_preprocessed(prep, loc, device, inverse=False)
    centre = s3.locate_l45(prep, padded)
    grid, x, fov = s3.fine_crop_input(image, prep, centre)
    return prep, grid, s3.fine_network_logits(loaded, x), fov, centre


def labels_for(image, grid, logits, fov, threshold):
    """Labels on the image grid for one candidate (the steps of ``segment_fine`` after the network)."""
    from FORAMEN3DLib import segment3d as s3

    raw = s3.decide_fine_labels(logits, threshold)
    raw[~fov] = 0
    crop = s3.postprocess_labels(raw, structures=(1, 2, 3, 4))
    return s3.paste_to_input(image, grid, crop), crop


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="foramen3d-fine-cpu", help="catalogue name of a fine model")
    ap.add_argument("--out", required=True, type=Path, help="JSON report")
    ap.add_argument("--thresholds", default="none,0.4,0.5,0.6,0.7,0.8,0.9",
                    help="candidates: 'none' (argmax) and probabilities of class 4")
    ap.add_argument("--patients", default=None,
                    help="comma list (default: val_patients of the fine training config); held-out patients refused")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--write-catalog", action="store_true", help="store the choice in the catalogue entry")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from FORAMEN3DLib import evaluate_fine as ef
    from FORAMEN3DLib import models3d
    from FORAMEN3DLib import segment3d as s3
    from scipy import ndimage

    from spinemorph import spider
    from spinemorph.atomic import atomic_write_text
    from spinemorph.errors import SpineMorphError
    from spinemorph.labels import CANAL

    slabs = _slabs_module()
    patients = ([p.strip() for p in args.patients.split(",") if p.strip()] if args.patients
                else list(json.loads(FINE_CONFIG.read_text())["val_patients"]))
    bad = sorted(set(patients) & (set(spider.HELD_OUT_PATIENTS) | set(spider.HELD_OUT_SLAB_PATIENTS)))
    if bad:
        print(f"error: held-out test patients {', '.join(bad)} are never used to choose a setting", file=sys.stderr)
        return 1
    cands = [None if c.strip().lower() in ("none", "argmax") else s3.check_canal_threshold(c)
             for c in args.thresholds.split(",") if c.strip()]
    t_start = time.perf_counter()
    try:
        loaded = models3d.load_model(args.model, "cpu")
        if not s3.is_fine_model(loaded):
            raise SpineMorphError(f"{args.model} is not a coarse-to-fine model with a dural-sac class")
        rows = {candidate_label(t): [] for t in cands}
        per_patient: dict = {}
        for p in patients:
            t0 = time.perf_counter()
            image, mask = spider.load_slab(p)
            image = image.with_array(image.array.astype(np.float32))
            prep, grid, logits, fov, centre = crop_logits(image, loaded)
            truth, cl, tt = slabs.reference_planes(p)
            region = None
            per_patient[p] = {"l45_centre_lps": [round(float(v), 1) for v in centre]}
            lab = ef.fd.slab_labels(p, image, mask)
            if lab.disc_center_lps is not None:
                d = np.asarray(prep.crop.direction)  # + = the located centre lies inferior (one level: 30-40 mm)
                per_patient[p]["locator_offset_mm"] = round(float((d.T @ (centre - np.asarray(lab.disc_center_lps)))[1]), 1)
            for t in cands:
                on_input, crop = labels_for(image, grid, logits, fov, t)
                if region is None:  # the crop on the slab grid, 1 mm eroded (as dsca3d_slabs._region_mask)
                    region = ndimage.binary_erosion(ef._grid_region(image, grid.volume(crop)), border_value=0)
                pred = image.with_array((on_input == CANAL).astype(np.uint8))
                r = slabs.score_prediction(p, truth, cl, tt, pred, region)
                rows[candidate_label(t)] += r
                sc = slabs._scores(r)
                per_patient[p][candidate_label(t)] = {k: sc[k] for k in ("n_planes", "mae_in_slab_mm2",
                                                                          "bias_in_slab_mm2", "n_complete",
                                                                          "mae_complete_mm2", "bias_complete_mm2")}
                print(f"patient {p:>4} {candidate_label(t):>8}: {sc['n_planes']} planes, in-slab MAE "
                      f"{sc['mae_in_slab_mm2']:.2f} (bias {sc['bias_in_slab_mm2']:+.2f}) | complete "
                      f"{sc['n_complete']} MAE {sc['mae_complete_mm2']:.2f} (bias {sc['bias_complete_mm2']:+.2f})",
                      flush=True)
            per_patient[p]["seconds"] = round(time.perf_counter() - t0, 1)
    except SpineMorphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    pooled = {k: slabs._scores(v) for k, v in rows.items()}

    def key(t):
        s = pooled[candidate_label(t)]
        return (s["mae_in_slab_mm2"], abs(s["bias_in_slab_mm2"]))

    best = min(cands, key=key)
    current = s3.model_canal_threshold(loaded)
    report = {
        "command": " ".join(["scripts/dsca3d_calibrate.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": loaded.name, "weights_sha256": loaded.sha256,
        "validation_patients": patients,
        "rule": "dural sac (class 4) where its softmax probability >= canal_threshold (none = argmax); chosen: lowest "
                "pooled per-plane in-slab DSCA MAE inside the fine crop (ties: smaller |bias|)",
        "current_canal_threshold": current,
        "chosen_canal_threshold": best,
        "pooled": pooled,
        "per_patient": per_patient,
        "seconds": round(time.perf_counter() - t_start, 1),
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(slabs._json_clean(report), indent=2) + "\n")
    print("pooled over " + ", ".join(patients) + ":")
    for t in cands:
        s = pooled[candidate_label(t)]
        print(f"  {candidate_label(t):>8}: {s['n_planes']} planes, in-slab MAE {s['mae_in_slab_mm2']:.2f} mm² (bias "
              f"{s['bias_in_slab_mm2']:+.2f}) | complete {s['n_complete']}: MAE {s['mae_complete_mm2']:.2f} "
              f"(bias {s['bias_complete_mm2']:+.2f})")
    print(f"chosen: {candidate_label(best)} (current: {candidate_label(current)}); wrote {args.out}")
    if args.write_catalog:
        s = pooled[candidate_label(best)]
        decision = {
            "rule": report["rule"], "chosen_on": f"validation patients {', '.join(patients)} (scripts/dsca3d_calibrate.py)",
            "validation_in_slab_mae_mm2": round(s["mae_in_slab_mm2"], 2),
            "validation_in_slab_bias_mm2": round(s["bias_in_slab_mm2"], 2),
            "validation_planes": s["n_planes"],
            "argmax_validation_in_slab_mae_mm2": round(pooled["argmax"]["mae_in_slab_mm2"], 2)
            if "argmax" in pooled and math.isfinite(pooled["argmax"]["mae_in_slab_mm2"]) else None,
            "report": str(args.out),
        }
        models3d.update_entry(loaded.name, {"canal_threshold": best, "canal_decision": decision})
        print(f"wrote canal_threshold={best} into {models3d.CATALOG_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
