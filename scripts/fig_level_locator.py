#!/usr/bin/env python
"""Figure: what the level network names on real T2 SPACE slabs, next to the slab mask's levels and the coarse
model's L4-5 (issue 15; model card ``FORAMEN3D/Resources/Models/foramen3d_levels.md``).

    scripts/fig_level_locator.py --patients 136,11,241 --out docs/figures/level_locator.png [--model FILE]

Per patient (one row): the middle plane of the level grid (2 mm, whole field of view), the reference levels derived
from the slab mask (``level_data.slab_level_labels``; grey = vertebra fragments of unknown level) and the levels the
network names (argmax of the softmax averaged over the imaged planes), with the L4-5 disc centre it chose (cross) and
the coarse model's L4-5 (circle). Held-out patients are drawn for inspection only (nothing is chosen on them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COLOURS = {0: (0, 0, 0, 0), 1: (1.0, 0.5, 0.05, 0.75), 2: (0.17, 0.63, 0.17, 0.75), 3: (0.84, 0.15, 0.16, 0.85),
           4: (0.58, 0.4, 0.74, 0.85), 5: (0.55, 0.34, 0.29, 0.55), 6: (0.89, 0.47, 0.76, 0.7), 255: (0.6, 0.6, 0.6, 0.5)}


def _rgba(lab: np.ndarray) -> np.ndarray:
    out = np.zeros((*lab.shape, 4))
    for c, col in COLOURS.items():
        out[lab == c] = col
    return out


def _row_col(grid, lps) -> tuple[float, float]:
    d = np.asarray(grid.direction, float)
    rel = d.T @ (np.asarray(lps, float) - np.asarray(grid.origin_mm, float)) / np.asarray(grid.spacing_mm)
    return float(rel[1]), float(rel[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", default="136,11,241")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default=None, help="level-locator weights (default: the embedded ones)")
    a = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from FORAMEN3DLib import level_data as ld
    from FORAMEN3DLib import level_locator as ll
    from FORAMEN3DLib.preprocess import preprocess_volume
    from FORAMEN3DLib.segment3d import DEFAULT_LOCATOR, locate_l45, segment_preprocessed
    from FORAMEN3DLib.train_levels import VAL_PATIENTS
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from spinemorph import spider

    torch.set_num_threads(2)
    model = ll.load_level_model(a.model)
    pts = [p.strip() for p in a.patients.split(",") if p.strip()]
    fig, axes = plt.subplots(len(pts), 3, figsize=(10.5, 4.4 * len(pts) + 0.8), squeeze=False)
    for row, p in zip(axes, pts):
        s = ld.slab_planes(p, allow_held_out=True)
        if s is None:
            raise SystemExit(f"patient {p}: levels cannot be derived from the slab mask")
        image, _ = spider.load_slab(p)
        prep = preprocess_volume(image.with_array(image.array.astype(np.float32)))
        padded, _, _ = segment_preprocessed(prep, DEFAULT_LOCATOR, "cpu", inverse=False)
        coarse = locate_l45(prep, padded)
        res = ll.locate_from_probabilities(ll.predict_planes(model, s["x"]), s["fov"], s["grid"])
        _, lab = ll.decide(ll.predict_planes(model, s["x"]), s["fov"])
        k = len(s["x"]) // 2
        split = ("held-out" if p in spider.HELD_OUT_SLAB_PATIENTS else
                 "validation" if p in VAL_PATIENTS else "trained on")
        for ax in row:
            ax.imshow(s["x"][k], cmap="gray", vmin=-2, vmax=3)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_title(f"patient {p} ({split})")
        row[1].imshow(_rgba(s["y"][k]))
        row[1].set_title("reference (slab mask)")
        row[2].imshow(_rgba(lab))
        off = float(np.asarray(s["grid"].direction)[:, 1] @ (np.asarray(coarse) - s["disc_lps"]))
        row[2].set_title(f"level network (coarse L4-5 {off:+.0f} mm)")
        for ax in row[1:]:
            r, c = _row_col(s["grid"], coarse)
            ax.plot(c, r, "o", mfc="none", mec="cyan", ms=12, mew=2)
            if res.centre_lps is not None:
                r, c = _row_col(s["grid"], res.centre_lps)
                ax.plot(c, r, "x", color="yellow", ms=12, mew=2.5)
    handles = [Patch(color=COLOURS[c][:3], label=n) for c, n in enumerate(ld.CLASS_NAMES) if c] + \
              [Patch(color=COLOURS[255][:3], label="level unknown (fragment)"),
               Line2D([], [], marker="x", color="yellow", mec="black", ls="", ms=9, label="L4-5 of the level network"),
               Line2D([], [], marker="o", mfc="none", mec="cyan", ls="", ms=9, label="L4-5 of the coarse model")]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.02), ncol=5, fontsize=8.5)
    fig.text(0.5, 0.004, "real T2 SPACE slabs: SPIDER, van der Graaf et al., Sci Data 2024 (CC BY 4.0)", ha="center",
             va="bottom", fontsize=7.5)
    fig.tight_layout(rect=(0, 0.085, 1, 1))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
