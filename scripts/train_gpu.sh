#!/usr/bin/env bash
# One command on a CUDA machine: train the FORAMEN3D source-method recipe (paper layout: full 128x192x192 input,
# base 16, depth 4; one fold, wall-time capped) and the fine 0.8 mm 5-class model, from the SPIDER data in
# ../shared/data/spider (or $SPINEMORPH_SPIDER), within about 10 minutes of GPU time (PAPER_WALL_S + FINE_WALL_S of
# training, plus validation); write weights (fp16) + a model card per model into OUT. Then (issue 16) the three
# DSCA networks on real images (configs/real_cpu.json on CUDA: the paper's loss, optimizer, batch and DSCA_EPOCHS = 20
# epochs of DSCA_ITERS iterations, real T2 SPACE slab planes of training patients + synthetic planes), each followed
# by scripts/dsca_choose_checkpoint.py --apply (real validation planes + T1 phantom planes) on the GPU; the run
# folders OUT/dsca_<arch> are then calibrated, evaluated and embedded on any machine with
# scripts/dsca_calibrate.py, scripts/dsca_evaluate.py and scripts/embed_dsca_real.py (README, issue 16).
#
#   scripts/train_gpu.sh                 # CUDA; OUT=runs/gpu
#   scripts/train_gpu.sh --install       # and install the FORAMEN3D models into FORAMEN3D/Resources/Models
#   scripts/train_gpu.sh --only dsca     # only the DSCA networks (or --only foramen)
#   scripts/train_gpu.sh --dry-run       # CPU, a few iterations of each: checks the plumbing on any machine
#
# The device machines of this workplace receive the repository's working tree only (at most 64 MiB, SPIDER data
# not included): see docs/performance.md "GPU runs" for what has to travel and how.
#
# Sample synthesis runs on the CPU before / between GPU steps (paper: 3 samples x ~50 cases, ~4 s each; fine: the
# initial pool, ~4 s each) and is not GPU time. Environment: OUT, PYTHON, PAPER_WALL_S (default 240),
# FINE_WALL_S (default 300), DSCA_EPOCHS (default 20), DSCA_ITERS (default 150), DSCA_ARCHS (default "unet
# attention_unet multiresunet").
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
OUT=${OUT:-$REPO/runs/gpu}
PAPER_WALL_S=${PAPER_WALL_S:-240}
FINE_WALL_S=${FINE_WALL_S:-300}
DSCA_EPOCHS=${DSCA_EPOCHS:-20}
DSCA_ITERS=${DSCA_ITERS:-150}
DSCA_ARCHS=${DSCA_ARCHS:-"unet attention_unet multiresunet"}
DRY=0
INSTALL=0
ONLY=all
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --install) INSTALL=1 ;;
    --only) shift; ONLY=${1:-}; case "$ONLY" in dsca|foramen) ;; *) echo "error: --only takes dsca or foramen" >&2; exit 2 ;; esac ;;
    *) echo "usage: $0 [--dry-run] [--install] [--only dsca|foramen]" >&2; exit 2 ;;
  esac
  shift
done
export PYTHONPATH="$REPO:$REPO/DuralSacSeg:$REPO/FORAMEN3D${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DRY" = 0 ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA device (use --dry-run to test on a CPU)')"
fi
mkdir -p "$OUT"
if [ "$ONLY" != foramen ]; then
  # ---------------------------------------------------------------- DSCA (issue 16): three networks, real images
  DEV=cuda; [ "$DRY" = 1 ] && DEV=cpu
  "$PY" - "$DRY" "$OUT" "$REPO/DuralSacSeg/Resources/Models/configs/real_cpu.json" "$DSCA_EPOCHS" "$DSCA_ITERS" <<'PYEOF'
import json, sys
dry, out, src, epochs, iters = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
cfg = json.load(open(src))
cfg.update({"name": "real_gpu", "device": "cuda", "num_threads": 4, "epochs": epochs, "iterations_per_epoch": iters,
            "keep_epoch_weights": True, "checkpoint_minutes": 0})
for part in cfg["data"]["train"] + [cfg["data"]["validation"]]:
    part["cache_dir"] = f"{out}/dsca_cache"
if dry:  # a few planes of one training and one validation patient, two epochs of two iterations
    cfg.update({"device": "cpu", "num_threads": 2, "epochs": 2, "iterations_per_epoch": 2})
    syn, slabs = cfg["data"]["train"]
    syn["n"] = 4
    slabs.update({"patients": ["18"], "row_step": 64})
    cfg["data"]["validation"].update({"patients": ["5"], "row_step": 64})
json.dump(cfg, open(f"{out}/dsca_gpu.json", "w"), indent=2)
PYEOF
  CHOOSE=(--device "$DEV" --threads 4)
  [ "$DRY" = 1 ] && CHOOSE=(--device cpu --threads 2 --row-step 128 --phantom-n 2)
  for arch in $DSCA_ARCHS; do
    TD=$(date +%s)
    if [ -f "$OUT/dsca_$arch/config.json" ]; then  # a run cut off earlier (or done): continue it
      "$PY" -m spinemorph.cli dsca train --out "$OUT/dsca_$arch" --resume --no-progress
    else
      "$PY" -m spinemorph.cli dsca train --config "$OUT/dsca_gpu.json" --architecture "$arch" --out "$OUT/dsca_$arch" \
        --no-progress
    fi
    "$PY" "$REPO/scripts/dsca_choose_checkpoint.py" "$OUT/dsca_$arch" --apply "${CHOOSE[@]}"
    echo "dsca $arch: $(( $(date +%s) - TD )) s (training + checkpoint choice); run folder $OUT/dsca_$arch"
  done
  if [ "$ONLY" = dsca ]; then
    echo "train_gpu.sh done (DSCA only); next, on any machine: scripts/dsca_calibrate.py --model RUN/fold0/best.pt --out RUN/calibration.json, scripts/dsca_evaluate.py ..., scripts/embed_dsca_real.py RUN"
    exit 0
  fi
fi
CONFIGS="$REPO/FORAMEN3D/Resources/Models/configs"
"$PY" - "$DRY" "$OUT" "$CONFIGS" "$PAPER_WALL_S" "$FINE_WALL_S" <<'PYEOF'
import json, sys
dry, out, configs, paper_wall, fine_wall = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
paper = json.load(open(f"{configs}/foramen3d_paper.json"))
paper.update({"name": "paper_gpu", "device": "cuda", "max_wall_s": paper_wall, "threads": 4,
              "cv": {**paper.get("cv", {}), "run_folds": [0]}})
fine = json.load(open(f"{configs}/foramen3d_fine.json"))
fine.update({"name": "fine_gpu", "device": "cuda", "max_wall_s": fine_wall, "patch": [128, 128, 128], "batch_size": 2,
             "max_iterations": 3000, "validate_every": 500, "threads": 4, "channels_last": False, "precision": "bf16",
             "pool": {"initial": {"synth": 33, "slab": 26, "phantom": 4}, "size": {"synth": 33, "slab": 26, "phantom": 4},
                      "refresh_every": 1000000, "refresh_weights": {"synth": 1.0}}})
if dry:
    paper.update({"device": "cpu", "max_wall_s": 20, "epochs": 1, "iterations_per_epoch": 2, "threads": 2,
                  "data": {**paper["data"], "sources": ["spider"], "n_cases": 5, "samples_per_case": 1},
                  "network": {**paper["network"], "base_channels": 4, "depth": 2}, "input_downsample": 4,
                  "cv": {"folds": 5, "run_folds": [0], "fractions": [0.6, 0.2, 0.2]}})
    fine.update({"device": "cpu", "max_wall_s": None, "max_iterations": 3, "validate_every": 3, "patch": [64, 64, 64],
                 "batch_size": 1, "precision": "fp32", "threads": 2, "infer_roi": [64, 64, 64], "val_patients": ["191"],
                 "network": {**fine["network"], "base_channels": 4, "depth": 1, "refine_channels": 4},
                 "pool": {"initial": {"synth": 1, "slab": 1, "phantom": 0}, "size": {"synth": 1, "slab": 1, "phantom": 0},
                          "refresh_every": 1000000, "refresh_weights": {"synth": 1.0}},
                 "sample_weights": {"synth": 0.5, "slab": 0.5}})
json.dump(paper, open(f"{out}/paper_gpu.json", "w"), indent=2)
json.dump(fine, open(f"{out}/fine_gpu.json", "w"), indent=2)
PYEOF
T0=$(date +%s)
"$PY" -m FORAMEN3DLib.cli_seg train --config "$OUT/paper_gpu.json" --out "$OUT/paper" --overwrite --no-progress
T1=$(date +%s)
"$PY" -m FORAMEN3DLib.train_fine --config "$OUT/fine_gpu.json" --out "$OUT/fine" --overwrite
T2=$(date +%s)
"$PY" - "$OUT" "$INSTALL" "$((T1 - T0))" "$((T2 - T1))" <<'PYEOF'
import json, shutil, sys
from pathlib import Path
import torch
from FORAMEN3DLib import models3d
from spinemorph.spider import SPIDER_ATTRIBUTION
out, install, t_paper, t_fine = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (dry run)"
summary = json.loads((out / "paper" / "summary.json").read_text())
fine_hist = (out / "fine" / "history.csv").read_text() if (out / "fine" / "history.csv").exists() else ""
cards = {
    "foramen3d_paper_gpu": (out / "paper" / "fold0" / "best.pt",
        f"# foramen3d-paper-gpu\n\nSource-method layout (3D U-Net, full 128x192x192 input at 0.8 mm, 4 classes) trained "
        f"by `scripts/train_gpu.sh` on {dev} in {t_paper} s wall time (sample synthesis included), one fold.\n\n"
        f"Test metrics of the fold (images synthesised from SPIDER training-patient masks not in the fold's training "
        f"split):\n\n```json\n{json.dumps(summary.get('folds', [{}])[0].get('test', {}), indent=1)[:3000]}\n```\n\n"
        f"Data: {SPIDER_ATTRIBUTION}\n"),
    "foramen3d_fine_gpu": (out / "fine" / "best.pt",
        f"# foramen3d-fine-gpu\n\nFine coarse-to-fine model (5 classes: L4, L4-5 disc, L5, dural sac; 0.8 mm "
        f"144x144x160 crop around L4-5, sliding-window inference) trained by `scripts/train_gpu.sh` on {dev} in "
        f"{t_fine} s wall time. Validation history (validation patients, not the held-out ones):\n\n```\n{fine_hist}```\n\n"
        f"Data: {SPIDER_ATTRIBUTION}\n"),
}
for name, (weights, text) in cards.items():
    if not weights.is_file():
        raise SystemExit(f"error: {weights} was not written")
    shutil.copyfile(weights, out / f"{name}.pt")
    (out / f"{name}.md").write_text(text)
    print(f"wrote {out / (name + '.pt')} and its card")
    if install:
        models3d.install_model(out / f"{name}.pt", name.replace("_", "-"), card=f"{name}.md")
        shutil.copyfile(out / f"{name}.md", models3d.MODELS_DIR / f"{name}.md")
        print(f"installed {name}")
PYEOF
echo "train_gpu.sh done: paper $((T1 - T0)) s, fine $((T2 - T1)) s (wall, incl. CPU sample synthesis); outputs in $OUT"
