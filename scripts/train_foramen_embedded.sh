#!/usr/bin/env bash
# Train, install and evaluate the embedded FORAMEN3D weights (config FORAMEN3D/Resources/Models/configs/foramen3d_budget_cpu.json).
#
#   scripts/train_foramen_embedded.sh [RUN_DIR] [STEP...]
#
# (same as "spinemorph foramen train/evaluate"; called through FORAMEN3DLib.cli_seg so that it does not depend on
# the command-group wiring)
# STEP: train (resumes an interrupted run), install (fp16 best weights -> Resources/Models + foramen3d_catalog.json),
#       evaluate (the three held-out data sets of the model card). Default: all three, in that order.
# One CPU thread (the config sets torch threads = 1). Needs the SPIDER data (../shared/data/spider or $SPINEMORPH_SPIDER).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUN_DIR=${1:-../runs/foramen3d_budget_cpu}
shift || true
STEPS=${*:-train install evaluate}
CONFIG=FORAMEN3D/Resources/Models/configs/foramen3d_budget_cpu.json
NAME=foramen3d-budget-cpu
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

for step in $STEPS; do
  case "$step" in
    train)
      if [ -f "$RUN_DIR/config.json" ]; then
        $PY -m FORAMEN3DLib.cli_seg train --out "$RUN_DIR" --resume
      else
        $PY -m FORAMEN3DLib.cli_seg train --config "$CONFIG" --out "$RUN_DIR" --seed 0
      fi ;;
    install)
      $PY -c "import sys; from FORAMEN3DLib.models3d import install_model; print(install_model(sys.argv[1], sys.argv[2], default=True))" \
        "$RUN_DIR/fold0/best.pt" "$NAME" ;;
    evaluate)
      # seeds: EVAL_SEED_BASE (1000000) + 0..; training sample seeds reach 1285873 but none is one of these
      # (checked by Testing/test_train3d.py::test_training_seeds_are_not_evaluation_seeds)
      $PY -m FORAMEN3DLib.cli_seg evaluate --model "$NAME" --data synthetic --n 10 --out "$RUN_DIR/eval_synthetic" --overwrite
      $PY -m FORAMEN3DLib.cli_seg evaluate --model "$NAME" --data spider-heldout --n 8 --out "$RUN_DIR/eval_spider_heldout" --overwrite
      $PY -m FORAMEN3DLib.cli_seg evaluate --model "$NAME" --data phantom --n 4 --out "$RUN_DIR/eval_phantom" --overwrite ;;
    *) echo "unknown step $step (train, install, evaluate)" >&2; exit 2 ;;
  esac
done
