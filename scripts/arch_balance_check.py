"""Why a lopsided posterior arch puts the foramen values under review (``morphometry.MIN_ARCH_BALANCE``).

1. The arch balance (``Landmarks.arch_balance``: per vertebra, its bone behind the body on the smaller side / the
   larger side) of every real SPIDER label map (39 series, thin and thick slices).
2. The SPACE masks ``--cases`` (default 18 and 98) measured twice: as they are, and with the left L5 bone behind the
   body deleted (what a segmentation that missed one side's arch looks like): the left side, the right side's values
   and QC, and the balance. The right side's shift is the effect of the rotated canal frame.

Data: SPIDER (van der Graaf JW et al., Sci Data 11, 264 (2024), CC BY 4.0), ``spinemorph.spider.spider_root()``.

    .venv/bin/python scripts/arch_balance_check.py [--cases 18 98] [--png-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from FORAMEN3DLib.landmarks import find_landmarks
from FORAMEN3DLib.morphometry import MIN_ARCH_BALANCE, measure_foramen

from spinemorph import spider
from spinemorph.labels import L5


def without_left_arch(labels, lm):
    """``labels`` with the L5 voxels more than 3 mm left of the midline and behind the posterior body wall deleted."""
    k, j, i = np.indices(labels.array.shape)
    q = lm.frame.to_frame(labels.index_to_lps(np.stack([i, j, k], -1).reshape(-1, 3))).reshape(labels.array.shape + (3,))
    cut = (q[..., 0] > lm.midline_x_mm + 3.0) & (q[..., 1] > lm.posterior_wall_y_mm + 1.0) & (labels.array == L5)
    return labels.with_array(np.where(cut, 0, labels.array).astype(labels.array.dtype))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["18", "98"], help="SPIDER T2 SPACE cases for the deletion test")
    ap.add_argument("--png-dir", default=None, help="also write the report PNG of each case with the arch deleted")
    args = ap.parse_args(argv)
    if spider.spider_root() is None:
        print("SPIDER data not found (set SPINEMORPH_SPIDER)", file=sys.stderr)
        return 1
    lows = []
    print("| series | L4 balance | L5 balance |")
    print("| --- | --- | --- |")
    for s in spider.read_manifest():
        lm = find_landmarks(spider.remap_labels(spider.load_mask(s), s, target="foramen"))
        b = lm.arch_balance
        lows.append(min(b.values()))
        print(f"| {s.case} | {b['L4']:.2f} | {b['L5']:.2f} |")
    print(f"\n{len(lows)} real label maps: smallest balance {min(lows):.2f} (limit {MIN_ARCH_BALANCE:g})\n")
    print("| case | labels | left | right height / width / area | right QC | L5 balance |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        name = f"{case}_t2_SPACE"
        labels = spider.remap_labels(spider.load_mask(name), name, target="foramen")
        full = measure_foramen(labels)
        cut = measure_foramen(without_left_arch(labels, full.landmarks))
        for tag, res in (("as labelled", full), ("left L5 arch deleted", cut)):
            left, right = res.sides["left"], res.sides["right"]
            lt = "not measured" if not left.measured else f"{left.height.value:.1f} / {left.width.value:.1f} / {left.area.value:.0f} ({left.qc_status})"
            why = "; ".join(right.qc_reasons)[:90]
            print(f"| {case} | {tag} | {lt} | {right.height.value:.1f} / {right.width.value:.1f} / {right.area.value:.0f} | "
                  f"{right.qc_status}{': ' + why if why else ''} | {res.landmarks.arch_balance['L5']:.2f} |")
        if args.png_dir:
            from FORAMEN3DLib.report3d import render_report

            render_report(cut, Path(args.png_dir) / f"spider_{case}_left_L5_arch_deleted.png",
                          title=f"SPIDER {case} T2 SPACE (CC BY 4.0), left L5 arch deleted")
    print(f"\ndata: {spider.SPIDER_ATTRIBUTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
