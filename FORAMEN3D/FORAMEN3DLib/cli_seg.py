"""Command-line parsers of ``spinemorph foramen train``, ``evaluate`` and ``segment``.

The ``foramen`` command group (:mod:`FORAMEN3DLib.cli`) adds them with :func:`add_train_parser`,
:func:`add_evaluate_parser` and :func:`add_segment_parser`. ``python -m FORAMEN3DLib.cli_seg train|evaluate|segment
...`` runs the same commands stand-alone (used by ``scripts/train_foramen_embedded.sh``).
"""

from __future__ import annotations

import argparse
import json
import sys

from spinemorph.argtypes import add_l45_point_options, l45_point_lps, positive_int
from spinemorph.commandline import OneLineParser, run_command
from spinemorph.device import DEVICE_CHOICES
from spinemorph.errors import SpineMorphError

from .locator import DEFAULT_LOCATOR_MODE, LOCATOR_MODES

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


SEGMENT_HELP = """\
Segment L4, the L4-5 disc, L5 (and, with the fine model, the dural sac) in a lumbar MR image; no morphometry.

The fine model (the default, foramen3d-fine-cpu) segments a crop around L4-5. The crop is centred on the L4-5 disc
that the level network names (it sees the whole mid-sagittal field of view: L5 is the vertebra on the sacrum), or,
with --l45-point, on a point you place: use it when the locator took the wrong disc (the labels come out one level
off; check the level labels on every image). The point is the centre of the L4-5
disc in LPS millimetres (DICOM / ITK patient coordinates: x to the patient's left, y posterior, z superior); a point
read in 3D Slicer is RAS: pass it with --ras (x and y are negated). Write --l45-point=X,Y,Z (with "=") when X is
negative.

DIR receives labels.nrrd (0 background, 1 L4, 2 L4-5 disc, 3 L5, 4 dural sac) and segmentation.json (model, device,
locator: "level network", "coarse model", "disc count" or "manual point", L4-5 centre in LPS mm, dural-sac decision, the inference
backend that ran the network (ONNX Runtime or torch, threads, precision), QC notes, timings).

--locator levels (default): the level network (model card foramen3d_levels.md; on real slabs a level off on 0 of 6
validation and 0 of 6 held-out patients; on 2 of its 14 training patients it named no L4-5 disc). When it names no
L4-5 disc (a field of view without the sacrum, a slab off the midline) the coarse model's answer is used, with a QC
note. --locator coarse: the coarse model alone (a level off on 7 of 21 training / validation slabs and 1 of 6
held-out). --locator count walks down the discs with the fine network to the sacrum and takes the lowest walked disc
whose crop's dural sac reaches the crop's lower face (3-5 times the time; 5 of 21 and 1 of 6). A locator that
disagrees with the coarse model by a level raises a QC note. Check the levels; --l45-point fixes them.

examples:
  python -m FORAMEN3DLib.cli_seg segment t2_space.nrrd --out seg/
  python -m FORAMEN3DLib.cli_seg segment t2_space.nrrd --out seg/ --l45-point 1.5,-12.0,-310.4          (LPS mm)
  python -m FORAMEN3DLib.cli_seg segment t2_space.nrrd --out seg/ --l45-point=-1.5,12.0,-310.4 --ras    (a Slicer fiducial, RAS)
"""


def add_segment_parser(sub) -> argparse.ArgumentParser:
    """Add the ``segment`` parser (with ``func``) to an argparse sub-parsers object."""
    p = sub.add_parser("segment", help="segment L4 / disc / L5 / dural sac of an MR image (optionally at a hand-placed L4-5 point)",
                       description=SEGMENT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="MR image (.nrrd, .nii/.nii.gz, .mha, DICOM folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--model", default="default", metavar="NAME|FILE", help="segmentation model (default: default)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default auto)")
    add_l45_point_options(p)
    p.add_argument("--locator", default=DEFAULT_LOCATOR_MODE, choices=LOCATOR_MODES,
                   help=f"how the fine model finds L4-5 without --l45-point (default {DEFAULT_LOCATOR_MODE}; see above)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")
    p.set_defaults(func=run_segment)
    return p


def run_segment(args) -> int:
    from spinemorph.atomic import atomic_write_text, prepare_output_dir
    from spinemorph.volume import read_volume, write_volume

    from .segment3d import segment_volume

    point = l45_point_lps(args)
    out = prepare_output_dir(args.out, args.overwrite, ["labels.nrrd", "segmentation.json"])
    vol = read_volume(args.input)
    mode = getattr(args, "locator", DEFAULT_LOCATOR_MODE)
    fine = {"locator_mode": mode} if mode != DEFAULT_LOCATOR_MODE else None
    res = segment_volume(vol, model=args.model, device=args.device, l45_point=point, fine_options=fine)
    write_volume(res.labels, out / "labels.nrrd")
    doc = {"input": str(args.input), "model": res.model_name, "device": res.device, "locator": res.locator,
           "l45_centre_lps": list(res.l45_centre_lps) if res.l45_centre_lps is not None else None,
           "l45_point_given": {"value": list(args.l45_point), "coordinates": "RAS" if args.ras else "LPS"}
           if args.l45_point is not None else None,
           "canal_threshold": res.canal_threshold, "inference": res.inference,
           "locator_details": res.locator_details, "qc": list(res.qc),
           "timings_s": {k: round(float(v), 3) for k, v in res.timings_s.items()}}
    atomic_write_text(out / "segmentation.json", json.dumps(doc, indent=2) + "\n")
    where = f" (locator: {res.locator}" + (f", L4-5 centre LPS {tuple(round(v, 1) for v in res.l45_centre_lps)})"
                                           if res.l45_centre_lps else ")") if res.locator else ""
    print(f"segmented with {res.model_name}{where} in {res.timings_s.get('total', 0.0):.1f} s; outputs in {out}")
    for note in res.qc:
        print(f"QC: {note}")
    return 0


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
    parser = OneLineParser(prog=prog, description="FORAMEN3D training / evaluation / segmentation")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_segment_parser(sub)
    args = parser.parse_args(argv)
    return run_command(args.func, args, verbose=args.verbose, program=prog)


if __name__ == "__main__":
    sys.exit(main())
