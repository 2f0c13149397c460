#!/usr/bin/env python
"""Figure: the fine 3D model's posterior arch on images synthesised from held-out SPIDER label maps (issue 15).

    scripts/fig_fine_arch.py --out docs/figures/fine_arch_synth.png [--model NAME|FILE] [--cases 166_t2,98_t2_SPACE]

For each case (synthesised T2 image on the fine crop around the true L4-5 disc, as ``evaluate_fine --synth``, seed
2 000 000) the fine network alone segments the crop; the figure shows, per case, the image and the truth outlines / prediction fills of L4 (red), disc (green), L5 (blue) and canal (yellow) on a parasagittal slice through the pedicles, the
mid-sagittal slice and an axial slice through the L4 pedicles, with the posterior-arch Dice in the title. Slices are
placed from the truth (pedicle column = the most populated vertebral column behind the canal's anterior wall).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COLORS = {1: "red", 2: "lime", 3: "deepskyblue", 4: "yellow"}


def _fill(ax, lab2d):
    from matplotlib.colors import to_rgba

    rgba = np.zeros((*lab2d.shape, 4))
    for c, col in COLORS.items():
        rgba[lab2d == c] = to_rgba(col, 0.35)
    ax.imshow(rgba, origin="upper")


def _outline(ax, lab2d, style):
    for c, col in COLORS.items():
        m = (lab2d == c).astype(float)
        if m.any() and not m.all():
            ax.contour(m, levels=[0.5], colors=[col], linewidths=0.9, linestyles=style)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--model", default="foramen3d-fine-cpu")
    ap.add_argument("--cases", default="166_t2,98_t2_SPACE")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from FORAMEN3DLib import fine_data as fd
    from FORAMEN3DLib.evaluate_fine import _arch_dice, posterior_arch_region
    from FORAMEN3DLib.models3d import load_model
    from FORAMEN3DLib.segment3d import postprocess_labels
    from FORAMEN3DLib.train_fine import predict_crop

    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, "cpu")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    fig, axes = plt.subplots(len(cases), 3, figsize=(13, 4.6 * len(cases)), squeeze=False)
    for r, case in enumerate(cases):
        smp = fd.synthetic_sample(case, 2_000_000, 0.0, contrast="t2", allow_held_out=True)
        probs = predict_crop(loaded.network, smp["x"], loaded.meta.get("infer_roi") or [96, 96, 96], 0.25,
                             device=loaded.device)
        pred = postprocess_labels(probs.argmax(0).astype(np.uint8), structures=(1, 2, 3, 4))
        truth = fd.definite_labels(smp["bits"])
        known = truth != 255
        truth = np.where(known, truth, 0)
        arch = posterior_arch_region(truth)
        dice = _arch_dice(truth, pred, known)
        # pedicle column: vertebral voxels just behind the canal's anterior wall (the first 12 mm of the arch region),
        # at least 8 mm lateral of the canal's centre (array (k L->R, j S->I, i A->P))
        ahead = np.cumsum(arch, axis=2) <= round(12 / fd.FINE_SPACING_MM)
        vert = ((truth == 1) | (truth == 3)) & arch & ahead
        per_k = vert.sum(axis=(1, 2))
        mid = int(np.nonzero((truth == 4).any(axis=(1, 2)))[0].mean()) if (truth == 4).any() else truth.shape[0] // 2
        lateral = mid - round(8 / fd.FINE_SPACING_MM)
        left = int(np.argmax(per_k[:lateral])) if lateral > 0 else 0
        l4_rows = np.nonzero((truth == 1).any(axis=(0, 2)))[0]
        j_ped = int(l4_rows.max() - 0.25 * (l4_rows.max() - l4_rows.min())) if len(l4_rows) else truth.shape[1] // 2
        views = [(f"parasagittal k={left} (pedicle column)", lambda a, k=left: a[k]),
                 (f"mid-sagittal k={mid}", lambda a, k=mid: a[k]),
                 (f"axial j={j_ped} (lower L4)", lambda a, j=j_ped: a[:, j, :])]
        for c, (title, cut) in enumerate(views):
            ax = axes[r, c]
            ax.imshow(cut(smp["x"]), cmap="gray", origin="upper")
            _outline(ax, cut(truth), "solid")
            _fill(ax, cut(pred))
            ax.set_title(f"{case}: {title}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(f"posterior arch Dice {dice:.2f}")
        print(f"{case}: posterior arch Dice {dice:.3f}", flush=True)
    fig.suptitle(f"{loaded.name}: truth outlined, prediction filled (L4 red, disc green, L5 blue, canal yellow); "
                 "synthesised T2 images of held-out SPIDER masks (CC BY 4.0)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
