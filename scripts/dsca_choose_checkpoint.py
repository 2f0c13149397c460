#!/usr/bin/env python
"""Choose a DSCA training run's checkpoint on validation data with two criteria: real planes and T1 phantom planes.

    scripts/dsca_choose_checkpoint.py RUN [--apply] [--threads 2]

``RUN`` is a run folder trained with ``"keep_epoch_weights": true`` (``configs/real_cpu.json``): every epoch's weights
are in ``RUN/fold0/epochs/epoch_NNN.pt``. Each is scored at its loss-prior decision threshold (20/21 for weighted BCE
w = 20) without post-processing on

* the real validation planes of training patients set apart (``spinemorph.samples.dsca_validation_slab_patients``,
  every 16th PNG row, inside the imaged strip): :func:`DuralSacSegLib.calibration.accuracy_score`;
* 24 full axial T1 phantom planes (seed 3003, not the phantom study's seeds): the mean DSCA bias.

The choice is :func:`DuralSacSegLib.calibration.choose_checkpoint` (highest real score among epochs within ±5 mm²
phantom bias, else ±10, else any). Held-out patients are never touched. The report goes to
``RUN/checkpoint_choice.json``; ``--apply`` copies the chosen weights over ``RUN/fold0/best.pt`` and ``RUN/best.pt``
(the training's own best-validation-Dice weights are kept as ``RUN/fold0/best_val_dice.pt``), so that
``scripts/dsca_calibrate.py``, ``scripts/dsca_evaluate.py`` and ``scripts/embed_dsca_real.py`` use them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--apply", action="store_true", help="make the chosen epoch the run's best.pt")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device for the predictions (cpu, cuda)")
    ap.add_argument("--row-step", type=int, default=16)
    ap.add_argument("--phantom-n", type=int, default=24)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from DuralSacSegLib import calibration as cal
    from DuralSacSegLib import models

    from spinemorph import samples as sm
    from spinemorph.atomic import atomic_write_text
    from spinemorph.spider import HELD_OUT_PATIENTS

    epochs = sorted((args.run / "fold0" / "epochs").glob("epoch_*.pt"))
    if not epochs:
        print(f"error: no epoch weights in {args.run / 'fold0' / 'epochs'} (train with \"keep_epoch_weights\": true)",
              file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    patients = sm.dsca_validation_slab_patients()
    assert not set(patients) & set(HELD_OUT_PATIENTS), "validation split must not contain held-out patients"
    planes = cal.real_slab_planes(patients, row_step=args.row_step)
    ph = cal.phantom_planes(args.phantom_n)
    rows = []
    for path in epochs:
        net, info = models.load_model(path, torch.device(args.device))
        probs = cal.predict_planes(net, planes.images, device=args.device)
        m = cal.score_strip(probs, planes, info.threshold, "none")
        bias = cal.phantom_bias(cal.predict_planes(net, ph.images, device=args.device), ph, info.threshold, "none")
        epoch = int(path.stem.split("_")[1])
        rows.append({"epoch": epoch, "weights": path.name, "weights_sha256": info.sha256, "threshold": info.threshold,
                     "score": m["score"], "mean_dice": m["mean_dice"], "area_mae_mm2": m["area_mae_mm2"],
                     "pearson_r": m["pearson_r"], "phantom_bias_mm2": bias})
        print(f"epoch {epoch}: validation Dice {m['mean_dice']:.3f}, MAE {m['area_mae_mm2']:.1f} mm², score "
              f"{m['score']:.3f}; phantom bias {bias:+.1f} mm²", flush=True)
    best, tier = cal.choose_checkpoint(rows)
    report = {
        "command": " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "rule": "highest accuracy_score on the real validation planes among epochs within the first phantom-bias tier "
                f"that holds any ({', '.join(str(t) for t in cal.CHECKPOINT_PHANTOM_TIERS_MM2)} mm²); no post-processing, "
                "loss-prior threshold",
        "validation_patients": patients, "n_planes": len(planes.patients), "phantom_planes": args.phantom_n,
        "chosen": best, "tier_mm2": tier, "epochs": rows, "applied": bool(args.apply),
        "seconds": time.perf_counter() - t0, "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    if args.apply:
        fold = args.run / "fold0"
        keep = fold / "best_val_dice.pt"
        if not keep.exists() and (fold / "best.pt").exists():
            shutil.copyfile(fold / "best.pt", keep)
        for dst in (fold / "best.pt", args.run / "best.pt"):
            tmp = dst.with_suffix(".pt.tmp")
            shutil.copyfile(fold / "epochs" / best["weights"], tmp)
            tmp.replace(dst)
    atomic_write_text(args.run / "checkpoint_choice.json", json.dumps(report, indent=2, default=float) + "\n")
    print(f"chosen: epoch {best['epoch']} (validation score {best['score']:.3f}, phantom bias "
          f"{best['phantom_bias_mm2']:+.1f} mm², tier ±{tier} mm²){' — applied' if args.apply else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
