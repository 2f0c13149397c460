#!/usr/bin/env bash
# DSCA training with real images (issue 16): three networks, resumable, in the background from a git worktree.
#
#   scripts/train_dsca_real.sh start     # create/refresh nothing that exists; start (or resume) in the background
#   scripts/train_dsca_real.sh status    # last log lines, per-run epochs, running or not
#   scripts/train_dsca_real.sh stop      # stop the background job (its state is saved; `start` resumes it)
#   scripts/train_dsca_real.sh snapshot  # before a session ends: fp16 best weights + history + logs into
#                                        # training/dsca_real/ (commit them); on a new machine `start` warm-starts
#                                        # each missing run from them (spinemorph dsca train --init-weights)
#   scripts/train_dsca_real.sh run       # the same work in the foreground (what `start` runs under nohup)
#
# What it does (all paths inside the worktree $WT, default ../dsca_train_wt, created with `git worktree add --detach`
# at the current commit on the first start, so the training code stays fixed while the main tree changes):
#   1. data: the training data of configs/real_cpu.json are generated once into $WT/runs/dsca_cache (800 synthetic
#      style-v2 planes from the training label maps + phantoms; every canal plane, every 4th row, of the real T2 SPACE
#      slabs of the training patients minus the validation split; the validation planes) — shared by the 3 runs;
#   2. train, one network at a time with both cores (2 torch threads), in the order $ARCHS (default: unet
#      attention_unet multiresunet — fastest first, so a usable model exists early): `spinemorph dsca train --config
#      configs/real_cpu.json --architecture A --out runs/dsca_real_A` (or `--resume` when the run exists). The state is
#      saved atomically after every epoch and every 5 minutes inside an epoch; a killed job loses at most 5 minutes;
#   3. per finished run trained with "keep_epoch_weights" (every epoch's weights kept): scripts/dsca_choose_checkpoint.py
#      --apply picks the epoch on the real validation planes and T1 phantom planes together (runs/dsca_real_A/
#      checkpoint_choice.json; best.pt then holds that epoch); then scripts/dsca_calibrate.py (threshold + post-processing on the validation split of training
#      patients) then scripts/dsca_evaluate.py with that choice (held-out real slabs inside the strip, held-out
#      synthetic, phantom study) -> runs/dsca_real_A/calibration.json, runs/dsca_real_A/eval/evaluation.json;
#   4. when all three are evaluated: scripts/dsca_select_default.py ranks them (runs/dsca_real_default.json).
#      Embedding the weights into DuralSacSeg/Resources/Models (cards, catalogue) is a separate, reviewed step.
# Log: $WT/runs/dsca_real.log (plus runs/dsca_real_A/train.log). Budget: EPOCHS (default 24 x 150 iterations of
# batch 8 = 3600 iterations per network); extend a finished run with EPOCHS=40 scripts/train_dsca_real.sh start.
# Wall time on the 2-core machine: see docs/performance.md (DSCA section).
set -euo pipefail
MAIN="$(cd "$(dirname "$0")/.." && pwd)"
WT=${WT:-"$MAIN/../dsca_train_wt"}
PY=${PY:-"$MAIN/.venv/bin/python"}
ARCHS=${ARCHS:-"unet attention_unet multiresunet"}
EPOCHS=${EPOCHS:-24}
THREADS=${THREADS:-2}
CFG=DuralSacSeg/Resources/Models/configs/real_cpu.json
SNAP=training/dsca_real   # committed snapshots (scripts/export_dsca_training.py), used when a run folder is missing
STEP=${1:-status}
LOG="$WT/runs/dsca_real.log"
PIDFILE="$WT/runs/dsca_real.pid"

log() { echo "$(date -u '+%F %T') $*" | tee -a "$LOG"; }

epochs_done() {  # rows of the run's fold-0 history (0 when none)
  local h=$1/fold0/history.csv
  if [[ -f $h ]]; then echo $(($(wc -l < "$h") - 1)); else echo 0; fi
}

calibrated_on() {  # true when calibration.json was measured on the run's current best.pt (sha256, not mtime)
  local want
  want=$(sha256sum "$1/best.pt" | cut -d' ' -f1)
  "$PY" -c "import json,sys; sys.exit(json.load(open('$1/calibration.json')).get('weights_sha256') != '$want')"
}

ensure_worktree() {
  if [[ ! -d $WT ]]; then
    git -C "$MAIN" worktree add --detach "$WT" HEAD
  fi
  mkdir -p "$WT/runs"
}

run_all() {
  cd "$WT"
  # the worktree's code, not the main tree's editable install
  export PYTHONPATH="$WT:$WT/DuralSacSeg:$WT/FORAMEN3D${PYTHONPATH:+:$PYTHONPATH}"
  export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
  log "start: worktree $WT at $(git -C "$WT" rev-parse --short HEAD), archs $ARCHS, epochs $EPOCHS, threads $THREADS"
  for arch in $ARCHS; do
    run=runs/dsca_real_$arch
    if [[ ! -f $run/config.json ]]; then
      init=()
      if [[ -f $SNAP/$arch.pt ]]; then
        init=(--init-weights "$SNAP/$arch.pt")
        log "$arch: new run, warm start from the committed snapshot $SNAP/$arch.pt"
      else
        log "$arch: new run"
      fi
      nice -n 5 "$PY" -m spinemorph.cli dsca train --config "$CFG" --architecture "$arch" --epochs "$EPOCHS" \
        --threads "$THREADS" --out "$run" --no-progress "${init[@]}" >> "$LOG" 2>&1
    elif (( $(epochs_done "$run") >= EPOCHS )); then
      log "$arch: $EPOCHS epochs already done; not resumed (resuming would re-export best.pt)"
    else
      log "$arch: resume"
      nice -n 5 "$PY" -m spinemorph.cli dsca train --out "$run" --resume --epochs "$EPOCHS" --no-progress >> "$LOG" 2>&1
    fi
    if [[ -d $run/fold0/epochs && ! -f $run/checkpoint_choice.json && -f $run/best.pt ]]; then
      log "$arch: choose the checkpoint (real validation planes + T1 phantom planes)"
      "$PY" scripts/dsca_choose_checkpoint.py "$run" --apply --threads "$THREADS" >> "$LOG" 2>&1
    fi
    if [[ ! -f $run/calibration.json ]] || ! calibrated_on "$run"; then
      log "$arch: calibrate on the validation split"
      "$PY" scripts/dsca_calibrate.py --model "$run/best.pt" --out "$run/calibration.json" --threads "$THREADS" >> "$LOG" 2>&1
    fi
    if [[ ! -f $run/eval/evaluation.json || $run/calibration.json -nt $run/eval/evaluation.json ]]; then
      thr=$("$PY" -c "import json;print(json.load(open('$run/calibration.json'))['chosen']['threshold'])")
      post=$("$PY" -c "import json;print(json.load(open('$run/calibration.json'))['chosen']['postprocess'])")
      log "$arch: evaluate on held-out data (threshold $thr, postprocess $post)"
      "$PY" scripts/dsca_evaluate.py --model "$run/best.pt" --threshold "$thr" --postprocess "$post" \
        --out "$run/eval" --threads "$THREADS" >> "$LOG" 2>&1
    fi
  done
  evals=()
  for arch in multiresunet unet attention_unet; do
    [[ -f runs/dsca_real_$arch/eval/evaluation.json ]] && evals+=("runs/dsca_real_$arch/eval/evaluation.json")
  done
  if (( ${#evals[@]} == 3 )); then
    "$PY" scripts/dsca_select_default.py "${evals[@]}" --out runs/dsca_real_default.json >> "$LOG" 2>&1
    log "done: ranking in $WT/runs/dsca_real_default.json"
  fi
}

case $STEP in
  start)
    ensure_worktree
    if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "already running (pid $(cat "$PIDFILE")); log $LOG"; exit 0
    fi
    nohup env WT="$WT" PY="$PY" ARCHS="$ARCHS" EPOCHS="$EPOCHS" THREADS="$THREADS" \
      setsid bash "$MAIN/scripts/train_dsca_real.sh" run > /dev/null 2>&1 &
    echo $! > "$PIDFILE"
    echo "started (pid $(cat "$PIDFILE")); follow with: tail -f $LOG"
    ;;
  run)
    ensure_worktree
    run_all
    ;;
  snapshot)
    # commit-ready fp16 best weights + history + log of every run so far into the main tree's $SNAP
    for arch in $ARCHS; do
      if [[ -f $WT/runs/dsca_real_$arch/fold0/state.pt && -f $WT/runs/dsca_real_$arch/fold0/best.pt ]]; then
        (cd "$MAIN" && PYTHONPATH="$MAIN:$MAIN/DuralSacSeg" "$PY" scripts/export_dsca_training.py \
          "$WT/runs/dsca_real_$arch" --out "$MAIN/$SNAP")
      fi
    done
    cp -f "$LOG" "$MAIN/$SNAP/dsca_real.log" 2>/dev/null || true
    ;;
  status)
    if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then echo "running (pid $(cat "$PIDFILE"))"; else echo "not running"; fi
    for arch in $ARCHS; do
      h=$WT/runs/dsca_real_$arch/fold0/history.csv
      [[ -f $h ]] && echo "$arch: $(($(wc -l < "$h") - 1)) epochs done; last: $(tail -1 "$h")"
    done
    [[ -f $LOG ]] && tail -5 "$LOG"
    ;;
  stop)
    if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      kill -- -"$(cat "$PIDFILE")" 2>/dev/null || kill "$(cat "$PIDFILE")"
      echo "stopped; the last checkpoint is kept, 'start' resumes"
    else
      echo "not running"
    fi
    ;;
  *)
    echo "usage: $0 start|status|stop|snapshot|run" >&2; exit 2 ;;
esac
