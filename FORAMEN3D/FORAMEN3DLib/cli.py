"""``spinemorph foramen``: L4-5 foraminal morphometry (``measure``), agreement statistics (``compare``) and — when
:mod:`FORAMEN3DLib.cli_seg` is installed — 3D U-Net training (``train``) and evaluation (``evaluate``).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import logging
import time
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_write_bytes, atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError
from spinemorph.labels import FORAMEN_LABELS
from spinemorph.volume import Volume, read_volume, write_volume

log = logging.getLogger(__name__)

MEASUREMENTS_JSON = "measurements.json"
MEASUREMENTS_CSV = "measurements.csv"
REPORT_PNG = "report.png"
LABELS_OUT = "labels.nrrd"
CSV_COLUMNS = ["Case", "Metric", "Side", "Value", "Unit", "Flag"]

_MEASURE_EPILOG = """\
definitions (lateral view = the parasagittal slab through the pedicles of a canal-aligned frame):
  foraminal height   longest distance from the L4 pedicle's inferior border to the L5 pedicle's superior border
  foraminal width    shortest distance from the L4 body's posteroinferior corner to the L5 superior articular process
  foraminal area     region enclosed by L4 pedicle, L4 body / disc / L5 body, L5 pedicle and the facet (SAP)
  posterior disc height  L4 posteroinferior to L5 posterosuperior body corner at the midline
flag: height <= 15 mm or width <= 8 mm -> "foramen enlargement likely needed" (height: Hasegawa et al., J Bone Joint
Surg Am 1995;77:32-38; width: threshold of the source method; both configurable).
outputs: measurements.json (values + defining LPS points), measurements.csv (Case, Metric, Side, Value, Unit, Flag),
report.png (lateral views), meshes/<structure>.stl + .vtp (LPS mm; --ras-meshes for RAS), labels.nrrd (only when
INPUT was an image and had to be segmented).

examples:
  spinemorph foramen measure labels.nrrd --out result/
  spinemorph foramen measure t2_space.nrrd --out result/ --device cpu        (segments the image first)
"""

_COMPARE_EPILOG = """\
tables: CSV with columns Case, Metric, Side, Value (as written by `foramen measure`; concatenate the per-case
tables); rows are paired on (Case, Metric, Side). Statistics per metric: Wilcoxon signed-rank, Pearson r,
ICC(A,1) two-way random, absolute agreement, single measures (McGraw & Wong 1996; = ICC(2,1) Shrout & Fleiss 1979)
with 95 % CI, Bland-Altman bias and 95 % limits of agreement.
outputs: agreement.json, agreement.csv, pairs.csv, agreement_<metric>.png (scatter + Bland-Altman).
"""


def register(subparsers) -> None:
    """Add the ``foramen`` command group (measure, compare, and train / evaluate when available)."""
    p = subparsers.add_parser(
        "foramen",
        help="L4-5 foramen: morphometry, agreement statistics, 3D segmentation training/evaluation",
        description="FORAMEN3D: L4-5 intervertebral foramen morphometry from a 3D label map or MR image.",
    )
    sub = p.add_subparsers(dest="foramen_command", metavar="SUBCOMMAND", parser_class=type(p))
    _add_measure(sub)
    _add_compare(sub)
    try:
        seg = importlib.import_module("FORAMEN3DLib.cli_seg")
    except ModuleNotFoundError as exc:
        if exc.name != "FORAMEN3DLib.cli_seg":
            raise
        seg = None
    if seg is not None:
        seg.add_train_parser(sub)
        seg.add_evaluate_parser(sub)
    p.set_defaults(func=lambda args: _no_subcommand(p))


def _no_subcommand(parser) -> int:
    parser.print_help()
    return 2


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not np.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return v


def _add_measure(sub) -> None:
    p = sub.add_parser(
        "measure",
        help="measure foraminal height / width / area (left, right), posterior disc height; meshes and PNG report",
        description="Measure the L4-5 foramina of a label map (1 L4, 2 L4-5 disc, 3 L5, vertebrae with posterior "
        "elements) or of an MR image, which is segmented first with the FORAMEN3D 3D U-Net.",
        epilog=_MEASURE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="label map or MR image (.nrrd, .nii/.nii.gz, .mha, DICOM folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--labels-only", action="store_true", help="INPUT is a label map (never segment it)")
    p.add_argument("--model", default="default", metavar="NAME|FILE", help="segmentation model for an image INPUT (default: default)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "mps", "cpu"), help="device for segmentation (default auto)")
    p.add_argument("--case", metavar="NAME", help="case name in the CSV (default: INPUT's file name)")
    p.add_argument("--height-threshold-mm", type=_positive_float, default=15.0, help="flag height <= this (default 15)")
    p.add_argument("--width-threshold-mm", type=_positive_float, default=8.0, help="flag width <= this (default 8)")
    p.add_argument("--slab-mm", type=_positive_float, default=3.0, help="thickness of the lateral-view slab through each pedicle (default 3)")
    p.add_argument("--ras-meshes", action="store_true", help="write the meshes in RAS instead of LPS")
    p.add_argument("--no-meshes", action="store_true", help="skip the STL/VTP meshes")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")
    p.set_defaults(func=run_measure)


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="agreement of automatic vs manual measurements (Wilcoxon, Pearson, ICC, Bland-Altman)",
        description="Compare automatic and manual foraminal measurements: statistics per metric and plots.",
        epilog=_COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("auto", metavar="AUTO.csv", help="automatic measurements")
    p.add_argument("manual", metavar="MANUAL.csv", help="manual (reference) measurements")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")
    p.set_defaults(func=run_compare)


def _case_name(path: str) -> str:
    name = Path(path).name
    for suf in (".nii.gz", ".seg.nrrd", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def is_label_map(vol: Volume) -> bool:
    """True when ``vol`` holds integer values within {0, 1, 2, 3} including 1, 2 and 3."""
    a = np.asarray(vol.array)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.array_equal(a, np.round(a)):
            return False
    if a.min() < 0 or a.max() > 3:
        return False
    present = set(np.unique(a).astype(int).tolist())
    return {1, 2, 3} <= present


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def run_measure(args) -> int:
    from FORAMEN3DLib.meshes import structure_meshes, write_mesh
    from FORAMEN3DLib.morphometry import Thresholds, measure_foramen
    from FORAMEN3DLib.report3d import report_png_bytes

    mesh_names = [] if args.no_meshes else [f"meshes/{n.replace(' ', '_')}{s}" for n in FORAMEN_LABELS.values() for s in (".stl", ".vtp")]
    expected = [MEASUREMENTS_JSON, MEASUREMENTS_CSV, REPORT_PNG, *mesh_names]
    out = prepare_output_dir(args.out, args.overwrite, expected + [LABELS_OUT])
    vol = read_volume(args.input)
    case = args.case or _case_name(args.input)
    seg_info = None
    if args.labels_only or is_label_map(vol):
        if not is_label_map(vol):
            raise InputError(
                f"{args.input} is not a label map with values 1 (L4), 2 (L4-5 disc), 3 (L5); drop --labels-only to segment an image"
            )
        labels = vol.with_array(np.asarray(vol.array).astype(np.uint8))
    elif np.issubdtype(np.asarray(vol.array).dtype, np.integer) and 0 <= vol.array.min() and vol.array.max() <= 3:
        present = set(np.unique(vol.array).tolist())
        lacking = [f"{v} ({n})" for v, n in ((1, "L4"), (2, "L4-5 disc"), (3, "L5")) if v not in present]
        raise InputError(f"{args.input} is a label map without {', '.join(lacking)}; it needs 1 L4, 2 L4-5 disc and 3 L5")
    else:
        from FORAMEN3DLib.segment3d import segment_volume

        log.info("segmenting %s (model %s, device %s)", args.input, args.model, args.device)
        seg = segment_volume(vol, model=args.model, device=args.device)
        labels = seg.labels
        seg_info = {"model": str(args.model), "timings_s": {k: round(float(v), 3) for k, v in getattr(seg, "timings_s", {}).items()}}
    thresholds = Thresholds(height_mm=args.height_threshold_mm, width_mm=args.width_threshold_mm)
    t0 = time.perf_counter()
    result = measure_foramen(labels, thresholds=thresholds, slab_half_width_mm=args.slab_mm / 2)
    t_measure = time.perf_counter() - t0
    meshes = {}
    t_mesh = 0.0
    if not args.no_meshes:
        t0 = time.perf_counter()
        meshes = structure_meshes(labels)
        t_mesh = time.perf_counter() - t0
    # the report is drawn in memory too: a drawing failure must not leave labels / meshes / measurements behind
    report_png = report_png_bytes(result, title=f"{case}: L4-5 foraminal morphometry")
    # everything is computed: only now write files (a failure above leaves no partial output)
    if seg_info:
        write_volume(labels, out / LABELS_OUT)
    for name, info in meshes.items():
        for suffix in (".stl", ".vtp"):
            write_mesh(info.polydata, out / "meshes" / f"{name.replace(' ', '_')}{suffix}", "RAS" if args.ras_meshes else "LPS")
    doc = {
        "case": case,
        "input": str(args.input),
        **result.to_dict(),
        "meshes": {k: {**v.summary(), "coordinates": "RAS" if args.ras_meshes else "LPS"} for k, v in meshes.items()},
        "timings_s": {"measure": round(t_measure, 3), "meshes": round(t_mesh, 3)},
    }
    if seg_info:
        doc["segmentation"] = seg_info
    atomic_write_text(out / MEASUREMENTS_JSON, json.dumps(doc, indent=2))
    atomic_write_text(out / MEASUREMENTS_CSV, rows_to_csv(result.to_rows(case)))
    atomic_write_bytes(out / REPORT_PNG, report_png)
    for side in ("left", "right"):
        r = result.sides[side]
        print(
            f"{side:>5}: height {r.height.value:5.1f} mm  width {r.width.value:5.1f} mm  area {r.area.value:6.1f} mm²"
            + (f"  -> {r.height.flag or r.width.flag}" if r.flagged else "")
        )
    print(f"posterior disc height {result.posterior_disc_height.value:.1f} mm")
    print(f"measurement {t_measure:.2f} s, meshes {t_mesh:.2f} s; outputs in {out}")
    return 0


def run_compare(args) -> int:
    from FORAMEN3DLib.agreement import compare_tables, skipped_metrics, write_agreement_report

    names = ["agreement.json", "agreement.csv", "pairs.csv"]
    prepare_output_dir(args.out, args.overwrite, names)
    results, pairs = compare_tables(args.auto, args.manual)
    existing = [f"agreement_{m}.png" for m in results if (Path(args.out) / f"agreement_{m}.png").exists()]
    if existing and not args.overwrite:
        prepare_output_dir(args.out, False, existing)
    write_agreement_report(results, pairs, args.out, sources={"auto": str(args.auto), "manual": str(args.manual)})
    for m, st in results.items():
        print(
            f"{m}: n={st.n} bias {st.bias:+.2f} {st.unit} (LoA {st.loa_low:+.2f}..{st.loa_high:+.2f}), r={st.pearson_r:.3f}, "
            f"ICC(A,1)={st.icc_a1:.3f}, Wilcoxon p={st.wilcoxon_p:.3g}"
        )
    for m, why in skipped_metrics(results, pairs).items():
        print(f"{m}: skipped ({why})")
    print(f"outputs in {args.out}")
    return 0
