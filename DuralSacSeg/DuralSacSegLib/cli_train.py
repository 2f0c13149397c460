"""``spinemorph dsca train`` and ``spinemorph dsca evaluate`` (added to the ``dsca`` command group).

``add_train_parser(subparsers)`` and ``add_evaluate_parser(subparsers)`` each add one parser with ``func`` set;
``func(args)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from spinemorph.argtypes import positive_int
from spinemorph.device import DEVICE_CHOICES
from spinemorph.errors import InputError

TRAIN_EPILOG = """\
The default configuration is the source paper's recipe (configs/paper.json): 320x320 slices, weighted BCE
(positive weight 20), Adam lr 1e-4, batch 8, 20 epochs, 5-fold cross-validation by patient, best-validation-loss
checkpoint, external validation on the held-out real T2 SPACE slabs. configs/budget_cpu.json is the CPU budget
recipe of the embedded weights (crops, fewer iterations, one fold).

The run folder receives config.json, fold<k>/ (state.pt for --resume, best.pt, history.csv, loss_curve.png,
metrics.json), folds.csv, summary.json, loss_curves.png and best.pt (load it with --model in evaluate / segment).

examples:
  spinemorph dsca train --out runs/paper
  spinemorph dsca train --config DuralSacSeg/Resources/Models/configs/budget_cpu.json --architecture unet --out runs/unet
  spinemorph dsca train --out runs/paper --resume
"""

EVALUATE_EPILOG = """\
Data sets (never trained on): synthetic = images synthesised from held-out SPIDER label maps (held-out seed);
real-slabs = axial planes of the held-out real T2 SPACE slabs; phantom = procedural phantom slices
(seed 2002; the phantom family is also used in training, the seed is not).
Writes metrics.json, metrics.csv (accuracy, precision, recall, F1/Dice, area MAE/MSE in mm2, Pearson r,
Bland-Altman mean difference and 95% limits), slices.csv (one row per slice), area_scatter.png,
bland_altman.png and examples.png (input / truth / prediction).

examples:
  spinemorph dsca evaluate --model dsca-multiresunet --data real-slabs --out eval/real
  spinemorph dsca evaluate --model runs/paper/best.pt --data synthetic --out eval/syn
"""


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` parser to ``subparsers`` (of the ``dsca`` group)."""
    from DuralSacSegLib.networks import NETWORKS

    p = subparsers.add_parser(
        "train",
        help="train a 2D dural sac network (paper recipe, K-fold CV, resumable)",
        description="Train a DuralSacSeg 2D network (U-Net, Attention U-Net or MultiResUNet).",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", metavar="CONFIG.json", help="training configuration (default: the paper recipe, configs/paper.json)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created; must not hold a run unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR with its saved configuration")
    p.add_argument("--seed", type=int, help="random seed (overrides the configuration)")
    p.add_argument("--folds", type=positive_int, help="number of cross-validation folds (overrides the configuration)")
    p.add_argument("--architecture", choices=sorted(NETWORKS), help="network (overrides the configuration)")
    p.add_argument("--epochs", type=positive_int,
                   help="number of epochs (overrides the configuration; with --resume: extend the run to this many epochs)")
    p.add_argument("--iterations-per-epoch", type=positive_int, metavar="N",
                   help="batches per epoch (overrides the configuration; default there: one pass over the training slices)")
    p.add_argument("--device", choices=DEVICE_CHOICES, help="compute device (default: configuration, auto)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch (overrides the configuration)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="train on your own data: a folder of <case>_image.<ext> + <case>_mask.<ext> volumes "
                        "(replaces the configuration's training data; cases named <patient>_<series> keep a patient "
                        "in one fold)")
    p.add_argument("--external-dir", metavar="DIR", help="external validation data, same folder layout as --data-dir")
    p.add_argument("--init-weights", metavar="FILE.pt",
                   help="new run only: warm start from weights exported by scripts/export_dsca_training.py "
                        "(continues their schedule at their epoch; optimizer state fresh)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train_command)
    return p


def run_train_command(args) -> int:
    from DuralSacSegLib.train import load_config, run_training

    if args.resume:
        if any(v is not None for v in (args.config, args.seed, args.folds, args.architecture, args.iterations_per_epoch,
                                       args.data_dir, args.external_dir, args.init_weights)):
            raise InputError(
                "--resume continues with the run's saved config.json; drop --config/--seed/--folds/--architecture/"
                "--iterations-per-epoch/--data-dir/--external-dir/--init-weights (only --epochs may extend the run)"
            )
        summary = run_training({}, args.out, resume=True, progress=not args.no_progress, epochs=args.epochs)
    else:
        cfg = load_config(
            args.config,
            seed=args.seed,
            folds=args.folds,
            architecture=args.architecture,
            device=args.device,
            num_threads=args.threads,
            epochs=args.epochs,
            iterations_per_epoch=args.iterations_per_epoch,
        )
        for option, key in ((args.data_dir, "train"), (args.external_dir, "external")):
            if option is not None:
                if not Path(option).is_dir():
                    raise InputError(f"{option} is not a folder (expected <case>_image / <case>_mask volumes)")
                cfg["data"][key] = {"source": "folder", "path": str(Path(option).resolve())}
        summary = run_training(cfg, args.out, resume=False, progress=not args.no_progress, init_weights=args.init_weights)
    mean = summary.get("mean", {})
    keys = ("validation_f1", "validation_area_mae_mm2", "external_f1", "external_area_mae_mm2")
    # validation on real slab planes: report inside the imaged strip (the whole-plane figures count the padding)
    keys = tuple(k.replace("validation_", "validation_within_strip_") if k.replace("validation_", "validation_within_strip_") in mean
                 else k for k in keys)
    parts = [f"{k}={mean[k]:.4g}" for k in keys if k in mean and mean[k] is not None and math.isfinite(mean[k])]
    print(f"trained {summary['architecture']}: best fold {summary['best_fold']}; {', '.join(parts)}; run folder {args.out}")
    return 0


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``evaluate`` parser to ``subparsers`` (of the ``dsca`` group)."""
    from DuralSacSegLib.evaluate import DATASETS

    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a 2D dural sac model on held-out data (metrics, plots)",
        description="Evaluate a DuralSacSeg model (catalogue name or weights file) on a held-out data set.",
        epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, metavar="NAME_OR_FILE", help="catalogue model name or .pt weights file (default: the catalogue default)")
    p.add_argument("--data", required=True, type=_evaluation_data, metavar="{" + ",".join(DATASETS) + "} or DIR",
                   help="evaluation data set, or a folder of <case>_image.<ext> + <case>_mask.<ext> volumes")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", default="cpu", choices=DEVICE_CHOICES, help="compute device (default cpu: deterministic)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="slices per forward pass (default 4)")
    p.add_argument("--overwrite", action="store_true", help="replace existing report files in DIR")
    p.add_argument("--cache-dir", metavar="DIR", help="keep the generated evaluation slices here for reuse (same slices either way)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_evaluate_command)
    return p


def _evaluation_data(text: str):
    """``--data``: a documented data set name, or a folder of your own cases (a ``folder`` spec)."""
    from DuralSacSegLib.evaluate import DATASETS

    if text in DATASETS:
        return text
    if Path(text).is_dir():
        return {"source": "folder", "path": str(Path(text).resolve())}
    raise argparse.ArgumentTypeError(f"{text!r} is neither one of {', '.join(DATASETS)} nor an existing folder")


def run_evaluate_command(args) -> int:
    from DuralSacSegLib.evaluate import run_evaluation
    from spinemorph.device import select_device

    device = str(select_device(args.device))
    s = run_evaluation(args.model, args.data, args.out, device=device, overwrite=args.overwrite,
                       batch_size=args.batch_size, progress=not args.no_progress, cache_dir=args.cache_dir)
    shown = {k: s.get(k) for k in ("n_slices", "precision", "recall", "f1", "area_mae_mm2", "pearson_r")}
    print(f"{s['model']} on {s['data']}: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in shown.items()}))
    return 0
