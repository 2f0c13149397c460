#!/usr/bin/env python
"""Side-by-side PNG: real T2 SPACE slab planes (training patients only) next to synthetic T2 planes (style v1 / v2).

    scripts/dsca_synth_vs_real.py --out runs/dsca_synth_vs_real.png [--patients 7,45] [--style v2]

Top row: axial planes of real slabs (0.6 mm pixels; the slab is a 12-23 mm wide strip); bottom row: synthetic T2
planes from SPIDER training label maps resampled to 0.6 mm and cut to a strip of the same width around the sac, with
the dural sac outline in yellow. Used to see what the synthesis gets wrong (the reason for ``samples.DSCA_V2_OPTIONS``).
The PNG holds real patient images (SPIDER, CC BY 4.0): keep it under runs/, do not commit it.
"""

from __future__ import annotations

import argparse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--patients", default="7,45", help="training slab patients (held-out ones are refused)")
    ap.add_argument("--style", default="v2", choices=("v1", "v2"))
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from scipy import ndimage

    from spinemorph import samples as sm
    from spinemorph.intensity import normalize_percentile

    torch.set_num_threads(1)
    real = sm.dsca_real_slab_training_samples(args.patients.split(","), row_step=20)
    real = real[:: max(1, len(real) // 6)][:6]
    syn = list(sm.dsca_samples(6, args.seed, contrast="t2", sources=("spider_masks",), style=args.style))
    fig, axes = plt.subplots(2, 6, figsize=(18, 9))
    for ax, r in zip(axes[0], real):
        cy = np.argwhere(r.mask)[:, 0].mean()
        y0 = int(max(cy - 60, 0))
        ax.imshow(normalize_percentile(r.image)[y0 : y0 + 120], cmap="gray", vmin=0, vmax=1)
        ax.contour(r.mask[y0 : y0 + 120], [0.5], colors="y", linewidths=0.6)
        ax.set_title(f"real {r.patient} row {r.row} {r.area_mm2:.0f} mm²", fontsize=8)
    for ax, s in zip(axes[1], syn):
        z = s.pixel_mm[0] / 0.6
        img, m = ndimage.zoom(s.image, z, order=1), ndimage.zoom(s.mask.astype(float), z, order=1) > 0.5
        cy, cx = np.argwhere(m).mean(0)
        y0, x0 = int(max(cy - 60, 0)), int(max(cx - 20, 0))
        ax.imshow(img[y0 : y0 + 120, x0 : x0 + 40], cmap="gray", vmin=0, vmax=1)
        ax.contour(m[y0 : y0 + 120, x0 : x0 + 40], [0.5], colors="y", linewidths=0.6)
        ax.set_title(f"synthetic {args.style} {s.case} {s.area_mm2:.0f} mm²", fontsize=8)
    fig.savefig(args.out, dpi=80, bbox_inches="tight")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
