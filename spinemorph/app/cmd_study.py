"""``spinemorph study``: one lumbar MRI study end to end (see :mod:`spinemorph.app.study`)."""

from __future__ import annotations

import argparse

_EPILOG = """\
With no INPUT a synthetic lumbar study (procedural phantom with exact ground truth, written as DICOM) is generated
into DIR/generated_study and processed: the quickest way to see every output.

outputs in DIR:
  report.html          self-contained report (figures embedded): series used, DSCA plot/table/overlays, foramen
                       table + lateral views + 3D meshes, trajectory plan + heat-map, QC flags, models, notice
  study_summary.json   series chosen and why, step status and timings, exit code
  inputs/              the series used, as NRRD
  dsca/                output of `spinemorph dsca segment` (dural_sac.seg.nrrd, dsca.csv/json, overlays)
  foramen/             output of `spinemorph foramen measure` (labels.nrrd, meshes/, measurements.csv/json, report.png)
  plan/                output of `spinemorph plan` (plan_report.json/md, plan_sweep.csv, plan_heatmap.png, channel meshes)

exit codes: 0 every analysis step (foramen, DSCA, plan) done; 3 partial (one failed or had no usable series; see the
report); 1 nothing done (no analysis step succeeded, or no report).

examples:
  spinemorph study --out results/demo
  spinemorph study /data/patient01/DICOM --out results/patient01 --device cpu
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study",
        help="run everything on one study (or a generated one) and write an HTML report",
        description="One lumbar MRI study end to end: DSCA, L4-5 foramen, trajectory planning and an HTML report.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="DICOM folder(s) and/or image files of one study (none: generate one)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated study (default 0)")
    p.add_argument("--preset", default="normal", choices=("normal", "central-stenosis", "foraminal-stenosis"),
                   help="anatomy of the generated study (default normal)")
    p.add_argument("--dsca-model", default=None, metavar="NAME|FILE", help="DSCA model (default: the catalogue default, dsca-unet)")
    p.add_argument("--foramen-model", default="default", metavar="NAME|FILE", help="foramen model (default: embedded)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"), help="compute device (default auto)")
    p.add_argument("--diameter-mm", type=float, default=7.5, help="working-channel diameter for planning (default 7.5)")
    p.add_argument("--no-plan", action="store_true", help="skip trajectory planning")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from spinemorph.app.study import run_study

    t0 = time.perf_counter()
    result = run_study(
        args.inputs or None, args.out, seed=args.seed, preset=args.preset, dsca_model=args.dsca_model,
        foramen_model=args.foramen_model, device=args.device, channel_diameter_mm=args.diameter_mm,
        overwrite=args.overwrite, plan=not args.no_plan,
    )
    word = {0: "complete", 3: "partial", 1: "failed"}[result.exit_code]
    print(f"study {word} in {time.perf_counter() - t0:.1f} s; report: {result.report_path or 'not written'}")
    return result.exit_code
