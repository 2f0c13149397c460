#!/usr/bin/env python3
"""Canal-centred crop inference vs whole-slice inference of the 2D DSCA network, on data never trained on (issue 8).

For every stack the script prepares the 320 × 320 network slices exactly as ``dsca segment`` does
(:func:`DuralSacSegLib.segment.network_stack`), runs :func:`DuralSacSegLib.roi.predict_stack` whole (``crop_px=None``,
the source method) and cropped (``--crop``, default 128), and reports on the network grid:

* **context effect** (what the optimisation itself changes): the cropped mask against the whole-slice mask limited
  to the same windows — Dice and per-slice area difference (mm²);
* **mode difference**: cropped vs whole-slice area per slice (this includes false positives outside the window, which
  whole-slice inference keeps);
* **accuracy** of each mode against the truth mask (pooled Dice; per-slice area MAE over slices where either
  has foreground);
* network time of each mode and how many slices were located / cropped / re-run whole.

Data (none of it used in training): phantom axial T1 series (3 presets × 2 seeds, 20 slices, exact dural-sac
label maps), the held-out SPIDER label maps synthesised as 4 mm axial T1 and T2 stacks, and the held-out real T2
SPACE slabs (resliced to axial planes like any sagittal input; their canal mask as truth, limited to the slab).

Usage::

    python scripts/roi_agreement.py --out runs/roi_agreement [--crop 128] [--model NAME] [--sources phantom,synth,slabs]

Writes ``roi_agreement.json`` and ``roi_agreement.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from DuralSacSegLib.roi import DEFAULT_CROP_PX, predict_stack
from DuralSacSegLib.segment import _resample, make_model_predictor, network_stack

from spinemorph.volume import Volume


def phantom_cases():
    from spinemorph.acquisition import acquire_axial_t1
    from spinemorph.phantom import make_phantom

    for preset in ("normal", "central-stenosis", "foraminal-stenosis"):
        for seed in (11, 12):
            ph = make_phantom(seed=seed, preset=preset, vary=True)
            acq = acquire_axial_t1(ph, n_slices=20, seed=seed)
            yield "phantom axial T1", f"{preset} seed {seed}", acq.image, acq.labels["dural_sac"]


def spider_synth_cases():
    from spinemorph import spider, synth

    for i, case in enumerate(spider.held_out_mask_cases()):
        series = spider.get_series(case)
        generic = spider.remap_labels(spider.load_mask(series), series, "generic")
        for contrast in ("t1", "t2"):
            res = synth.synthesize_volume(generic, seed=900 + 10 * i + (contrast == "t2"), contrast=contrast,
                                          reslice="axial")
            truth = res.labels.with_array((np.asarray(res.labels.array) == spider.CANAL_LABEL).astype(np.uint8))
            yield f"held-out SPIDER synthesised axial {contrast.upper()}", case, res.image, truth


def real_slab_cases():
    from spinemorph import spider

    for patient in spider.held_out_slab_patients():
        image, mask = spider.load_slab(patient)
        truth = mask.with_array((np.asarray(mask.array) == spider.SLAB_CANAL).astype(np.uint8))
        yield "held-out real T2 SPACE slabs (resliced)", f"patient {patient}", image.with_array(
            np.asarray(image.array, np.float32)), truth


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def run_case(predict, thr: float, crop: int, image: Volume, truth: Volume) -> dict:
    ns = network_stack(image)
    stack, todo = ns.normalized(), ns.todo
    pixel_mm2 = float(ns.grid["spacing_mm"][0]) ** 2
    t0 = time.perf_counter()
    whole, _ = predict_stack(predict, stack, thr, todo=todo, crop_px=None, batch_size=1)
    t_whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    cropped, rep = predict_stack(predict, stack, thr, todo=todo, crop_px=crop, batch_size=1)
    t_crop = time.perf_counter() - t0
    cov = ns.coverage
    window = np.zeros_like(cov)
    for k, (r, c) in rep.windows_px.items():
        window[k, r: r + crop, c: c + crop] = True
    if rep.crop_px is None:
        window[:] = True
    m_whole = (whole >= thr) & cov
    m_crop = (cropped >= thr) & cov
    m_clip = m_whole & window
    tvol = Volume(np.asarray(truth.array, np.float32), truth.spacing_mm, truth.origin_mm, truth.direction)
    t_net = (_resample(tvol, ns.grid, "linear").array >= 0.5) & cov
    ks = np.array(todo, dtype=int)
    area = {name: m[ks].reshape(len(ks), -1).sum(1) * pixel_mm2 for name, m in
            (("whole", m_whole), ("crop", m_crop), ("clip", m_clip), ("truth", t_net))}
    has = (area["truth"] > 0) | (area["whole"] > 0) | (area["crop"] > 0)
    return {
        "n_slices": len(todo),
        "network_pixel_mm": float(ns.grid["spacing_mm"][0]),
        "time_whole_s": t_whole,
        "time_crop_s": t_crop,
        "located": len(rep.located),
        "rerun_whole": len(rep.rerun_whole),
        "cropped": len(rep.cropped) - len(rep.rerun_whole),
        "context_dice": dice(m_crop, m_clip),
        "context_area_diff_mm2": (area["crop"] - area["clip"]).tolist(),
        "mode_area_diff_mm2": (area["crop"] - area["whole"]).tolist(),
        "dice_whole_vs_truth": dice(m_whole, t_net),
        "dice_crop_vs_truth": dice(m_crop, t_net),
        "abs_err_whole_mm2": np.abs(area["whole"] - area["truth"])[has].tolist(),
        "abs_err_crop_mm2": np.abs(area["crop"] - area["truth"])[has].tolist(),
        "inter": {"crop&truth": int((m_crop & t_net).sum()), "crop": int(m_crop.sum()), "truth": int(t_net.sum()),
                  "whole&truth": int((m_whole & t_net).sum()), "whole": int(m_whole.sum()),
                  "crop&clip": int((m_crop & m_clip).sum()), "clip": int(m_clip.sum())},
    }


def summarise(rows: list[dict], crop: int) -> dict:
    def cat(key):
        return np.concatenate([np.asarray(r[key], float) for r in rows]) if rows else np.zeros(0)

    def pooled(a, b, both):
        s = sum(r["inter"][a] + r["inter"][b] for r in rows)
        return 2.0 * sum(r["inter"][both] for r in rows) / s if s else 1.0

    ctx, mode = np.abs(cat("context_area_diff_mm2")), np.abs(cat("mode_area_diff_mm2"))
    ew, ec = cat("abs_err_whole_mm2"), cat("abs_err_crop_mm2")
    tw, tc = sum(r["time_whole_s"] for r in rows), sum(r["time_crop_s"] for r in rows)
    n, loc, rer, cro = (sum(r[k] for r in rows) for k in ("n_slices", "located", "rerun_whole", "cropped"))
    # network input pixels processed, relative to whole slices (load-independent cost; re-run slices paid twice)
    work = ((loc + rer) * 320 * 320 + (cro + rer) * crop * crop) / max(1, n * 320 * 320)
    return {
        "work_ratio": work,
        "stacks": len(rows),
        "slices": int(sum(r["n_slices"] for r in rows)),
        "located": int(sum(r["located"] for r in rows)),
        "cropped": int(sum(r["cropped"] for r in rows)),
        "rerun_whole": int(sum(r["rerun_whole"] for r in rows)),
        "time_whole_s": tw,
        "time_crop_s": tc,
        "speedup": tw / tc if tc else float("nan"),
        "context_dice_pooled": pooled("crop", "clip", "crop&clip"),
        "context_abs_area_diff_mm2_median": float(np.median(ctx)) if ctx.size else 0.0,
        "context_abs_area_diff_mm2_max": float(ctx.max()) if ctx.size else 0.0,
        "mode_abs_area_diff_mm2_median": float(np.median(mode)) if mode.size else 0.0,
        "mode_abs_area_diff_mm2_max": float(mode.max()) if mode.size else 0.0,
        "dice_whole_vs_truth_pooled": pooled("whole", "truth", "whole&truth"),
        "dice_crop_vs_truth_pooled": pooled("crop", "truth", "crop&truth"),
        "area_mae_whole_mm2": float(ew.mean()) if ew.size else float("nan"),
        "area_mae_crop_mm2": float(ec.mean()) if ec.size else float("nan"),
        "n_area_slices": int(ew.size),
    }


def markdown(doc: dict) -> str:
    lines = [
        "# Canal-centred crop vs whole-slice inference (DSCA network)",
        "",
        f"Run {doc['date_utc']} on {doc['machine']}; model `{doc['model']}`, window {doc['crop_px']} px, threshold "
        f"{doc['threshold']:.4f}, torch threads {doc['torch_threads']}. Produced by `scripts/roi_agreement.py`.",
        "",
        "Work = network input pixels processed with the window, relative to whole-slice inference (independent of the "
        "machine's load; re-run slices count twice). Times are wall seconds of the network passes in this run (the "
        "machine was shared, see the benchmark for clean timings).",
        "",
        "| data | stacks | slices | located / cropped / re-run whole | work | network s whole → crop (speed-up) | context Dice "
        "(crop vs whole in the same window) | context |ΔA| median / max mm² | crop − whole |ΔA| median / max mm² | "
        "Dice vs truth whole → crop | area MAE vs truth whole → crop mm² |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, s in doc["summary"].items():
        lines.append(
            f"| {name} | {s['stacks']} | {s['slices']} | {s['located']} / {s['cropped']} / {s['rerun_whole']} | "
            f"{s['work_ratio']:.2f} | "
            f"{s['time_whole_s']:.1f} → {s['time_crop_s']:.1f} ({s['speedup']:.2f}×) | {s['context_dice_pooled']:.4f} | "
            f"{s['context_abs_area_diff_mm2_median']:.1f} / {s['context_abs_area_diff_mm2_max']:.1f} | "
            f"{s['mode_abs_area_diff_mm2_median']:.1f} / {s['mode_abs_area_diff_mm2_max']:.1f} | "
            f"{s['dice_whole_vs_truth_pooled']:.3f} → {s['dice_crop_vs_truth_pooled']:.3f} | "
            f"{s['area_mae_whole_mm2']:.1f} → {s['area_mae_crop_mm2']:.1f} |")
    if doc.get("errors"):
        lines += ["", "Stacks that failed: " + "; ".join(doc["errors"])]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--crop", type=int, default=DEFAULT_CROP_PX)
    ap.add_argument("--model", default=None)
    ap.add_argument("--report-only", metavar="JSON", help="rewrite the summary and Markdown of an earlier run's JSON")
    ap.add_argument("--sources", default="phantom,synth,slabs",
                    help="comma-separated: phantom, synth (held-out SPIDER label maps), slabs (held-out real slabs)")
    args = ap.parse_args(argv)
    if args.report_only:
        doc = json.loads(Path(args.report_only).read_text())
        doc["summary"] = {k: summarise(v, doc["crop_px"]) for k, v in doc["cases"].items()}
        return write_report(doc, Path(args.out))
    import torch

    from spinemorph import spider

    predict, info, dev = make_model_predictor(args.model, "cpu")
    thr = float(info.threshold)
    want = {x.strip() for x in args.sources.split(",") if x.strip()}
    table = {"phantom": phantom_cases, "synth": spider_synth_cases, "slabs": real_slab_cases}
    if want - set(table):
        ap.error(f"unknown sources {sorted(want - set(table))}")
    if spider.spider_root() is None:
        want.discard("synth")
        want.discard("slabs")
    sources = [table[k] for k in ("phantom", "synth", "slabs") if k in want]
    per: dict[str, list] = {}
    errors = []
    for src in sources:
        for data, name, image, truth in src():
            try:
                row = run_case(predict, thr, args.crop, image, truth)
            except Exception as exc:  # report and go on (batch rule)
                errors.append(f"{data} {name}: {exc}")
                print(f"FAILED {data} {name}: {exc}", file=sys.stderr)
                continue
            row["case"] = name
            per.setdefault(data, []).append(row)
            print(f"{data:45s} {name:28s} slices {row['n_slices']:3d} whole {row['time_whole_s']:6.2f} s crop "
                  f"{row['time_crop_s']:6.2f} s rerun {row['rerun_whole']:2d} ctxDice {row['context_dice']:.4f} "
                  f"Dice truth {row['dice_whole_vs_truth']:.3f}->{row['dice_crop_vs_truth']:.3f}", flush=True)
    doc = {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "model": info.name, "crop_px": args.crop, "threshold": thr, "torch_threads": torch.get_num_threads(),
        "summary": {k: summarise(v, args.crop) for k, v in per.items()},
        "cases": per, "errors": errors,
    }
    return write_report(doc, Path(args.out))


def write_report(doc: dict, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "roi_agreement.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "roi_agreement.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
