"""The performance targets check and the Markdown tables of a ``spinemorph bench`` document
(see :mod:`spinemorph.app.bench`)."""

from __future__ import annotations

from spinemorph.app.bench_networks import MATMUL_N, TARGETS


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
