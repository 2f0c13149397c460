"""Measurement helpers for the ``bench`` command: matmul peak, FLOP counts, latency medians, peak memory."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Callable


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def peak_rss_children_mb() -> float:
    """Peak RSS of the largest finished child process (subprocess runs), in MiB."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def time_median_s(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times unmeasured, then ``repeats`` times; return median/min/max seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, device=None, dtype=None) -> float:
    """Measured fp32 (default) matrix-multiply rate in GFLOP/s: the machine's practical peak for dense math."""
    import torch

    device = device or torch.device("cpu")
    dtype = dtype or torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def run():
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()

    t = time_median_s(run, repeats=repeats, warmup=2)
    return 2.0 * n**3 / t["min_s"] / 1e9


def count_flops(model, example) -> int:
    """Floating-point operations of one forward pass (``torch.utils.flop_counter``; a multiply-add counts 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(example)
    return int(fc.get_total_flops())
