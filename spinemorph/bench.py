"""Performance benchmark of SpineMorph (``spinemorph bench``): figures, not pass/fail tests.

One run of :func:`run_bench` measures, on this machine:

1. **matmul peak** — fp32 (and bf16 where the CPU has native bf16) ``n × n`` matrix products, GFLOP/s;
2. **2D networks** at 320×320 (MultiResUNet, U-Net, Attention U-Net): FLOPs per slice (counted with
   ``torch.utils.flop_counter``), latency per slice of the torch reference (fp32, NCHW, as ``dsca segment`` runs it)
   and of the optimised variants (BatchNorm folded + channels-last; + bf16 autocast; ONNX Runtime), the achieved
   GFLOP/s and its ratio to the matmul peak, and each variant's agreement with the reference (largest logit
   difference, fraction of equal mask pixels) on real-looking phantom slices; the batch-size and thread-count
   effects for the default model;
3. **3D network** (FORAMEN3D's default model, or its CPU-budget architecture with random weights when no weights
   are installed): FLOPs and latency, fp32 vs bf16, plus lighter / heavier widths and schemes (the source method's
   full-resolution U-Net, a strided stem, a coarse 1.6 mm pass);
4. **end to end in-process** (warm model): DSCA of a 20-slice axial T1 series from file to table, 3D segmentation
   of one SPACE volume (0.8 mm, 64×320×320) with the Dice of each variant against the phantom's exact labels,
   foramen measurement + meshes from a label map;
5. **commands** in child processes (cold start: interpreter, imports, model loading): ``dsca segment``,
   ``foramen measure`` (label map, and image = segmentation + measurement) and ``study`` (the whole pipeline), each
   with its wall time and its own peak resident memory (``ru_maxrss`` from ``os.wait4``).

Inputs are a phantom study made with :func:`spinemorph.acquisition.make_study` (seed 0) in a temporary folder.
The embedded weights are used when installed; otherwise random weights of the same architecture (speed does not
depend on the weights; Dice figures are then left out). The machine load (``os.getloadavg``) is recorded at the
start and end: on a shared machine, compare variants only within one run (they are timed round-robin).

Outputs: ``benchmark.json`` (everything) and ``benchmark.md`` (tables) in the output folder, written atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from spinemorph import __version__
from spinemorph.atomic import atomic_write_text, prepare_output_dir
from spinemorph.benchutil import (
    count_flops,
    cpu_bf16_supported,
    machine_info,
    matmul_fn,
    matmul_peak_gflops,
    optimize_for_inference,
    peak_rss_mb,
    run_child,
    time_interleaved,
    time_median_s,
)
from spinemorph.errors import InputError, ModelError

log = logging.getLogger(__name__)

JSON_NAME = "benchmark.json"
MD_NAME = "benchmark.md"
ARCHS_2D = ("multiresunet", "unet", "attention_unet")
SIZE_2D = 320
N_AXIAL_SLICES = 20
SHAPE_3D = (128, 192, 192)
DEFAULT_REPEATS = 3
#: size of the fp32 matrix product timed alongside the 2D networks (same rounds, same load)
MATMUL_N = 2048
_MATMUL = "__matmul__"
#: the parts of a benchmark run, in order
SECTIONS = ("peak", "models_2d", "batch_threads", "network_3d", "dsca_e2e", "foramen_3d_e2e", "foramen_measure",
            "commands")

#: the targets of the performance issue
TARGETS = {
    "foramen_segmentation_s": 2.5,
    "flop_ratio_2d": 0.5,
    "dsca_20_slices_s": 2.0,
    "foramen_measure_per_level_s": 1.0,
    "peak_rss_mb": 4096.0,
    "dice_drop_max": 0.01,
}

#: 3D network layouts compared (label, UNet3D overrides, input down-sampling[, input shape if not SHAPE_3D])
LAYOUTS_3D = (
    ("source method: full 0.8 mm input, no stem stride, base 16", {"base_channels": 16, "stem_stride": 1}, 1),
    ("0.8 mm input, stem stride 2, base 16", {"base_channels": 16, "stem_stride": 2}, 1),
    ("1.6 mm input, stem stride 2, base 16 (embedded budget layout)", {"base_channels": 16, "stem_stride": 2}, 2),
    ("1.6 mm input, stem stride 2, base 8", {"base_channels": 8, "stem_stride": 2}, 2),
    ("coarse-to-fine, fine pass only: 64×96×96 crop at 0.8 mm, no stem stride, base 16",
     {"base_channels": 16, "stem_stride": 1}, 1, (64, 96, 96)),
    ("coarse-to-fine, fine pass only: 64×96×96 crop at 0.8 mm, no stem stride, base 8",
     {"base_channels": 8, "stem_stride": 1}, 1, (64, 96, 96)),
)

Logger = Callable[[str], None]


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _torch_threads(n: int | None):
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _round(x, digits: int = 5):
    """Round floats to ``digits`` significant digits (NaN / inf → None), recursively."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _round(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v, digits) for v in x]
    return x


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int(np.logical_and(a, b).sum()) / s


class Bf16Autocast:
    """Callable wrapper: run ``net`` under CPU bf16 autocast in inference mode and return fp32 logits."""

    def __init__(self, net, channels_last: bool = False):
        self.net = net
        self.channels_last = channels_last

    def __call__(self, x):
        import torch

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.net(x).float()


def _torch_forward(net, channels_last: bool = False):
    import torch

    def f(x):
        with torch.inference_mode():
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return net(x).float()

    return f


# ----------------------------------------------------------------------------- models
def load_2d(arch: str):
    """``(network, source)``: the embedded weights of ``arch`` if installed, else random weights (seed 0)."""
    import torch
    from DuralSacSegLib import models as m2d
    from DuralSacSegLib.networks import build_network

    try:
        for name, entry in m2d.catalog_entries().items():
            if str(entry.get("architecture", "")).lower() == arch:
                net, info = m2d.load_model(name, torch.device("cpu"))
                return net.eval(), f"embedded:{info.name}"
    except ModelError:
        pass
    torch.manual_seed(0)
    return build_network(arch).eval(), "random-init"


def default_2d_arch() -> str:
    """Architecture of the default DSCA model (catalogue), else MultiResUNet."""
    from DuralSacSegLib import models as m2d
    from DuralSacSegLib.networks import DEFAULT_NETWORK

    try:
        entry = m2d.catalog_entries()[m2d.default_model_name()]
        return str(entry.get("architecture", DEFAULT_NETWORK)).lower()
    except (ModelError, KeyError):
        return DEFAULT_NETWORK


def load_3d():
    """``(UNet3D, input_downsample, source)``: the default FORAMEN3D model, else its budget layout, random weights."""
    import torch
    from FORAMEN3DLib import models3d
    from FORAMEN3DLib.network3d import UNet3D

    try:
        loaded = models3d.load_model("default", "cpu")
        return loaded.network.eval(), int(loaded.input_downsample), f"embedded:{loaded.name}"
    except ModelError:
        pass
    cfg_path = models3d.MODELS_DIR / "configs" / "foramen3d_budget_cpu.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    torch.manual_seed(0)
    net = UNet3D(**cfg.get("network", {"base_channels": 16, "stem_stride": 2}))
    return net.eval(), int(cfg.get("input_downsample", 2)), "random-init"


# ----------------------------------------------------------------------------- sections
def bench_peak(quick: bool) -> dict:
    import torch

    from spinemorph.onnx_export import onnx_available

    n = 1024 if quick else MATMUL_N
    reps = 5 if quick else 15
    out = {"n": n, "repeats": reps, "fp32_torch_gflops": matmul_peak_gflops(n, repeats=reps),
           "fp32_numpy_gflops": matmul_peak_gflops(n, repeats=reps, backend="numpy")}
    if onnx_available():
        out["fp32_onnxruntime_gflops"] = matmul_peak_gflops(n, repeats=reps, backend="onnxruntime")
    best = max((k for k in out if k.startswith("fp32_")), key=lambda k: out[k])
    out["fp32_gflops"] = out[best]
    out["fp32_backend"] = best[len("fp32_"):-len("_gflops")]
    if cpu_bf16_supported():
        out["bf16_gflops"] = matmul_peak_gflops(n, repeats=reps, dtype=torch.bfloat16)
    if torch.cuda.is_available():
        out["cuda_fp32_gflops"] = matmul_peak_gflops(4096, repeats=10, device="cuda")
        out["cuda_fp16_gflops"] = matmul_peak_gflops(4096, repeats=10, device="cuda", dtype=torch.float16)
        out["cuda_bf16_gflops"] = matmul_peak_gflops(4096, repeats=10, device="cuda", dtype=torch.bfloat16)
    return out


def _agreement(ref: np.ndarray, other: np.ndarray) -> dict:
    ref, other = np.asarray(ref, np.float32), np.asarray(other, np.float32)
    return {
        "max_abs_logit_diff": float(np.abs(ref - other).max()),
        "mask_agreement": float(np.mean((ref > 0) == (other > 0))),
    }


def bench_2d(arch: str, slices: np.ndarray, peak_gflops: float, repeats: int, batch: int, onnx: bool,
             log_fn: Logger, cuda_peak_gflops: float | None = None, matmul_backend: str = "torch") -> dict:
    """Latency per slice, FLOPs, achieved rate and agreement of the torch reference and the optimised variants."""
    import torch

    from spinemorph.onnx_export import OnnxPredictor, export_onnx, onnx_available

    net, source = load_2d(arch)
    x = torch.from_numpy(np.ascontiguousarray(slices[:batch], np.float32))
    flops = count_flops(net, x[:1])
    variants: dict[str, Callable] = {"torch fp32 (reference)": _torch_forward(net)}
    opt, applied = optimize_for_inference(net)
    variants["torch fp32 " + " + ".join(applied)] = _torch_forward(opt, channels_last=True)
    if cpu_bf16_supported():
        variants["torch bf16 autocast + " + " + ".join(applied)] = Bf16Autocast(opt, channels_last=True)
    if torch.cuda.is_available():
        variants.update(_cuda_variants(net))
    onnx_note = None
    if onnx and onnx_available():
        t0 = time.perf_counter()
        sess = OnnxPredictor(export_onnx(net, x[:1]), threads=torch.get_num_threads())
        onnx_note = f"export + session {time.perf_counter() - t0:.1f} s"
        variants["onnxruntime fp32"] = lambda xx: torch.from_numpy(sess(xx.numpy()))
    elif onnx:
        onnx_note = "onnxruntime not installed"
    ref_out = variants["torch fp32 (reference)"](x).numpy()
    agree = {k: _agreement(ref_out, np.asarray(f(x))) for k, f in variants.items()}
    log_fn(f"  {arch}: timing {len(variants)} variants, batch {batch}, {repeats} rounds")
    n = MATMUL_N
    fns = {k: (lambda f=f: f(x)) for k, f in variants.items()}
    fns[_MATMUL] = matmul_fn(n, matmul_backend)  # the fp32 peak measured in the same rounds, under the same load
    times = time_interleaved(fns, repeats=repeats, warmup=1)
    local_peak = 2.0 * n**3 / times.pop(_MATMUL)["median_s"] / 1e9
    peak_gflops = max(peak_gflops or 0.0, local_peak)
    rows = []
    for k in variants:
        per_slice = times[k]["median_s"] / batch
        rate = flops / per_slice / 1e9
        peak = cuda_peak_gflops if k.startswith("cuda") else peak_gflops
        rows.append({
            "variant": k,
            "ms_per_slice": 1e3 * per_slice,
            "min_ms_per_slice": 1e3 * times[k]["min_s"] / batch,
            "gflops_achieved": rate,
            "ratio_to_fp32_peak": rate / peak if peak else None,
            **agree[k],
        })
    return {
        "architecture": arch,
        "weights": source,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "gflop_per_slice": flops / 1e9,
        "batch": batch,
        "fp32_peak_gflops_used": peak_gflops,
        "fp32_matmul_gflops_in_rounds": local_peak,
        "variants": rows,
        "onnx": onnx_note,
    }


def _cuda_variants(net) -> dict[str, Callable]:
    """fp32 / fp16 / bf16 autocast on the first CUDA device (synchronised, outputs back on the CPU)."""
    import copy

    import torch

    gnet = copy.deepcopy(net).cuda().eval()

    def make(dtype):
        def f(x):
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None):
                y = gnet(x.cuda(non_blocking=True)).float().cpu()
            torch.cuda.synchronize()
            return y

        return f

    return {"cuda fp32": make(None), "cuda fp16 autocast": make(torch.float16), "cuda bf16 autocast": make(torch.bfloat16)}


def bench_2d_batch_threads(arch: str, slices: np.ndarray, repeats: int, batches=(1, 4, 8), threads=(1, 2)) -> dict:
    """Per-slice latency of the optimised fp32 network vs batch size, and vs torch thread count (batch 4)."""
    import torch

    net, _ = load_2d(arch)
    opt, _ = optimize_for_inference(net)
    f = _torch_forward(opt, channels_last=True)
    xs = {b: torch.from_numpy(np.ascontiguousarray(slices[:b], np.float32)) for b in batches if b <= len(slices)}
    tb = time_interleaved({f"batch {b}": (lambda x=x: f(x)) for b, x in xs.items()}, repeats=repeats, warmup=1)
    batch_rows = [{"batch": b, "ms_per_slice": 1e3 * tb[f"batch {b}"]["median_s"] / b} for b in xs]
    x4 = torch.from_numpy(np.ascontiguousarray(slices[:4], np.float32))
    fns = {}
    max_threads = os.cpu_count() or 1
    for n in threads:
        if n > max_threads:
            continue

        def run(n=n):
            with _torch_threads(n):
                f(x4)

        fns[f"{n} threads"] = run
    tt = time_interleaved(fns, repeats=repeats, warmup=1)
    thread_rows = [{"threads": int(k.split()[0]), "ms_per_slice": 1e3 * v["median_s"] / 4} for k, v in tt.items()]
    return {"architecture": arch, "variant": "torch fp32 fuse_bn + channels_last", "batch": batch_rows,
            "threads": thread_rows}


def bench_3d_network(repeats: int, quick: bool, log_fn: Logger, onnx: bool = False) -> dict:
    """FLOPs and latency of the default 3D network (fp32 vs bf16) and of the alternative layouts."""
    import torch
    import torch.nn.functional as F

    net, down, source = load_3d()
    x = torch.randn(1, 1, *SHAPE_3D, generator=torch.Generator().manual_seed(0))
    xin = F.avg_pool3d(x, down) if down > 1 else x
    flops = count_flops_3d(net, xin)

    def fp32():
        with torch.inference_mode():
            h = F.avg_pool3d(x, down) if down > 1 else x
            return net(h)

    fns = {"fp32 (reference)": fp32}
    if cpu_bf16_supported():
        bf = Bf16Autocast(net)
        fns["bf16 autocast"] = lambda: bf(F.avg_pool3d(x, down) if down > 1 else x)
    onnx_note = None
    if onnx:
        ort_net, onnx_note = _onnx_unet(net, xin)
        if ort_net is not None:
            fns["onnxruntime fp32"] = lambda: ort_net(F.avg_pool3d(x, down) if down > 1 else x)
    if torch.cuda.is_available():
        import copy

        gnet = copy.deepcopy(net).cuda().eval()
        for label, dtype in (("cuda fp32", None), ("cuda fp16 autocast", torch.float16)):
            def run_cuda(dtype=dtype):
                with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None):
                    xc = x.cuda()
                    y = gnet(F.avg_pool3d(xc, down) if down > 1 else xc)
                torch.cuda.synchronize()
                return y

            fns[label] = run_cuda
    t = time_interleaved(fns, repeats=repeats, warmup=1)
    shipped = {
        "weights": source,
        "config": net.config.to_dict(),
        "input_downsample": down,
        "network_input": list(xin.shape[2:]),
        "gflop": flops / 1e9,
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "variants": [{"variant": k, "median_s": v["median_s"], "min_s": v["min_s"]} for k, v in t.items()],
        "onnx": onnx_note,
    }
    layouts = []
    for label, kw, d, *shape in LAYOUTS_3D:
        shape = tuple(shape[0]) if shape else SHAPE_3D
        full = kw.get("stem_stride", 1) == 1 and d == 1 and shape == SHAPE_3D
        spec = {"config": kw, "input_downsample": d, "repeats": 1 if full else repeats, "shape": shape,
                "threads": torch.get_num_threads(), "time": not (full and quick)}
        log_fn(f"  3D layout (child process): {label}")
        r = run_child([sys.executable, "-c", "from spinemorph.bench import layout_child_main; layout_child_main()",
                       json.dumps(spec)], timeout_s=900)
        row = {"layout": label, "config": kw, "input_downsample": d, "input_shape": list(shape),
               "peak_rss_mb": r["peak_rss_mb"]}
        try:
            row.update(json.loads(r["stdout_tail"].strip().splitlines()[-1]))
        except (ValueError, IndexError):
            row["note"] = f"child failed (exit {r['returncode']}): {r['stderr_tail'].strip()[-160:]}"
        if "median_s" in row:
            row["meets_2p5_s_network"] = row["median_s"] <= TARGETS["foramen_segmentation_s"]
        elif full and quick:
            row["note"] = "not timed with --quick"
        layouts.append(row)
    return {"shipped": shipped, "layouts": layouts}


class _OnnxUNet:
    """An ONNX Runtime session that looks like a UNet3D to ``FORAMEN3DLib.segment3d.predict_logits``
    (same ``stem`` / ``encoders`` / ``decoders`` attributes for its hooks, which then simply do not fire)."""

    def __init__(self, net, session):
        self.session = session
        self.stem, self.encoders, self.decoders = net.stem, net.encoders, net.decoders

    def __call__(self, x):
        import torch

        return torch.from_numpy(self.session(x.detach().cpu().numpy()))


def _onnx_unet(net, example):
    """``(_OnnxUNet or None, note)``: the 3D network exported to ONNX and loaded in ONNX Runtime."""
    import torch

    from spinemorph.onnx_export import OnnxPredictor, export_onnx, onnx_available

    if not onnx_available():
        return None, "onnxruntime not installed"
    t0 = time.perf_counter()
    sess = OnnxPredictor(export_onnx(net, example), threads=torch.get_num_threads())
    return _OnnxUNet(net, sess), f"export + session {time.perf_counter() - t0:.1f} s"


def count_flops_3d(net, x, max_voxels: int = 1_000_000) -> int:
    """FLOPs of a 3D U-Net forward on ``x``, counted on a half-size input and scaled by 8 when ``x`` is large.

    Every layer of :class:`FORAMEN3DLib.network3d.UNet3D` is "same"-padded, so its FLOPs are exactly proportional
    to the number of voxels (as long as every size stays divisible by the network's size divisor); counting on
    1/8 of the voxels keeps ``torch.utils.flop_counter`` from holding gigabytes.
    """
    shape = tuple(x.shape[2:])
    div = getattr(net, "size_divisor", 1)
    if int(np.prod(shape)) > max_voxels and all(s % (2 * div) == 0 for s in shape):
        return 8 * count_flops(net, x[..., : shape[0] // 2, : shape[1] // 2, : shape[2] // 2].contiguous())
    return count_flops(net, x)


def layout_child_main() -> None:
    """Child-process entry of :func:`bench_3d_network`: FLOPs and forward latency of one 3D layout (JSON line)."""
    import torch
    import torch.nn.functional as F
    from FORAMEN3DLib.network3d import UNet3D

    spec = json.loads(sys.argv[1])
    torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    net = UNet3D(**spec["config"]).eval()
    d = int(spec["input_downsample"])
    x = torch.randn(1, 1, *spec.get("shape", SHAPE_3D), generator=torch.Generator().manual_seed(0))
    xi = F.avg_pool3d(x, d) if d > 1 else x
    out = {"gflop": count_flops_3d(net, xi) / 1e9, "parameters": int(sum(p.numel() for p in net.parameters()))}
    if spec.get("time", True):
        def run():
            with torch.inference_mode():
                return net(F.avg_pool3d(x, d) if d > 1 else x)

        reps = int(spec["repeats"])
        r = time_median_s(run, repeats=reps, warmup=0 if reps == 1 else 1)
        out.update({"median_s": r["median_s"], "min_s": r["min_s"]})
    print(json.dumps(out))


class _AutocastUNet:
    """A UNet3D seen through bf16 autocast, usable by ``FORAMEN3DLib.segment3d.predict_logits``."""

    def __init__(self, net):
        self.inner = net
        self.stem, self.encoders, self.decoders = net.stem, net.encoders, net.decoders

    def __call__(self, x):
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.inner(x).float()


def bench_3d_end_to_end(space_path: Path, truth_path: Path, repeats: int, log_fn: Logger, warmup: int = 1,
                        onnx: bool = False) -> dict:
    """In-process 3D segmentation of one SPACE volume (warm model): timings and Dice vs the phantom's labels."""
    import dataclasses

    import torch
    from FORAMEN3DLib import models3d, segment3d

    from spinemorph.labels import FORAMEN_LABELS
    from spinemorph.volume import read_volume

    net, down, source = load_3d()
    image = read_volume(space_path)
    truth = np.asarray(read_volume(truth_path).array)
    base = models3d.LoadedModel(source, net, down, {}, Path(source), "", torch.device("cpu"))
    variants = {"fp32 (reference)": base}
    if cpu_bf16_supported():
        variants["bf16 autocast"] = dataclasses.replace(base, network=_AutocastUNet(net))
    onnx_note = None
    if onnx:
        xin = torch.zeros(1, 1, *(s // down for s in SHAPE_3D))
        ort_net, onnx_note = _onnx_unet(net, xin)
        if ort_net is not None:
            variants["onnxruntime fp32"] = dataclasses.replace(base, network=ort_net)
    results = {}
    fns = {}
    for k, lm in variants.items():
        def run(lm=lm, k=k):
            results[k] = segment3d.segment_volume(image, model=lm)

        fns[k] = run
    log_fn(f"  3D segmentation end to end: {len(fns)} variants, {repeats} rounds")
    t = time_interleaved(fns, repeats=repeats, warmup=warmup)
    ref = np.asarray(results["fp32 (reference)"].labels.array)
    rows = []
    for k, res in results.items():
        lab = np.asarray(res.labels.array)
        row = {"variant": k, "median_s": t[k]["median_s"], "min_s": t[k]["min_s"],
               "stage_s": {s: float(v) for s, v in res.timings_s.items()},
               "dice_vs_reference_mean": float(np.mean([dice(lab == c, ref == c) for c in FORAMEN_LABELS]))}
        if source != "random-init":
            per = {name: dice(lab == c, truth == c) for c, name in FORAMEN_LABELS.items()}
            row["dice_vs_truth"] = per
            row["dice_vs_truth_mean"] = float(np.mean(list(per.values())))
        rows.append(row)
    if source != "random-init":
        ref_d = rows[0]["dice_vs_truth_mean"]
        for r in rows:
            r["dice_drop_vs_reference"] = ref_d - r["dice_vs_truth_mean"]
    return {"weights": source, "input_size_ijk": list(image.size_ijk), "variants": rows, "onnx": onnx_note}


def bench_dsca_end_to_end(axial_path: Path, repeats: int, log_fn: Logger, warmup: int = 1, onnx: bool = False) -> dict:
    """In-process DSCA of the axial series, file → table, with a warm model: reference vs optimised predictors."""
    import torch
    from DuralSacSegLib.roi import DEFAULT_CROP_PX
    from DuralSacSegLib.segment import segment_file

    arch = default_2d_arch()
    net, source = load_2d(arch)
    opt, applied = optimize_for_inference(net)

    def predictor(f):
        def p(batch):
            return torch.sigmoid(f(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))).numpy()

        return p

    opt_label = "torch fp32 " + " + ".join(applied)
    # (predictor, batch size, crop_px): whole slices = the source method's inference; the canal window is the default
    preds = {"torch fp32 (reference), whole slices, batch 8": (predictor(_torch_forward(net)), 8, None),
             opt_label + ", whole slices, batch 1": (predictor(_torch_forward(opt, True)), 1, None),
             opt_label + f", {DEFAULT_CROP_PX}-px canal window, batch 1 (default)": (
                 predictor(_torch_forward(opt, True)), 1, DEFAULT_CROP_PX)}
    if cpu_bf16_supported():
        preds["torch bf16 autocast + " + " + ".join(applied) + f", {DEFAULT_CROP_PX}-px canal window, batch 1"] = (
            predictor(Bf16Autocast(opt, True)), 1, DEFAULT_CROP_PX)
    onnx_note = None
    if onnx:
        from spinemorph.onnx_export import OnnxPredictor, export_onnx, onnx_available

        if onnx_available():
            t0 = time.perf_counter()
            sess = OnnxPredictor(export_onnx(net, torch.zeros(1, 1, SIZE_2D, SIZE_2D), dynamic_spatial=True),
                                 threads=torch.get_num_threads())
            onnx_note = f"export + session {time.perf_counter() - t0:.1f} s (not in the times)"
            preds[f"onnxruntime fp32, {DEFAULT_CROP_PX}-px canal window, batch 1"] = (
                predictor(lambda xx: torch.from_numpy(sess(xx.numpy()))), 1, DEFAULT_CROP_PX)
    results = {}
    fns = {}
    for k, (p, b, c) in preds.items():
        def run(p=p, b=b, c=c, k=k):
            results[k] = segment_file(axial_path, predictor=p, batch_size=b, crop_px=c)

        fns[k] = run
    log_fn(f"  DSCA end to end ({arch}): {len(fns)} variants, {repeats} rounds")
    t = time_interleaved(fns, repeats=repeats, warmup=warmup)
    ref = results[next(iter(results))].table.areas_mm2()
    rows = []
    for k, res in results.items():
        a = res.table.areas_mm2()
        rows.append({"variant": k, "median_s": t[k]["median_s"], "min_s": t[k]["min_s"],
                     "default": k.endswith("(default)"),
                     "stage_s": {s: float(v) for s, v in res.timings_s.items()},
                     "slices_whole": len(res.roi.located) + len(res.roi.rerun_whole) if res.roi.crop_px else len(a),
                     "max_abs_area_diff_mm2": float(np.abs(a - ref).max()) if len(a) else 0.0,
                     "n_slices": len(a)})
    return {"architecture": arch, "weights": source, "variants": rows, "onnx": onnx_note}


def bench_foramen_measure(label_path: Path, repeats: int) -> dict:
    """In-process foramen measurement + meshes of one label map (one level, L4-5)."""
    from FORAMEN3DLib.meshes import structure_meshes
    from FORAMEN3DLib.morphometry import measure_foramen

    from spinemorph.volume import read_volume

    labels = read_volume(label_path)
    labels = labels.with_array(np.asarray(labels.array).astype(np.uint8))
    t = time_interleaved({"measure": lambda: measure_foramen(labels), "meshes": lambda: structure_meshes(labels)},
                         repeats=repeats, warmup=1)
    total = t["measure"]["median_s"] + t["meshes"]["median_s"]
    return {"levels": 1, "measure_s": t["measure"]["median_s"], "meshes_s": t["meshes"]["median_s"],
            "per_level_s": total, "input_size_ijk": list(labels.size_ijk)}


def bench_commands(paths: dict, work: Path, repeats: int, quick: bool, threads: int | None, log_fn: Logger) -> list[dict]:
    """Run each command in a child process (cold start): median wall time and the child's own peak RSS."""
    env = {"MPLBACKEND": "Agg", "TQDM_DISABLE": "1"}
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    py = [sys.executable, "-m", "spinemorph.cli"]
    dm, fm = paths.get("dsca_model"), paths.get("foramen_model")
    cmds = [
        ("dsca segment (20-slice axial T1, NRRD)", ["dsca", "segment", str(paths["axial"]), "--device", "cpu",
                                                   *(["--model", str(dm)] if dm else [])], repeats),
        ("foramen measure (label map, 1 level, meshes)", ["foramen", "measure", str(paths["foramen_labels"])], repeats),
        ("foramen measure (SPACE image: 3D segmentation + measurement)",
         ["foramen", "measure", str(paths["space"]), "--device", "cpu", "--model", str(fm or "default")], repeats),
        ("study (whole pipeline on the DICOM study)",
         ["study", str(paths["dicom"]), "--device", "cpu",
          *(["--dsca-model", str(dm)] if dm else []), "--foramen-model", str(fm or "default")],
         1 if quick else min(2, repeats)),
    ]
    rows = []
    for i, (label, argv, n) in enumerate(cmds):
        runs = []
        for r in range(n):
            out = work / f"cmd{i}_{r}"
            log_fn(f"  command: spinemorph {' '.join(argv[:2])} ({r + 1}/{n})")
            runs.append(run_child([*py, *argv, "--out", str(out), "--overwrite"], env=env, timeout_s=600))
        walls = sorted(x["wall_s"] for x in runs)
        rows.append({
            "command": label,
            "argv": ["spinemorph", *argv[:2], "..."],
            "runs": n,
            "median_wall_s": float(np.median(walls)),
            "min_wall_s": walls[0],
            "peak_rss_mb": max(x["peak_rss_mb"] for x in runs),
            "returncodes": [x["returncode"] for x in runs],
            "error": next((x["stderr_tail"].strip().splitlines()[-1] for x in runs if x["returncode"] not in (0, 3)
                           and x["stderr_tail"].strip()), None),
        })
    return rows


# ----------------------------------------------------------------------------- inputs
def make_inputs(work: Path, log_fn: Logger) -> dict:
    """Phantom study (seed 0; 20-slice axial T1, SPACE) and, when no weights are installed, random-weight files."""
    import torch

    from spinemorph.acquisition import make_study

    log_fn("making the phantom study (20 axial slices + SPACE)")
    s = make_study(work / "study", seed=0, formats=("dicom", "nrrd", "nifti"), axial={"n_slices": N_AXIAL_SLICES})
    f = s["files"]
    paths = {"axial": f["axial_t1_nrrd"], "space": f["sagittal_t2_space_nrrd"],
             "foramen_labels": f["sagittal_t2_space_foramen_nifti"], "dicom": work / "study" / "dicom",
             "axial_image": s["acquisitions"]["axial_t1"].image}
    _, src2d = load_2d(default_2d_arch())
    if src2d == "random-init":
        from DuralSacSegLib.models import save_weights

        net, _ = load_2d(default_2d_arch())
        paths["dsca_model"] = save_weights(work / "dsca_random.pt", net, default_2d_arch())
    net3, down, src3d = load_3d()
    if src3d == "random-init":
        from FORAMEN3DLib.models3d import save_weights as save3d

        torch.manual_seed(0)
        save3d(net3, work / "foramen_random.pt", input_downsample=down)
        paths["foramen_model"] = work / "foramen_random.pt"
    return paths


def network_slices(axial_image, n: int) -> np.ndarray:
    """``(n, 1, 320, 320)`` normalised slices of the phantom's axial series (cycled if it has fewer)."""
    from spinemorph.intensity import normalize_percentile

    arr = np.asarray(axial_image.array, np.float32)
    if arr.shape[1:] != (SIZE_2D, SIZE_2D):
        raise InputError(f"benchmark slices must be {SIZE_2D}×{SIZE_2D}, got {arr.shape[1:]}")
    idx = [i % arr.shape[0] for i in range(n)]
    return np.stack([normalize_percentile(arr[i]) for i in idx])[:, None]


# ----------------------------------------------------------------------------- main
def run_bench(out_dir: str | os.PathLike, repeats: int = DEFAULT_REPEATS, quick: bool = False,
              threads: int | None = None, overwrite: bool = False, log_fn: Logger | None = None,
              sections: tuple[str, ...] | None = None) -> dict:
    """Run the benchmark and write ``benchmark.json`` and ``benchmark.md`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder.
    repeats : int
        Timed repetitions per measurement (medians are reported).
    quick : bool
        Smaller matmul, only the default 2D model, no ONNX, no full-resolution 3D layout, the study command once.
    threads : int, optional
        torch threads in this process and ``OMP_NUM_THREADS`` of the commands (default: torch's choice).
    overwrite : bool
        Replace existing outputs.
    log_fn : callable, optional
        Progress lines (default: ``print`` to stderr).
    sections : tuple of str, optional
        Subset of ``peak, models_2d, batch_threads, network_3d, dsca_e2e, foramen_3d_e2e, foramen_measure,
        commands`` (default: all).

    Returns
    -------
    dict
        The JSON document.
    """
    import torch

    if repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {repeats}")
    if threads is not None and threads < 1:
        raise InputError(f"--threads must be >= 1, got {threads}")
    log_fn = log_fn or (lambda s: print(s, file=sys.stderr, flush=True))
    out = prepare_output_dir(out_dir, overwrite, [JSON_NAME, MD_NAME])
    want = set(sections or SECTIONS)
    if want - set(SECTIONS):
        raise InputError(f"unknown benchmark section(s) {sorted(want - set(SECTIONS))}; choose from {', '.join(SECTIONS)}")
    t_start = time.perf_counter()
    doc: dict = {"generator": "spinemorph bench", "version": __version__, "quick": bool(quick), "repeats": int(repeats)}
    with _torch_threads(threads), tempfile.TemporaryDirectory(prefix="spinemorph_bench_") as tmp:
        work = Path(tmp)
        doc["machine"] = machine_info()
        doc["load_start"] = doc["machine"]["loadavg_1_5_15"]
        log_fn(f"load average {doc['load_start']}; torch threads {torch.get_num_threads()}")
        paths: dict = {}
        slices = None
        if want - {"peak", "network_3d"}:
            paths = make_inputs(work, log_fn)
            slices = network_slices(paths.pop("axial_image"), 8)
        peak = {"fp32_gflops": float("nan")}
        if "peak" in want or "models_2d" in want:
            log_fn("matmul peak")
            peak = bench_peak(quick)
            doc["matmul_peak"] = peak
        if "models_2d" in want:
            archs = (default_2d_arch(),) if quick else ARCHS_2D
            doc["models_2d"] = [bench_2d(a, slices, peak["fp32_gflops"], repeats, 4, not quick, log_fn,
                                         peak.get("cuda_fp32_gflops"), peak.get("fp32_backend", "torch"))
                                for a in archs]
        if "batch_threads" in want:
            log_fn("batch size and threads")
            doc["batch_threads_2d"] = bench_2d_batch_threads(default_2d_arch(), slices, repeats)
        if "network_3d" in want:
            log_fn("3D network")
            doc["network_3d"] = bench_3d_network(repeats, quick, log_fn, onnx=not quick)
        if "dsca_e2e" in want:
            doc["dsca_end_to_end"] = bench_dsca_end_to_end(paths["axial"], repeats, log_fn, warmup=0 if quick else 1,
                                                           onnx=not quick)
        if "foramen_3d_e2e" in want:
            doc["foramen_3d_end_to_end"] = bench_3d_end_to_end(paths["space"], paths["foramen_labels"], repeats, log_fn,
                                                               warmup=0 if quick else 1, onnx=not quick)
        if "foramen_measure" in want:
            log_fn("foramen measurement + meshes")
            doc["foramen_measure"] = bench_foramen_measure(paths["foramen_labels"], repeats)
        if "commands" in want:
            doc["commands"] = bench_commands(paths, work, repeats, quick, threads, log_fn)
        doc["bench_process_peak_rss_mb"] = peak_rss_mb()
        doc["load_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        doc["bench_seconds"] = time.perf_counter() - t_start
    doc["targets"] = evaluate_targets(doc)
    doc = _round(doc)
    atomic_write_text(out / JSON_NAME, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / MD_NAME, to_markdown(doc))
    return doc


def evaluate_targets(doc: dict) -> list[dict]:
    """Compare the measured figures with :data:`TARGETS` (what could be measured in this run)."""
    rows = []

    def add(name, target, measured, ok, note=""):
        rows.append({"target": name, "goal": target, "measured": measured, "met": ok, "note": note})

    f3 = doc.get("foramen_3d_end_to_end")
    if f3:
        best = min(f3["variants"], key=lambda r: r["median_s"] if r.get("dice_drop_vs_reference", 0) <= TARGETS["dice_drop_max"] else 1e9)
        add("3D L4-5 segmentation of one SPACE volume, end to end (warm)", "<= 2.5 s, Dice drop <= 0.01",
            f"{best['median_s']:.2f} s ({best['variant']})", best["median_s"] <= TARGETS["foramen_segmentation_s"],
            "Dice vs phantom truth: see the 3D table" if "dice_vs_truth_mean" in best else "random weights: Dice not measured")
    m2 = doc.get("models_2d")
    if m2:
        best_ratio, best_label = -1.0, ""
        for m in m2:
            for v in m["variants"]:
                if v["variant"].startswith("torch fp32") or v["variant"].startswith("onnxruntime"):
                    if (v["ratio_to_fp32_peak"] or 0) > best_ratio:
                        best_ratio, best_label = v["ratio_to_fp32_peak"], f"{m['architecture']}, {v['variant']}"
        add("2D model at 320×320: fp32 FLOP rate / fp32 matmul peak", ">= 0.50", f"{best_ratio:.2f} ({best_label})",
            best_ratio >= TARGETS["flop_ratio_2d"])
    d = doc.get("dsca_end_to_end")
    if d:
        dflt = next((r for r in d["variants"] if r.get("default")), None) or min(d["variants"], key=lambda r: r["median_s"])
        add("DSCA of a 20-slice axial series, file to table (warm, default model)", "<= 2 s",
            f"{dflt['median_s']:.2f} s ({dflt['variant']})", dflt["median_s"] <= TARGETS["dsca_20_slices_s"],
            "the `dsca segment` path; whole-slice variants in the DSCA table")
    fm = doc.get("foramen_measure")
    if fm:
        add("foramen measurement + meshes from a label map, per level", "<= 1 s", f"{fm['per_level_s']:.2f} s",
            fm["per_level_s"] <= TARGETS["foramen_measure_per_level_s"])
    cmds = doc.get("commands")
    if cmds:
        worst = max(cmds, key=lambda r: r["peak_rss_mb"])
        add("peak resident memory of any command", "<= 4096 MB", f"{worst['peak_rss_mb']:.0f} MB ({worst['command']})",
            worst["peak_rss_mb"] <= TARGETS["peak_rss_mb"])
    return rows


# ----------------------------------------------------------------------------- markdown
def _fmt(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_markdown(doc: dict) -> str:
    """The benchmark document as Markdown tables."""
    m = doc["machine"]
    parts = [
        "# SpineMorph benchmark\n",
        f"Measured {m['date_utc']} with `spinemorph bench` (SpineMorph {doc['version']}"
        f"{', --quick' if doc.get('quick') else ''}, {doc['repeats']} repeats, medians).\n",
        f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPU cores ({m['logical_cpus']} logical), "
        f"{_fmt((m.get('memory_total_mb') or 0) / 1024, 1)} GiB RAM, CPU capability {m['cpu_capability']}, native bf16 "
        f"{_fmt(m['cpu_bf16_supported'])}; GPU: {m['gpu'] or 'none'}. Python {m['python']}, torch {m['torch']}, "
        f"onnxruntime {m.get('onnxruntime') or '–'}, torch threads {m['torch_threads']}.\n",
        f"Load average (1/5/15 min) at start {_fmt_load(doc.get('load_start'))}, at end {_fmt_load(doc.get('load_end'))}"
        " (the machine is shared; variants are timed round-robin so that they see the same load).\n",
    ]
    if doc.get("targets"):
        parts.append("## Targets\n")
        parts.append(_table(["target", "goal", "measured", "met", "note"],
                            [[r["target"], r["goal"], r["measured"], _fmt(r["met"]), r["note"]] for r in doc["targets"]]))
    pk = doc.get("matmul_peak")
    if pk:
        parts.append("## Matrix-multiply peak\n")
        parts.append(_table(["kind", "GFLOP/s"], [[k.replace("_gflops", ""), v] for k, v in pk.items()
                                                  if k.endswith("_gflops")]))
        parts.append(f"\n{pk['n']}×{pk['n']} fp32 products with torch (MKL), numpy (its BLAS) and ONNX Runtime (MLAS), fastest "
                     f"of {pk.get('repeats', 5)} each, at the start of the run; the fp32 peak is the best of them "
                     f"({pk.get('fp32_backend', 'torch')}). The 2D table's ratio uses, per model, the larger of this and the "
                     f"median rate of a {MATMUL_N}×{MATMUL_N} product with the same library timed in the same rounds as "
                     "the networks (same load).\n")
    if doc.get("models_2d"):
        parts.append("## 2D networks at 320×320 (per slice)\n")
        rows = []
        for mm in doc["models_2d"]:
            for v in mm["variants"]:
                rows.append([mm["architecture"], mm["weights"], f"{mm['parameters'] / 1e6:.2f} M", mm["gflop_per_slice"],
                             v["variant"], v["ms_per_slice"], v["gflops_achieved"], v["ratio_to_fp32_peak"],
                             f"{v['max_abs_logit_diff']:.2g}", f"{v['mask_agreement']:.5f}"])
        parts.append(_table(["model", "weights", "params", "GFLOP/slice", "variant", "ms/slice", "GFLOP/s",
                             "ratio to fp32 peak", "max Δlogit", "mask agreement"], rows))
        notes = [f"{mm['architecture']}: {mm['onnx']}" for mm in doc["models_2d"] if mm.get("onnx")]
        peaks = ", ".join(f"{mm['architecture']} {mm['fp32_peak_gflops_used']:.1f}" for mm in doc["models_2d"]
                          if mm.get("fp32_peak_gflops_used"))
        if peaks:
            parts.append(f"\nfp32 peak (GFLOP/s) used for the ratio: {peaks}.\n")
        parts.append(f"\nBatch {doc['models_2d'][0]['batch']} slices per call. FLOPs counted by torch.utils.flop_counter "
                     "(convolutions and matrix products, multiply-add = 2). ONNX: " + ("; ".join(notes) or "not run") + ".\n")
    bt = doc.get("batch_threads_2d")
    if bt:
        parts.append(f"## Batch size and threads ({bt['architecture']}, {bt['variant']})\n")
        parts.append(_table(["batch", "ms/slice"], [[r["batch"], r["ms_per_slice"]] for r in bt["batch"]]))
        parts.append("\n")
        parts.append(_table(["torch threads", "ms/slice (batch 4)"], [[r["threads"], r["ms_per_slice"]] for r in bt["threads"]]))
    n3 = doc.get("network_3d")
    if n3:
        s = n3["shipped"]
        parts.append("## 3D network (FORAMEN3D)\n")
        parts.append(f"Default model: {s['weights']}, {s['config']}, input down-sampling {s['input_downsample']} "
                     f"(network input {s['network_input']}), {s['gflop']:.1f} GFLOP, {s['parameters'] / 1e6:.2f} M parameters.\n\n")
        parts.append(_table(["variant", "network s (median)", "min s"], [[v["variant"], v["median_s"], v["min_s"]] for v in s["variants"]]))
        if s.get("onnx"):
            parts.append(f"\nONNX: {s['onnx']}.\n")
        parts.append("\nLayouts (input 128×192×192 unless stated; random weights; network forward only, fp32, batch 1). A "
                     "coarse-to-fine scheme costs the coarse pass (the embedded layout) plus the fine pass:\n\n")
        parts.append(_table(["layout", "GFLOP", "params", "s", "<= 2.5 s", "peak RSS MB"],
                            [[r["layout"], r.get("gflop"), f"{r.get('parameters', 0) / 1e6:.2f} M",
                              r.get("median_s", r.get("note")), _fmt(r.get("meets_2p5_s_network")),
                              f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "–"] for r in n3["layouts"]]))
        parts.append("\nEach layout runs in its own process (FLOPs counted on 1/8 of the voxels and scaled, exact for "
                     "these same-padded networks).\n")
    f3 = doc.get("foramen_3d_end_to_end")
    if f3:
        parts.append(f"## 3D segmentation end to end (in-process, warm model; SPACE {f3['input_size_ijk']})\n")
        parts.append(_table(["variant", "median s", "min s", "stages (s)", "Dice vs truth (mean)", "Dice drop", "Dice vs reference"],
                            [[v["variant"], v["median_s"], v["min_s"], _stages(v["stage_s"]), v.get("dice_vs_truth_mean"),
                              v.get("dice_drop_vs_reference"), v["dice_vs_reference_mean"]] for v in f3["variants"]]))
        if f3["weights"] == "random-init":
            parts.append("\nRandom weights (no embedded model installed): Dice against the phantom truth not meaningful.\n")
    d = doc.get("dsca_end_to_end")
    if d:
        parts.append(f"## DSCA end to end (in-process, warm model; {d['architecture']}, {d['weights']})\n")
        parts.append(_table(["variant", "median s", "min s", "stages (s)", "slices run whole", "max |Δarea| mm²"],
                            [[v["variant"], v["median_s"], v["min_s"], _stages(v["stage_s"]),
                              f"{v.get('slices_whole', v['n_slices'])}/{v['n_slices']}", v["max_abs_area_diff_mm2"]]
                             for v in d["variants"]]))
        parts.append("\nmax |Δarea|: largest per-slice difference of the DSCA from the reference variant's table (the "
                     "canal window also drops false positives far from the canal, see docs/performance.md)."
                     + (f" ONNX: {d['onnx']}." if d.get("onnx") else "") + "\n")
    fm = doc.get("foramen_measure")
    if fm:
        parts.append("## Foramen measurement from a label map (in-process)\n")
        parts.append(_table(["measure s", "meshes s", "per level s"], [[fm["measure_s"], fm["meshes_s"], fm["per_level_s"]]]))
    if doc.get("commands"):
        parts.append("## Commands (child processes, cold start)\n")
        parts.append(_table(["command", "runs", "median wall s", "min wall s", "peak RSS MB", "exit codes"],
                            [[c["command"], c["runs"], c["median_wall_s"], c["min_wall_s"], f"{c['peak_rss_mb']:.0f}",
                              ",".join(str(x) for x in c["returncodes"])] for c in doc["commands"]]))
        errs = [f"{c['command']}: {c['error']}" for c in doc["commands"] if c.get("error")]
        if errs:
            parts.append("\nErrors: " + "; ".join(errs) + "\n")
    parts.append(f"\nBenchmark process peak RSS {_fmt(doc.get('bench_process_peak_rss_mb'), 0)} MB; "
                 f"total {_fmt(doc.get('bench_seconds'), 0)} s.\n")
    return "\n".join(p.rstrip("\n") + "\n" for p in parts)


def _fmt_load(v) -> str:
    return "/".join(f"{x:.1f}" for x in v) if v else "–"


def _stages(st: dict) -> str:
    return ", ".join(f"{k.replace('_s', '')} {v:.2f}" for k, v in st.items() if not k.startswith("total"))
