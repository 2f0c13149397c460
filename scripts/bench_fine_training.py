"""Time one training iteration (forward + backward + Adam step) of fine-model layouts on this CPU.

Usage: ``nice -n 10 python scripts/bench_fine_training.py [--iters 3] [--threads 1 2] [--only NAME ...]``.
Variants are timed round-robin (A, B, C, A, B, C, ...) so that load bursts on the shared machine hit all alike;
median seconds per iteration are printed as a Markdown table (copied into docs/performance.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from FORAMEN3DLib.network3d import NetworkConfig, UNet3D, count_parameters

LAYOUTS = {
    # name: (network settings, patch (k, j, i))
    "b16-s1-p96": (dict(base_channels=16, stem_stride=1), (96, 96, 96)),
    "b8-s1-p96": (dict(base_channels=8, stem_stride=1), (96, 96, 96)),
    "b16-s2-p96": (dict(base_channels=16, stem_stride=2), (96, 96, 96)),
    "b16-s2r8-p96": (dict(base_channels=16, stem_stride=2, refine_channels=8), (96, 96, 96)),
    "b24-s2r8-p96": (dict(base_channels=24, stem_stride=2, refine_channels=8), (96, 96, 96)),
    "b16-s2r8-p128": (dict(base_channels=16, stem_stride=2, refine_channels=8), (128, 128, 128)),
    "b16-s2r8-p64": (dict(base_channels=16, stem_stride=2, refine_channels=8), (64, 64, 64)),
}


def make_step(layout: str, precision: str, channels_last: bool):
    cfg, patch = LAYOUTS[layout]
    depth = 4 if cfg.get("stem_stride", 1) == 1 else 4
    net = UNet3D(NetworkConfig(out_channels=5, depth=depth, **cfg))
    opt = torch.optim.Adam(net.parameters(), 1e-4)
    x = torch.randn(1, 1, *patch)
    y = torch.randint(0, 5, (1, *patch))
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = net(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()

    return step, count_parameters(net)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--channels-last", nargs="+", type=int, default=[0])
    a = ap.parse_args()
    variants = []
    for name in a.only or LAYOUTS:
        for prec in a.precisions:
            for cl in a.channels_last:
                step, n_par = make_step(name, prec, bool(cl))
                variants.append(((name, prec, bool(cl)), step, n_par))
    for th in a.threads:
        torch.set_num_threads(th)
        times = {v[0]: [] for v in variants}
        for _, step, _ in variants:  # warm-up
            step()
        for _ in range(a.iters):
            for key, step, _ in variants:
                t0 = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - t0)
        print(f"\nthreads {th}\n| layout | precision | channels-last | parameters | s / iteration (median of {a.iters}) |")
        print("| --- | --- | --- | --- | --- |")
        for key, _, n_par in variants:
            print(f"| {key[0]} | {key[1]} | {key[2]} | {n_par:,} | {statistics.median(times[key]):.2f} |", flush=True)


if __name__ == "__main__":
    main()
