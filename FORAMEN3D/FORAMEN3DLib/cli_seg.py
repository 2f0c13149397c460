"""Command-line parsers of ``spinemorph foramen train`` and ``spinemorph foramen evaluate``.

The ``foramen`` command group (:mod:`FORAMEN3DLib.cli`) adds them with :func:`add_train_parser` and
:func:`add_evaluate_parser`. ``python -m FORAMEN3DLib.cli_seg train|evaluate ...`` runs the same two commands
stand-alone (used by ``scripts/train_foramen_embedded.sh``).
"""

from __future__ import annotations

import argparse
import json
import sys

from spinemorph.argtypes import positive_int
from spinemorph.commandline import OneLineParser, run_command
from spinemorph.device import DEVICE_CHOICES
from spinemorph.errors import SpineMorphError

TRAIN_HELP = """\
Train the FORAMEN3D 3D U-Net (L4, L4-5 disc, L5).

Without --config the source-method recipe is used (FORAMEN3D/Resources/Models/configs/foramen3d_paper.json: 3D U-Net with
trilinear upsampling, Adam 5e-4 divided by 5 at epochs 33 and 66, batch 2, 100 epochs, 5-fold cross-validation
70/10/20). configs/foramen3d_budget_cpu.json is the recipe of the embedded CPU model. Training data are synthesised from the
SPIDER training label maps (held-out patients excluded) and the procedural phantom.

RUN_DIR receives config.json, fold<k>/{checkpoint.pt, history.csv, curves.png, best.pt, test_metrics.json} and
summary.json. Checkpoints are written every epoch; --resume continues an interrupted run exactly.

examples:
  spinemorph foramen train --out runs/paper
  spinemorph foramen train --config FORAMEN3D/Resources/Models/configs/foramen3d_budget_cpu.json --out runs/budget --seed 0
  spinemorph foramen train --out runs/budget --resume
"""

EVALUATE_HELP = """\
Evaluate a FORAMEN3D model: DSC, precision and recall per structure (L4, L4-5 disc, L5).

--data synthetic        images synthesised from the SPIDER training label maps with new seeds (anatomies seen in training)
--data spider-heldout   images synthesised from the held-out SPIDER label volumes (never trained on)
--data phantom          exact-geometry phantoms imaged by the sagittal T2 SPACE simulation (unseen anatomies)

DIR receives metrics.csv (case x structure), summary.json (mean/std/median per structure, timings),
dsc_boxplot.png and overlay_<case>.png.

example:
  spinemorph foramen evaluate --model default --data spider-heldout --out eval/heldout
"""


def add_train_parser(sub) -> argparse.ArgumentParser:
    """Add the ``train`` parser (with ``func``) to an argparse sub-parsers object."""
    p = sub.add_parser("train", help="train the 3D U-Net (paper recipe by default)", description=TRAIN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="CONFIG.json", help="training config (default: the paper recipe, configs/foramen3d_paper.json)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (created)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in RUN_DIR")
    p.add_argument("--seed", type=int, default=None, help="random seed (overrides the config's)")
    p.add_argument("--overwrite", action="store_true", help="start a new run in a RUN_DIR that holds one")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)
    return p


def add_evaluate_parser(sub) -> argparse.ArgumentParser:
    """Add the ``evaluate`` parser (with ``func``) to an argparse sub-parsers object."""
    from .evaluate3d import DATASETS

    p = sub.add_parser("evaluate", help="DSC / precision / recall of a model on held-out data", description=EVALUATE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", metavar="NAME|FILE", help="catalogue name or .pt weights (default: default)")
    p.add_argument("--data", required=True, choices=DATASETS, help="evaluation data set")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--n", type=positive_int, default=None, help="number of cases (default 10 / 8 / 4)")
    p.add_argument("--seed", type=int, default=0, help="offset of the evaluation seeds (default 0)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_evaluate)
    return p


def run_train(args) -> int:
    from .train3d import train

    if not args.resume and args.config is None:
        print("using the paper recipe (configs/foramen3d_paper.json)", file=sys.stderr)
    if args.resume and args.config is not None:
        raise SpineMorphError("--resume continues with the config stored in RUN_DIR; leave out --config")
    summary = train(args.config, args.out, resume=args.resume, seed=args.seed, progress=not args.no_progress,
                    overwrite=args.overwrite)
    print(json.dumps({k: v for k, v in summary.items() if k != "folds"}, indent=2))
    return 0


def run_evaluate(args) -> int:
    from .evaluate3d import evaluate_model

    summary = evaluate_model(args.model, args.data, args.out, n=args.n, seed=args.seed, device=args.device,
                             overwrite=args.overwrite, progress=not args.no_progress)
    for scope, key in (("input grid", "metrics"), ("crop window", "metrics_window")):
        print(f"{summary['n_cases']} cases, {scope}:")
        for name, m in summary[key].items():
            print(f"  {name:10s} DSC {m['dsc']['mean']:.3f}  precision {m['precision']['mean']:.3f}  recall {m['recall']['mean']:.3f}")
    print(f"wrote {args.out}")
    return 0


def main(argv=None) -> int:
    """Stand-alone entry: ``python -m FORAMEN3DLib.cli_seg train|evaluate ...``."""
    prog = "python -m FORAMEN3DLib.cli_seg"
    parser = OneLineParser(prog=prog, description="FORAMEN3D training / evaluation")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    args = parser.parse_args(argv)
    return run_command(args.func, args, verbose=args.verbose, program=prog)


if __name__ == "__main__":
    sys.exit(main())
