"""Measure the L4-5 foramina of the real SPIDER 3D T2 SPACE masks (cases 18, 50, 98, 65).

Prints a Markdown table (height / width / area per side, posterior disc height, flags, times) and writes one PNG
report per case to ``Resources/Screenshots/foramen_spider_<case>.png``.

Data: SPIDER (van der Graaf JW et al., "Lumbar spine segmentation in MR images: a dataset and a public benchmark",
Sci Data 11, 264 (2024), CC BY 4.0), found with ``spinemorph.spider.spider_root()`` (env ``SPINEMORPH_SPIDER``).

    .venv/bin/python scripts/measure_spider.py [--out Resources/Screenshots] [--cases 18 50 98 65]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from FORAMEN3DLib.meshes import structure_meshes
from FORAMEN3DLib.morphometry import measure_foramen
from FORAMEN3DLib.report3d import render_report

from spinemorph import labelmaps, spider

REPO = Path(__file__).resolve().parents[1]
SPACE_CASES = ("18", "50", "98", "65")


def load_space_labels(case: str):
    """The foramen label map (1 L4, 2 L4-5 disc, 3 L5) of SPIDER case ``<case>_t2_SPACE``, mapped exactly as
    ``spinemorph foramen measure`` maps it (numbering recognised from the values, :mod:`spinemorph.labelmaps`)."""
    vol = spider.load_mask(f"{case}_t2_SPACE")
    return labelmaps.to_foramen_labels(vol, labelmaps.detect_scheme(labelmaps.distinct_values(vol)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(REPO / "Resources" / "Screenshots"), help="folder of the PNG reports")
    ap.add_argument("--cases", nargs="+", default=list(SPACE_CASES), help="SPIDER case numbers (T2 SPACE)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if spider.spider_root() is None:
        print("SPIDER data not found (set SPINEMORPH_SPIDER)", file=sys.stderr)
        return 1
    out = Path(args.out)
    print("| case | side | height (mm) | width (mm) | area (mm²) | flag | QC | PDH (mm) | lateral view | measure (s) | meshes (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        labels = load_space_labels(case)
        t0, c0 = time.perf_counter(), time.process_time()
        res = measure_foramen(labels)
        t_meas, c_meas = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        structure_meshes(labels)
        t_mesh, c_mesh = time.perf_counter() - t0, time.process_time() - c0
        for side in ("right", "left"):
            r = res.sides[side]
            if not r.measured:
                print(f"| {case} | {side} | not measured: {r.qc_reasons[0]} | | | | {r.qc_status} | "
                      f"{res.posterior_disc_height.value:.1f} | | | |")
                continue
            print(
                f"| {case} | {side} | {r.height.value:.1f} | {r.width.value:.1f} | {r.area.value:.0f} | "
                f"{'yes' if r.flagged else 'no'} | {r.qc_status} | {res.posterior_disc_height.value:.1f} | "
                f"{r.view_kind} at {r.offset_mm:.1f} mm |"
                f"{t_meas:.2f} (CPU {c_meas:.2f}) | {t_mesh:.2f} (CPU {c_mesh:.2f}) |"
            )
        render_report(res, out / f"foramen_spider_{case}.png", title=f"SPIDER {case} T2 SPACE (CC BY 4.0): L4-5 foramina")
    print(f"\nreports: {out}/foramen_spider_<case>.png; data: {spider.SPIDER_ATTRIBUTION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
