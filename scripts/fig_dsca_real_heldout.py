#!/usr/bin/env python
"""Figure: held-out real slab planes, reference (green) vs the embedded default DSCA model (red), strip edges (yellow).

    scripts/fig_dsca_real_heldout.py [--model dsca-unet] [--out docs/figures/dsca_unet_real_heldout.png]

Worst / median / best plane (Dice inside the imaged strip) of each held-out patient, every 16th PNG row, with the
model's catalogue decision (threshold + post-processing per patient stack), as ``scripts/dsca_evaluate.py`` scores it.
"""

from __future__ import annotations

import argparse

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from DuralSacSegLib import calibration as cal  # noqa: E402
from DuralSacSegLib import models  # noqa: E402
from DuralSacSegLib.postprocess import postprocess_masks  # noqa: E402

from spinemorph import spider  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dsca-unet")
    ap.add_argument("--out", default="docs/figures/dsca_unet_real_heldout.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    net, info = models.load_model(args.model, torch.device("cpu"))
    planes = cal.real_slab_planes(spider.held_out_slab_patients(), row_step=16)
    probs = cal.predict_planes(net, planes.images)
    stacks = planes.stacks()
    fig, axs = plt.subplots(3, len(stacks), figsize=(3 * len(stacks), 9), squeeze=False)
    for j, p in enumerate(sorted(stacks, key=int)):
        ix = stacks[p]
        pred = postprocess_masks(probs[ix] >= info.threshold, info.postprocess, prob=probs[ix])
        dice = []
        for a, k in enumerate(ix):
            t, q = planes.truth[k] > 0, pred[a] & planes.valid[k]
            dice.append(2 * (t & q).sum() / max(t.sum() + q.sum(), 1))
        order = np.argsort(dice)
        for r, a in enumerate((order[0], order[len(order) // 2], order[-1])):
            k = ix[a]
            t, v = planes.truth[k] > 0, planes.valid[k]
            rows, cols = np.flatnonzero(t.any(1) | pred[a].any(1)), np.flatnonzero(t.any(0) | pred[a].any(0))
            r0, r1, c0, c1 = ((max(rows[0] - 30, 0), rows[-1] + 30, max(cols[0] - 30, 0), cols[-1] + 30)
                              if len(rows) else (100, 220, 100, 220))
            ax = axs[r, j]
            ax.imshow(planes.images[k][r0:r1, c0:c1], cmap="gray")
            for m, colour in ((v, "y"), (t, "g"), (pred[a], "r")):
                ax.contour(m[r0:r1, c0:c1], colors=colour, levels=[0.5], linewidths=0.5 if colour == "y" else 1.0)
            ax.set_title(f"{p} plane {a}: Dice {dice[a]:.2f}", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"held-out real slabs, {info.name} (red) vs reference (green), strip edges yellow: "
                 "worst / median / best plane per patient")
    fig.tight_layout()
    fig.savefig(args.out, dpi=60)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
