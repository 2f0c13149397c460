"""Evaluation of a fine (5-class) FORAMEN3D model on patients never trained on.

``python -m FORAMEN3DLib.evaluate_fine --model FILE|NAME --out DIR [--slabs] [--synth N]``

* ``--slabs``: the **real T2 SPACE slabs** of the held-out patients (:func:`spinemorph.spider.held_out_slab_patients`)
  through the whole inference path (:func:`FORAMEN3DLib.segment3d.segment_volume`: coarse locator → fine crop →
  sliding window → labels on the slab's own grid). Truth: the slab mask with L4 / L4-5 disc / L5 derived by
  :func:`FORAMEN3DLib.fine_data.slab_labels` (the patient's own SPACE label volume, or counting up from the lowest
  vertebral body); Dice per structure on the fully labelled voxels inside the imaged slab and inside the fine crop
  (the slab's canal runs far beyond L4-5: only the part inside the crop is scored).
* ``--synth N``: N images per held-out label map synthesised (contrast T2) on the fine crop centred on the true L4-5
  disc (no locator: the fine network alone), with the **posterior-arch Dice**: L4 ∪ L5 voxels posterior of the
  anterior canal wall of their row (pedicles, articular processes, laminae, transverse and spinous processes).

Writes ``DIR/metrics.json`` (per case and mean) and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_write_text
from spinemorph.errors import SpineMorphError

from . import fine_data as fd
from .train_fine import FINE_CLASS_NAMES, predict_crop


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / s if s else math.nan


def posterior_arch_region(truth: np.ndarray) -> np.ndarray:
    """Voxels posterior of the anterior canal wall of their row (array ``(k, j, i)``, i anterior → posterior).

    The wall of row ``j`` is the most anterior canal voxel of that row (any slice); rows without canal take the
    nearest row's wall."""
    canal = truth == fd.CANAL
    rows = np.nonzero(canal.any(axis=(0, 2)))[0]
    if len(rows) == 0:
        return np.zeros(truth.shape, bool)
    wall = np.full(truth.shape[1], -1)
    for j in rows:
        wall[j] = int(np.nonzero(canal[:, j, :].any(axis=0))[0].min())
    known = np.nonzero(wall >= 0)[0]
    nearest = known[np.abs(np.arange(truth.shape[1])[:, None] - known[None, :]).argmin(1)]
    wall = wall[nearest]
    i = np.arange(truth.shape[2])
    return np.broadcast_to((i[None, :] >= wall[:, None])[None], truth.shape)


def evaluate_synth(loaded, n: int, seed: int = 0) -> list[dict]:
    from spinemorph import spider

    rows = []
    for case in spider.held_out_mask_cases():
        for s in range(n):
            smp = fd.synthetic_sample(case, 2_000_000 + seed + s, 0.0, contrast="t2", allow_held_out=True)
            t0 = time.perf_counter()
            probs = predict_crop(loaded.network, smp["x"], loaded.meta.get("infer_roi") or [96, 96, 96], 0.25,
                                 device=loaded.device)
            from .segment3d import postprocess_labels

            pred = postprocess_labels(probs.argmax(0).astype(np.uint8), structures=(1, 2, 3, 4))
            dt = time.perf_counter() - t0
            truth = fd.definite_labels(smp["bits"])
            known = truth != 255
            row = {"case": case, "seed": smp["meta"]["seed"], "source": "synth-heldout", "inference_s": dt}
            for c, name in FINE_CLASS_NAMES.items():
                row[name] = _dice((truth == c) & known, (pred == c) & known)
            arch = posterior_arch_region(truth) & known
            vt = ((truth == fd.L4) | (truth == fd.L5)) & arch
            vp = ((pred == fd.L4) | (pred == fd.L5)) & arch
            row["posterior arch"] = _dice(vt, vp)
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return rows


def evaluate_slabs(model, device="cpu") -> list[dict]:
    from spinemorph import spider
    from spinemorph.volume import resample_to_grid

    from .preprocess import _input_subgrid
    from .segment3d import segment_volume

    rows = []
    for p in spider.held_out_slab_patients():
        image, mask = spider.load_slab(p)
        lab = fd.slab_labels(p, image, mask)
        res = segment_volume(image.with_array(image.array.astype(np.float32)), model, device)
        pred = res.labels.array
        grid = fd.FineGrid(res.crop_labels.origin_mm, res.crop_labels.direction, res.crop_labels.shape)
        inside = np.zeros(image.shape, bool)
        sub, (lo, hi) = _input_subgrid(image, grid)
        if sub is not None:
            ones = grid.volume(np.ones(grid.shape, np.uint8))
            r = resample_to_grid(ones, sub.spacing_mm, sub.size_ijk, sub.origin_mm, sub.direction, "nearest").array
            inside[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = r.astype(bool)
        truth = fd.definite_labels(lab.bits)
        known = (truth != 255) & inside
        row = {"case": p, "source": "slab-heldout", "identity": lab.identity, "total_s": res.timings_s["total"]}
        for c, name in FINE_CLASS_NAMES.items():
            row[name] = _dice((truth == c) & known, (pred == c) & known)
        # merged classes as in the slab mask (every vertebra / disc), inside the fine crop
        m = np.asarray(mask.array)
        row["vertebra (merged, L4+L5 rows)"] = _dice((m == spider.SLAB_VERTEBRA) & known & (truth > 0) & (truth < 4),
                                                     ((pred == 1) | (pred == 3)) & known & (truth > 0) & (truth < 4))
        rows.append(row)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    return rows


def summarize(rows: list[dict]) -> dict:
    out: dict = {}
    for src in sorted({r["source"] for r in rows}):
        sel = [r for r in rows if r["source"] == src]
        keys = [k for k in sel[0] if isinstance(sel[0][k], float) and not k.endswith("_s")]
        out[src] = {k: float(np.nanmean([r[k] for r in sel])) for k in keys}
        bones = [out[src][n] for n in ("L4", "L4-5 disc", "L5") if n in out[src]]
        out[src]["mean L4/disc/L5"] = float(np.mean(bones)) if bones else math.nan
        out[src]["n"] = len(sel)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m FORAMEN3DLib.evaluate_fine", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--slabs", action="store_true")
    ap.add_argument("--synth", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    import torch

    from . import models3d

    torch.set_num_threads(a.threads)
    try:
        loaded = models3d.load_model(a.model, "cpu")
        rows = []
        if a.synth:
            rows += evaluate_synth(loaded, a.synth)
        if a.slabs:
            rows += evaluate_slabs(loaded)
    except SpineMorphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows) if rows else {}
    atomic_write_text(out / "metrics.json", json.dumps({"model": str(a.model), "meta": loaded.meta, "summary": summary,
                                                        "rows": rows}, indent=2, default=str))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
