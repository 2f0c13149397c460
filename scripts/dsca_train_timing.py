#!/usr/bin/env python
"""Time DSCA training iterations (forward + weighted BCE + backward + Adam step) per network, precision and batch/crop.

    scripts/dsca_train_timing.py --archs multiresunet --threads 1 --iters 3 --out runs/dsca_timing_multiresunet.json

Each setting: 1 warm-up iteration, then ``--iters`` timed ones on random data (the cost does not depend on the
values); reported: median seconds per iteration and per 1000 training crops, and whether bf16 autocast changes the
loss (relative difference of the first loss on the same data). CPU seconds (``time.process_time``, all threads of
the process) are reported next to wall seconds: on a machine shared with other jobs they are the comparable figure.
Settings (``--settings``): ``precision:batch:crop``,
default fp32/bf16 × (8:128, 8:192, 4:256). Numbers on a shared machine are contended: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

DEFAULT_SETTINGS = ("fp32:8:128", "bf16:8:128", "fp32:8:192", "bf16:8:192", "fp32:4:256")


def time_setting(arch: str, precision: str, batch: int, crop: int, iters: int, seed: int = 0) -> dict:
    import contextlib

    import torch
    from DuralSacSegLib.networks import build_network
    from DuralSacSegLib.train import weighted_bce_loss

    torch.manual_seed(seed)
    net = build_network(arch)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 1, crop, crop, generator=g)
    y = (torch.rand(batch, 1, crop, crop, generator=g) > 0.95).float()
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    times, cpu_times, first_loss = [], [], None
    for i in range(iters + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        with ctx():
            logits = net(x)
        loss = weighted_bce_loss(logits, y, 20.0)
        loss.backward()
        opt.step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if first_loss is None:
            first_loss = float(loss.detach())
        if i:
            times.append(dt)
            cpu_times.append(dc)
    med = statistics.median(times)
    cpu = statistics.median(cpu_times)
    return {"arch": arch, "precision": precision, "batch": batch, "crop": crop, "iters": iters,
            "s_per_iter": med, "cpu_s_per_iter": cpu, "s_per_1000_crops": 1000 * med / batch,
            "cpu_s_per_1000_crops": 1000 * cpu / batch, "cpu_s_per_megapixel": cpu / (batch * crop * crop / 1e6),
            "first_loss": first_loss, "times_s": times, "cpu_times_s": cpu_times}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", default="multiresunet,unet,attention_unet")
    ap.add_argument("--settings", default=",".join(DEFAULT_SETTINGS))
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON file (appended results kept per arch)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for arch in args.archs.split(","):
        for st in args.settings.split(","):
            prec, batch, crop = st.split(":")
            r = time_setting(arch, prec, int(batch), int(crop), args.iters)
            r["threads"] = args.threads
            rows.append(r)
            print(f"{arch:15s} {prec} batch {batch:>2} crop {crop}: {r['s_per_iter']:.2f} s/iter wall, "
                  f"{r['cpu_s_per_iter']:.2f} CPU-s/iter, {r['cpu_s_per_1000_crops']:.0f} CPU-s per 1000 crops, "
                  f"{r['cpu_s_per_megapixel']:.2f} CPU-s/Mpx (first loss {r['first_loss']:.4f})", flush=True)
    by = {(r["arch"], r["batch"], r["crop"]): r for r in rows if r["precision"] == "fp32"}
    for r in rows:
        ref = by.get((r["arch"], r["batch"], r["crop"]))
        if r["precision"] == "bf16" and ref:
            r["speedup_vs_fp32"] = ref["cpu_s_per_iter"] / r["cpu_s_per_iter"]
            r["loss_rel_diff_vs_fp32"] = abs(r["first_loss"] - ref["first_loss"]) / abs(ref["first_loss"])
            print(f"{r['arch']:15s} bf16 vs fp32 batch {r['batch']} crop {r['crop']}: speed-up {r['speedup_vs_fp32']:.2f}x, "
                  f"first-loss relative difference {r['loss_rel_diff_vs_fp32']:.2e}")
    if args.out:
        from spinemorph.atomic import atomic_write_text

        doc = {"utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "torch": torch.__version__,
               "threads": args.threads, "rows": rows}
        atomic_write_text(Path(args.out), json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
