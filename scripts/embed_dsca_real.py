#!/usr/bin/env python
"""Embed a finished real-image DSCA training run (issue 16) as a DuralSacSeg catalogue model, from measured files only.

    scripts/embed_dsca_real.py RUN [--dry-run]

``RUN`` is a run folder of ``scripts/train_dsca_real.sh`` (e.g. ``../dsca_train_wt/runs/dsca_real_unet``) holding

* ``fold0/best.pt`` — the best-validation weights (SpineMorph weights format, float16),
* ``fold0/history.csv`` and ``config.json`` — the training record,
* ``calibration.json`` — the decision threshold and post-processing chosen on the validation split of *training*
  patients (``scripts/dsca_calibrate.py``),
* ``eval/evaluation.json`` — the held-out evaluation with that decision (``scripts/dsca_evaluate.py``).

Both JSON files must name the SHA-256 of ``best.pt`` (else the script refuses: they would describe other weights).
The weights are copied byte for byte to ``DuralSacSeg/Resources/Models/dsca_<architecture>.pt`` (replacing the
catalogue entry ``dsca-<architecture>``), the entry gets the calibrated ``decision``, the training record and the
held-out metrics, and the model card ``dsca_<architecture>.md`` is rewritten from those files (nothing typed by hand).
The catalogue default is not changed here: ``scripts/dsca_select_default.py ... --write-catalog`` chooses it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABEL = {"multiresunet": "MultiResUNet", "unet": "U-Net", "attention_unet": "Attention U-Net"}


def _start_text(e: dict) -> str:
    if not e["warm_start"]:
        return f"Trained from scratch (seed {e['seed']})."
    return (f"Warm start: {e['warm_start']} (the epochs up to it ran with that run's own recipe; the rows after it "
            "with the settings above).")


def _warm_start_from_log(run: Path) -> str | None:
    """What the run log's warm-start line (``dsca train --init-weights``) names: the weights file, its epoch and, when
    that file is still there, the recipe stored in it (config name, learning rate); else None."""
    from DuralSacSegLib import models

    log = run / "train.log"
    if not log.is_file():
        return None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.search(r"warm start from (\S+) at epoch (\d+)", line)
        if m:
            src, text = Path(m.group(1)), f"{Path(m.group(1)).name} of the earlier run, epoch {m.group(2)}"
            if src.is_file():
                cfg = dict(models.read_weights_file(src).get("config") or {})
                lr = (cfg.get("optimizer") or {}).get("lr")
                if cfg.get("name") and lr is not None:
                    text += f" (config `{cfg['name']}`, lr {float(lr):g})"
            return text
    return None


def _load(run: Path) -> dict:
    from DuralSacSegLib import models

    best = run / "fold0" / "best.pt"
    for p in (best, run / "config.json", run / "fold0" / "history.csv", run / "calibration.json",
              run / "eval" / "evaluation.json"):
        if not p.is_file():
            raise SystemExit(f"error: {p} is missing: finish the run (scripts/train_dsca_real.sh) before embedding")
    sha = models.sha256_of(best)
    calib = json.loads((run / "calibration.json").read_text(encoding="utf-8"))
    ev = json.loads((run / "eval" / "evaluation.json").read_text(encoding="utf-8"))
    for name, doc in (("calibration.json", calib), ("eval/evaluation.json", ev)):
        if doc.get("weights_sha256") != sha:
            raise SystemExit(f"error: {name} was measured on weights {doc.get('weights_sha256', '?')[:12]}…, not on "
                             f"{best} ({sha[:12]}…): re-run it")
    c = calib["chosen"]
    if abs(float(ev["threshold"]) - float(c["threshold"])) > 1e-6 or ev.get("postprocess") != c["postprocess"]:
        raise SystemExit("error: the evaluation did not use the calibrated decision: re-run scripts/dsca_evaluate.py "
                         f"--threshold {c['threshold']} --postprocess {c['postprocess']}")
    with open(run / "fold0" / "history.csv", newline="", encoding="utf-8") as f:
        history = list(csv.DictReader(f))
    ckpt = models.read_weights_file(best)
    return {"run": run, "best": best, "sha": sha, "calib": calib, "eval": ev, "history": history,
            "config": json.loads((run / "config.json").read_text(encoding="utf-8")), "arch": str(ckpt["architecture"]),
            "ckpt_config": dict(ckpt.get("config") or {})}


def _checkpoint_row(d: dict) -> dict:
    """The history row of the epoch the weights come from: the weights' own ``config["epoch"]`` (written at every save,
    also by the checkpoint choice, which may pick another epoch than the best validation Dice), else the best row."""
    hist = d["history"]
    best_row = max(hist, key=lambda h: float(h["val_dice"]))
    epoch = d["ckpt_config"].get("epoch")
    if epoch is None or int(epoch) == int(best_row["epoch"]):
        return best_row
    row = next((h for h in hist if int(h["epoch"]) == int(epoch)), None)
    if row is None:
        raise SystemExit(f"error: the weights say epoch {epoch}, which fold0/history.csv does not hold")
    return row


def _entry(d: dict, dest: Path, old: dict) -> dict:
    from DuralSacSegLib.networks import build_network, count_parameters

    arch, cfg, hist, c, ev = d["arch"], d["config"], d["history"], d["calib"]["chosen"], d["eval"]
    best_row = max(hist, key=lambda h: float(h["val_dice"]))
    ckpt_row = _checkpoint_row(d)
    real, ph = ev.get("real_slabs_strip") or {}, ev.get("phantom_study") or {}
    keys_real = ("n_planes", "n_patients", "mean_dice", "median_dice", "area_mae_mm2", "area_rmse_mm2", "pearson_r",
                 "ba_mean_diff_mm2", "ba_loa_low_mm2", "ba_loa_high_mm2", "patients", "row_step")
    keys_ph = ("n_slices", "dsca_bias_mm2", "dsca_bias_percent", "area_mae_mm2", "ideal_mask_bias_mm2", "slices_graded")
    metrics = {"real-slabs, held-out, inside the strip": {k: real.get(k) for k in keys_real},
               "phantom study": {k: ph.get(k) for k in keys_ph}}
    if ev.get("synthetic"):
        s = ev["synthetic"]
        metrics["synthetic, held-out"] = {k: s.get(k) for k in ("n_slices", "mean_slice_dice", "f1", "area_mae_mm2",
                                                                 "pearson_r", "ba_mean_diff_mm2")}
    warm = (d["ckpt_config"].get("init_weights") or cfg.get("init_weights") or _warm_start_from_log(d["run"]))
    config_file = f"configs/{cfg.get('name')}.json"
    if not (ROOT / "DuralSacSeg" / "Resources" / "Models" / config_file).is_file():
        config_file = "configs/real_cpu.json"
    return {
        "name": f"dsca-{arch.replace('_', '-')}",
        "architecture": arch,
        "description": f"{LABEL[arch]} dural sac segmentation trained on real T2 SPACE slab planes of training "
                       "patients (loss inside the imaged strip) and synthetic axial planes (style v2), CPU, issue 16",
        "weights": f"dsca_{arch}.pt",
        "sha256": d["sha"],
        "bytes": (dest / f"dsca_{arch}.pt").stat().st_size,
        "parameters": count_parameters(build_network(arch)),
        "input_size": list(cfg.get("input_size", [320, 320])),
        "normalization": old.get("normalization", "percentile_0.5_99.5_per_slice"),
        "threshold": round(float(c["threshold"]), 6),
        "threshold_rule": "chosen on the validation split of training patients (decision below, scripts/dsca_calibrate.py)",
        "decision": {
            "threshold": round(float(c["threshold"]), 6), "postprocess": c["postprocess"],
            "chosen_on": f"validation split of training slab patients {', '.join(d['calib']['validation_patients'])} "
                         "(scripts/dsca_calibrate.py)",
            "validation_mean_dice": c["mean_dice"], "validation_area_mae_mm2": c["area_mae_mm2"],
            "previous_threshold": d["calib"]["current"]["threshold"],
            "previous_postprocess": d["calib"]["current"]["postprocess"],
        },
        "training_config": config_file,
        "seed": cfg.get("seed"),
        "iterations": sum(int(h["iterations"]) for h in hist if int(h["epoch"]) <= int(ckpt_row["epoch"])),
        "epochs": int(ckpt_row["epoch"]),
        "epochs_run": len(hist),
        "checkpoint_epoch": int(ckpt_row["epoch"]),
        "checkpoint_rule": ("best validation Dice" if ckpt_row is best_row else
                            "scripts/dsca_choose_checkpoint.py (real validation score within a phantom-bias tier)"),
        "checkpoint_validation_dice": float(ckpt_row["val_dice"]),
        "best_epoch": int(best_row["epoch"]),
        "best_validation_dice": float(best_row["val_dice"]),
        "train_wall_hours": round(sum(float(h["seconds"]) for h in hist) / 3600, 2),
        "threads": cfg.get("num_threads"),
        "warm_start": warm,
        "card": f"dsca_{arch}.md",
        "metrics": metrics,
        "metrics_command": ev.get("command"),
    }


def _checkpoint_text(e: dict) -> str:
    if e["checkpoint_epoch"] == e["best_epoch"]:
        return f"best-validation checkpoint (epoch {e['best_epoch']}, validation Dice {e['best_validation_dice']:.3f})"
    return (f"checkpoint of epoch {e['checkpoint_epoch']} (validation Dice {e['checkpoint_validation_dice']:.3f}), chosen "
            "by `scripts/dsca_choose_checkpoint.py` (highest accuracy score — Dice and area error — on the real "
            "validation planes within a phantom-bias tier; epoch weights kept by `keep_epoch_weights`), not the "
            f"epoch of best validation Dice ({e['best_epoch']}, {e['best_validation_dice']:.3f})")


def _card(d: dict, e: dict) -> str:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dsca_card_section", ROOT / "scripts" / "dsca_card_section.py")
    card_section = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card_section)
    section = card_section.section

    from spinemorph.spider import HELD_OUT_SLAB_PATIENTS, SPIDER_ATTRIBUTION

    arch, cfg, hist = d["arch"], d["config"], d["history"]
    rows = "\n".join(f"| {h['epoch']} | {float(h['train_loss']):.4f} | {float(h['val_loss']):.4f} | "
                     f"{float(h['val_dice']):.3f} | {float(h['seconds']):.0f} |" for h in hist)
    val = ", ".join(d["calib"]["validation_patients"])
    missed = [f"{x['preset']} seed {x['seed']} slice {x['slice']} ({x['exact_mm2']:.0f} mm²)"
              for x in (d["eval"].get("phantom_study") or {}).get("slices", []) if x["pred_mm2"] == 0 and x["exact_mm2"] > 0]
    phantom_rows = (d["eval"].get("phantom_study") or {}).get("slices", [])
    bridged = [f"{x['preset']} seed {x['seed']} slice {x['slice']} ({x['pred_mm2']:.0f} for {x['exact_mm2']:.0f} mm²)"
               for x in phantom_rows if "bridged_gap" in x.get("qc_flags", "").split(";")]
    notes = []
    if missed:
        notes.append("- Phantom study: the mask is empty on " + "; ".join(missed) + " — the network misses the sac at "
                     "the tightest phantom stenosis (QC flag `empty`: not graded, never called normal); look at such slices.")
    if bridged:
        notes.append("- Phantom study: at the decision threshold the mask breaks at the tightest stenosis; the `track` "
                     "post-processing bridges those slices at probability 0.5 and flags them `bridged_gap` (not graded): "
                     + "; ".join(bridged) + " — the bridged outline is uncertain (too small or too large); read such "
                     "slices by eye.")
    missed_text = "\n".join(notes)
    return f"""# Model card: `{e['name']}` ({LABEL[arch]})

Dural sac segmentation of axial lumbar MR slices (1 channel in, 1 logit out), the network of DuralSacSeg's
`{e['name']}` catalogue entry. Weights `{e['weights']}` (float16, {e['bytes'] / 1e6:.1f} MB, SHA-256 `{e['sha256']}`),
{e['parameters']:,} parameters, architecture `{arch}` (`DuralSacSegLib.networks`). Written by
`scripts/embed_dsca_real.py` from the run's files (every number below comes from them).

**Status: trained on real images (issue 16), CPU budget.** These weights saw {e['iterations']} iterations of batch 8
({e['epochs']} epochs; the run had reached epoch {e['epochs_run']}, {e['train_wall_hours']:.1f} h wall on {e['threads']} threads of a
shared 2-core CPU), one fold — the source recipe is 20 epochs ×
5 folds on clinical axial T1 images, which are not available here. The source method's reported MultiResUNet figures
(r 0.9917, MAE 17.9–23.7 mm², F1 0.945) were measured on those images and are not comparable to the numbers below.

## Intended use
Research use: per-slice dural sac cross-sectional area (DSCA) from axial lumbar MRI via `spinemorph dsca segment` or
the DuralSacSeg Slicer module; check every mask visually (QC flags mark implausible slices, which are never graded).
Not a medical device.

## Input
Axial slice placed on a 320 × 320 grid (field of view padded to a square, aspect kept), intensities normalised per
slice with `spinemorph.intensity.normalize_percentile` (0.5–99.5 percentiles → [0, 1]); output: sigmoid, mask at the
calibrated decision threshold {e['decision']['threshold']:.4f} with post-processing `{e['decision']['postprocess']}`.

## Inference
`dsca segment` (and the Slicer module) run the network on whole 320 × 320 slices only to locate the canal and on a
128 × 128 window around it on the others (`DuralSacSegLib.roi`); `--crop-px 0` / "Whole slices" runs every slice whole.

## Training data (`{e['training_config']}`)
Mixed 50/50 per crop: (1) every canal plane (every 4th PNG row, 0.6 mm pixels on the 320 grid) of the **real** T2 SPACE
slabs of the training patients minus the validation split, with the loss limited to the imaged strip (the slabs are
12–23 mm wide left-right); (2) 800 synthetic axial planes (style v2: nerve roots, epidural fat, texture) generated from
the SPIDER label maps of training patients and from phantoms. Held-out patients ({', '.join(HELD_OUT_SLAB_PATIENTS)})
are never used for training, checkpoint choice or calibration. Validation (the training's best-Dice checkpoint): mean
Dice inside the strip on the validation patients {val} (96 planes, every 16th row); checkpoint: see Recipe.

SPIDER data: {SPIDER_ATTRIBUTION}

## Recipe
Weighted binary cross-entropy (positive weight {cfg['loss']['pos_weight']:g}), Adam (lr {cfg['optimizer']['lr']:g}),
batch {cfg['batch_size']}; random {cfg['crop']['size']} × {cfg['crop']['size']} crops
({100 * (1 - cfg['crop']['negative_fraction']):.0f} % containing the dural sac), left-right flips, random gamma
{cfg['augment']['gamma'][0]}–{cfg['augment']['gamma'][1]}; {cfg['iterations_per_epoch']} iterations per epoch; {_checkpoint_text(e)}.
{_start_text(e)}
Resumable run: `scripts/train_dsca_real.sh start` (state every epoch and every 5 minutes).

| epoch | train loss | validation loss | validation Dice | seconds |
|---|---|---|---|---|
{rows}

(Epoch 1 includes generating the data cache; epoch times vary with the other work on the shared machine.)

## Limitations
- The only real MR images here are sagittal T2 SPACE slabs resliced to axial planes (narrow strips); no clinical axial
  T1/T2 series was available for training or testing. Validate on your own axial series before relying on it.
- One fold, a CPU budget; the issue's targets (held-out real Dice ≥ 0.90, area MAE ≤ 15 mm², r ≥ 0.95) are compared
  in the section below — read it before trusting an area.
{missed_text}
- On the held-out real slabs the worst planes are the tapering caudal end of the sac, where the whole canal is
  outlined around a small sac, and planes at a slab's end (`docs/figures/dsca_unet_real_heldout.png`,
  `scripts/fig_dsca_real_heldout.py`). A narrow sac is exactly where stenosis is graded: read those slices by eye.

{section(d['eval'], d['calib'])}"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--dest", type=Path, default=ROOT / "DuralSacSeg" / "Resources" / "Models")
    ap.add_argument("--dry-run", action="store_true", help="print the entry and card, change nothing")
    args = ap.parse_args(argv)
    from DuralSacSegLib import models

    from spinemorph.atomic import atomic_write_text

    d = _load(args.run)
    cat_path = args.dest / "catalog.json"
    cat = json.loads(cat_path.read_text(encoding="utf-8"))
    name = f"dsca-{d['arch'].replace('_', '-')}"
    idx = next((i for i, m in enumerate(cat["models"]) if m["name"] == name), None)
    old = cat["models"][idx] if idx is not None else {}
    weights = args.dest / f"dsca_{d['arch']}.pt"
    if args.dry_run:  # measure the entry on a copy outside the repository
        where = Path(os.environ.get("TMPDIR", "/tmp"))
        shutil.copyfile(d["best"], where / weights.name)
        entry = _entry(d, where, old)
        print(json.dumps(entry, indent=2))
        print(_card(d, entry))
        return 0
    tmp = args.dest / f".{weights.name}.tmp"
    shutil.copyfile(d["best"], tmp)
    os.replace(tmp, weights)  # atomic: temporary file in the same folder
    if models.sha256_of(weights) != d["sha"]:
        raise SystemExit("error: the copied weights differ from the run's best.pt")
    entry = _entry(d, args.dest, old)
    if idx is None:
        cat["models"].append(entry)
    else:
        cat["models"][idx] = entry
    atomic_write_text(cat_path, json.dumps(cat, indent=2) + "\n")
    atomic_write_text(args.dest / entry["card"], _card(d, entry))
    print(f"embedded {name}: {weights} ({d['sha'][:12]}…), decision {entry['decision']['threshold']} / "
          f"{entry['decision']['postprocess']}, card {entry['card']}; the default is chosen by scripts/dsca_select_default.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
