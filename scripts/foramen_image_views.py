#!/usr/bin/env python
"""Which lateral view does ``foramen measure`` use on an *image* (issue 15, "no convex-hull or wide fallback")?

    scripts/foramen_image_views.py --out DIR [--model NAME] [--presets normal,...] [--synth 1] [--threads 2]

For every phantom preset (its 3D T2 SPACE acquisition, ``spinemorph.acquisition.acquire_space_t2``) and every
held-out SPIDER label map (images synthesised on the fine crop around the true L4-5 disc, contrast T2, as
``FORAMEN3DLib.evaluate_fine --synth``), the image is segmented by the model (``segment_volume``: locator + fine
network for the default) and measured by :func:`FORAMEN3DLib.morphometry.measure_foramen`; the true label map of the
same voxels is measured the same way. Per side it records the view kind (``searched offset`` / ``wide`` / ``hull``),
the fallbacks, the QC status and height / width / area on the prediction and on the truth. A side whose image
measurement uses the wide or hull view, or any fallback the truth does not need, counts against the criterion; a
measurement that fails (no foramen, no pedicle) counts too. Writes ``DIR/image_views.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

FALLBACK_VIEWS = ("wide", "hull")


def _sides(labels) -> dict:
    """measure_foramen on a 1/2/3(/4) label map → per side summary (or the error)."""
    from FORAMEN3DLib.morphometry import measure_foramen

    from spinemorph.errors import SpineMorphError

    try:
        res = measure_foramen(labels)
    except SpineMorphError as exc:
        return {"error": str(exc)}
    out = {}
    for side, r in res.sides.items():
        if not r.measured:  # this side alone failed: the other is still measured
            out[side] = {"error": r.qc_reasons[0]}
            continue
        out[side] = {"view_kind": r.view_kind, "fallbacks": list(r.fallbacks), "qc_status": r.qc_status,
                     "qc_reasons": list(r.qc_reasons), "height_mm": round(float(r.height.value), 2),
                     "width_mm": round(float(r.width.value), 2), "area_mm2": round(float(r.area.value), 1),
                     "closing_mm": float(r.closing_radius_mm), "offset_mm": round(float(r.offset_mm), 1)}
    return out


def _verdict(pred: dict, truth: dict) -> dict:
    """Per side: does the image measurement need a view / fallback the truth does not?"""
    out = {}
    for side in ("left", "right"):
        if "error" in pred:
            out[side] = f"failed: {pred['error']}"
            continue
        p, t = pred[side], truth.get(side, {})
        if "error" in p:
            out[side] = f"failed: {p['error']}"
            continue
        bad = []
        if p["view_kind"] in FALLBACK_VIEWS:
            bad.append(f"view {p['view_kind']}")
        extra = [f for f in p["fallbacks"] if f not in t.get("fallbacks", [])]
        if extra:
            bad.append("fallback: " + "; ".join(extra))
        out[side] = "; ".join(bad) if bad else "ok"
    return out


def _cases(presets, n_synth: int):
    """(name, image Volume, truth 1/2/3/4 label Volume) for the phantom presets and the held-out synthesised crops."""
    from FORAMEN3DLib import fine_data as fd

    from spinemorph import spider
    from spinemorph.acquisition import acquire_space_t2
    from spinemorph.phantom import make_phantom

    for preset in presets:
        acq = acquire_space_t2(make_phantom(seed=0, preset=preset))
        yield f"phantom-{preset}", acq.image, acq.labels["foramen"]
    for case in spider.held_out_mask_cases():
        for s in range(n_synth):
            smp = fd.synthetic_sample(case, 2_000_000 + s, 0.0, contrast="t2", allow_held_out=True)
            truth = fd.definite_labels(smp["bits"])
            truth = np.where(truth == 255, 0, truth).astype(np.uint8)
            yield f"synth-{case}-{s}", smp["grid"].volume(smp["x"]), smp["grid"].volume(truth)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--model", default="default")
    ap.add_argument("--presets", default="normal,central-stenosis,foraminal-stenosis")
    ap.add_argument("--synth", type=int, default=1, help="synthesised images per held-out label map (0 = none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--locator", choices=("default", "coarse", "count", "levels"), default="default",
                    help="the fine pipeline's L4-5 locator (default: segment_volume's default)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from FORAMEN3DLib.models3d import load_model
    from FORAMEN3DLib.segment3d import segment_volume

    from spinemorph.atomic import atomic_write_text

    loaded = load_model(args.model, "cpu")
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    rows = []
    for name, image, truth in _cases(presets, args.synth):
        t0 = time.perf_counter()
        seg = segment_volume(image, loaded, "cpu", fine_options=None if args.locator == "default" else
                             {"locator_mode": args.locator})
        t_seg = time.perf_counter() - t0
        pred_m, truth_m = _sides(seg.labels), _sides(truth)
        row = {"case": name, "segment_s": round(t_seg, 2), "locator": getattr(seg, "locator", None),
               "l45_centre_lps": [round(float(v), 1) for v in seg.l45_centre_lps] if seg.l45_centre_lps else None,
               "seg_qc": list(getattr(seg, "qc", ()) or ()), "image": pred_m, "truth": truth_m,
               "verdict": _verdict(pred_m, truth_m)}
        rows.append(row)
        for side in ("left", "right"):
            p, t = pred_m.get(side, {}), truth_m.get(side, {})
            print(f"{name:>28} {side:>5}: image {p.get('view_kind', '-'):>15} h/w/a "
                  f"{p.get('height_mm', float('nan')):5.1f}/{p.get('width_mm', float('nan')):5.1f}/"
                  f"{p.get('area_mm2', float('nan')):6.1f} | truth {t.get('view_kind', '-'):>15} "
                  f"{t.get('height_mm', float('nan')):5.1f}/{t.get('width_mm', float('nan')):5.1f}/"
                  f"{t.get('area_mm2', float('nan')):6.1f} -> {row['verdict'][side]}", flush=True)
    n_sides = 2 * len(rows)
    n_ok = sum(v == "ok" for r in rows for v in r["verdict"].values())
    summary = {"model": loaded.name, "sides": n_sides, "sides_ok": n_ok,
               "sides_wide_or_hull": sum(r["image"].get(s, {}).get("view_kind") in FALLBACK_VIEWS
                                         for r in rows for s in ("left", "right")),
               "sides_failed": sum(v.startswith("failed") for r in rows for v in r["verdict"].values()),
               "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
               "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "image_views.json", json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
