"""Measurement helpers for the ``bench`` command: matmul peak, FLOP counts, latency medians, peak memory, child
processes, machine description (the CPU inference preparation the benchmark found to help is in
:mod:`spinemorph.cpu_inference`).

Timing on a shared machine: :func:`time_interleaved` runs the variants it compares round-robin (A, B, C, A, B, C,
...), so a burst of load from other processes hits every variant alike; report medians.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from spinemorph.cpu_inference import cpu_bf16_supported


def _maxrss_to_mb(ru_maxrss: float) -> float:
    """``ru_maxrss`` → MiB (KiB on Linux, bytes on macOS)."""
    return ru_maxrss / (1024 * 1024) if sys.platform == "darwin" else ru_maxrss / 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS; on
    Windows, which has no ``resource`` module, the peak working set from psutil)."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20
    return _maxrss_to_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_rss_children_mb() -> float:
    """Peak RSS of the largest finished child process (subprocess runs), in MiB (Unix only)."""
    import resource

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


def matmul_fn(n: int = 2048, backend: str = "torch", device=None, dtype=None) -> Callable[[], object]:
    """A function computing one ``n × n`` matrix product (2·n³ operations) with ``backend``.

    ``backend``: ``"torch"`` (MKL / oneDNN / cuBLAS, any ``dtype``), ``"numpy"`` (its BLAS, fp32) or
    ``"onnxruntime"`` (MLAS, fp32).
    """
    import torch

    if backend == "numpy":
        import numpy as np

        rng = np.random.default_rng(0)
        a = rng.random((n, n), dtype=np.float32)
        b = rng.random((n, n), dtype=np.float32)
        return lambda: a @ b
    if backend == "onnxruntime":
        import numpy as np

        from spinemorph.onnx_export import matmul_session

        sess = matmul_session(n, threads=torch.get_num_threads())
        a = np.random.default_rng(0).random((n, n), dtype=np.float32)
        return lambda: sess(a)
    device = torch.device(device or "cpu")
    dtype = dtype or torch.float32
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)

    def run():
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def matmul_peak_gflops(n: int = 2048, repeats: int = 5, device=None, dtype=None, backend: str = "torch") -> float:
    """Measured matrix-multiply rate in GFLOP/s (fp32 by default): the machine's practical peak for dense math.

    The fastest of ``repeats`` ``n × n`` products (2·n³ operations each) after two warm-up products.
    """
    t = time_median_s(matmul_fn(n, backend, device, dtype), repeats=repeats, warmup=2)
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
#: Tiny launcher run by :func:`run_child`: forks the command from its own small process image and reports the
#: command's ``os.wait4`` resource usage as JSON into the file named by argv[1].
_LAUNCHER = r"""
import json, os, sys, time
out = sys.argv[1]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(out, "w") as fh:
    json.dump({"status": status, "maxrss": ru.ru_maxrss, "wall_s": wall}, fh)
"""


def run_child(argv: Sequence[str], env: Mapping[str, str] | None = None, timeout_s: float | None = None,
              cwd: str | os.PathLike | None = None) -> dict:
    """Run ``argv`` as a child process and measure its wall time and its own peak resident memory.

    Linux keeps a process's high-water RSS across ``execve``, and a child created by ``fork``/``vfork`` starts
    with its parent's memory: measured directly, any child of a large process (this one, with the networks loaded)
    would report at least the parent's size. The command is therefore forked from a tiny launcher interpreter
    (``python -I -S``), whose ``os.wait4`` gives the command's own ``ru_maxrss``.

    Returns
    -------
    dict
        ``wall_s``, ``peak_rss_mb``, ``returncode``, ``stderr_tail`` (last 400 characters), ``stdout_tail`` (last
        4000 characters), ``timed_out``.
    """
    import json
    import signal
    import tempfile

    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with tempfile.TemporaryDirectory(prefix="spinemorph_child_") as tmp:
        report = os.path.join(tmp, "rusage.json")
        err_path = os.path.join(tmp, "stderr.txt")
        out_path = os.path.join(tmp, "stdout.txt")
        with open(err_path, "wb") as err, open(out_path, "wb") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _LAUNCHER, report, *argv],
                                    stdout=out, stderr=err, env=full_env, cwd=cwd, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            wall = time.perf_counter() - t0
        with open(err_path, "rb") as fh:
            tail = fh.read().decode("utf-8", "replace")[-400:]
        with open(out_path, "rb") as fh:
            out_tail = fh.read().decode("utf-8", "replace")[-4000:]
        try:
            with open(report, encoding="utf-8") as fh:
                rep = json.load(fh)
        except (OSError, ValueError):
            rep = None
    if rep is None:
        return {"wall_s": wall, "peak_rss_mb": float("nan"), "returncode": proc.returncode if not timed_out else -9,
                "stderr_tail": tail, "stdout_tail": out_tail, "timed_out": timed_out}
    return {
        "wall_s": float(rep["wall_s"]),
        "peak_rss_mb": _maxrss_to_mb(rep["maxrss"]),
        "returncode": int(os.waitstatus_to_exitcode(rep["status"])),
        "stderr_tail": tail,
        "stdout_tail": out_tail,
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
