"""Commit-ready snapshot of a DSCA training run, so it can go on from git on a new machine.

``python scripts/export_dsca_training.py runs/dsca_real_unet [--out training/dsca_real]`` writes, replacing the
previous files of that architecture:

* ``OUT/<architecture>.pt`` — the fold's best weights so far (fp16, SpineMorph weights format) with the fold's
  training state in ``config["training_state"]`` (epoch reached, best epoch, best validation loss / Dice, history,
  seconds), which ``spinemorph dsca train --init-weights`` continues from (optimizer state fresh);
* ``OUT/<architecture>_history.csv`` and ``OUT/<architecture>_train.log`` — the run's history and log.

These are training snapshots, not embedded models: embedding (catalogue, card) is a separate reviewed step.
``scripts/train_dsca_real.sh`` uses ``OUT/<architecture>.pt`` when the run folder is missing.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from pathlib import Path

import torch
from DuralSacSegLib.models import read_weights_file

from spinemorph.atomic import atomic_write_bytes


def export(run: Path, out: Path, fold: int = 0) -> Path:
    """Write the snapshot of ``run``'s fold ``fold`` into ``out``; return the weights path."""
    fold_dir = run / f"fold{fold}"
    saved = torch.load(fold_dir / "state.pt", map_location="cpu", weights_only=True)
    state = json.loads(saved["state"])
    ckpt = read_weights_file(fold_dir / "best.pt")
    arch = str(ckpt["architecture"])
    best_epoch = int(state["best_epoch"])
    # resume from the best weights: the epochs after the best one are trained again (with fresh randomness)
    history = [h for h in state["history"] if int(h["epoch"]) <= best_epoch]
    ckpt["config"] = {**(ckpt.get("config") or {}), "training_state": {
        "fold": fold, "epoch": best_epoch, "epochs_reached": int(state["epoch"]), "best_epoch": best_epoch,
        "best_val_loss": state.get("best_val_loss"), "best_val_dice": state.get("best_val_dice"),
        "history": history, "seconds": sum(float(h.get("seconds", 0.0)) for h in history), "run": run.name}}
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    dst = atomic_write_bytes(out / f"{arch}.pt", buf.getvalue())
    for src, name in ((fold_dir / "history.csv", f"{arch}_history.csv"), (run / "train.log", f"{arch}_train.log")):
        if src.is_file():
            shutil.copyfile(src, out / name)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", type=Path, default=Path("training/dsca_real"))
    ap.add_argument("--fold", type=int, default=0)
    a = ap.parse_args()
    dst = export(a.run, a.out, a.fold)
    ts = read_weights_file(dst)["config"]["training_state"]
    print(f"{dst}: best epoch {ts['best_epoch']} (validation Dice {ts['best_val_dice']}), "
          f"run had reached epoch {ts['epochs_reached']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
