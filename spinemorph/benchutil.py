"""Measurement helpers for the ``bench`` command: matmul peak, FLOP counts, latency medians, peak memory, child
processes, machine description, and the CPU inference preparation that the benchmark found to help.

Timing on a shared machine: :func:`time_interleaved` runs the variants it compares round-robin (A, B, C, A, B, C,
...), so a burst of load from other processes hits every variant alike; report medians.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence


def _maxrss_to_mb(ru_maxrss: float) -> float:
    """``ru_maxrss`` → MiB (KiB on Linux, bytes on macOS)."""
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    return _maxrss_to_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_rss_children_mb() -> float:
    """Peak RSS of the largest finished child process (subprocess runs), in MiB."""
    return _maxrss_to_mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


def _summary(times: Sequence[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": len(times),
    }


def time_median_s(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict:
    """Run ``fn`` ``warmup`` times unmeasured, then ``repeats`` times; return median/min/max seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _summary(times)


def time_interleaved(fns: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1) -> dict[str, dict]:
    """Time several variants round-robin (each ``warmup`` times first, then ``repeats`` rounds of one call each).

    Returns
    -------
    dict
        Variant name → ``{"median_s", "min_s", "max_s", "repeats"}``.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(max(1, int(repeats))):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: _summary(v) for k, v in times.items()}


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, device=None, dtype=None) -> float:
    """Measured matrix-multiply rate in GFLOP/s (fp32 by default): the machine's practical peak for dense math.

    The fastest of ``repeats`` ``n × n`` products (2·n³ operations each) after two warm-up products.
    """
    import torch

    device = torch.device(device or "cpu")
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
    """Floating-point operations of one forward pass (``torch.utils.flop_counter``; a multiply-add counts 2).

    Convolutions, transposed convolutions and matrix products are counted; element-wise operations
    (normalisation, activations, pooling, interpolation) are not.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model(example)
    return int(fc.get_total_flops())


# ----------------------------------------------------------------------------- child processes
def run_child(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout_s: float | None = None,
              cwd: str | os.PathLike | None = None) -> dict:
    """Run ``argv`` as a child process and measure it.

    The child's peak resident memory is its own ``ru_maxrss`` (from ``os.wait4``), not that of earlier children.

    Returns
    -------
    dict
        ``wall_s``, ``peak_rss_mb``, ``returncode``, ``stderr_tail`` (last 400 characters), ``timed_out``.
    """
    import tempfile

    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=err, env=full_env, cwd=cwd)
        timed_out = False
        deadline = None if timeout_s is None else t0 + float(timeout_s)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                proc.kill()
                timed_out = True
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode("utf-8", "replace")[-400:]
    return {
        "wall_s": wall,
        "peak_rss_mb": _maxrss_to_mb(usage.ru_maxrss),
        "returncode": int(proc.returncode),
        "stderr_tail": tail,
        "timed_out": timed_out,
    }


# ----------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Describe this machine and the software that the figures depend on (JSON-ready)."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        usable = os.cpu_count() or 1
    info = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")(),
        "cpu_bf16_supported": cpu_bf16_supported(),
        "cuda_available": bool(torch.cuda.is_available()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory_total_mb": _mem_total_mb(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    return info


def _mem_total_mb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def cpu_bf16_supported() -> bool:
    """True when oneDNN has native bfloat16 kernels on this CPU (AVX512-BF16 / AMX); otherwise bf16 is emulated."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# ----------------------------------------------------------------------------- CPU inference preparation
def optimize_for_inference(net, channels_last: bool = True, fuse_bn: bool = True):
    """Prepare an eval-mode 2D network for CPU inference; returns ``(network, applied)``.

    ``fuse_bn`` folds every BatchNorm that follows a convolution into the convolution's weights and bias
    (``torch.fx.experimental.optimization.fuse``; exact up to fp32 rounding); networks that cannot be traced are
    kept unfused. ``channels_last`` stores the weights NHWC, which lets oneDNN pick its blocked direct
    convolutions; feed ``x.contiguous(memory_format=torch.channels_last)``. The input network is not modified.
    ``applied`` lists what was done (``"fuse_bn"``, ``"channels_last"``).
    """
    import copy

    import torch

    applied: list[str] = []
    out = copy.deepcopy(net).eval()
    if fuse_bn:
        from torch.fx.experimental.optimization import fuse

        try:
            out = fuse(out)
            applied.append("fuse_bn")
        except Exception:  # noqa: BLE001 - an untraceable network simply stays unfused
            out = copy.deepcopy(net).eval()
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
        applied.append("channels_last")
    return out, applied
