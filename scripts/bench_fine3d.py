#!/usr/bin/env python
"""Where the time of the fine (coarse-to-fine) FORAMEN3D segmentation goes, and what cheap changes buy (issue 15).

    scripts/bench_fine3d.py --out runs/bench_fine3d.json                 # held-out slab 166, 2 threads, 3 repeats
    scripts/bench_fine3d.py --patient 98 --threads 1 --repeats 1 --variants default,onnx

One image (a held-out real T2 SPACE slab, or ``--phantom``: the phantom imaged by the T2 SPACE simulation) goes through
:func:`FORAMEN3DLib.segment3d.segment_volume` with the fine model (``--model``, default ``foramen3d-fine-cpu``) and,
for comparison, the coarse model (``foramen3d-budget-cpu``). Stages (seconds, median over ``--repeats``, which run
round-robin over the variants so that a burst of load hits all alike; the first, warm-up call of each is not counted
but reported as ``first_call_s``): ``preprocess`` (re-orientation, the coarse window), ``locate`` (the coarse locator:
network + argmax + post-processing), ``fine_preprocess`` (resampling the fine crop), ``inference`` (sliding-window
network on the 144×144×160 crop), ``postprocess`` (largest component / hole filling per class), ``inverse`` (pasting
back), ``total``. Each variant's labels are compared with the default's (Dice per class, voxels that differ).

Variants (``--variants``, comma list):

* ``default``: the shipped settings (ROI 96³, overlap 0.25, Gaussian blending; OpenVINO fp32 when installed, else
  ONNX Runtime, else torch);
* ``torch``: the same with torch for the windows;
* ``overlap0``: overlap 0 (still 8 windows on a 144×144×160 crop: the number of windows does not change);
* ``whole``: one window over the whole crop (padded to 160³; instance-norm statistics of the whole crop);
* ``onnx``: ONNX Runtime for the windows (one export per process, its time is reported separately);
* ``openvino``: OpenVINO fp32 for the windows (the IR conversion, once per machine, is in ``first_call_s``);
* ``ovbf16``: OpenVINO bfloat16 (native on CPUs with AVX512-BF16 / AMX, else it computes in fp32);
* ``bf16``: torch bfloat16 autocast for the windows;
* ``nolevelcheck``: without the level check (what the check costs when it does not trigger);
* ``coarselocator``: the crop on the coarse model's answer alone (``locator_mode="coarse"``; the default adds the
  level network, :mod:`FORAMEN3DLib.level_locator`, whose time is part of ``locate``).

Writes a JSON (``--out``) and prints a table. The numbers depend on the machine's load: run variants in one call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "default": {},
    "torch": {"backend": "torch"},
    "overlap0": {"overlap": 0.0},
    "whole": {"roi": (160, 160, 160)},  # the crop padded to the next multiple of 32 (the network's size divisor)
    "onnx": {"backend": "onnx"},
    "openvino": {"backend": "openvino"},
    "ovbf16": {"backend": "openvino", "precision": "bf16"},
    "bf16": {"backend": "torch", "precision": "bf16"},
    "nolevelcheck": {"level_check": False},
    "coarselocator": {"locator_mode": "coarse"},
}
STAGES = ("preprocess", "locate", "fine_preprocess", "inference", "postprocess", "inverse", "total")


def _image(patient: str | None):
    if patient is None:
        from spinemorph import acquisition, phantom

        ph = phantom.make_phantom(seed=0, vary=False)
        img = acquisition.acquire_space_t2(ph, seed=0).image
        return "phantom (T2 SPACE simulation, seed 0)", img.with_array(np.asarray(img.array, np.float32))
    from spinemorph import spider

    image, _ = spider.load_slab(patient)
    return f"held-out real T2 SPACE slab {patient}", image.with_array(image.array.astype(np.float32))


def _dice(a, b) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / s if s else float("nan")


def run(args) -> dict:
    import torch
    from FORAMEN3DLib import segment3d

    from spinemorph.benchutil import machine_info

    torch.set_num_threads(args.threads)
    what, image = _image(None if args.phantom else args.patient)
    fine = segment3d.get_model(args.model, "cpu")
    coarse = segment3d.get_model("foramen3d-budget-cpu", "cpu")
    out = {"image": what, "shape": list(image.shape), "spacing_mm": list(image.spacing_mm), "model": args.model,
           "threads": args.threads, "repeats": args.repeats, "machine": machine_info()["cpu_model"],
           "load_start": list(_load()), "variants": {}}
    from spinemorph.openvino_runtime import cpu_has_bf16, openvino_available

    if openvino_available():
        import openvino

        out.update({"openvino": openvino.__version__, "cpu_native_bf16": cpu_has_bf16()})
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for name in names:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    order = ["coarse", *names]

    def call(name):
        model = coarse if name == "coarse" else fine
        return segment3d.segment_volume(image, model, "cpu", fine_options=dict(VARIANTS.get(name, {})) or None)

    first, runs = {}, {n: [] for n in order}
    for name in order:  # warm-up (model loading, ONNX export or cache load), not counted
        t0 = time.perf_counter()
        res = call(name)
        first[name] = time.perf_counter() - t0
        if args.repeats == 0:
            runs[name].append(res)
    for _ in range(args.repeats):  # round-robin: a burst of load hits every variant alike
        for name in order:
            runs[name].append(call(name))
    ref_labels = np.asarray(runs["default"][-1].labels.array) if "default" in runs else None
    for name in order:
        med = {s: statistics.median(r.timings_s.get(s, 0.0) for r in runs[name]) for s in STAGES}
        lab = np.asarray(runs[name][-1].labels.array)
        opts = VARIANTS.get(name, {})
        rec = {"timings_s": med, "first_call_s": first[name], "qc": list(runs[name][-1].qc),
               "options": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}}
        if ref_labels is not None and name != "coarse":
            rec["vs_default"] = {"differing_voxels": int((lab != ref_labels).sum()),
                                 **{c: _dice(lab == k, ref_labels == k) for k, c in
                                    ((1, "L4"), (2, "L4-5 disc"), (3, "L5"), (4, "canal"))}}
        out["variants"][name] = rec
        line = " ".join(f"{s} {med[s]:.2f}" for s in STAGES)
        print(f"{name:>13}: {line} | first call {first[name]:.1f}"
              + (f" | vs default: {rec['vs_default']}" if "vs_default" in rec else ""), flush=True)
    out["load_end"] = list(_load())
    return out


def _load():
    try:
        import os

        return os.getloadavg()
    except OSError:
        return (float("nan"),) * 3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="foramen3d-fine-cpu")
    ap.add_argument("--patient", default="166", help="held-out slab patient (default 166)")
    ap.add_argument("--phantom", action="store_true", help="use the T2 SPACE phantom instead of a real slab")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="default,overlap0,whole,onnx,nolevelcheck")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    from spinemorph.errors import SpineMorphError

    try:
        res = run(args)
    except SpineMorphError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    res["command"] = " ".join(["scripts/bench_fine3d.py", *(argv if argv is not None else sys.argv[1:])])
    if args.out:
        from spinemorph.atomic import atomic_write_text

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
