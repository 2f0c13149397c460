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

Code: this module runs the sections and the end-to-end and command measurements; the network measurements are in
:mod:`spinemorph.app.bench_networks`, the targets check and the Markdown in :mod:`spinemorph.app.bench_report`.

Outputs: ``benchmark.json`` (everything) and ``benchmark.md`` (tables) in the output folder, written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from spinemorph import __version__
from spinemorph.app.bench_networks import (
    ARCHS_2D,
    N_AXIAL_SLICES,
    SHAPE_3D,
    SIZE_2D,
    AutocastUNet,
    Bf16Autocast,
    Logger,
    bench_2d,
    bench_2d_batch_threads,
    bench_3d_network,
    bench_peak,
    count_flops_3d,
    default_2d_arch,
    dice,
    load_2d,
    load_3d,
    onnx_unet,
    round_figures,
    torch_forward,
    torch_threads,
)
from spinemorph.app.bench_report import evaluate_targets, to_markdown
from spinemorph.atomic import atomic_write_text, prepare_output_dir
from spinemorph.benchutil import (
    machine_info,
    peak_rss_mb,
    run_child,
    time_interleaved,
)
from spinemorph.cpu_inference import cpu_bf16_supported, optimize_for_inference
from spinemorph.errors import InputError

log = logging.getLogger(__name__)

JSON_NAME = "benchmark.json"
MD_NAME = "benchmark.md"
DEFAULT_REPEATS = 3
#: the parts of a benchmark run, in order
SECTIONS = ("peak", "models_2d", "batch_threads", "network_3d", "dsca_e2e", "foramen_3d_e2e", "foramen_measure",
            "commands")

#: the benchmark's public functions (the network measurements and the report are re-exported from their modules)
__all__ = ["JSON_NAME", "MD_NAME", "SECTIONS", "bench_2d", "bench_commands", "bench_dsca_end_to_end",
           "bench_3d_end_to_end", "bench_foramen_measure", "count_flops_3d", "dice", "evaluate_targets",
           "make_inputs", "run_bench", "to_markdown"]


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
        variants["bf16 autocast"] = dataclasses.replace(base, network=AutocastUNet(net))
    onnx_note = None
    if onnx:
        xin = torch.zeros(1, 1, *(s // down for s in SHAPE_3D))
        ort_net, onnx_note = onnx_unet(net, xin)
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
    # the embedded model's decision (catalogue threshold + post-processing), as `dsca segment` applies it; an injected
    # predictor alone would fall back to threshold 0.5 without post-processing
    thr, post = None, None
    if source.startswith("embedded:"):
        from DuralSacSegLib import models as m2d

        info = m2d.load_model(source.split(":", 1)[1], torch.device("cpu"))[1]
        thr, post = float(info.threshold), str(info.postprocess)

    def predictor(f):
        def p(batch):
            return torch.sigmoid(f(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))).numpy()

        return p

    opt_label = "torch fp32 " + " + ".join(applied)
    # (predictor, batch size, crop_px): whole slices = the source method's inference; the canal window is the default
    preds = {"torch fp32 (reference), whole slices, batch 8": (predictor(torch_forward(net)), 8, None),
             opt_label + ", whole slices, batch 1": (predictor(torch_forward(opt, True)), 1, None),
             opt_label + f", {DEFAULT_CROP_PX}-px canal window, batch 1 (default)": (
                 predictor(torch_forward(opt, True)), 1, DEFAULT_CROP_PX)}
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
            results[k] = segment_file(axial_path, predictor=p, batch_size=b, crop_px=c, threshold=thr, postprocess=post)

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
    return {"architecture": arch, "weights": source, "variants": rows, "onnx": onnx_note,
            "decision": {"threshold": thr, "postprocess": post}}


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
    py = [sys.executable, "-m", "spinemorph.app.cli"]
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
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="spinemorph_bench_") as tmp:
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
    doc = round_figures(doc)
    atomic_write_text(out / JSON_NAME, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / MD_NAME, to_markdown(doc))
    return doc
