#!/usr/bin/env bash
# Start or continue the fine FORAMEN3D training (FORAMEN3DLib.train_fine) in the background, from its own git
# worktree so that edits in the main checkout do not change the code under a running training.
#
#   scripts/train_foramen_fine.sh            # resume the run (the one command after any interruption)
#   scripts/train_foramen_fine.sh start      # new run (refused if the run folder holds a config.json)
#   scripts/train_foramen_fine.sh status     # last log lines and whether it runs
#   scripts/train_foramen_fine.sh snapshot   # copy the run's last weights (fp16) + history + log to training/foramen_fine/
#
# On a machine without the run folder (ignored files lost), the default mode starts a new run from the committed
# training snapshot training/foramen_fine/last.pt when it is further on than the embedded model, else from the
# embedded weights FORAMEN3D/Resources/Models/foramen3d_fine_cpu.pt, at their recorded iteration (--init-weights): the
# learning-rate schedule continues, the optimizer's moments start afresh. The snapshot is a training state, not an
# embedded model: embedding needs the held-out evaluation (scripts/export_fine_weights.py, the model card).
#
# Environment: FINE_WORKTREE (default ../train3d beside the repository; created from HEAD when missing),
# FINE_RUN (default <repo>/runs/foramen_fine), FINE_CONFIG (default the worktree's
# FORAMEN3D/Resources/Models/configs/foramen3d_fine.json), PYTHON (default <repo>/.venv/bin/python),
# FINE_MAX_ITERATIONS (extends a resumed run).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WT=${FINE_WORKTREE:-$(cd "$REPO/.." && pwd)/train3d}
RUN=${FINE_RUN:-$REPO/runs/foramen_fine}
PY=${PYTHON:-$REPO/.venv/bin/python}
CFG=${FINE_CONFIG:-$WT/FORAMEN3D/Resources/Models/configs/foramen3d_fine.json}
MODE=${1:-resume}
if [ ! -d "$WT/FORAMEN3D/FORAMEN3DLib" ]; then
  if [ "${1:-resume}" = status ]; then echo "no worktree at $WT (nothing started yet)"; exit 0; fi
  if [ -e "$WT" ]; then
    echo "error: $WT exists but is not a worktree of this repository; remove it or set FINE_WORKTREE" >&2
    exit 1
  fi
  git -C "$REPO" worktree add --detach "$WT" HEAD  # the code under the training: this commit, not later edits
fi
export PYTHONPATH="$WT:$WT/DuralSacSeg:$WT/FORAMEN3D"
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2
if [ "$MODE" = snapshot ]; then
  SNAP=$REPO/training/foramen_fine
  [ -f "$RUN/last.pt" ] || { echo "error: no $RUN/last.pt to snapshot" >&2; exit 1; }
  mkdir -p "$SNAP"
  for f in last.pt history.csv train.log; do
    [ -f "$RUN/$f" ] && cp "$RUN/$f" "$SNAP/.$f.tmp" && mv "$SNAP/.$f.tmp" "$SNAP/$f"
  done
  echo "snapshot in $SNAP (iteration $("$PY" -c "import sys; sys.path[:0]=['$REPO/FORAMEN3D','$REPO']
from pathlib import Path; from FORAMEN3DLib.models3d import read_weights; print(read_weights(Path('$SNAP/last.pt'))['meta'].get('iteration'))")); commit it"
  exit 0
fi
if [ "$MODE" = status ]; then
  pgrep -af "FORAMEN3DLib.train_fine --out $RUN" || echo "not running"
  tail -n 5 "$RUN/train.log" 2>/dev/null || true
  exit 0
fi
if pgrep -f "FORAMEN3DLib.train_fine --out $RUN" >/dev/null; then
  echo "error: a training of $RUN is already running" >&2
  exit 1
fi
LIB=$(cd "$WT" && "$PY" -c "import FORAMEN3DLib, spinemorph; print(FORAMEN3DLib.__file__, spinemorph.__file__)")
case "$LIB" in
  "$WT"/*) ;;
  *) echo "error: python imports $LIB, not the worktree $WT" >&2; exit 1 ;;
esac
mkdir -p "$RUN"
ARGS=(--out "$RUN")
if [ "$MODE" = start ]; then
  ARGS+=(--config "$CFG")
elif [ ! -f "$RUN/checkpoint.pt" ] && [ ! -f "$RUN/config.json" ]; then
  INIT=$WT/FORAMEN3D/Resources/Models/foramen3d_fine_cpu.pt
  SNAPW=$REPO/training/foramen_fine/last.pt
  if [ -f "$SNAPW" ]; then
    INIT=$("$PY" - "$INIT" "$SNAPW" <<'PYEOF'
import sys
from FORAMEN3DLib.models3d import read_weights
from pathlib import Path
it = {p: int((read_weights(Path(p)).get("meta") or {}).get("iteration", 0)) for p in sys.argv[1:]}
print(max(sys.argv[1:], key=lambda p: it[p]))
PYEOF
)
  fi
  echo "no checkpoint in $RUN: continuing from the committed weights $INIT"
  ARGS+=(--config "$CFG" --init-weights "$INIT")
  if [ -n "${FINE_MAX_ITERATIONS:-}" ]; then ARGS+=(--max-iterations "$FINE_MAX_ITERATIONS"); fi
else
  ARGS+=(--resume)
  if [ -n "${FINE_MAX_ITERATIONS:-}" ]; then ARGS+=(--max-iterations "$FINE_MAX_ITERATIONS"); fi
fi
cd "$WT"
echo "$(date -u '+%F %T') launch $MODE: $LIB (worktree commit $(git -C "$WT" rev-parse --short HEAD))" >> "$RUN/launch.log"
nohup nice -n 5 "$PY" -m FORAMEN3DLib.train_fine "${ARGS[@]}" >> "$RUN/stdout.log" 2>&1 &
echo "started pid $! ($MODE); log: $RUN/train.log"
