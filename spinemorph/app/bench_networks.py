"""Network measurements of ``spinemorph bench`` (see :mod:`spinemorph.app.bench`): the matmul peak, the 2D
networks and their optimised variants (batch size, threads), the 3D network and its layouts (each in a child
process), plus the sizes, targets, model loading and helpers the other benchmark sections share.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from spinemorph.benchutil import (
    count_flops,
    matmul_fn,
    matmul_peak_gflops,
    run_child,
    time_interleaved,
    time_median_s,
)
from spinemorph.cpu_inference import cpu_bf16_supported, optimize_for_inference
from spinemorph.errors import ModelError

log = logging.getLogger(__name__)

ARCHS_2D = ("multiresunet", "unet", "attention_unet")
SIZE_2D = 320
N_AXIAL_SLICES = 20
SHAPE_3D = (128, 192, 192)
#: size of the fp32 matrix product timed alongside the 2D networks (same rounds, same load)
MATMUL_N = 2048
_MATMUL = "__matmul__"

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
def torch_threads(n: int | None):
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def round_figures(x, digits: int = 5):
    """Round floats to ``digits`` significant digits (NaN / inf → None), recursively."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: round_figures(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [round_figures(v, digits) for v in x]
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


def torch_forward(net, channels_last: bool = False):
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
    variants: dict[str, Callable] = {"torch fp32 (reference)": torch_forward(net)}
    opt, applied = optimize_for_inference(net)
    variants["torch fp32 " + " + ".join(applied)] = torch_forward(opt, channels_last=True)
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
    f = torch_forward(opt, channels_last=True)
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
            with torch_threads(n):
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
        ort_net, onnx_note = onnx_unet(net, xin)
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
        r = run_child([sys.executable, "-c", "from spinemorph.app.bench_networks import layout_child_main; layout_child_main()",
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


def onnx_unet(net, example):
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


class AutocastUNet:
    """A UNet3D seen through bf16 autocast, usable by ``FORAMEN3DLib.segment3d.predict_logits``."""

    def __init__(self, net):
        self.inner = net
        self.stem, self.encoders, self.decoders = net.stem, net.encoders, net.decoders

    def __call__(self, x):
        import torch

        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.inner(x).float()
