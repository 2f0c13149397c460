#!/usr/bin/env bash
# Train, evaluate and embed the DuralSacSeg weights (the exact commands used for DuralSacSeg/Resources/Models).
#
#   scripts/train_dsca_embedded.sh [train|evaluate|embed|all]   (default: all)
#
# train     three runs of the CPU budget recipe (configs/budget_cpu.json), one at a time, 1 torch thread, seed 0:
#           runs/dsca_budget_<architecture>/ (config.json, fold0/, summary.json, best.pt)
# evaluate  `spinemorph dsca evaluate` of every run's best.pt on the documented held-out splits
#           (synthetic, phantom, real-slabs; DuralSacSegLib.train.EVAL_SPECS): runs/dsca_eval/<architecture>/<data>/
# embed     copy the weights to DuralSacSeg/Resources/Models/dsca_<architecture>.pt, write catalog.json and the model
#           cards from the measured numbers (nothing typed by hand)
#
# Needs the SPIDER data (../shared/data/spider or $SPINEMORPH_SPIDER). Wall time on the 2-core development machine
# (shared with other jobs): see the model cards. Run from anywhere; paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CFG=DuralSacSeg/Resources/Models/configs/budget_cpu.json
ARCHS=${ARCHS:-"multiresunet unet attention_unet"}
STEP=${1:-all}
# batches per epoch (8 epochs, configs/budget_cpu.json), sized to the throughput measured on the shared 2-core CPU
# (MultiResUNet ~5 s per batch of 8 crops under the load there, U-Net / Attention U-Net ~3x faster) so that the
# three runs, one after another, fit in ~85 min. (The U-Net runs were started automatically after the MultiResUNet run.)
declare -A ITERS=([multiresunet]=60 [unet]=60 [attention_unet]=60)
# change a run's number of epochs with --resume --epochs (same schedule, resumed from its saved state). The
# MultiResUNet was still improving at epoch 8 (validation loss 0.435; 0.277 at epoch 14), so its run was extended
# to 17 epochs (in two resumed steps, 14 then 17) once the 3D training had freed the second core.
declare -A EPOCHS=([multiresunet]=17)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [[ $STEP == train || $STEP == all ]]; then
  for arch in $ARCHS; do
    run=runs/dsca_budget_$arch
    mkdir -p runs
    if [[ ! -f $run/config.json ]]; then
      /usr/bin/time -v -o "$run.time" "$PY" -m spinemorph.cli dsca train --config "$CFG" --architecture "$arch" \
        --iterations-per-epoch "${ITERS[$arch]}" --seed 0 --out "$run" --no-progress
    fi
    # resume with a changed number of epochs (see EPOCHS above; e.g. extend a finished run)
    if [[ -n ${EPOCHS[$arch]:-} ]]; then
      /usr/bin/time -v -o "$run.resume.time" "$PY" -m spinemorph.cli dsca train --out "$run" --resume \
        --epochs "${EPOCHS[$arch]}" --no-progress
    fi
  done
fi

if [[ $STEP == evaluate || $STEP == all ]]; then
  for arch in $ARCHS; do
    for data in synthetic phantom real-slabs; do
      "$PY" -m spinemorph.cli dsca evaluate --model "runs/dsca_budget_$arch/best.pt" --data "$data" --device cpu \
        --out "runs/dsca_eval/$arch/$data" --cache-dir runs/dsca_cache --overwrite --no-progress
    done
  done
fi

if [[ $STEP == embed || $STEP == all ]]; then
  ARCHS="$ARCHS" "$PY" - <<'EOF'
"""Copy the trained weights into Resources/Models and write catalog.json + model cards from the measured numbers."""
import json
import os
import shutil
from pathlib import Path

from DuralSacSegLib import models
from DuralSacSegLib.networks import build_network, count_parameters
from DuralSacSegLib.train import EVAL_SPECS
from spinemorph.atomic import atomic_write_text
from spinemorph.spider import SPIDER_ATTRIBUTION, train_mask_cases

ROOT = Path(os.environ.get("DSCA_RUNS_ROOT", Path.cwd()))  # overridable for dry runs
DEST = Path(os.environ.get("DSCA_MODELS_DEST", models.MODELS_DIR))
LABEL = {"multiresunet": "MultiResUNet", "unet": "U-Net", "attention_unet": "Attention U-Net"}
DATA_TEXT = {
    "synthetic": "planes synthesised from the held-out SPIDER label maps (patients 98, 166, 220: never trained on), seed 1001, 60 slices",
    "phantom": "procedural phantom slices (seed 2002, 60 slices; phantom anatomies are drawn from the same family as in training)",
    "real-slabs": "axial planes of the held-out real T2 SPACE slabs (every 4th row, 0.6 mm, on a 320 × 320 grid); the slab is only 12-23 mm wide left-right, so the image is a narrow strip",
}
KEYS = [("n_slices", "slices", "{:d}"), ("precision", "precision", "{:.3f}"), ("recall", "recall", "{:.3f}"),
        ("f1", "F1 / Dice (pooled pixels)", "{:.3f}"), ("mean_slice_dice", "mean per-slice Dice", "{:.3f}"),
        ("accuracy", "accuracy", "{:.4f}"), ("area_mae_mm2", "area MAE (mm²)", "{:.1f}"),
        ("area_mse_mm2", "area MSE (mm⁴, squared mm²)", "{:.0f}"), ("pearson_r", "Pearson r (area)", "{:.3f}"),
        ("ba_mean_diff_mm2", "Bland–Altman mean difference (mm²)", "{:+.1f}"),
        ("ba_loa_low_mm2", "Bland–Altman 95 % limits (mm²)", "{:.1f}")]


def fmt(value, pattern):
    if value is None:
        return "n/a"
    return pattern.format(int(value) if pattern == "{:d}" else value)


def table(evals):
    head = "| metric | " + " | ".join(evals) + " |\n|---|" + "---|" * len(evals) + "\n"
    rows = []
    for key, label, pattern in KEYS:
        cells = []
        for m in evals.values():
            if key == "ba_loa_low_mm2":
                cells.append(f"{fmt(m.get('ba_loa_low_mm2'), '{:.1f}')} … {fmt(m.get('ba_loa_high_mm2'), '{:.1f}')}")
            else:
                cells.append(fmt(m.get(key), pattern))
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


entries = []
for arch in os.environ["ARCHS"].split():
    run = ROOT / "runs" / f"dsca_budget_{arch}"
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    fold = json.loads((run / f"fold{summary['best_fold']}" / "metrics.json").read_text())
    history = [l.split(",") for l in (run / f"fold{summary['best_fold']}" / "history.csv").read_text().splitlines()[1:]]
    weights = f"dsca_{arch}.pt"
    shutil.copyfile(run / "best.pt", DEST / f".{weights}.tmp")
    os.replace(DEST / f".{weights}.tmp", DEST / weights)  # atomic: temporary file in the same folder
    sha = models.sha256_of(DEST / weights)
    evals = {d: json.loads((ROOT / "runs" / "dsca_eval" / arch / d / "metrics.json").read_text()) for d in EVAL_SPECS}
    for d, m in evals.items():
        assert m["weights_sha256"] == sha, f"evaluation of {arch} on {d} used other weights"
    real = evals["real-slabs"]
    evals["real-slabs, within slab"] = {"n_slices": real["n_slices"], "accuracy": None,
                                         **{k[len("within_valid_"):]: v for k, v in real.items() if k.startswith("within_valid_")}}
    iters = int(cfg["epochs"]) * int(cfg["iterations_per_epoch"])
    wall_min = fold["train_seconds"] / 60
    name = f"dsca-{arch.replace('_', '-')}"
    metric_keys = ("precision", "recall", "f1", "mean_slice_dice", "area_mae_mm2", "area_mse_mm2", "pearson_r",
                   "ba_mean_diff_mm2", "ba_loa_low_mm2", "ba_loa_high_mm2", "n_slices")
    entries.append({
        "name": name,
        "architecture": arch,
        "description": f"{LABEL[arch]} dural sac segmentation, CPU budget training on synthetic axial slices (SPIDER label maps + phantoms)",
        "weights": weights,
        "sha256": sha,
        "bytes": (DEST / weights).stat().st_size,
        "parameters": count_parameters(build_network(arch)),
        "input_size": [320, 320],
        "normalization": models.NORMALIZATION,
        "threshold": round(20 / 21, 6),
        "threshold_rule": "20/21, prior correction for weighted BCE positive weight 20 (DuralSacSegLib.models.decision_threshold); the weights file stores 0.5 = not chosen",
        "metrics_validation_fold0_threshold": 0.5,
        "training_config": "configs/budget_cpu.json",
        "seed": cfg["seed"],
        "iterations": iters,
        "best_epoch": fold["best_epoch"],
        "train_wall_minutes": round(wall_min, 1),
        "card": f"dsca_{arch}.md",
        "metrics": {d: {k: evals[d].get(k) for k in metric_keys} for d in evals},
        "metrics_validation_fold0": {k: fold["validation"].get(k) for k in metric_keys},
    })
    hist = "\n".join(f"| {h[0]} | {float(h[1]):.4f} | {float(h[2]):.4f} | {float(h[3]):.0f} |" for h in history)
    card = f"""# Model card: `{name}` ({LABEL[arch]})

Dural sac segmentation of axial lumbar MR slices (1 channel in, 1 logit out), the network of DuralSacSeg's
`{name}` catalogue entry. Weights `{weights}` (float16, {entries[-1]['bytes'] / 1e6:.1f} MB, SHA-256 `{sha}`),
{entries[-1]['parameters']:,} parameters, architecture `{arch}` (`DuralSacSegLib.networks`).

**Status: budget weights.** Trained for {iters} iterations on one CPU thread — far less than the source paper's
recipe (20 epochs × 5 folds on real axial T1 images). The numbers below are what this model measures; they are not
comparable to the source method's reported MultiResUNet figures (r 0.9917, MAE 17.9–23.7 mm², F1 0.945, quoted from the
project's method description; not re-derived here), which were measured on clinical axial T1 images
that are not available here.

## Intended use
Research use: per-slice dural sac cross-sectional area (DSCA) from axial lumbar MRI via `spinemorph dsca segment` or
the DuralSacSeg Slicer module; check every mask visually. Not a medical device.

## Input
Axial slice placed on a 320 × 320 grid (field of view padded to a square, aspect kept), intensities normalised per
slice with `spinemorph.intensity.normalize_percentile` (0.5–99.5 percentiles → [0, 1]); output: sigmoid, mask at the
decision threshold below.

## Inference
`dsca segment` (and the Slicer module) run the network on whole 320 × 320 slices only to locate the canal (3 slices,
or one per 8 in longer stacks) and on a 128 × 128 window around it on the others (`DuralSacSegLib.roi`; the window
size is the training crop size); `--crop-px 0` / "Whole slices" runs every slice whole. The metrics below were
measured slice by slice on whole 320 × 320 slices; `docs/performance.md` reports what the window changes on held-out data.

## Training data
Synthetic axial planes (`spinemorph.samples.dsca_samples`, n = {cfg['data']['train']['n']}, seed {cfg['data']['train']['seed']}):
SynthSeg-style images (T1-like 50 %, T2-like 25 %, random contrast 25 %) generated from the real SPIDER label maps of
the {len(train_mask_cases())} training series (held-out patients never used) and from the procedural phantom (30 %),
field of view 150–220 mm, simulated slice thickness 3–5 mm, tilted planes. No real image was used for training.

SPIDER data: {SPIDER_ATTRIBUTION}

## Recipe (`configs/budget_cpu.json`, seed {cfg['seed']})
Weighted binary cross-entropy (positive weight {cfg['loss']['pos_weight']:g}), Adam (lr {cfg['optimizer']['lr']:g}),
batch {cfg['batch_size']}; random {cfg['crop']['size']} × {cfg['crop']['size']} crops at the 320-grid scale
({100 * (1 - cfg['crop']['negative_fraction']):.0f} % containing the dural sac, {100 * cfg['crop']['negative_fraction']:.0f} % anywhere), left-right flips, random gamma
{cfg['augment']['gamma'][0]}–{cfg['augment']['gamma'][1]}; {cfg['epochs']} epochs × {cfg['iterations_per_epoch']} iterations = {iters} iterations; fold 0 of
{cfg['folds']} (split by patient: {fold['n_train_slices']} training / {fold['n_val_slices']} validation slices; validation loss on
{cfg['validation']['max_slices']} full 320 × 320 validation slices after each epoch); the epoch with the lowest validation loss
(epoch {fold['best_epoch']}) is kept. Training time: {wall_min:.1f} min on 1 thread of a shared 2-core CPU.

| epoch | train loss | validation loss | seconds |
|---|---|---|---|
{hist}

## Metrics (measured with `spinemorph dsca evaluate`, data never trained on)
Pixel metrics pooled over all pixels of the 320 × 320 grid; areas in mm² (pixels × pixel area); Pearson r and
Bland–Altman (predicted − true) over slices.

- synthetic: {DATA_TEXT['synthetic']};
- phantom: {DATA_TEXT['phantom']};
- real-slabs: {DATA_TEXT['real-slabs']};
- real-slabs, within slab: the same planes, prediction outside the slab strip (the zero padding, where no image
  exists) ignored — the true sac lies inside the strip.

{table(evals)}
Validation fold 0 at threshold 0.5 (written by the training run, which then evaluated at 0.5 — fixed since; not re-run) (synthetic planes of patients outside the training fold, {fold['validation']['n_slices']} slices):
F1 {fmt(fold['validation'].get('f1'), '{:.3f}')}, area MAE {fmt(fold['validation'].get('area_mae_mm2'), '{:.1f}')} mm²,
Pearson r {fmt(fold['validation'].get('pearson_r'), '{:.3f}')}.

Reproduce (deterministic on the CPU):

```
spinemorph dsca evaluate --model {name} --data synthetic --out eval/synthetic
spinemorph dsca evaluate --model {name} --data phantom --out eval/phantom
spinemorph dsca evaluate --model {name} --data real-slabs --out eval/real-slabs
```

Retrain: `scripts/train_dsca_embedded.sh` (runs `spinemorph dsca train --config DuralSacSeg/Resources/Models/configs/budget_cpu.json --architecture {arch} --iterations-per-epoch {cfg['iterations_per_epoch']} --seed {cfg['seed']}`{'' if int(cfg['epochs']) == 8 else ', then `spinemorph dsca train --out RUN --resume --epochs ' + str(cfg['epochs']) + '`'}).

## Limitations
- Trained only on synthetic images; real-image performance is measured here only on the narrow real T2 SPACE slab
  strips (a different appearance from a full axial slice) — validate on your own axial T1/T2 data before use.
- Budget training (crops, {iters} iterations): expect false positives on CSF-bright or fluid-like structures away from
  the canal and rough outlines; use `spinemorph dsca train --config configs/paper.json --data-dir DIR` (your own labelled axial series) on a GPU
  for the full recipe.
"""
    atomic_write_text(DEST / f"dsca_{arch}.md", card)

catalog = {"format_version": 1, "default": "dsca-multiresunet" if any(e["name"] == "dsca-multiresunet" for e in entries) else entries[0]["name"],
           "models": entries}
atomic_write_text(DEST / "catalog.json", json.dumps(catalog, indent=2) + "\n")
print("wrote", DEST / "catalog.json", [e["name"] for e in entries])
EOF
fi
