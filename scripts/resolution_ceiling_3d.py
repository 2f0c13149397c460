#!/usr/bin/env python3
"""How much Dice can a coarse 3D output grid cost at most?  (issue 8: the FORAMEN3D layouts)

The embedded FORAMEN3D model runs on the 0.8 mm input average-pooled to 1.6 mm, with a stride-2 stem: its logits
live on a 3.2 mm grid and are upsampled trilinearly to 0.8 mm before the argmax. Whatever the weights, that output
cannot draw boundaries finer than a trilinear field on the coarse grid allows. This script measures that limit on
*truth* label maps, without any network:

* ``one-hot mean``: one-hot labels average-pooled by the factor (a coarse grid that only knows the class fractions
  of its cells), upsampled trilinearly, argmax — a pessimistic reconstruction;
* ``signed distance``: per class the signed distance to its boundary (mm, clipped at ±10 mm) sampled at the coarse
  cell centres, upsampled trilinearly, argmax of the negated distances — a smooth field a network can represent
  well, closer to what trained logits do (cell means of the field, upsampled trilinearly).

Dice per structure (L4, L4-5 disc, L5) against the original 0.8 mm labels, for pooling factors 2 (1.6 mm) and 4
(3.2 mm: the embedded layout). A full-resolution network has factor 1 (Dice 1 by construction). Data: the held-out
SPIDER label maps (real anatomy, "foramen" scheme, resampled to 0.8 mm, nearest) and phantom SPACE label maps.

Usage: ``python scripts/resolution_ceiling_3d.py --out runs/resolution_ceiling``
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from spinemorph.labels import FORAMEN_LABELS
from spinemorph.volume import Volume, resample_to_grid

CLIP_MM = 10.0


def cases():
    from spinemorph import spider, synth
    from spinemorph.acquisition import acquire_space_t2
    from spinemorph.phantom import make_phantom

    if spider.spider_root() is not None:
        for case in spider.held_out_mask_cases():
            series = spider.get_series(case)
            lab = spider.remap_labels(spider.load_mask(series), series, "foramen")
            arr = np.asarray(lab.array)
            if not all((arr == v).any() for v in (1, 2, 3)):
                continue
            # crop to the three structures + 10 mm, on a 0.8 mm PIR grid
            fg = Volume((arr > 0).astype(np.uint8), lab.spacing_mm, lab.origin_mm, lab.direction)
            g = synth.iso_grid(_bbox_volume(fg, 10.0), 0.8, "PIR")
            iso = resample_to_grid(lab, g.spacing_mm, g.size_ijk, g.origin_mm, g.direction, "nearest")
            yield f"SPIDER {case}", np.asarray(iso.array, np.uint8)
    for seed in (1001, 1002, 1003):
        acq = acquire_space_t2(make_phantom(seed=seed, vary=True))
        yield f"phantom {seed}", np.asarray(acq.labels["foramen"].array, np.uint8)


def _bbox_volume(fg: Volume, margin_mm: float) -> Volume:
    idx = np.argwhere(np.asarray(fg.array) > 0)
    lo, hi = idx.min(0), idx.max(0)
    m = np.ceil(margin_mm / np.asarray(fg.spacing_mm)[::-1]).astype(int)
    lo, hi = np.maximum(lo - m, 0), np.minimum(hi + m, np.asarray(fg.shape) - 1)
    sub = np.asarray(fg.array)[lo[0]: hi[0] + 1, lo[1]: hi[1] + 1, lo[2]: hi[2] + 1]
    origin = fg.index_to_lps(lo[::-1].astype(float))
    return Volume(sub, fg.spacing_mm, tuple(origin), fg.direction)


def pad_to(arr: np.ndarray, f: int) -> np.ndarray:
    pads = [(0, (-s) % f) for s in arr.shape]
    return np.pad(arr, pads)


def reconstruct(labels: np.ndarray, f: int, kind: str) -> np.ndarray:
    lab = pad_to(labels, f)
    fields = []
    for c in range(4):
        m = lab == c
        if kind == "onehot":
            fields.append(m.astype(np.float32))
        else:  # signed distance in mm (0.8 mm voxels), negative inside; the argmax takes its negation
            d = (ndimage.distance_transform_edt(~m) - ndimage.distance_transform_edt(m)) * 0.8
            fields.append(-np.clip(d, -CLIP_MM, CLIP_MM).astype(np.float32))
    x = torch.from_numpy(np.stack(fields))[None]
    coarse = F.avg_pool3d(x, f)  # cell means (for the smooth distance field ≈ its value at the cell centre)
    up = F.interpolate(coarse, size=lab.shape, mode="trilinear", align_corners=False)
    out = up[0].argmax(0).numpy().astype(np.uint8)
    return out[: labels.shape[0], : labels.shape[1], : labels.shape[2]]


def dice(a, b) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = []
    for name, lab in cases():
        for f in (2, 4):
            for kind in ("onehot", "sdf"):
                rec = reconstruct(lab, f, kind)
                d = {FORAMEN_LABELS[v]: dice(lab == v, rec == v) for v in (1, 2, 3)}
                rows.append({"case": name, "factor": f, "grid_mm": 0.8 * f, "kind": kind, "dice": d,
                             "mean": float(np.mean(list(d.values())))})
                print(f"{name:22s} {0.8 * f:.1f} mm {kind:6s} " + " ".join(f"{k} {v:.4f}" for k, v in d.items()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    groups = {"all": lambda r: True, "SPIDER": lambda r: r["case"].startswith("SPIDER"),
              "phantom": lambda r: r["case"].startswith("phantom")}
    for (f, kind), (group, keep) in itertools.product(itertools.product((2, 4), ("onehot", "sdf")), groups.items()):
        sel = [r for r in rows if r["factor"] == f and r["kind"] == kind and keep(r)]
        if sel:
            summary[f"{0.8 * f:.1f} mm {kind} {group}"] = {
                "n": len(sel),
                "mean_dice": float(np.mean([r["mean"] for r in sel])),
                "min_case_mean": float(np.min([r["mean"] for r in sel])),
                **{s: float(np.mean([r["dice"][s] for r in sel])) for s in FORAMEN_LABELS.values()},
            }
    (out / "resolution_ceiling.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    for k, v in summary.items():
        print(k, json.dumps({a: round(b, 4) if isinstance(b, float) else b for a, b in v.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
